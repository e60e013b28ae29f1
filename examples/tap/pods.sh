#!/usr/bin/env bash
# Real pods on podplane: Linux network namespaces with real TCP stacks, each wired to a
# podplane process by a TAP device, and podplane the only thing between them.
#
#   sudo examples/tap/pods.sh one-node   # 3 pods on one node (Flannel cni0 style bridge)
#   sudo examples/tap/pods.sh two-node   # 2 podplane nodes joined by VXLAN over an underlay bridge
#   sudo examples/tap/pods.sh mixed      # a podplane node and a plain Linux node (Flannel's VXLAN setup)
#   sudo examples/tap/pods.sh all        # the three in turn
#
# Needs root (TAP devices, network namespaces); installs iproute2, iputils-ping,
# curl and iperf3 with apt-get when they are missing. Every address used is inside
# the namespaces this script creates; they, the TAPs and the podplane processes are
# removed on exit, Ctrl-C included. Options: IO=uring|poll|auto (podplane run --io).
set -euo pipefail
cd "$(dirname "$0")/../.."
IO=${IO:-auto}
P=ppex                      # prefix of every namespace, TAP and file this script makes
WORK=$(mktemp -d /tmp/podplane-example.XXXXXX)
PIDS=()

[ "$(id -u)" = 0 ] || { echo "pods.sh: run as root (TAP devices and network namespaces)" >&2; exit 1; }
[ -e /dev/net/tun ] || { echo "pods.sh: no /dev/net/tun" >&2; exit 1; }

# shellcheck source=scripts/netns-lib.sh
. scripts/netns-lib.sh
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  remove_prefixed "$P"
}
trap 'cleanup; rm -rf "$WORK"' EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v curl >/dev/null || need+=(curl)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v bridge >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PY=$(command -v python3)

echo "building podplane (release)"
cargo build --release -q -p podplane-cli
BIN=${CARGO_TARGET_DIR:-target}/release/podplane

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# start_node NAME CONFIG [OBJECTS]: podplane run in the background, log in $WORK/NAME.log
start_node() {
  local name=$1 cfg=$2 objs=${3:-}
  local args=(run --config "$cfg" --io "$IO")
  [ -n "$objs" ] && args+=(--objects "$objs")
  "$BIN" "${args[@]}" 2>"$WORK/$name.log" &
  PIDS+=($!)
}

