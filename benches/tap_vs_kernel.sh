#!/usr/bin/env bash
# Pod-to-pod throughput through podplane on TAP and through the Linux kernel, side by
# side in one run on the same machine, as ratios to the kernel.
#
#   sudo benches/tap_vs_kernel.sh [rounds] [seconds]     (defaults: 3 rounds of 3 s)
#
# Two pods (network namespaces with real Linux stacks) exchange traffic through:
#   kernel-bridge   veth pairs on a Linux bridge in a node namespace (Flannel's cni0)
#   kernel-route    veth pairs routed by a node namespace (Calico-style /32 routing)
#   podplane-uring  `podplane run --io uring`, a TAP per pod (bridge), offloads on
#   podplane-poll   `podplane run --io poll`, the same
#   podplane-uring-nooffload  io_uring with TAP offloads off (no TSO: the gain of it)
#   podplane-uring-unregistered-nooffload  the same without registered buffers
# Tests: 64-byte UDP frames (iperf3 -u -l 18 -b 0; packets/s the receiver got) and
# bulk TCP (iperf3, Gbit/s). Busy cores are measured from /proc/stat over each test
# (every core: sender, receiver, softirq and podplane), so "per busy core" compares
# the work each path needs, not only its speed. The rounds are interleaved
# (kernel and podplane alternate) because medians drift 15-25 % between runs here.
# Traffic stays inside the namespaces this script creates; it removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-3}
P=ppbench
[ "$(id -u)" = 0 ] || { echo "tap_vs_kernel.sh: run as root" >&2; exit 1; }
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p podplane-cli
BIN=${CARGO_TARGET_DIR:-target}/release/podplane
WORK=$(mktemp -d /tmp/podplane-bench.XXXXXX)
PID=""
# shellcheck source=scripts/netns-lib.sh
. scripts/netns-lib.sh
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  PID=""
  remove_prefixed "$P"
}
trap 'cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

pods() { ip netns add "$P-a"; ip netns add "$P-b"; ip -n "$P-a" link set lo up; ip -n "$P-b" link set lo up; }

setup() {
  cleanup
  pods
  case $1 in
    kernel-bridge)
      ip netns add "$P-node"
      ip -n "$P-node" link add br0 type bridge
      ip -n "$P-node" link set br0 up
      for x in a b; do
        ip -n "$P-node" link add "v$x" type veth peer name eth0 netns "$P-$x"
        ip -n "$P-node" link set "v$x" master br0 up
      done
      ip -n "$P-a" addr add 10.244.1.2/24 dev eth0; ip -n "$P-b" addr add 10.244.1.3/24 dev eth0
      for x in a b; do ip -n "$P-$x" link set eth0 up; done
      B_IP=10.244.1.3 ;;
    kernel-route)
      ip netns add "$P-node"
      ip netns exec "$P-node" sysctl -qw net.ipv4.ip_forward=1
      # The node's own address and default route (proxy ARP answers for 169.254.1.1
      # only when the node has a route to it through another device, as on a host).
      # (a veth pair stands in for the NIC: this kernel has no dummy driver).
      ip -n "$P-node" link add up0 type veth peer name up1
      ip -n "$P-node" addr add 192.168.0.11/32 dev up0
      ip -n "$P-node" link set up0 up; ip -n "$P-node" link set up1 up
      ip -n "$P-node" route add default dev up0
      for x in a b; do
        ip -n "$P-node" link add "v$x" type veth peer name eth0 netns "$P-$x"
        ip -n "$P-node" link set "v$x" up
        ip netns exec "$P-node" sysctl -qw "net.ipv4.conf.v$x.proxy_arp=1"
        ip -n "$P-$x" link set eth0 up
      done
      ip -n "$P-a" addr add 10.244.1.2/32 dev eth0; ip -n "$P-b" addr add 10.244.1.3/32 dev eth0
      for x in a b; do
        ip -n "$P-$x" route add 169.254.1.1 dev eth0 scope link
        ip -n "$P-$x" route add default via 169.254.1.1 dev eth0
      done
      ip -n "$P-node" route add 10.244.1.2/32 dev va; ip -n "$P-node" route add 10.244.1.3/32 dev vb
      B_IP=10.244.1.3 ;;
    podplane-*)
      cat >"$WORK/node.yaml" <<YAML
name: bench
podCIDR: 10.244.1.0/24
ports:
  - {name: $P-ta, kind: tap, role: pod}
  - {name: $P-tb, kind: tap, role: pod}
