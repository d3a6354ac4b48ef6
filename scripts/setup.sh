#!/usr/bin/env bash
# Installs what kviz and its tests need on Debian 12, idempotently: system packages, then the
# Python environment in .venv/. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev
  tshark tcpdump iproute2 iptables iputils-ping
  dnsmasq-base nginx-light curl openssl procps
  chromium libcairo2 fonts-dejavu-core
)
# Node.js may come from elsewhere than Debian (these machines ship NodeSource's, whose nodejs
# package conflicts with Debian's npm): ask Debian only for what is missing as a command.
command -v node >/dev/null || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null || APT_PACKAGES+=(npm)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  # wireshark-common asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | as_root debconf-set-selections
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Debian's nginx package starts a host nginx on install; the lab runs its own inside
  # namespaces, so keep the package from starting services here.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && as_root rm -f "$policy"
fi

# Node packages the tests use (the mermaid parser for diagram exports), from the lock file.
js=tests/render/js
js_stamp=$js/node_modules/.kviz-lock.sha
js_want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$js_stamp" 2>/dev/null)" != "$js_want" ]; then
  npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
  echo "$js_want" > "$js_stamp"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt -c constraints.txt
  echo "$want" > "$stamp"
fi

# The analysis' per-packet path compiled with mypyc where a C compiler and Python's headers
# are here (captures/analysis/build.py); without them, or should mypyc refuse, the interpreted
# source runs and gives the same output.
if ! .venv/bin/python scripts/compile_analysis.py --check >/dev/null; then
  .venv/bin/python scripts/compile_analysis.py 2>&1 | tail -n 1 || true
fi
# Byte-compiled as pip compiles what it installs: where PYTHONDONTWRITEBYTECODE is set, each
# command would otherwise parse the project's sources again (a tenth of a second at start).
.venv/bin/python -m compileall -q manage.py kviz captures >/dev/null || true
