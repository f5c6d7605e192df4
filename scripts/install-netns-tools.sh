#!/usr/bin/env bash
# Installs iproute2 (`ip netns`, veth, bridge) and iptables for the partition test
# (tidal-cli/tests/cluster_netns.rs). Does nothing when both are there.
set -euo pipefail

if command -v ip >/dev/null && command -v iptables >/dev/null; then
    exit 0
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi
echo "installing iproute2 and iptables (for the network-namespace partition test)"
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 iptables
command -v ip >/dev/null && command -v iptables >/dev/null
