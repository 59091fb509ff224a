#!/usr/bin/env bash
# Overhead benchmark: syscall-heavy work run directly, under bubblewrap, under ringfence and
# under srt (Anthropic's sandbox-runtime) when it can run, all in one run:
#   - `git status` on a generated repository of 30,000 committed files (GIT_REPS per sandbox)
#   - a build: `make -j2` of BUILD_FILES small C files with gcc
#   - 500 short execs of /bin/true (the cost of ringfence's exec reports)
#   - an empty script: the fixed cost of each variant (start-up, and for ringfence the scan of
#     the writable directory for protected names), included in the figures above
# Each variant runs the same script file with the same writable directory; the variants take
# turns within each round so that a noisy neighbour slows them alike. Prints medians, ratios and
# the overhead against direct and against bubblewrap. Measures, never asserts; removes
# everything it created.
#
# Usage: bench/overhead.sh            (from any directory)
# Environment: RUNS (rounds, default 5), GIT_FILES (default 30000), GIT_REPS (default 3),
#   BUILD_FILES (default 100), EXECS (default 500), SRT_CLI (path to srt's dist/cli.js;
#   otherwise srt $SRT_PIN, default 0.0.83, installed with npm into a temporary dir), NO_SRT=1 to leave srt out,
#   RINGFENCE_BIN (a built binary; otherwise target/release/ringfence is built).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-5}"
GIT_FILES="${GIT_FILES:-30000}"
GIT_REPS="${GIT_REPS:-3}"
BUILD_FILES="${BUILD_FILES:-100}"
EXECS="${EXECS:-500}"

