#!/usr/bin/env bash
# Builds a minimal Debian root with systemd, for tests/test_systemd.py to boot
# with systemd-nspawn (run as root). Idempotent: an existing, complete root is
# kept, so only the first run downloads (about 100 MB, a minute).
#
#   OORKILLER_SYSTEMD_ROOT  where the root lives (default /var/tmp/oorkiller-systemd-root)
#   DEBIAN_MIRROR           the mirror debootstrap uses (default http://deb.debian.org/debian)
#
# The test never changes this root: it boots it with --volatile=overlay.
set -euo pipefail
ROOT=${OORKILLER_SYSTEMD_ROOT:-/var/tmp/oorkiller-systemd-root}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
READY=$ROOT/.oorkiller-root-complete

[ -e "$READY" ] && exit 0

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Built aside and renamed at the end: an interrupted build is never taken for a root.
building=$ROOT.building
rm -rf "$building"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,python3 \
    "$SUITE" "$building" "$MIRROR" >/dev/null
echo oorkiller-test > "$building/etc/hostname"
: > "$building/etc/machine-id"              # systemd makes one at each boot
touch "$building/.oorkiller-root-complete"
rm -rf "$ROOT"
mv "$building" "$ROOT"