YAML
      local io=${1#podplane-} off=on
      [ "${io%-nooffload}" != "$io" ] && { io=${io%-nooffload}; off=off; }
      "$BIN" run --config "$WORK/node.yaml" --io "$io" --offload "$off" 2>"$WORK/run.log" &
      PID=$!
      for _ in $(seq 100); do ip link show "$P-tb" >/dev/null 2>&1 && break; sleep 0.1; done
      ip link set "$P-ta" netns "$P-a"; ip link set "$P-tb" netns "$P-b"
      ip -n "$P-a" addr add 10.244.1.2/24 dev "$P-ta"; ip -n "$P-b" addr add 10.244.1.3/24 dev "$P-tb"
      ip -n "$P-a" link set "$P-ta" up; ip -n "$P-b" link set "$P-tb" up
      B_IP=10.244.1.3 ;;
  esac
  ip netns exec "$P-a" ping -c 2 -i 0.2 -W 2 "$B_IP" >/dev/null
}

busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# measure KIND: prints "udp_pps udp_busy_cores tcp_gbps tcp_busy_cores"
measure() {
  ip netns exec "$P-b" iperf3 -s -D -p 5201 -B "$B_IP" --pidfile "$WORK/srv.pid" >/dev/null
  sleep 0.3
  read -r b0 t0 < <(busy_jiffies)
  ip netns exec "$P-a" iperf3 -c "$B_IP" -p 5201 -u -l 18 -b 0 -t "$SECS" -J >"$WORK/udp.json" || true
  read -r b1 t1 < <(busy_jiffies)
  ip netns exec "$P-a" iperf3 -c "$B_IP" -p 5201 -t "$SECS" -J >"$WORK/tcp.json" || true
  read -r b2 t2 < <(busy_jiffies)
  kill "$(cat "$WORK/srv.pid")" 2>/dev/null || true
  python3 - "$WORK/udp.json" "$WORK/tcp.json" "$b0" "$t0" "$b1" "$t1" "$b2" "$t2" "$(nproc)" <<'PY'
import json, sys
udp, tcp = (json.load(open(f)) for f in sys.argv[1:3])
b0, t0, b1, t1, b2, t2, n = map(float, sys.argv[3:])
u = udp["end"]["sum"]
pps = (u["packets"] - u["lost_packets"]) / u["seconds"]
gbps = tcp["end"]["sum_received"]["bits_per_second"] / 1e9
# cores busy = busy jiffies / all jiffies * cores
print(f"{pps:.0f} {(b1-b0)/(t1-t0)*n:.2f} {gbps:.2f} {(b2-b1)/(t2-t1)*n:.2f}")
PY
}

KINDS=(kernel-bridge podplane-uring kernel-route podplane-poll podplane-uring-nooffload
  podplane-uring-unregistered-nooffload)
: >"$WORK/results"
for r in $(seq "$ROUNDS"); do
  for k in "${KINDS[@]}"; do
    setup "$k"
    echo "$k $(measure "$k")" | tee -a "$WORK/results" >&2
    cleanup
  done
done
python3 - "$WORK/results" "$(nproc)" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    k, *v = line.split()
    rows.setdefault(k, []).append([float(x) for x in v])
med = {k: [st.median(c) for c in zip(*v)] for k, v in rows.items()}
print(f"\npod-to-pod, {sys.argv[2]} cores, median of {len(next(iter(rows.values())))} interleaved rounds")
print(f"{'path':38} {'UDP64 pps':>11} {'busy cores':>10} {'pps/core':>10} {'TCP Gbit/s':>11} {'busy cores':>10} {'Gbit/s/core':>11}")
for k, (pps, uc, g, tc) in med.items():
    print(f"{k:38} {pps:11.0f} {uc:10.2f} {pps/max(uc,0.01):10.0f} {g:11.2f} {tc:10.2f} {g/max(tc,0.01):11.2f}")
base = med.get("kernel-bridge")
if base:
    print("\nratio to kernel-bridge (pps, pps per busy core, Gbit/s, Gbit/s per busy core):")
    for k, (pps, uc, g, tc) in med.items():
        r = (pps / base[0], (pps/uc) / (base[0]/base[1]), g / base[2], (g/tc) / (base[2]/base[3]))
        print(f"  {k:38} " + "  ".join(f"{x:5.2f}" for x in r))
PY
