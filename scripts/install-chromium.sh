#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the report's browser test.
# Idempotent: does nothing when /usr/bin/chromium already exists. Quiet: prints one line.
# Needs root (apt-get); used by tests/report/test_browser.py, which skips when Chromium is absent.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "install-chromium.sh: need root to run apt-get (run as root or install sudo)" >&2
        exit 1
    fi
else
    SUDO=
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed $(/usr/bin/chromium --version) in $(( $(date +%s) - start )) s"
