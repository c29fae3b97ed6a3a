#!/bin/sh
# Install autoscaler as a systemd service: venv in /opt/autoscaler, config in /etc/autoscaler,
# state in /var/lib/autoscaler, unit autoscaler.service. Safe to run again to upgrade: the
# venv is refreshed, an existing config is never overwritten.
#
# Usage (as root, from a checkout):  deploy/install-systemd.sh [--no-gpu] [--no-start]
#   --no-gpu     skip the nvidia-ml-py extra (hosts without NVIDIA GPUs)
#   --no-start   install and enable, but do not start (e.g. to edit the config first)
# Environment:   PYTHON (default python3, >= 3.11), PREFIX (default /opt/autoscaler),
#                pip's own settings (PIP_INDEX_URL, PIP_CERT, ...) pass through.
set -eu
# The venv must be readable by the service user whatever root's umask (027 on CIS-hardened
# hosts would leave /opt/autoscaler 0750 root:root and ExecStart unrunnable).
umask 022

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/autoscaler}
PYTHON=${PYTHON:-python3}
GPU=1
START=1
for arg in "$@"; do
    case "$arg" in
        --no-gpu) GPU=0 ;;
        --no-start) START=0 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
"$PYTHON" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' || {
    echo "$PYTHON must be Python >= 3.11 with the venv module (apt-get install python3-venv)" >&2
    exit 1
}

# 1. The service user: no login, no home outside the state directory.
if ! id autoscaler >/dev/null 2>&1; then
    group=--user-group  # a group of that name left from an earlier install: join it
    getent group autoscaler >/dev/null 2>&1 && group="--gid autoscaler"
    useradd --system $group --home-dir /var/lib/autoscaler --no-create-home \
        --shell /usr/sbin/nologin autoscaler
fi

# 2. The venv, owned by root: the service can run it but not change it.
if [ ! -x "$PREFIX/bin/python" ]; then
    "$PYTHON" -m venv "$PREFIX"
fi
target="$SRC"
[ "$GPU" = 1 ] && target="$SRC[gpu]"
"$PREFIX/bin/pip" install --quiet --upgrade "$target"
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

# 3. Config: the reference file on first install only; readable by the service, not others.
install -d -m 0755 /etc/autoscaler
if [ ! -e /etc/autoscaler/config.toml ]; then
    install -m 0640 -g autoscaler "$SRC/config.toml" /etc/autoscaler/config.toml
    echo "installed the reference config: edit /etc/autoscaler/config.toml"
fi
install -d -m 0750 -o autoscaler -g autoscaler /var/lib/autoscaler

# 4. The unit, and a drop-in where the host lacks what the unit assumes.
install -m 0644 "$SRC/deploy/autoscaler.service" /etc/systemd/system/autoscaler.service
dropin=/etc/systemd/system/autoscaler.service.d
if ! getent group docker >/dev/null; then
    install -d -m 0755 "$dropin"
    printf '[Service]\n# No docker group on this host.\nSupplementaryGroups=\n' \
        > "$dropin/10-no-docker-group.conf"
elif [ -e "$dropin/10-no-docker-group.conf" ]; then
    rm -f "$dropin/10-no-docker-group.conf"
fi

# 5. Check the config as the service will read it (secrets files must be readable by it).
if command -v runuser >/dev/null; then
    runuser -u autoscaler -- "$PREFIX/bin/autoscaler" check /etc/autoscaler/config.toml \
        || echo "warning: the config does not validate yet; fix it before starting" >&2
fi

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable autoscaler.service
    if [ "$START" = 1 ]; then
        systemctl restart autoscaler.service
        systemctl --no-pager status autoscaler.service || true
    fi
else
    echo "systemd is not running here: unit installed, not enabled"
fi
