# reconciler as a container: the daemon by default, with specs and SSH material mounted read-only.
#   docker build -t reconciler .
#   docker run -d --name reconciler -p 127.0.0.1:9479:9479 \
#     -v /etc/reconciler/specs:/etc/reconciler/specs:ro -v /etc/reconciler/ssh:/etc/reconciler/ssh:ro reconciler
# (the specs' identityFile/knownHosts must point under /etc/reconciler/ssh). One-shot commands:
#   docker run --rm -v ...:ro reconciler plan /etc/reconciler/specs
FROM python:3.11-slim-bookworm
WORKDIR /opt/reconciler
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY testbed ./testbed
RUN pip install --no-cache-dir . \
 && useradd --system --home-dir /var/lib/reconciler --create-home --shell /usr/sbin/nologin reconciler
USER reconciler
EXPOSE 9479
ENTRYPOINT ["reconciler", "--log-format", "json"]
CMD ["run", "--specs", "/etc/reconciler/specs", "--listen", "0.0.0.0:9479"]
