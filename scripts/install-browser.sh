#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (and chromedriver) for the UI test (tests/test_ui.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. Never fails the build: without
# root (or sudo) or without a package mirror it says what to run by hand, and the UI test then skips.
set -uo pipefail

CHROMIUM=${AVATAR_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-browser: $CHROMIUM is missing and this user cannot install packages (no root, no passwordless sudo)." >&2
    echo "install-browser: run as root:  apt-get update && apt-get install -y chromium chromium-driver" >&2
    echo "install-browser: until then the UI test (tests/test_ui.py) is skipped." >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install Chromium by hand (or set AVATAR_CHROMIUM=/path/to/chromium)." >&2
    exit 0
fi

echo "install-browser: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core; }; then
    echo "install-browser: apt-get failed; the UI test (tests/test_ui.py) will be skipped." >&2
    exit 0
fi
"$CHROMIUM" --version || true
