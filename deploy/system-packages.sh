#!/usr/bin/env bash
# The Debian packages Reverie uses beyond Python: bubblewrap (bash's sandbox), socat (the
# sandbox's bridge to its egress proxy), python3-venv (for `make venv` on Debian's Python) and
# nodejs with npm (the official TypeScript SDK's smoke test, tests/ts; Debian 12's Node.js 18
# runs it, and a newer node already on the machine is kept) and curl (the README's HTTP API
# examples, which a test runs as written), postgresql (Debian's server, for the multi-process test)
# and util-linux (setpriv, which runs that test's workers as other users).
# Installs what is missing when it can (as root, or with passwordless sudo), saying so in one
# line; otherwise says in one line what to install and carries on: Reverie then runs without
# them (bash is refused, or unsandboxed with REVERIE_SANDBOX=none) and the tests that need
# them are skipped, naming why.
set -uo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Debian's PostgreSQL server: the multi-process test runs Reverie against it (issue 21).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
"${PYTHON:-python3}" -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "reverie: not a Debian/Ubuntu system; please install: ${missing[*]} (carrying on without)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "reverie: missing system packages; run: sudo apt-get install ${missing[*]} (carrying on without)"
  exit 0
fi
echo "reverie: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1 ||
  { "${sudo[@]}" apt-get update >>"$log" 2>&1 &&
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }; }; then
  echo "reverie: apt-get could not install ${missing[*]} (see $log); carrying on without"
  exit 0
fi
rm -f "$log"
