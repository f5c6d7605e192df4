#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages `chromium` and
# `chromium-driver`) for the browser test (forage/tests/browser.rs). Does nothing when both
# binaries are already there, so the test script can call it on every run.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi

# Use sudo only when we are not root (CI containers usually run as root without sudo).
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

echo "installing chromium and chromium-driver (for the browser test)"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver

for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$binary" ]; then
        echo "install-browser.sh: $binary is still missing after apt-get install" >&2
        exit 1
    fi
done
