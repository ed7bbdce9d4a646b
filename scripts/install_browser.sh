#!/usr/bin/env bash
# Installs Debian's headless Chromium and its chromedriver for the real-browser app test
# (tests/test_app_browser.py). Idempotent: does nothing when both are already installed.
# Needs root (or sudo) and Debian's package registry; about 164 MB to download.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