wait_link() { for _ in $(seq 100); do ip link show "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no $1" >&2; cat "$WORK"/*.log >&2; exit 1; }

# pod NS TAP ADDR/LEN GW [MTU]: a pod namespace on TAP, default route via GW
pod() {
  local ns=$1 tap=$2 addr=$3 gw=$4 mtu=${5:-1500}
  ip netns add "$ns"
  wait_link "$tap"
  ip link set "$tap" netns "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$tap" mtu "$mtu" up
  ip -n "$ns" addr add "$addr" dev "$tap"
  ip -n "$ns" route add default via "$gw"
}

# traffic FROM_NS TO_NS TO_IP: ping, an HTTP GET, a 16 MiB download checked by sha256, iperf3
traffic() {
  local from=$1 to=$2 dst=$3
  say "ping $dst from $from"
  in_ns "$from" ping -c 3 -i 0.2 -W 2 "$dst"
  mkdir -p "$WORK/www-$to"
  head -c $((16 << 20)) /dev/urandom >"$WORK/www-$to/blob"
  echo "hello from $to" >"$WORK/www-$to/index.html"
  (cd "$WORK/www-$to" && exec ip netns exec "$to" "$PY" -m http.server 8080 --bind "$dst" >/dev/null 2>&1) &
  PIDS+=($!)
  for _ in $(seq 50); do in_ns "$from" curl -s -o /dev/null "http://$dst:8080/" && break; sleep 0.1; done
  say "HTTP GET http://$dst:8080/ from $from"
  in_ns "$from" curl -sS --max-time 5 "http://$dst:8080/index.html"
  say "TCP: 16 MiB over HTTP from $to to $from, checked"
  in_ns "$from" curl -sS --max-time 30 -o "$WORK/got" -w 'received %{size_download} bytes at %{speed_download} bytes/s\n' "http://$dst:8080/blob"
  if [ "$(sha256sum <"$WORK/got")" = "$(sha256sum <"$WORK/www-$to/blob")" ]; then echo "sha256 matches"; else echo "sha256 MISMATCH" >&2; exit 1; fi
  say "iperf3 $from -> $dst (3 s)"
  in_ns "$to" iperf3 -s -1 -B "$dst" -p 5201 >/dev/null 2>&1 &
  PIDS+=($!)
  sleep 0.5
  in_ns "$from" iperf3 -c "$dst" -p 5201 -t 3 -f m | grep -E 'sender|receiver'
}

one_node() {
  say "one node, three pods on a bridge (10.244.1.0/24, gateway 10.244.1.1)"
  cat >"$WORK/node.yaml" <<YAML
name: $P-node
podCIDR: 10.244.1.0/24
ports:
  - {name: $P-a, kind: tap, role: pod}
  - {name: $P-b, kind: tap, role: pod}
  - {name: $P-c, kind: tap, role: pod}
YAML
  start_node node "$WORK/node.yaml"
  pod "$P-a" "$P-a" 10.244.1.2/24 10.244.1.1
  pod "$P-b" "$P-b" 10.244.1.3/24 10.244.1.1
  pod "$P-c" "$P-c" 10.244.1.4/24 10.244.1.1
  head -n 4 "$WORK/node.log"
  traffic "$P-a" "$P-b" 10.244.1.3
  say "ping 10.244.1.4 from $P-c's neighbour $P-b"
  in_ns "$P-b" ping -c 2 -i 0.2 -W 2 10.244.1.4
  cleanup
}

# node_files N UNDERLAY_IP PEER_NAME PEER_IP PEER_CIDR PEER_VTEP: a VXLAN node and its peer's Node object
node_files() {
  local n=$1 ip=$2 pname=$3 pip=$4 pcidr=$5 pvtep=$6
  cat >"$WORK/node$n.yaml" <<YAML
name: node-$n
podCIDR: 10.244.$n.0/24
ports:
  - {name: $P-up$n, kind: tap, role: uplink, address: $ip/24}
  - {name: $P-p$n, kind: tap, role: pod}
overlay: {mode: vxlan}
YAML
  cat >"$WORK/peer$n.yaml" <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $pname
  annotations:
    flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"$pvtep"}'
    flannel.alpha.coreos.com/public-ip: $pip
spec: {podCIDR: $pcidr}
status: {addresses: [{type: InternalIP, address: '$pip'}]}
YAML
}

two_node() {
  say "two podplane nodes, VXLAN (port 8472, VNI 1) over an underlay bridge in namespace $P-underlay"
  ip netns add "$P-underlay"
  ip -n "$P-underlay" link add br0 type bridge
  ip -n "$P-underlay" link set br0 up
  node_files 1 192.168.0.11 node-2 192.168.0.12 10.244.2.0/24 0e:00:c0:a8:00:0c
  node_files 2 192.168.0.12 node-1 192.168.0.11 10.244.1.0/24 0e:00:c0:a8:00:0b
  start_node node1 "$WORK/node1.yaml" "$WORK/peer1.yaml"
  start_node node2 "$WORK/node2.yaml" "$WORK/peer2.yaml"
  for n in 1 2; do
    wait_link "$P-up$n"
    ip link set "$P-up$n" netns "$P-underlay"
    ip -n "$P-underlay" link set "$P-up$n" master br0 up
  done
  pod "$P-pod1" "$P-p1" 10.244.1.2/24 10.244.1.1 1450
  pod "$P-pod2" "$P-p2" 10.244.2.2/24 10.244.2.1 1450
  head -n 5 "$WORK/node1.log"
  traffic "$P-pod1" "$P-pod2" 10.244.2.2
  cleanup
}

mixed() {
  say "a podplane node and a Linux node (kernel vxlan0 + cni0 bridge, as flanneld and the bridge CNI set them up)"
  node_files 1 192.168.0.11 linux-node 192.168.0.12 10.244.2.0/24 0e:00:c0:a8:00:0c
  start_node node1 "$WORK/node1.yaml" "$WORK/peer1.yaml"
  local l=$P-linux
  ip netns add "$l"
  wait_link "$P-up1"
  # The Linux node's NIC is the other end of podplane's uplink TAP.
  ip link set "$P-up1" netns "$l"
  ip -n "$l" link set lo up
  ip -n "$l" addr add 192.168.0.12/24 dev "$P-up1"
  ip -n "$l" link set "$P-up1" up
  ip -n "$l" link add flannel.1 address 0e:00:c0:a8:00:0c type vxlan id 1 local 192.168.0.12 dev "$P-up1" dstport 8472 nolearning
  ip -n "$l" addr add 10.244.2.0/32 dev flannel.1
  ip -n "$l" link set flannel.1 up
  ip -n "$l" neigh add 10.244.1.0 lladdr 0e:00:c0:a8:00:0b dev flannel.1 nud permanent
  ip netns exec "$l" bridge fdb append 0e:00:c0:a8:00:0b dev flannel.1 dst 192.168.0.11
  ip -n "$l" route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink
  ip netns exec "$l" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$l" link add cni0 mtu 1450 type bridge
  ip -n "$l" addr add 10.244.2.1/24 dev cni0
  ip -n "$l" link set cni0 up
  ip netns add "$P-lpod"
  ip -n "$l" link add "$P-veth" mtu 1450 type veth peer name eth0 mtu 1450 netns "$P-lpod"
  ip -n "$l" link set "$P-veth" master cni0 up
  ip -n "$P-lpod" link set lo up
  ip -n "$P-lpod" addr add 10.244.2.2/24 dev eth0
  ip -n "$P-lpod" link set eth0 up
  ip -n "$P-lpod" route add default via 10.244.2.1
  pod "$P-pod1" "$P-p1" 10.244.1.2/24 10.244.1.1 1450
  head -n 5 "$WORK/node1.log"
  traffic "$P-pod1" "$P-lpod" 10.244.2.2
  traffic "$P-lpod" "$P-pod1" 10.244.1.2
  cleanup
}

cleanup
case "${1:-one-node}" in
  one-node) one_node ;;
  two-node) two_node ;;
  mixed) mixed ;;
  all) one_node; two_node; mixed ;;
  *) echo "usage: $0 one-node|two-node|mixed|all" >&2; exit 2 ;;
esac
say "done: namespaces, TAPs and podplane processes removed"
