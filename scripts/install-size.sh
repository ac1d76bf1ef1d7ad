#!/usr/bin/env bash
# What an install costs: a fresh venv, `pip install SPEC` timed, then the size of site-packages
# and the number of distributions. SPEC is what pip is given, e.g. `.` (the core), '.[all]',
# '.[dev]', or a path to another checkout. The venv is removed at the end unless KEEP=1.
#
#   bash scripts/install-size.sh .            # the core
#   bash scripts/install-size.sh '.[all]'     # every extra
#
# pip's cache is not used (PIP_NO_CACHE_DIR=1), so every run downloads what it installs; the
# machine's load is printed with the figures (`uptime`), since it changes the time.
set -euo pipefail
SPEC=${1:?usage: install-size.sh SPEC}
PYTHON=${PYTHON:-python3}
VENV=$(mktemp -d "${TMPDIR:-/tmp}/yingyan-size-XXXXXX")
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$VENV"; }
trap cleanup EXIT

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
before=$(uptime)
start=$(date +%s.%N)
PIP_NO_CACHE_DIR=1 "$VENV/bin/pip" install --quiet "$SPEC"
end=$(date +%s.%N)
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
seconds=$("$PYTHON" -c "print(round($end - $start, 1))")
size=$(du -sm "$site" | cut -f1)
count=$("$VENV/bin/pip" list --format=freeze 2>/dev/null | wc -l)
echo "spec: $SPEC"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "load before: $before"
echo "load after:  $(uptime)"
echo "pip install: ${seconds} s"
echo "site-packages: ${size} MB, ${count} distributions"
if [ -n "${LIST:-}" ]; then
  du -sm "$site"/* | sort -rn | head -"${LIST}"
fi
