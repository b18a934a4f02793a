# reconciler as a container: the daemon by default, with specs and SSH material mounted read-only.
#   docker build -t reconciler .
#   docker run -d --name reconciler -p 127.0.0.1:9479:9479 \
#     -v /etc/reconciler/specs:/etc/reconciler/specs:ro -v /etc/reconciler/ssh:/etc/reconciler/ssh:ro reconciler
# (the specs' identityFile/knownHosts must point under /etc/reconciler/ssh, readable by the image's user
# `reconciler`, the key owned by it and 0600 as ssh wants). One-shot commands:
#   docker run --rm -v ...:ro reconciler plan /etc/reconciler/specs
# Any Debian bookworm image with python3 and python3-venv is a base (the tests build one with debootstrap and
# install from a wheelhouse in the context, offline):
#   --build-arg BASE=localhost/reconciler-base:bookworm --build-arg PIP_ARGS="--no-index --find-links wheels"
# The dependencies, and setuptools to build with, are installed at constraints.txt's versions (what was tested).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG PIP_ARGS=""
WORKDIR /opt/reconciler/src
COPY . .
RUN python3 -m venv /opt/reconciler/venv \
 && PIP_CONSTRAINT=/opt/reconciler/src/constraints.txt /opt/reconciler/venv/bin/pip install --no-cache-dir \
      --disable-pip-version-check ${PIP_ARGS} . \
 && cd / && rm -rf /opt/reconciler/src \
 && useradd --system --home-dir /var/lib/reconciler --create-home --shell /usr/sbin/nologin reconciler
ENV PATH=/opt/reconciler/venv/bin:$PATH
WORKDIR /var/lib/reconciler
USER reconciler
EXPOSE 9479
ENTRYPOINT ["reconciler", "--log-format", "json"]
CMD ["run", "--specs", "/etc/reconciler/specs", "--listen", "0.0.0.0:9479"]
