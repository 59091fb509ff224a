#!/usr/bin/env bash
# Time to the command's start and VMM memory of `ringfence run --isolation vm` against the
# namespace mode, with the boot's breakdown. Not run by CI (a TCG boot takes ~10 s here).
# Usage: bench/vm.sh [kvm|tcg]   (default tcg; kvm is refused where /dev/kvm cannot boot it)
set -u
RF=${RINGFENCE_BIN:-$(realpath "$(dirname "$0")/../target/debug/ringfence")}
ACCEL=${1:-tcg}
cd "$HOME"
ns_start=$(date +%s%N); "$RF" run -- true; ns_ms=$(( ($(date +%s%N) - ns_start) / 1000000 ))
echo "namespace mode: ringfence run -- true: ${ns_ms} ms"
log=$(mktemp)
vm_start=$(date +%s%N)
RINGFENCE_TIMING=1 "$RF" run --isolation vm --vm-accel "$ACCEL" -- true 2>"$log" &
pid=$!
rss=0
while kill -0 "$pid" 2>/dev/null; do
  for q in $(pgrep -f qemu-system-x86_64 || true); do
    r=$(awk '/VmRSS/ {print $2}' "/proc/$q/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$rss" ] && rss=$r
  done
  sleep 0.2
done
wait "$pid"; rc=$?
vm_ms=$(( ($(date +%s%N) - vm_start) / 1000000 ))
echo "vm mode ($ACCEL): ringfence run --isolation vm -- true: ${vm_ms} ms, exit $rc"
grep 'vm timing' "$log" | sed 's/^ringfence: vm timing: /  /'
grep -v 'timing' "$log" | sed 's/^/  stderr: /' | head -5
echo "VMM peak RSS: $((rss / 1024)) MiB (guest memory touched included)"
[ "$ns_ms" -gt 0 ] && echo "ratio vm/namespace: $(( vm_ms / ns_ms ))x"
echo "reference (Firecracker, published): ~125 ms to the guest's init, < 5 MiB VMM overhead"
rm -f "$log"
