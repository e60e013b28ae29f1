#!/usr/bin/env bash
# The whole test suite: every crate's unit, property and integration tests in
# parallel, then the tests that need root (TAP devices, network namespaces) as their
# own serial step. Run as root to include those; without root they say SKIPPED, and
# under CI=true a missing capability fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# As root, install what the tests call: ip and ping (the netns tests), nft (the
# kernel NAT and services differential tests) and tshark (it reads the replay outputs back). Without them those tests skip, or fail under CI=true.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ "$(id -u)" = 0 ] && [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (the root and replay tests call them)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The root tests (TAP devices, network namespaces) run apart, one at a time.
cargo test --workspace --exclude podplane-tap -- --skip podplane_run_forwards --skip podplane_and_a_linux_vxlan_node \
  --skip two_podplane_nodes_over_vxlan --skip pods_keep_their_transfer --skip nat_matches_the_kernel_packet_for_packet \
  --skip pmtu_discovery_through_masquerade --skip services_match_kube_proxy_nftables_in_the_kernel \
  --skip host_reaches
cargo test -p podplane-tap -- --test-threads=1
cargo test -p podplane-cli --test run_tap --test vxlan_interop --test tap_nodes --test nat_kernel --test nat_tap \
  --test services_kernel --test services_tap -- --test-threads=1