WORK=""
SRT_SOCKS_BEFORE="$(ls -d /tmp/srt-mux-*.sock 2>/dev/null || true)"
cleanup() {
  local s
  for s in /tmp/srt-mux-*.sock; do
    [ -e "$s" ] || continue
    grep -qxF -- "$s" <<<"$SRT_SOCKS_BEFORE" || rm -f -- "$s"
  done
  [ -n "$WORK" ] && rm -rf -- "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in git gcc make python3; do
  command -v "$tool" >/dev/null || { echo "bench/overhead.sh: $tool is needed (apt-get install git build-essential python3)" >&2; exit 1; }
done

# Outside /tmp: every sandbox here has a private /tmp.
BASE="/var/tmp"
[ -w "$BASE" ] || BASE="${HOME:-/var/tmp}/.cache"
mkdir -p "$BASE"
WORK="$(mktemp -d "$BASE/ringfence-overhead.XXXXXX")"
W="$WORK/w"          # the one writable directory of every sandbox
mkdir -p "$W" "$WORK/state"

if [ -n "${RINGFENCE_BIN:-}" ]; then
  RF="$RINGFENCE_BIN"
else
  echo "==> building ringfence (release)"
  (cd "$ROOT" && cargo build --release -q -p ringfence)
  RF="$ROOT/target/release/ringfence"
fi
if [ "$(id -u)" = 0 ]; then
  # ringfence runs a root caller's command as nobody; git keeps each file's owner in its index,
  # so every `git status` then re-reads every file, and rewrites the index for the next variant.
  echo "    note: running as root; ringfence runs the command as nobody, which makes git re-read"
  echo "    every file (its index records owners). Run as an unprivileged user for git figures:"
  echo "    runuser -u USER -- env RINGFENCE_BIN=... SRT_CLI=... bench/overhead.sh"
fi
# Run records and logs of the benchmark's runs stay in the temporary directory.
export XDG_STATE_HOME="$WORK/state"

# --- srt (as bench/startup.sh finds it) -------------------------------------------
SRT_OK=0
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
    printf '{"network":{"allowedDomains":[],"deniedDomains":[]},"filesystem":{"denyRead":[],"allowWrite":["%s"],"denyWrite":[]}}\n' "$W" >"$WORK/srt-settings.json"
    if (cd "$W" && node "$SRT_CLI" -s "$WORK/srt-settings.json" true) >/dev/null 2>"$WORK/srt.err"; then
      SRT_OK=1
      SRT_VERSION="$(python3 -c 'import json, os, sys; print(json.load(open(os.path.join(os.path.dirname(sys.argv[1]), "..", "package.json")))["version"])' "$SRT_CLI" 2>/dev/null || echo '?')"
    else
      echo "    srt cannot run here (it needs bubblewrap, socat and ripgrep); left out:"
      sed 's/^/    /' "$WORK/srt.err" | tail -3
    fi
  elif [ -z "${SRT_CLI:-}" ]; then
    echo "    npm/node not found: srt left out"
  fi
fi
BWRAP_OK=0
command -v bwrap >/dev/null && BWRAP_OK=1 || echo "    bwrap not found: bubblewrap left out (apt-get install bubblewrap)"

# --- workloads ----------------------------------------------------------------------
echo "==> generating a git repository of $GIT_FILES files in $W/repo"
python3 - "$W/repo" "$GIT_FILES" <<'EOF'
import os, sys
root, total = sys.argv[1], int(sys.argv[2])
made = 0
for a in range(30):
    for b in range(total // 300 + 1):
        d = os.path.join(root, f"pkg{a:02d}", f"mod{b:03d}")
        os.makedirs(d, exist_ok=True)
        for f in range(10):
            if made >= total:
                break
            with open(os.path.join(d, f"file{f}.txt"), "w") as fh:
                fh.write(f"{a} {b} {f}\n")
            made += 1
EOF
git -C "$W/repo" init -q
git -C "$W/repo" add -A
git -C "$W/repo" -c user.name=bench -c user.email=bench@example.invalid -c gc.auto=0 \
  -c maintenance.auto=false commit -q -m initial
# Packed, as a repository usually is; and now rather than by a background `gc --auto` that
# would remove object directories while the variants run.
git -C "$W/repo" gc -q
git -C "$W/repo" status --porcelain >/dev/null   # refresh the index once, outside
echo "    $(git -C "$W/repo" ls-files | wc -l) files committed"

echo "==> generating $BUILD_FILES C files in $W/build"
python3 - "$W/build" "$BUILD_FILES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
for i in range(n):
    with open(os.path.join(d, f"u{i:04d}.c"), "w") as f:
        f.write(f"#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n"
                f"static int t{i}[64];\n"
                f"int f{i}(int x) {{ for (int k = 0; k < 64; k++) t{i}[k] = x * k; return t{i}[x & 63]; }}\n"
                f"const char *s{i}(void) {{ static char b[32]; snprintf(b, sizeof b, \"%d\", f{i}({i})); return strdup(b); }}\n")
with open(os.path.join(d, "main.c"), "w") as f:
    f.write("int main(void) { return 0; }\n")
with open(os.path.join(d, "Makefile"), "w") as f:
    f.write("SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\nprog: $(OBJS)\n\t$(CC) -o $@ $^\n"
            "%.o: %.c\n\t$(CC) -O1 -c $< -o $@\n")
EOF

cat >"$WORK/git.sh" <<EOF
cd "$W/repo" || exit 1
for i in \$(seq $GIT_REPS); do git status --porcelain >/dev/null || exit 1; done
EOF
cat >"$WORK/build.sh" <<EOF
cd "$W/build" || exit 1
rm -f ./*.o prog
make -s -j2 >/dev/null || exit 1
EOF
cat >"$WORK/empty.sh" <<EOF
cd "$W/repo" || exit 1
EOF
cat >"$WORK/exec.sh" <<EOF
i=0
while [ \$i -lt $EXECS ]; do /bin/true; i=\$((i+1)); done
EOF

# --- timing: the variants take turns within each round -----------------------------
cat >"$WORK/rounds.py" <<'EOF'
"""rounds.py RUNS SCRIPT NAME=CMDPREFIX...: run `CMDPREFIX sh SCRIPT` for each variant, RUNS
rounds after one warm-up round; print 'NAME median_ms failures' per variant (failures of the
warm-up round included; each one's stderr goes to stderr)."""
import shlex, subprocess, sys, time
runs, script = int(sys.argv[1]), sys.argv[2]
variants = [(v.split("=", 1)[0], shlex.split(v.split("=", 1)[1])) for v in sys.argv[3:]]
times = {n: [] for n, _ in variants}
fails = {n: 0 for n, _ in variants}
for r in range(runs + 1):
    for name, prefix in variants:
        t0 = time.perf_counter()
        p = subprocess.run(prefix + ["sh", script], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        dt = (time.perf_counter() - t0) * 1000
        if r > 0:
            times[name].append(dt)
        if p.returncode != 0:
            fails[name] += 1
            err = p.stderr.decode(errors="replace").strip().splitlines()[-3:]
            print(f"  {name}, round {r}: exit {p.returncode}: {' | '.join(err)}", file=sys.stderr)
for name, _ in variants:
    t = sorted(times[name])
    med = t[len(t) // 2] if len(t) % 2 else (t[len(t) // 2 - 1] + t[len(t) // 2]) / 2
    print(f"{name} {med:.1f} {fails[name]}")
EOF

VARIANTS=("direct=")
[ "$BWRAP_OK" = 1 ] && VARIANTS+=("bwrap=bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --bind $W $W --chdir $W")
VARIANTS+=("ringfence=$RF run --allow-write $W --")
[ "$SRT_OK" = 1 ] && VARIANTS+=("srt=node $SRT_CLI -s $WORK/srt-settings.json")

declare -A MED
bench() { # bench KEY TITLE SCRIPT
  local key="$1" title="$2" script="$3" name med fails
  echo
  echo "==> $title ($RUNS rounds)"
  while read -r name med fails; do
    MED[$key.$name]="$med"
    printf '  %-12s median %9.1f ms' "$name" "$med"
    [ "$fails" = 0 ] && echo || echo "   ($fails runs FAILED)"
  done < <(cd "$W" && python3 "$WORK/rounds.py" "$RUNS" "$script" "${VARIANTS[@]}")
}

echo
echo "==> $(nproc) CPUs, $(uname -r), $(git --version), $(gcc --version | head -1)"
bench empty "the fixed cost: an empty script, same writable directory" "$WORK/empty.sh"
bench git "git status --porcelain x$GIT_REPS on $GIT_FILES files" "$WORK/git.sh"
bench build "make -j2 of $BUILD_FILES C files" "$WORK/build.sh"
bench exec "$EXECS execs of /bin/true" "$WORK/exec.sh"

# --- summary ----------------------------------------------------------------------
pct() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}x ({(a/b-1)*100:+.0f} %)' if b else 'n/a')" "$1" "$2"; }
echo
echo "==> summary: time relative to direct and to bubblewrap (target: ringfence under +10 % vs direct on git status and the build)"
printf '  %-34s %-18s %-18s\n' "" "vs direct" "vs bwrap"
for key in empty git build exec; do
  for v in ringfence bwrap srt; do
    [ -n "${MED[$key.$v]:-}" ] || continue
    vb="-"
    [ "$v" != bwrap ] && [ -n "${MED[$key.bwrap]:-}" ] && vb="$(pct "${MED[$key.$v]}" "${MED[$key.bwrap]}")"
    printf '  %-34s %-18s %-18s\n' "$key: $v${SRT_VERSION:+$([ "$v" = srt ] && echo " $SRT_VERSION")}" "$(pct "${MED[$key.$v]}" "${MED[$key.direct]}")" "$vb"
  done
done
