#!/usr/bin/env bash
# Startup benchmark: ringfence vs bubblewrap vs srt (Anthropic's sandbox-runtime) vs Codex's
# sandbox (`codex sandbox`, OpenAI's Codex CLI), all in one run.
#   - wall time of a sandboxed `true` (median and p90 of N warm runs) and the ratios
#   - where ringfence's start goes: the median of each step (RINGFENCE_TIMING=1)
#   - peak memory of the ringfence supervisor
#   - cost of protected-file handling on a writable root of 100,000 files
# Measures, never asserts. Everything it creates is removed at exit.
#
# Usage: bench/startup.sh            (from any directory)
# Environment: RUNS (default 30), TREE_RUNS (default 10), TREE_FILES (default 100000),
#   SRT_CLI (path to srt's dist/cli.js; otherwise srt $SRT_PIN, default 0.0.83, installed with npm into a temporary dir),
#   NO_SRT=1 to leave srt out; RINGFENCE_BIN (a built binary; otherwise target/release/ringfence
#   is built); CODEX_BIN (Codex's native `codex` binary; otherwise the npm package
#   @openai/codex is installed into BENCH_CACHE, default ~/.cache/ringfence-bench, and kept
#   there), NO_CODEX=1 to leave Codex out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-30}"
TREE_RUNS="${TREE_RUNS:-10}"
TREE_FILES="${TREE_FILES:-100000}"

