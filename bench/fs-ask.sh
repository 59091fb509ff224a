#!/usr/bin/env bash
# What `filesystem.ask` costs when no question is pending: a build's creations (FILES new files
# and FILES/100 directories in the writable directory, made by one shell) run under ringfence
# with and without `--ask-fs`, the two taking turns within each round. Nothing is outside the
# writable roots, so nothing is asked; the difference is what the guard's extra work costs.
# Each round first removes the previous round's tree (rm -rf): with --ask-fs every unlink and
# rmdir passes through the guard too, so that is part of the figure.
# Prints medians and the ratio. Measures, never asserts; removes everything it created.
#
# Usage: bench/fs-ask.sh            (from any directory)
# Environment: RUNS (rounds, default 5), FILES (default 10000),
#   RINGFENCE_BIN (a built binary; otherwise target/release/ringfence is built).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-5}"
FILES="${FILES:-10000}"

# Outside /tmp: every sandbox here has a private /tmp.
BASE="/var/tmp"
[ -w "$BASE" ] || BASE="${HOME:-/var/tmp}/.cache"
mkdir -p "$BASE"
WORK="$(mktemp -d "$BASE/ringfence-fsask.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT
trap 'exit 130' INT TERM

BIN="${RINGFENCE_BIN:-}"
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release -q -p ringfence)
  BIN="$ROOT/target/release/ringfence"
fi

mkdir -p "$WORK/tree" "$WORK/home"
cat >"$WORK/settings.json" <<JSON
{"filesystem": {"allowWrite": ["$WORK/tree"]}}
JSON
cat >"$WORK/create.sh" <<SH
set -e
cd "$WORK/tree"
rm -rf out
mkdir out
i=0
while [ \$i -lt $FILES ]; do
  if [ \$((i % 100)) -eq 0 ]; then d=out/d\$i; mkdir \$d; fi
  : > \$d/f\$i
  i=\$((i + 1))
done
SH

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

run_one() {
  local t0 t1
  t0=$(now)
  HOME="$WORK/home" "$BIN" run "$@" -s "$WORK/settings.json" -- sh "$WORK/create.sh" \
    </dev/null >/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc
}

: >"$WORK/plain" ; : >"$WORK/ask"
for _ in $(seq "$RUNS"); do
  run_one >>"$WORK/plain"
  run_one --ask-fs >>"$WORK/ask"
done
plain=$(median <"$WORK/plain")
ask=$(median <"$WORK/ask")
printf 'creations: %d files in %d directories, %d rounds (medians)\n' \
  "$FILES" "$((FILES / 100))" "$RUNS"
printf '  guard only (no --ask-fs)   %8.3f s\n' "$plain"
printf '  with --ask-fs, none asked  %8.3f s\n' "$ask"
printf '  ratio ask / plain          %8.3f\n' "$(echo "$ask / $plain" | bc -l)"
