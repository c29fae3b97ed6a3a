#!/bin/sh
# Build the service image from the Dockerfile, on hosts without a registry.
#
# Usage:  deploy/build-image.sh [IMAGE]           default IMAGE autoscaler:latest
# Environment:
#   BASE_IMAGE   default autoscaler-base:bookworm, built first by deploy/build-base-image.sh
#                when missing (needs root and debootstrap); set python:3.11-slim where a
#                registry is reachable.
#   PIP_CERT     CA bundle pip must trust (default: /etc/ssl/certs/ca-certificates.crt when it
#                exists); copied into deploy/ca/ for the builder stage only.
#   DOCKER_GID   gid owning the Docker socket on the nodes that run the sidecar (default: the
#                gid of /var/run/docker.sock here).
set -eu
case ${1:-} in
    -h|--help) sed -n '/^set -eu/q;2,$p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1 (usage: $0 [IMAGE])" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

IMAGE=${1:-autoscaler:latest}
BASE_IMAGE=${BASE_IMAGE:-autoscaler-base:bookworm}
CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
DOCKER_GID=${DOCKER_GID:-$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 999)}

if [ "$BASE_IMAGE" = autoscaler-base:bookworm ]; then
    deploy/build-base-image.sh "$BASE_IMAGE"
fi
if [ -f "$CA" ]; then
    cp "$CA" deploy/ca/ca-certificates.crt
fi

# The classic builder: these hosts have no buildx, and nothing here needs BuildKit.
DOCKER_BUILDKIT=0 docker build \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg DOCKER_GID="$DOCKER_GID" \
    --tag "$IMAGE" .
