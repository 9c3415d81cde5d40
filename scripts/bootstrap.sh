#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for lamina: the apt packages the real peer
# tools come from, uv, and the project venv. Every step checks first, so a second run on a
# ready machine costs well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(skopeo umoci runc crun containerd busybox-static debootstrap pigz zstd hyperfine docker-registry buildah wrk apache2-utils golang-github-containers-common gcc libc6-dev netavark aardvark-dns catatonit redis-server)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing apt packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
    echo "bootstrap: installing uv" >&2
    python3 -m pip install -q uv
fi

# uv sync is cheap when .venv already matches uv.lock; the stamp makes it free.
if [ ! -x .venv/bin/python ] || [ uv.lock -nt .venv/.synced ] || [ pyproject.toml -nt .venv/.synced ]; then
    # --compile-bytecode: every `lamina` start would otherwise compile aiohttp & co.
    UV_PYTHON_DOWNLOADS=never uv sync --frozen --python python3 --quiet --compile-bytecode
    touch .venv/.synced
fi
# lamina's own modules too (an editable install): start-up time is a feature, and the
# environment may forbid writing bytecode at run time (PYTHONDONTWRITEBYTECODE).
PYTHONDONTWRITEBYTECODE= .venv/bin/python -m compileall -q -j 0 src/lamina >/dev/null
