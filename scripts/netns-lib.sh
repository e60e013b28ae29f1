# Shared by the root scripts (examples/tap/pods.sh, benches/tap_vs_kernel.sh): remove
# every network namespace named PREFIX-* (killing what runs in it) and every link
# named PREFIX* that the script made. Source it, then: remove_prefixed PREFIX
remove_prefixed() {
  local p=$1 ns l
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$p-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$p" || true); do
    ip link del "$l" 2>/dev/null || true
  done
}