WORK=""
TREE=""
CWD=""
# srt leaves /tmp/srt-mux-*.sock behind; remove the ones that appear during this run.
SRT_SOCKS_BEFORE="$(ls -d /tmp/srt-mux-*.sock 2>/dev/null || true)"
cleanup() {
  local s
  for s in /tmp/srt-mux-*.sock; do
    [ -e "$s" ] || continue
    grep -qxF -- "$s" <<<"$SRT_SOCKS_BEFORE" || rm -f -- "$s"
  done
  [ -n "$TREE" ] && rm -rf -- "$TREE" "$TREE-workspace"
  [ -n "$WORK" ] && rm -rf -- "$WORK"
  [ -n "$CWD" ] && rm -rf -- "$CWD"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

WORK="$(mktemp -d /tmp/ringfence-bench.XXXXXX)"

if [ -n "${RINGFENCE_BIN:-}" ]; then
  RF="$RINGFENCE_BIN"
else
  echo "==> building ringfence (release)"
  (cd "$ROOT" && cargo build --release -q -p ringfence)
  RF="$ROOT/target/release/ringfence"
fi

# Run from a small empty directory that exists inside the sandbox too (the sandbox's /tmp is
# private). Not from /: srt 0.0.83 searches its working directory for files to protect, which
# from / takes it about 10 s a run.
CWD="$(mktemp -d /var/tmp/ringfence-bench-cwd.XXXXXX)"
cd "$CWD"

# --- srt ----------------------------------------------------------------------
SRT=()
if [ "${NO_SRT:-0}" != 1 ]; then
  if [ -z "${SRT_CLI:-}" ] && command -v npm >/dev/null && command -v node >/dev/null; then
    echo "==> installing @anthropic-ai/sandbox-runtime@${SRT_PIN:-0.0.83} with npm into $WORK/srt"
    if npm install --prefix "$WORK/srt" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/sandbox-runtime@${SRT_PIN:-0.0.83}" >/dev/null 2>"$WORK/npm.log"; then
      SRT_CLI="$WORK/srt/node_modules/@anthropic-ai/sandbox-runtime/dist/cli.js"
    else
      echo "    npm install failed (srt left out):"; sed 's/^/    /' "$WORK/npm.log" | tail -5
    fi
  fi
  if [ -n "${SRT_CLI:-}" ] && [ -f "$SRT_CLI" ]; then
    # srt reads ~/.srt-settings.json by default; give it an explicit empty policy instead.
    echo '{"network":{"allowedDomains":[],"deniedDomains":[]},"filesystem":{"denyRead":[],"allowWrite":[],"denyWrite":[]}}' >"$WORK/srt-settings.json"
    SRT=(node "$SRT_CLI" -s "$WORK/srt-settings.json" true)
    if ! "${SRT[@]}" >/dev/null 2>"$WORK/srt.err"; then
      echo "    srt cannot run here (it needs bubblewrap, socat and ripgrep: apt-get install socat ripgrep); left out:"
      sed 's/^/    /' "$WORK/srt.err" | tail -3
      SRT=()
    else
      SRT_VERSION="$(python3 -c 'import json, os, sys; print(json.load(open(os.path.join(os.path.dirname(sys.argv[1]), "..", "package.json")))["version"])' "$SRT_CLI" 2>/dev/null || echo '?')"
    fi
  elif [ -z "${SRT_CLI:-}" ]; then
    echo "    npm/node not found: srt left out"
  fi
fi

# --- Codex's sandbox (`codex sandbox -- CMD`: bubblewrap plus its own seccomp helper) ------
CODEX=()
if [ "${NO_CODEX:-0}" != 1 ]; then
  BENCH_CACHE="${BENCH_CACHE:-${XDG_CACHE_HOME:-${HOME:-/var/tmp}/.cache}/ringfence-bench}"
  if [ -z "${CODEX_BIN:-}" ] && command -v npm >/dev/null; then
    # The npm package's launcher is a node script; the native binary is what runs the sandbox.
    CODEX_BIN="$(ls "$BENCH_CACHE"/codex/node_modules/@openai/codex-linux-*/vendor/*/bin/codex 2>/dev/null | head -1 || true)"
    if [ -z "$CODEX_BIN" ]; then
      echo "==> installing @openai/codex with npm into $BENCH_CACHE/codex"
      mkdir -p "$BENCH_CACHE"
      if npm install --prefix "$BENCH_CACHE/codex" --no-audit --no-fund --loglevel=error \
          @openai/codex >/dev/null 2>"$WORK/npm-codex.log"; then
        CODEX_BIN="$(ls "$BENCH_CACHE"/codex/node_modules/@openai/codex-linux-*/vendor/*/bin/codex 2>/dev/null | head -1 || true)"
      else
        echo "    npm install failed (Codex left out):"; sed 's/^/    /' "$WORK/npm-codex.log" | tail -5
      fi
    fi
  fi
  if [ -n "${CODEX_BIN:-}" ] && [ -x "$CODEX_BIN" ]; then
    # Codex keeps helper links in CODEX_HOME and refuses to make them under /tmp; a home of
    # its own keeps the user's ~/.codex (config, login) out of the measurement.
    CODEX_HOME_DIR="${BENCH_CACHE:-/var/tmp}/codex-home"
    mkdir -p "$CODEX_HOME_DIR"
    CODEX=(env CODEX_HOME="$CODEX_HOME_DIR" "$CODEX_BIN" sandbox -- true)
    if ! "${CODEX[@]}" >/dev/null 2>"$WORK/codex.err"; then
      echo "    Codex's sandbox cannot run here; left out:"
      sed 's/^/    /' "$WORK/codex.err" | tail -3
      CODEX=()
    else
      CODEX_VERSION="$("$CODEX_BIN" --version 2>/dev/null | awk '{print $NF}' || echo '?')"
    fi
  elif [ -z "${CODEX_BIN:-}" ]; then
    echo "    npm not found and no CODEX_BIN: Codex left out"
  fi
fi

BWRAP=()
if command -v bwrap >/dev/null; then
  BWRAP=(bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc true)
else
  echo "    bwrap not found: bubblewrap left out (apt-get install bubblewrap)"
fi

# --- the protected-file tree (outside /tmp: the sandbox's /tmp is private) ------
TREE_BASE="/var/tmp"
[ -w "$TREE_BASE" ] || TREE_BASE="${HOME:-/var/tmp}/.cache"
mkdir -p "$TREE_BASE"
TREE="$(mktemp -d "$TREE_BASE/ringfence-bench-tree.XXXXXX")"
echo "==> generating a tree of $TREE_FILES files in $TREE"
python3 - "$TREE" "$TREE_FILES" <<'EOF'
import os, sys
root, total = sys.argv[1], int(sys.argv[2])
dirs = max(1, total // 10)          # ~10 files per directory
top = max(1, int(dirs ** 0.5))
made = 0
protected = 0
for d in range(dirs):
    path = os.path.join(root, f"d{d % top:03d}", f"s{d // top:04d}")
    os.makedirs(path, exist_ok=True)
    for f in range(10):
        if made >= total:
            break
        open(os.path.join(path, f"f{f}.txt"), "w").close()
        made += 1
    if d % 100 == 0:     # a repository every 100 directories
        os.makedirs(os.path.join(path, ".git", "hooks"), exist_ok=True)
        open(os.path.join(path, ".git", "hooks", "pre-commit"), "w").close()
        protected += 1
    if d % 250 == 0:     # a shell rc file every 250 directories
        open(os.path.join(path, ".bashrc"), "w").close()
        protected += 1
print(f"    {made} files in {dirs} directories, {protected} protected entries planted")
EOF
# Written out before anything is timed: the tree's writeback would slow the runs that write a
# log (ringfence, srt) and not the ones that write nothing (bwrap).
sync

# --- timing -------------------------------------------------------------------
cat >"$WORK/timeit.py" <<'EOF'
"""timeit.py RUNS WARMUP ::: CMD... [::: CMD...]: time each CMD (stdout/stderr discarded), the
commands in turns so that the machine's drift touches each alike; print 'median p90 failures'
in ms, one line per command."""
import subprocess, sys, time
runs, warm = int(sys.argv[1]), int(sys.argv[2])
cmds, cur = [], None
for a in sys.argv[3:]:
    if a == ":::":
        cur = []
        cmds.append(cur)
    else:
        cur.append(a)
def once(cmd):
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return (time.perf_counter() - t0) * 1000, rc
for _ in range(warm):
    for cmd in cmds:
        once(cmd)
times = [[] for _ in cmds]
failures = [0 for _ in cmds]
for _ in range(runs):
    for i, cmd in enumerate(cmds):
        t, rc = once(cmd)
        times[i].append(t)
        failures[i] += rc != 0
for t, f in zip(times, failures):
    t.sort()
    median = t[len(t) // 2] if len(t) % 2 else (t[len(t) // 2 - 1] + t[len(t) // 2]) / 2
    p90 = t[min(len(t) - 1, int(round(0.9 * (len(t) - 1))))]
    print(f"{median:.2f} {p90:.2f} {f}")
EOF
declare -A MED P90
measure() { # measure KEY LABEL RUNS CMD...
  local key="$1" label="$2" runs="$3"; shift 3
  local out med p90 fails
  out="$(python3 "$WORK/timeit.py" "$runs" 3 ::: "$@")"
  show "$key" "$label" "$runs" "$out"
}
show() { # show KEY LABEL RUNS 'median p90 failures'
  local med p90 fails
  read -r med p90 fails <<<"$4"
  MED[$1]="$med"; P90[$1]="$p90"
  printf '  %-44s median %8.2f ms   p90 %8.2f ms' "$2" "$med" "$p90"
  [ "$fails" = 0 ] && echo || echo "   ($fails of $3 runs FAILED)"
}
# measure_turns KEY1 LABEL1 KEY2 LABEL2 RUNS CMD1... ::: CMD2...: the two in turns; without
# bubblewrap (no CMD2), CMD1 alone.
measure_turns() {
  local k1="$1" l1="$2" k2="$3" l2="$4" runs="$5"; shift 5
  local out
  out="$(python3 "$WORK/timeit.py" "$runs" 3 ::: "$@")"
  show "$k1" "$l1" "$runs" "$(sed -n 1p <<<"$out")"
  [ "$(wc -l <<<"$out")" -gt 1 ] && show "$k2" "$l2" "$runs" "$(sed -n 2p <<<"$out")"
  return 0
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

echo
echo "==> startup of a sandboxed 'true' ($RUNS warm runs each, $(nproc) CPUs, $(uname -r))"
# ringfence and bubblewrap in turns, so that the ratio compares like with like.
BW_TURN=()
[ "${#BWRAP[@]}" -gt 0 ] && BW_TURN=(::: "${BWRAP[@]}")
measure_turns rf "ringfence run -- true" bwrap "bwrap --unshare-all ... true" "$RUNS" \
  "$RF" run -- true "${BW_TURN[@]}"
[ "${#SRT[@]}" -gt 0 ] && measure srt "srt true (srt ${SRT_VERSION:-?})" "$RUNS" "${SRT[@]}"
[ "${#CODEX[@]}" -gt 0 ] && measure codex "codex sandbox -- true (${CODEX_VERSION:-?})" "$RUNS" "${CODEX[@]}"

# The everyday case: a writable git workspace (the working directory), ~/.ssh denied by default.
WS="$TREE-workspace"
mkdir -p "$WS/src"
for i in $(seq 50); do echo "$i" >"$WS/src/f$i.txt"; done
git -C "$WS" init -q 2>/dev/null && git -C "$WS" add -A 2>/dev/null \
  && git -C "$WS" -c user.name=bench -c user.email=bench@example.invalid commit -q -m init 2>/dev/null || true
sync
echo "  in a writable git workspace (cwd, 50 files):"
cd "$WS"
BW_TURN=()
[ "${#BWRAP[@]}" -gt 0 ] && BW_TURN=(::: bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc --bind "$WS" "$WS" true)
measure_turns rf_ws "ringfence run --allow-write . -- true" bw_ws "bwrap ... --bind WS WS true" "$RUNS" \
  "$RF" run --allow-write . -- true "${BW_TURN[@]}"
cd "$CWD"

echo
echo "==> where ringfence's start goes: median of each step over $RUNS runs (RINGFENCE_TIMING=1)"
cat >"$WORK/steps.py" <<'EOF'
"""steps.py RUNS -- CMD...: run CMD with RINGFENCE_TIMING=1; print each step's median duration."""
import os, re, statistics, subprocess, sys
runs = int(sys.argv[1])
cmd = sys.argv[sys.argv.index("--") + 1:]
env = dict(os.environ, RINGFENCE_TIMING="1")
line = re.compile(r"^ringfence: timing: (\S+)\s+(.*?)\s+\+\s*([0-9.]+) ms\s+at\s+([0-9.]+) ms$")
steps, order = {}, []
for _ in range(runs):
    err = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).stderr
    for l in err.decode(errors="replace").splitlines():
        m = line.match(l)
        if m:
            key = (m.group(1), m.group(2))
            if key not in steps:
                steps[key] = []
                order.append(key)
            steps[key].append((float(m.group(3)), float(m.group(4))))
order.sort(key=lambda k: statistics.median(a for _, a in steps[k]))
for side, step in order:
    v = steps[(side, step)]
    print(f"  {side:<10} {step:<44} {statistics.median(d for d, _ in v):7.2f} ms"
          f"   (ends at {statistics.median(a for _, a in v):6.2f} ms)")
EOF
python3 "$WORK/steps.py" "$RUNS" -- "$RF" run -- true

echo
echo "==> protected-file handling ($TREE_RUNS warm runs each)"
measure t0 "ringfence run -- true" "$TREE_RUNS" "$RF" run -- true
measure t1 "ringfence run --allow-write TREE -- true" "$TREE_RUNS" "$RF" run --allow-write "$TREE" -- true
SCAN_LINE="$("$RF" explain --allow-write "$TREE" 2>&1 | grep -m1 'protected entries found' || true)"
echo "  explain: ${SCAN_LINE:-"(no 'protected entries found' line)"}"
FIND_MS="$(python3 -c '
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(["find", sys.argv[1], "-name", ".bashrc"], stdout=subprocess.DEVNULL)
print(f"{(time.perf_counter() - t) * 1000:.0f}")' "$TREE")"
echo "  for reference, a warm 'find TREE -name .bashrc' takes $FIND_MS ms"
SCAN_MS="$(sed -n 's/.* in \([0-9.]*\) ms.*/\1/p' <<<"$SCAN_LINE")"

# --- cost of the creation guard (every file creation in a writable root is checked) ----------
echo
echo "==> creating 10,000 files in a writable root (creation guard cost; 3 runs each)"
mkdir -p "$TREE/create"
CREATE='import os, sys
d = sys.argv[1]
for i in range(10000):
    open(os.path.join(d, "n%d" % i), "w").close()
for i in range(10000):
    os.unlink(os.path.join(d, "n%d" % i))'
measure c_rf "ringfence run --allow-write DIR -- python3" 3 "$RF" run --allow-write "$TREE/create" -- python3 -c "$CREATE" "$TREE/create"
[ "${#BWRAP[@]}" -gt 0 ] && measure c_bw "bwrap --bind DIR DIR python3" 3 bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc --bind "$TREE/create" "$TREE/create" python3 -c "$CREATE" "$TREE/create"
measure c_host "python3 (no sandbox)" 3 python3 -c "$CREATE" "$TREE/create"

# --- peak memory of the supervisor ---------------------------------------------
echo
echo "==> peak memory"
cat >"$WORK/peak.py" <<'EOF'
"""peak.py CMD...: run CMD (a command that sleeps ~1 s) and read the launched process's VmHWM
while it waits (the supervisor's own peak, not its children's)."""
import subprocess, sys, time
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.6)
hwm = "?"
try:
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
except OSError:
    pass
p.wait()
print(hwm)
EOF
mib() { python3 -c "import sys; print(f'{int(sys.argv[1])/1024:.1f}')" "$1" 2>/dev/null || echo '?'; }
RF_HWM="$(python3 "$WORK/peak.py" "$RF" run -- sleep 1)"
printf '  %-44s supervisor VmHWM %5s MiB\n' "ringfence run -- sleep 1" "$(mib "$RF_HWM")"
RF_TREE_HWM="$(python3 "$WORK/peak.py" "$RF" run --allow-write "$TREE" -- sleep 1)"
printf '  %-44s supervisor VmHWM %5s MiB\n' "ringfence run --allow-write TREE -- sleep 1" "$(mib "$RF_TREE_HWM")"
if [ -x /usr/bin/time ] && /usr/bin/time -v -o "$WORK/time.txt" "$RF" run -- true >/dev/null 2>&1; then
  TV="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")"
  printf '  %-44s /usr/bin/time -v max RSS %5s MiB\n' "ringfence run -- true" "$(mib "$TV")"
fi
if [ "${#SRT[@]}" -gt 0 ]; then
  SRT_HWM="$(python3 "$WORK/peak.py" node "$SRT_CLI" -s "$WORK/srt-settings.json" sleep 1)"
  printf '  %-44s node VmHWM %5s MiB\n' "srt sleep 1" "$(mib "$SRT_HWM")"
fi

# --- summary --------------------------------------------------------------------
K_RF=rf; K_BW=bwrap; K_SRT=srt
echo
echo "==> summary as uid $(id -u) (target in brackets; measured, not asserted)"
if [ -n "${MED[$K_BW]:-}" ]; then
  printf '  ringfence / bwrap median        %6sx   [<= 1.2x]\n' "$(ratio "${MED[$K_RF]}" "${MED[$K_BW]}")"
fi
if [ -n "${MED[$K_SRT]:-}" ]; then
  printf '  srt / ringfence median          %6sx   [>= 30x]\n' "$(ratio "${MED[$K_SRT]}" "${MED[$K_RF]}")"
fi
if [ -n "${MED[bw_ws]:-}" ]; then
  printf '  ... in a writable git workspace %6sx   [<= 1.2x]\n' "$(ratio "${MED[rf_ws]}" "${MED[bw_ws]}")"
fi
if [ -n "${MED[codex]:-}" ]; then
  printf '  codex / ringfence median        %6sx   [>= 2x]\n' "$(ratio "${MED[codex]}" "${MED[$K_RF]}")"
elif [ "${NO_CODEX:-0}" != 1 ]; then
  echo "  codex / ringfence: Codex's sandbox could not run here (see above)"
fi
printf '  supervisor peak memory          %6s MiB, %s MiB with a %d-file writable root [< 10 MiB]\n' \
  "$(mib "$RF_HWM")" "$(mib "$RF_TREE_HWM")" "$TREE_FILES"
K_T0=t0; K_T1=t1
printf '  protected-file handling, %d files: +%.1f ms wall (scan %s ms)   [< 50 ms]\n' \
  "$TREE_FILES" "$(python3 -c "print(${MED[$K_T1]} - ${MED[$K_T0]})")" "${SCAN_MS:-?}"
if [ -n "${MED[c_bw]:-}" ]; then
  printf '  creating+removing 10,000 files: ringfence / bwrap %sx (creation guard)\n' "$(ratio "${MED[c_rf]}" "${MED[c_bw]}")"
fi
