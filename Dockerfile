# reconciler as a container: mount the specs at /specs and the SSH key/known_hosts they name.
#   docker run --rm -v $PWD/specs:/specs:ro -v /root/.ssh:/root/.ssh:ro reconciler plan /specs
FROM python:3.11-slim-bookworm
WORKDIR /opt/reconciler
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY testbed ./testbed
RUN pip install --no-cache-dir .
ENTRYPOINT ["reconciler"]
CMD ["--help"]
