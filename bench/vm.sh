#!/usr/bin/env bash
# `ringfence run --isolation vm` against the namespace mode, in one run:
#   - time to the command's start: from the start of `ringfence run` to the first line the
#     command prints, as the caller reads it (median of RUNS runs per mode)
#   - where a VM run's start goes (RINGFENCE_TIMING=1, last run): VMM spawn, guest kernel boot
#     to /init, initramfs modules and 9p root, PID 1 setup, inner namespace sandbox to the
#     command (host clock when the guest starts the inner run, and when the command printed)
#   - memory: the peak of the summed resident memory of the run's whole process tree (the
#     supervisor, the host-side sandbox, QEMU with the guest's touched memory), both modes
#   - Docker (`docker run --rm IMAGE true`) when a daemon answers and DOCKER_IMAGE is present
#     locally (never pulled); Firecracker's published figures as a reference
# Measures, never asserts. Not run by CI: a TCG boot takes tens of seconds on a loaded host.
#
# Usage: bench/vm.sh [kvm|tcg]   (default tcg; kvm is refused where /dev/kvm cannot boot the
#   guest). Environment: RUNS (default 3), RINGFENCE_BIN (default target/debug/ringfence),
#   DOCKER_IMAGE (default debian:bookworm-slim), VM_MEMORY (`limits.memory` for both modes,
#   e.g. 1G; default the policy's, half the machine's memory: a large guest boots slower).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RF=$(realpath "${RINGFENCE_BIN:-$ROOT/target/debug/ringfence}")
[ -x "$RF" ] || { echo "bench/vm.sh: $RF is not an executable (cargo build -p ringfence)" >&2; exit 1; }
ACCEL=${1:-tcg}
RUNS=${RUNS:-3}
DOCKER_IMAGE=${DOCKER_IMAGE:-debian:bookworm-slim}
cd "$HOME"
LOG=$(mktemp)
SETTINGS=()
SETFILE=""
if [ -n "${VM_MEMORY:-}" ]; then
  SETFILE=$(mktemp -p "$HOME" .ringfence-vm-bench.XXXXXX)
  printf '{"limits": {"memory": "%s"}}\n' "$VM_MEMORY" > "$SETFILE"
  SETTINGS=(-s "$SETFILE")
fi
trap 'rm -f "$LOG" "$LOG.mem" ${SETFILE:+"$SETFILE"}' EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The summed VmRSS (KiB) of pid $1 and all its descendants.
tree_rss() {
  awk -v root="$1" '
    FNR == 1 { split(FILENAME, p, "/"); pid = p[3] }
    /^PPid:/ { ppid[pid] = $2 }
    /^VmRSS:/ { rss[pid] = $2 }
    END {
      want[root] = 1; changed = 1
      while (changed) { changed = 0
        for (q in ppid) if (!(q in want) && (ppid[q] in want)) { want[q] = 1; changed = 1 } }
      for (q in want) s += rss[q]
      print s + 0
    }' /proc/[0-9]*/status 2>/dev/null
}

# One run of `ringfence run ARGS -- sh -c 'echo started; sleep 2'`: prints "START_MS PEAK_KIB".
one() {
  local t0 first="" peak=0 r
  t0=$(now_ms)
  RINGFENCE_TIMING=1 "$RF" run "$@" -- sh -c 'echo started; sleep 2' 2>"$LOG" > >(
    while IFS= read -r line; do [ "$line" = started ] && now_ms > "$LOG.start"; done) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    r=$(tree_rss "$pid"); [ "${r:-0}" -gt "$peak" ] && peak=$r
    sleep 0.1
  done
  wait "$pid"
  sleep 0.1
  first=$(cat "$LOG.start" 2>/dev/null || true)
  rm -f "$LOG.start"
  if [ -z "$first" ]; then
    echo "bench/vm.sh: a run failed: $(grep -v timing "$LOG" | head -3)" >&2
    exit 1
  fi
  echo "$(( first - t0 )) $peak"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A START PEAK LAST
for mode in namespace vm; do
  starts=(); peaks=()
  for _ in $(seq "$RUNS"); do
    if [ "$mode" = vm ]; then
      read -r s p < <(one "${SETTINGS[@]}" --isolation vm --vm-accel "$ACCEL")
    else
      read -r s p < <(one "${SETTINGS[@]}")
    fi
    starts+=("$s"); peaks+=("$p")
  done
  LAST[$mode]=$s
  START[$mode]=$(printf '%s\n' "${starts[@]}" | median)
  PEAK[$mode]=$(printf '%s\n' "${peaks[@]}" | median)
  [ "$mode" = vm ] && cp "$LOG" "$LOG.mem"
done

echo "limits.memory: ${VM_MEMORY:-policy default}"
echo "time to the command's start (median of $RUNS):"
echo "  namespace mode:        ${START[namespace]} ms"
echo "  vm mode ($ACCEL):         ${START[vm]} ms"
[ "${START[namespace]}" -gt 0 ] && echo "  ratio vm/namespace:    $(awk -v a="${START[vm]}" -v b="${START[namespace]}" 'BEGIN {printf "%.0fx", a/b}')"
echo "where a vm run's start goes (last run; guest figures on the guest's clock):"
if grep -q 'vm timing' "$LOG.mem"; then
  grep 'vm timing' "$LOG.mem" | sed 's/^ringfence: vm timing: /  /'
  inner=$(sed -n 's/.*inner run starting (host clock \([0-9]*\) ms).*/\1/p' "$LOG.mem")
  [ -n "$inner" ] && echo "  the command printed at ${LAST[vm]} ms (supervisor's clock): the inner namespace sandbox and the command's start took about $(( LAST[vm] - inner )) ms"
else
  echo "  (no timing: the run failed)"; sed 's/^/  stderr: /' "$LOG.mem" | grep -v timing | head -5
fi
echo "memory, peak of the run's process tree (median of $RUNS):"
echo "  namespace mode:        $(( PEAK[namespace] / 1024 )) MiB"
echo "  vm mode ($ACCEL):         $(( PEAK[vm] / 1024 )) MiB (QEMU and the guest memory it touched)"
echo "  overhead vm-namespace: $(( (PEAK[vm] - PEAK[namespace]) / 1024 )) MiB"
if timeout 5 docker info >/dev/null 2>&1 && timeout 5 docker image inspect "$DOCKER_IMAGE" >/dev/null 2>&1; then
  t0=$(now_ms); docker run --rm --network none "$DOCKER_IMAGE" true >/dev/null 2>&1
  echo "docker run --rm $DOCKER_IMAGE true: $(( $(now_ms) - t0 )) ms"
else
  echo "docker: no daemon answers or $DOCKER_IMAGE is not present locally (not pulled): left out"
fi
echo "reference (Firecracker, published): ~125 ms to the guest's init, < 5 MiB VMM overhead"
