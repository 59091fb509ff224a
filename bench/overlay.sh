#!/usr/bin/env bash
# Overlay mode benchmark:
#   - startup: `ringfence run --allow-write DIR -- true` with and without --overlay (median, p90)
#   - the same on a writable root of 10,000 files (the baseline manifest is walked while the
#     command runs, so it shows at exit, not at startup)
#   - `ringfence apply` of a run that changed 10,000 files, and `ringfence undo` of it
# Measures, never asserts. Everything it creates is removed at exit.
#
# Usage: bench/overlay.sh            (from any directory)
# Environment: RUNS (default 30), FILES (default 10000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-30}"
FILES="${FILES:-10000}"

# Outside /tmp: the sandbox's /tmp is private.
BASE="/var/tmp"
[ -w "$BASE" ] || BASE="${HOME:-/var/tmp}/.cache"
mkdir -p "$BASE"
WORK="$(mktemp -d "$BASE/ringfence-bench-overlay.XXXXXX")"
cleanup() {
  # overlayfs leaves its work directories with mode 000.
  chmod -R u+rwx "$WORK" 2>/dev/null || true
  rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building ringfence (release)"
(cd "$ROOT" && cargo build --release -q -p ringfence)
RF="$ROOT/target/release/ringfence"
export XDG_STATE_HOME="$WORK/state"
mkdir -p "$XDG_STATE_HOME" "$WORK/small" "$WORK/big"
echo small >"$WORK/small/a.txt"
cd /

python3 - "$WORK/big" "$FILES" <<'EOF'
import os, sys
root, total = sys.argv[1], int(sys.argv[2])
for i in range(total):
    d = os.path.join(root, f"d{i // 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:02d}.txt"), "w") as f:
        f.write(f"original {i}\n")
EOF

cat >"$WORK/timeit.py" <<'EOF'
"""timeit.py RUNS WARMUP -- CMD...: time CMD (stdout/stderr discarded); print 'median p90 failures' in ms."""
import subprocess, sys, time
runs, warm = int(sys.argv[1]), int(sys.argv[2])
cmd = sys.argv[sys.argv.index("--") + 1:]
for _ in range(warm):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
times, failures = [], 0
for _ in range(runs):
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    times.append((time.perf_counter() - t0) * 1000)
    failures += rc != 0
times.sort()
median = times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
print(f"{median:.2f} {p90:.2f} {failures}")
EOF
declare -A MED
measure() { # measure KEY LABEL RUNS CMD...
  local key="$1" label="$2" runs="$3"; shift 3
  local out med p90 fails
  out="$(python3 "$WORK/timeit.py" "$runs" 3 -- "$@")"
  read -r med p90 fails <<<"$out"
  MED[$key]="$med"
  printf '  %-52s median %8.2f ms   p90 %8.2f ms' "$label" "$med" "$p90"
  [ "$fails" = 0 ] && echo || echo "   ($fails of $runs runs FAILED)"
}
ms() { python3 -c 'import sys, time, subprocess
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if r.returncode: sys.stderr.write(r.stderr.decode())
print(f"{(time.perf_counter() - t) * 1000:.0f}")' "$@"; }

echo
echo "==> startup ($RUNS warm runs each, interleaved, $(nproc) CPUs, $(uname -r))"
# Startup: from launching ringfence to the command's start (the command prints the clock);
# total: until ringfence has exited (includes the overlay's unmount and the summary).
cat >"$WORK/start.py" <<'EOF'
import statistics, subprocess, sys, time
rf, root, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {False: ([], []), True: ([], [])}
for i in range(runs + 3):
    for overlay in (False, True):
        cmd = [rf, "run"] + (["--overlay"] if overlay else []) + ["--allow-write", root, "--", "/bin/date", "+%s%N"]
        t0 = time.time_ns()
        out = subprocess.run(cmd, capture_output=True).stdout
        t1 = time.time_ns()
        if i >= 3:
            res[overlay][0].append((int(out.strip()) - t0) / 1e6)
            res[overlay][1].append((t1 - t0) / 1e6)
m = statistics.median
print(f"{m(res[False][0]):.2f} {m(res[False][1]):.2f} {m(res[True][0]):.2f} {m(res[True][1]):.2f}")
EOF
read -r D_START D_TOTAL O_START O_TOTAL < <(python3 "$WORK/start.py" "$RF" "$WORK/small" "$RUNS")
printf '  %-52s start %7.2f ms   total %7.2f ms\n' "run --allow-write DIR -- date" "$D_START" "$D_TOTAL"
printf '  %-52s start %7.2f ms   total %7.2f ms\n' "run --overlay --allow-write DIR -- date" "$O_START" "$O_TOTAL"
measure d_big "run --allow-write DIR($FILES files) -- true" 10 "$RF" run --allow-write "$WORK/big" -- true
measure o_big "run --overlay --allow-write DIR($FILES files) -- true" 10 "$RF" run --overlay --allow-write "$WORK/big" -- true

echo
echo "==> apply of a run that changed $FILES files"
rm -rf "$XDG_STATE_HOME/ringfence/runs"
"$RF" run --overlay --name bench-apply --allow-write "$WORK/big" -- python3 -c '
import os, sys
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        with open(os.path.join(d, f), "a") as h:
            h.write("changed\n")' "$WORK/big" 2>/dev/null
APPLY_MS="$(ms "$RF" apply bench-apply --yes)"
CHANGED="$(grep -c changed "$WORK"/big/d000/* | grep -c ':1$' || true)"
printf '  %-52s %8s ms   (%s of 100 files checked in d000 changed)\n' "ringfence apply ($FILES files)" "$APPLY_MS" "$CHANGED"
UNDO_MS="$(ms "$RF" undo bench-apply)"
printf '  %-52s %8s ms\n' "ringfence undo ($FILES files)" "$UNDO_MS"

echo
echo "==> summary (target in brackets; measured, not asserted)"
python3 - "$D_START" "$O_START" "$D_TOTAL" "$O_TOTAL" "${MED[d_big]}" "${MED[o_big]}" "$APPLY_MS" "$FILES" <<'EOF'
import sys
d, o, dt, ot, db, ob, apply_ms, files = map(float, sys.argv[1:])
print(f"  overlay startup cost (to the command's start):   {o - d:+6.2f} ms   [< 5 ms]")
print(f"  overlay cost until ringfence exits, small root:  {ot - dt:+6.2f} ms")
print(f"  overlay cost until exit, root of {int(files)} files: {ob - db:+6.2f} ms   (manifest walk, summary)")
print(f"  apply of {int(files)} changed files:               {apply_ms / 1000:6.2f} s    [< 2 s]")
EOF
