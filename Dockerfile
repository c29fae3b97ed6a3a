# autoscaler: the service image (sidecar in a Docker Swarm).
#
#   docker build -t autoscaler:latest .                              # from python:3.11-slim
#   deploy/build-base-image.sh                                       # no registry: make a base
#   docker build --build-arg BASE_IMAGE=autoscaler-base:bookworm \
#                --build-arg DOCKER_GID="$(stat -c %g /var/run/docker.sock)" -t autoscaler:latest .
#   deploy/build-image.sh does the last two, and the CA bundle step below.
#
# Build arguments
#   BASE_IMAGE   any Debian-like image with python3 >= 3.11 and the venv module. Both stages use
#                it, so the venv's interpreter link (/usr/local/bin/python3 in python:3.11-slim,
#                /usr/bin/python3 in the debootstrap base) resolves in the final image.
#   DOCKER_GID   gid of the group owning /var/run/docker.sock on the swarm nodes; the
#                non-root user `autoscaler` is added to it, so it can use the mounted socket.
#                If the socket is root:root 0600 instead, run the container as root
#                (`user: "0:0"` in deploy/stack.yml).
#   PIP_CERT     CA bundle (path inside the builder) for pip. Where TLS to PyPI is intercepted,
#                copy the host bundle into deploy/ca/ca-certificates.crt first (the build script
#                does): it is picked up automatically, and only the throw-away builder stage
#                sees it. The classic builder (no BuildKit/buildx on these hosts) has no build
#                secrets, so the bundle travels in the build context instead.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   passed to pip when given.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG PIP_CERT
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120
COPY deploy/ca/ /tmp/build-ca/
RUN python3 -m venv /opt/autoscaler
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a source change reuses this layer:
# the empty package directories make a wheel with no modules but the full dependency list
# (and an empty README.md stands in for the real one, so editing the docs keeps it too).
COPY pyproject.toml ./
RUN set -eu; \
    if [ -z "${PIP_CERT:-}" ] && [ -f /tmp/build-ca/ca-certificates.crt ]; then \
        PIP_CERT=/tmp/build-ca/ca-certificates.crt; fi; \
    if [ -n "${PIP_CERT:-}" ]; then export PIP_CERT SSL_CERT_FILE="$PIP_CERT"; else unset PIP_CERT; fi; \
    mkdir -p autoscaler policies forecasting remediation; : > README.md; \
    /opt/autoscaler/bin/pip install . ; \
    /opt/autoscaler/bin/pip uninstall -y autoscaler; \
    rm -rf autoscaler policies forecasting remediation build ./*.egg-info README.md
COPY README.md ./
COPY autoscaler ./autoscaler
COPY policies ./policies
COPY forecasting ./forecasting
COPY remediation ./remediation
RUN set -eu; \
    if [ -z "${PIP_CERT:-}" ] && [ -f /tmp/build-ca/ca-certificates.crt ]; then \
        PIP_CERT=/tmp/build-ca/ca-certificates.crt; fi; \
    if [ -n "${PIP_CERT:-}" ]; then export PIP_CERT SSL_CERT_FILE="$PIP_CERT"; else unset PIP_CERT; fi; \
    /opt/autoscaler/bin/pip install --no-deps .

FROM ${BASE_IMAGE}
ARG DOCKER_GID=999
ARG AUTOSCALER_UID=10001
# The user joins the group that owns the Docker socket (created here if the image has no
# group with that gid) and nothing else.
RUN set -eu; \
    group=$(getent group "${DOCKER_GID}" | cut -d: -f1); \
    if [ -z "$group" ]; then group=docker-sock; groupadd --system --gid "${DOCKER_GID}" "$group"; fi; \
    useradd --uid "${AUTOSCALER_UID}" --user-group --groups "$group" \
        --home-dir /var/lib/autoscaler --no-create-home --shell /usr/sbin/nologin autoscaler; \
    install -d -o autoscaler -g autoscaler -m 0750 /var/lib/autoscaler; \
    install -d -m 0755 /etc/autoscaler
COPY --from=builder /opt/autoscaler /opt/autoscaler
COPY config.toml /etc/autoscaler/config.example.toml
ENV PATH=/opt/autoscaler/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTOSCALER_HEALTHZ_URL=http://127.0.0.1:8080/healthz
# State (journal, cooldowns, breakers) lives here; mount a volume so a restart keeps it.
WORKDIR /var/lib/autoscaler
VOLUME /var/lib/autoscaler
USER autoscaler
EXPOSE 8080
# No curl in slim images: the probe is the venv's python. /healthz is 503 when the loop stalls.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u\ntry:\n    u.urlopen(os.environ['AUTOSCALER_HEALTHZ_URL'], timeout=4)\nexcept Exception as e:\n    sys.exit(f'unhealthy: {e}')"]
# PID 1 here: the command handles SIGTERM from its first line (autoscaler/entry.py), so a
# stop during start-up is not ignored until the grace period ends.
ENTRYPOINT ["autoscaler"]
CMD ["run", "--config", "/etc/autoscaler/config.toml"]
