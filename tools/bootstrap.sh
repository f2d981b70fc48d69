#!/usr/bin/env bash
# Shared by ./run-node and ./run-tests: installs everything the node needs on a
# fresh Debian 12 machine (Debian packages from tools/packages.apt, a venv in
# .venv, this project and its Python dependencies).  Idempotent and quiet when
# there is nothing to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run this as root (it installs Debian packages)" >&2
    exit 1
fi

mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$ROOT/tools/packages.apt")
missing=()
for pkg in "${wanted[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=1200 update -qq
    apt-get -o DPkg::Lock::Timeout=1200 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "bootstrap: creating $ROOT/.venv"
    /usr/bin/python3 -m venv "$ROOT/.venv"
fi
spec="$ROOT"
[ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
"$ROOT/.venv/bin/pip" install -q --disable-pip-version-check "$spec"
