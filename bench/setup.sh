#!/bin/sh
# Installs what the benchmarks need: nginx and wrk from Debian's packages, and
# python-tuf 7.0.1 (the peer the client is measured against) into the venv.
# Idempotent: re-running it only checks that everything is present.
set -eu
VENV="${VENV:-/work/venv}"
missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=""; fi
    $SUDO apt-get update
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
# The `bench` extra of pyproject.toml: python-tuf, the peer the client is compared with.
"$VENV/bin/python" -c "import tuf, sys; sys.exit(tuf.__version__ != '7.0.1')" 2>/dev/null \
    || "$VENV/bin/python" -m pip install --quiet "tuf==7.0.1"
"$VENV/bin/python" -c "import tuf; print('python-tuf', tuf.__version__)"
nginx -v 2>&1 || /usr/sbin/nginx -v
wrk --version 2>&1 | head -1 || true
