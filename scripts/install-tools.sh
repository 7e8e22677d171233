#!/bin/sh
# Install the system tools the tests use, when we can: root with apt-get.
# promtool (Debian `prometheus`): metrics lint and a real scrape in e2e tests.
# systemd-analyze (Debian `systemd`): verifies the unit files we ship and generate.
set -eu
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: missing system packages:$missing (not root or no apt-get); tests that need them will skip"
    exit 0
fi
echo "installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The Debian prometheus package starts a server on :9090 where it can; we want only its binaries.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
pkill -x prometheus 2>/dev/null || true
