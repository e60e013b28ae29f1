#!/usr/bin/env bash
# Instructions per packet, the project's stable performance figure.
#
# Runs the icount harness under `valgrind --tool=callgrind` for each mode at two batch
# counts; (Ir(N2) - Ir(N1)) / ((N2 - N1) * batch) is the cost per packet with start-up
# cancelled. Prints a table. Usage: benches/callgrind.sh [batch] [mix]
#   batch: packets per batch (default 32); mix: udp64 (default) or mixed.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-32}
MIX=${2:-udp64}
N1=200
N2=1200
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install -y valgrind" >&2; exit 1; }
cargo build --profile bench -p podplane-benches --bin icount --quiet
T=${CARGO_TARGET_DIR:-target}
BIN=$T/release/icount
[ -x "$T/bench/icount" ] && BIN=$T/bench/icount
[ -x "$BIN" ] || { echo "callgrind.sh: $BIN not built" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ir() { # mode batches -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out.$1.$2" "$BIN" "$1" "$2" --batch "$BATCH" --mix "$MIX" \
    2>"$tmp/err.$1.$2" >/dev/null
  grep -E 'Collected :' "$tmp/err.$1.$2" | awk '{print $NF}' | grep . ||
    { echo "callgrind.sh: valgrind failed for $1 $2:" >&2; cat "$tmp/err.$1.$2" >&2; exit 1; }
}

declare -A per
for mode in baseline parse_one xconnect parse_xconnect parse_bridge parse_bridge_pairs parse_route1m parse_route parse_route_vxlan parse_decap_route node_route node_route1m node_route_vxlan parse_route6_100k parse_ct_1m parse_xconnect_spread parse_ct_1m_spread parse_xconnect_tcp parse_ct_1m_tcp parse_ct_snat_new parse_ct_snat_fresh svc_est_10 svc_est_1k svc_est_100k svc_new_10 svc_new_1k svc_new_100k svc_slow_10; do
  a=$(ir "$mode" $N1); b=$(ir "$mode" $N2)
  per[$mode]=$(awk -v a="$a" -v b="$b" -v n=$(( (N2 - N1) * BATCH )) 'BEGIN { printf "%.1f", (b - a) / n }')
done
d() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

printf '\ninstructions per packet (callgrind), %s frames, batch %s\n' "$MIX" "$BATCH"
printf '%-44s %10s\n' "what" "instr/pkt"
printf '%-44s %10s\n' "driver work (alloc, copy 64 B in, free)" "${per[baseline]}"
printf '%-44s %10s\n' "parse stage function (parse_one)" "$(d "${per[parse_one]}" "${per[baseline]}")"
printf '%-44s %10s\n' "pipeline with xconnect only" "$(d "${per[xconnect]}" "${per[baseline]}")"
printf '%-44s %10s\n' "parse stage inside the pipeline" "$(d "${per[parse_xconnect]}" "${per[xconnect]}")"
printf '%-44s %10s\n' "pipeline parse + xconnect (all stages)" "$(d "${per[parse_xconnect]}" "${per[baseline]}")"
printf '%-44s %10s\n' "bridge stage, known unicast (warm FDB)" "$(d "${per[parse_bridge]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "bridge, one pod to four in turn (FDB lookups)" "$(d "${per[parse_bridge_pairs]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "route + neighbour, 1M routes (warm)" "$(d "${per[parse_route1m]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "IPv6 parse + route + NDP, 100k routes (all)" "$(d "${per[parse_route6_100k]}" "${per[baseline]}")"
printf '%-44s %10s\n' "route + neighbour, 2 routes" "$(d "${per[parse_route]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "VXLAN encap (over routing into the tunnel)" "$(d "${per[parse_route_vxlan]}" "${per[parse_route]}")"
printf '%-44s %10s\n' "VXLAN decap + route + neighbour" "$(d "${per[parse_decap_route]}" "${per[parse_xconnect]}")"
# The same on a node's path (conntrack, the flow fast path) for established flows.
printf '%-44s %10s\n' "node path, established: route, 1M routes" "$(d "${per[node_route1m]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "node path, established: VXLAN over routing" "$(d "${per[node_route_vxlan]}" "${per[node_route]}")"
printf '%-44s %10s\n' "conntrack hit, 1M entries (lookup + commit)" "$(d "${per[parse_ct_1m]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "conntrack hit, 1M entries, a flow per packet" "$(d "${per[parse_ct_1m_spread]}" "${per[parse_xconnect_spread]}")"
printf '%-44s %10s\n' "conntrack hit, TCP data segment, 1M entries" "$(d "${per[parse_ct_1m_tcp]}" "${per[parse_xconnect_tcp]}")"
printf '%-44s %10s\n' "new connection + masquerade, 1M entries" "$(d "${per[parse_ct_snat_new]}" "${per[parse_xconnect]}")"
printf '%-44s %10s\n' "  the same, every flow never seen before" "$(d "${per[parse_ct_snat_fresh]}" "${per[parse_xconnect_spread]}")"
for n in 10 1k 100k; do
  printf '%-44s %10s\n' "service, established: all stages, $n svcs" "$(d "${per[svc_est_$n]}" "${per[baseline]}")"
done
for n in 10 1k 100k; do
  printf '%-44s %10s\n' "service, new connection: all stages, $n svcs" "$(d "${per[svc_new_$n]}" "${per[baseline]}")"
done
printf '%-44s %10s\n' "service, established, no fast path, 10 svcs" "$(d "${per[svc_slow_10]}" "${per[baseline]}")"

# Last-level cache misses per packet (--cache-sim=yes: ILmr + DLmr + DLmw), which
# decide the cost of the large tables. The simulated LL is fixed at 32 MiB, 16-way
# (a server socket's L3): valgrind would otherwise take this VM's 480 MiB host L3,
# which holds the whole table.
llm() { # mode batches -> LL misses
  valgrind --tool=callgrind --cache-sim=yes --LL=33554432,16,64 --callgrind-out-file="$tmp/llc.$1.$2" "$BIN" "$1" "$2" --batch "$BATCH" \
    --mix "$MIX" 2>"$tmp/llcerr.$1.$2" >/dev/null
  grep -E 'Collected :' "$tmp/llcerr.$1.$2" | awk '{print $(NF-2) + $(NF-1) + $NF}'
}
printf '\nlast-level cache misses per packet (callgrind --cache-sim=yes)\n'
for mode in parse_xconnect parse_ct_1m parse_ct_1m_spread parse_ct_snat_new parse_ct_snat_fresh svc_est_10 svc_est_100k svc_new_10 svc_new_100k; do
  a=$(llm "$mode" $N1); b=$(llm "$mode" $N2)
  printf '%-44s %10s\n' "$mode" "$(awk -v a="$a" -v b="$b" -v n=$(( (N2 - N1) * BATCH )) 'BEGIN { printf "%.2f", (b - a) / n }')"
done
"$BIN" lpm_memory
"$BIN" svc_memory
