#!/usr/bin/env bash
# The headless browser that tests/test_serve_browser.py drives: Debian's chromium + chromium-driver, used through
# selenium (nothing downloads a browser build at run time). `make test` runs this once per venv (a stamp).
#   bash scripts/setup-browser.sh [VENV]
# Idempotent: does nothing when `chromium` and `chromedriver` are already on PATH. Without root or password-less
# sudo (or without apt) it installs nothing, prints one line saying why, and writes that line to
# VENV/sfv-browser-skip.txt, which the browser test reports as its skip reason. It never fails the build.
set -uo pipefail
venv="${1:-.venv}"
note="$venv/sfv-browser-skip.txt"

skip() {
  local line="setup-browser: the browser test (tests/test_serve_browser.py) will be skipped: $1"
  echo "$line" >&2
  if [ -d "$venv" ]; then echo "$line" > "$note"; fi
  exit 0
}

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  rm -f "$note"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  skip "chromium/chromedriver are not on PATH and there is no apt-get to install them (install a chromium and its chromedriver yourself)"
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  skip "chromium/chromedriver are not on PATH and apt needs root (not root, no password-less sudo); run 'sudo apt-get install chromium chromium-driver'"
fi

start=$(date +%s)
echo "setup-browser: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get update -qq >/dev/null \
   || ! "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
  skip "'apt-get install chromium chromium-driver' failed (see apt's messages above)"
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  skip "apt installed chromium/chromium-driver but 'chromium' or 'chromedriver' is still not on PATH"
fi
rm -f "$note"
echo "setup-browser: $(chromium --version 2>/dev/null | head -n 1) and chromedriver installed in $(( $(date +%s) - start )) s" >&2
