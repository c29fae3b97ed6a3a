#!/bin/sh
# Build a minimal Debian bookworm image with Python 3.11 from scratch, without a registry.
#
# Docker Hub is not reachable from every host this service is deployed on, so the base
# image is made locally: debootstrap a minbase root filesystem with python3, python3-venv,
# python3-pip and ca-certificates, then `docker import` it. The Dockerfile takes it with
#   docker build --build-arg BASE_IMAGE=autoscaler-base:bookworm .
# Its interpreter is /usr/bin/python3 (3.11), not /usr/local/bin/python3 as in python:3.11-slim.
#
# Usage (as root):  deploy/build-base-image.sh [IMAGE]        default IMAGE autoscaler-base:bookworm
# Environment:      MIRROR   Debian mirror (default: the one apt uses on this host)
#                   SUITE    default bookworm
#                   FORCE=1  rebuild even when IMAGE exists (otherwise it is skipped)
#                   CACHE_DIR  keep downloaded .debs here between runs (default /var/cache/autoscaler-debootstrap)
set -eu
case ${1:-} in
    -h|--help) sed -n '/^set -eu/q;2,$p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1 (usage: $0 [IMAGE])" >&2; exit 2 ;;
esac

IMAGE=${1:-autoscaler-base:bookworm}
SUITE=${SUITE:-bookworm}
CACHE_DIR=${CACHE_DIR:-/var/cache/autoscaler-debootstrap}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists; skipping (FORCE=1 rebuilds)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "install debootstrap (apt-get install debootstrap)" >&2; exit 1; }

# Reuse the mirror apt already uses here: hosts without Internet access usually have a
# local or proxied one, and the public default would not answer.
apt_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: first URIs line that points at a Debian archive (not -security).
        uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {
                   for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}
MIRROR=${MIRROR:-$(apt_mirror)}

ROOTFS=$(mktemp -d /var/tmp/autoscaler-rootfs.XXXXXX)
cleanup() {
    # debootstrap mounts /proc and /sys inside the target; a failed run can leave them.
    for m in proc sys dev/pts dev; do
        umount -l "$ROOTFS/$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT INT TERM

mkdir -p "$CACHE_DIR"
echo "debootstrap $SUITE from $MIRROR into $ROOTFS"
debootstrap --variant=minbase --cache-dir="$CACHE_DIR" \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR"

# Trim what a container never needs: package lists, docs, man pages, logs.
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/debootstrap

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/usr/bin/python3"]' \
    --message "debootstrap --variant=minbase $SUITE + python3 from $MIRROR" \
    - "$IMAGE"
docker image inspect --format '{{.Id}} {{.Size}}' "$IMAGE"
