#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) for the report tests (docs/report.md).
#
# Idempotent and quiet: exits 0 at once when a chromium binary is already on PATH. Needs root
# for apt-get; as another user it says what is missing and exits 1 (the browser tests then skip
# with that reason).
#
# Environment:
#   TRAINSET_BROWSER_NO_APT  set to 1 to refuse installing missing Debian packages
set -euo pipefail

say() { echo "install-browser: $*"; }
die() { echo "install-browser: error: $*" >&2; exit 1; }

for prog in chromium chromium-browser; do
    if command -v "$prog" >/dev/null 2>&1; then
        say "$prog already installed ($(command -v "$prog")); nothing to do"
        exit 0
    fi
done
[ "${TRAINSET_BROWSER_NO_APT:-0}" = 1 ] && die "chromium is missing and TRAINSET_BROWSER_NO_APT=1"
[ "$(id -u)" -eq 0 ] || die "chromium is missing; run as root to install the Debian package"

say "installing chromium (Debian package)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 \
         && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
    || die "apt-get install chromium failed"
command -v chromium >/dev/null 2>&1 || die "chromium is not on PATH after installing it"
say "chromium installed: $(chromium --version 2>/dev/null || echo unknown version)"
