#!/bin/sh
# Installs the peers the benchmark compares with (earlyoom 1.7, nohang 0.2.0
# from Debian) and the plotting library, WITHOUT starting any service:
# policy-rc.d answers 101 ("action forbidden") to every invoke-rc.d call.
# The peers are then only ever run by the bench, in a PID namespace and in
# dry run.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "setup-peers.sh: run as root (apt-get)" >&2
    exit 2
fi
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
if ! command -v earlyoom >/dev/null || ! command -v nohang >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq earlyoom nohang
fi
# A service that was enabled by the packages must not be running.
for unit in earlyoom nohang nohang-desktop; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl stop "$unit" >/dev/null 2>&1 || true
        systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
done
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
python3 -c 'import matplotlib' 2>/dev/null || python -m pip install -q matplotlib
echo "earlyoom: $(earlyoom -v 2>&1 | head -1)"
echo "nohang: $(nohang --version 2>&1 | head -1)"
