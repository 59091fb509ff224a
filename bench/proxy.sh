#!/usr/bin/env bash
# Proxy benchmark: ringfence's egress proxy vs srt's (Anthropic's sandbox-runtime) vs direct
# loopback, all in one run, against the same loopback upstream (bench/proxy/upstream.c).
#   - throughput of one large download (curl, best of RUNS), plain http:// and CONNECT
#   - small requests per second with 1 and 64 concurrent keep-alive clients (bench/proxy/load.c)
#   - added latency per small request at the median (1 client, proxy minus direct)
#   - the proxy's resident memory with CONNS open CONNECT tunnels
# ringfence is measured as the standalone `ringfence proxy` (decisions logged to a file) and
# inside `ringfence run` (the supervisor's proxy; clients run in the sandbox).
# srt's proxy cannot be started on its own from its command line, so srt is measured end to
# end: the clients run inside `srt` and go through its in-sandbox port (socat hops + Node).
# Measures, never asserts. Everything it starts is stopped at exit.
#
# Usage: bench/proxy.sh            (from any directory)
# Environment: SIZE_MB (default 200), RUNS (default 5), RPS_SECONDS (default 5),
#   CONNS (default 1000), SRT_CLI (path to srt's dist/cli.js; otherwise srt $SRT_PIN, default 0.0.83, installed with npm
#   into a temporary dir), NO_SRT=1 to leave srt out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_MB="${SIZE_MB:-200}"
RUNS="${RUNS:-5}"
RPS_SECONDS="${RPS_SECONDS:-5}"
CONNS="${CONNS:-1000}"

WORK=""
CWD=""
PIDS=()
SRT_SOCKS_BEFORE="$(ls -d /tmp/srt-mux-*.sock 2>/dev/null || true)"
cleanup() {
  local p s
  exec 3>&- 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for s in /tmp/srt-mux-*.sock; do
    [ -e "$s" ] || continue
    grep -qxF -- "$s" <<<"$SRT_SOCKS_BEFORE" || rm -f -- "$s"
  done
  [ -n "$WORK" ] && rm -rf -- "$WORK"
  [ -n "$CWD" ] && rm -rf -- "$CWD"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

WORK="$(mktemp -d /tmp/ringfence-proxy-bench.XXXXXX)"
# The sandboxes run from a small empty directory they can see (their /tmp is private); not
# from /, which srt 0.0.83 searches for files to protect (about 10 s a start).
CWD="$(mktemp -d /var/tmp/ringfence-proxy-bench-cwd.XXXXXX)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "==> building ringfence (release) and the benchmark tools"
(cd "$ROOT" && cargo build --release -q -p ringfence)
RF="$ROOT/target/release/ringfence"
# The tools live in the worktree's target dir, which srt's sandbox can read.
TOOLS="$ROOT/target/bench-proxy"
mkdir -p "$TOOLS"
gcc -O2 -pthread -o "$TOOLS/upstream" "$ROOT/bench/proxy/upstream.c"
gcc -O2 -pthread -o "$TOOLS/load" "$ROOT/bench/proxy/load.c"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

UP_PORT="$(free_port)"
"$TOOLS/upstream" "$UP_PORT" "$((SIZE_MB * 1024 * 1024))" >"$WORK/upstream.out" &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$WORK/upstream.out" 2>/dev/null && break; sleep 0.1; done
TARGET="127.0.0.1:$UP_PORT"

echo "{\"network\":{\"allowedDomains\":[\"$TARGET\"]}}" >"$WORK/rf.json"
"$RF" proxy -s "$WORK/rf.json" --listen 127.0.0.1:0 >"$WORK/decisions.jsonl" 2>"$WORK/rf.err" &
RF_PID=$!
PIDS+=($RF_PID)
for _ in $(seq 50); do grep -q listening "$WORK/rf.err" 2>/dev/null && break; sleep 0.1; done
RF_ADDR="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/rf.err" | head -1)"
[ -n "$RF_ADDR" ] || { echo "ringfence proxy did not start:"; cat "$WORK/rf.err"; exit 1; }

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
    echo "{\"network\":{\"allowedDomains\":[\"127.0.0.1\"],\"deniedDomains\":[]},\"filesystem\":{\"denyRead\":[],\"allowWrite\":[],\"denyWrite\":[]}}" >"$WORK/srt.json"
    SRT=(node "$SRT_CLI" -s "$WORK/srt.json" --)
    if ! (cd "$CWD" && "${SRT[@]}" true) >/dev/null 2>"$WORK/srt.err"; then
      echo "    srt cannot run here (it needs bubblewrap, socat and ripgrep); left out:"
      sed 's/^/    /' "$WORK/srt.err" | tail -3
      SRT=()
    fi
  fi
fi
# Inside srt: its proxy URL is http://USER:PASS@localhost:PORT; NO_PROXY names 127.0.0.1, so
# the proxy is given explicitly.
SRT_ENV='P="${HTTP_PROXY#http://}"; CRED="${P%@*}"; HP="${P##*@}"; HP="127.0.0.1:${HP##*:}"; export LOAD_PROXY_AUTH="$(printf %s "$CRED" | base64 -w0)";'
in_srt() { (cd "$CWD" && "${SRT[@]}" sh -c "$SRT_ENV $1"); }
# Inside `ringfence run`: the supervisor's proxy on the sandbox's own 127.0.0.1:3128.
RF_ENV='HP="${HTTP_PROXY#http://}";'
in_rf() { (cd "$CWD" && "$RF" run -s "$WORK/rf.json" -- sh -c "$RF_ENV $1"); }

# --- throughput -----------------------------------------------------------------
URL="http://$TARGET/big"
# Rounds alternate between the set-ups, so that a busy moment on the machine does not favour
# one of them; each keeps its best round.
declare -A T=([direct]=0 [rf]=0 [rfc]=0 [run]=0 [srt]=0)
speed() { # speed KEY CMD... : keep the best bytes/s of KEY
  local key="$1" s; shift
  s="$("$@" 2>/dev/null || echo 0)"
  s="${s%%.*}"
  [ "${s:-0}" -gt "${T[$key]}" ] && T[$key]="$s"
  return 0
}
CURL=(curl -s --noproxy '' -o /dev/null -w '%{speed_download}')
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }
echo "==> throughput: one ${SIZE_MB} MB download, best of $RUNS"
RF_CPU0="$(cpu_ms "$RF_PID")"
for _ in $(seq "$RUNS"); do
  speed direct "${CURL[@]}" "$URL"
  speed rf "${CURL[@]}" -x "http://$RF_ADDR" "$URL"
  speed rfc "${CURL[@]}" -p -x "http://$RF_ADDR" "$URL"
  speed run in_rf "curl -s --noproxy '' -x \"\$HTTP_PROXY\" -o /dev/null -w '%{speed_download}' $URL"
  if [ ${#SRT[@]} -gt 0 ]; then
    speed srt in_srt "curl -s --noproxy '' -x \"\$HTTP_PROXY\" -o /dev/null -w '%{speed_download}' $URL"
  fi
done
T_DIRECT="${T[direct]}" T_RF="${T[rf]}" T_RFC="${T[rfc]}" T_RUN="${T[run]}" T_SRT="${T[srt]}"
RF_CPU_PER="$(( ($(cpu_ms "$RF_PID") - RF_CPU0) / (2 * RUNS) ))"
mbs() { awk -v b="$1" 'BEGIN { printf "%8.0f MB/s", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%6.2f", a / b; else printf "   n/a" }'; }
printf '  %-28s %s\n' "direct" "$(mbs "$T_DIRECT")"
printf '  %-28s %s   %s x direct\n' "ringfence (http://)" "$(mbs "$T_RF")" "$(ratio "$T_RF" "$T_DIRECT")"
printf '  %-28s %s   %s x direct\n' "ringfence (CONNECT)" "$(mbs "$T_RFC")" "$(ratio "$T_RFC" "$T_DIRECT")"
printf '  %-28s %s   %s x direct\n' "ringfence run (in sandbox)" "$(mbs "$T_RUN")" "$(ratio "$T_RUN" "$T_DIRECT")"
if [ ${#SRT[@]} -gt 0 ]; then
  printf '  %-28s %s   %s x direct   ringfence run/srt %s\n' "srt (http://, in sandbox)" "$(mbs "$T_SRT")" "$(ratio "$T_SRT" "$T_DIRECT")" "$(ratio "$T_RUN" "$T_SRT")"
fi

echo "  ringfence proxy CPU time: ${RF_CPU_PER} ms per ${SIZE_MB} MB download (user + system)"

# --- requests per second and latency ------------------------------------------
echo "==> small requests (GET, 2-byte body, keep-alive), ${RPS_SECONDS} s each"
declare -A RPS MED CPU_REQ
for c in 1 64; do
  read -r _ RPS[direct$c] MED[direct$c] _ _ < <("$TOOLS/load" rps - "$TARGET" "$c" "$RPS_SECONDS")
  C0="$(cpu_ms "$RF_PID")"
  read -r N RPS[rf$c] MED[rf$c] _ E < <("$TOOLS/load" rps "$RF_ADDR" "$TARGET" "$c" "$RPS_SECONDS")
  CPU_REQ[$c]="$(( ($(cpu_ms "$RF_PID") - C0) * 1000 / (N > 0 ? N : 1) ))"
  [ "$E" = 0 ] || echo "    ringfence: $E errors with $c clients"
  read -r _ RPS[run$c] MED[run$c] _ E < <(in_rf "$TOOLS/load rps \"\$HP\" $TARGET $c $RPS_SECONDS")
  [ "$E" = 0 ] || echo "    ringfence run: $E errors with $c clients"
  if [ ${#SRT[@]} -gt 0 ]; then
    read -r _ RPS[srt$c] MED[srt$c] _ E < <(in_srt "$TOOLS/load rps \"\$HP\" $TARGET $c $RPS_SECONDS")
    [ "$E" = 0 ] || echo "    srt: $E errors with $c clients"
  fi
  printf '  %2d client(s): direct %7s req/s   ringfence %7s req/s (%s x direct, %s us CPU/req)' "$c" "${RPS[direct$c]}" "${RPS[rf$c]}" "$(ratio "${RPS[rf$c]}" "${RPS[direct$c]}")" "${CPU_REQ[$c]}"
  printf '   run %7s req/s' "${RPS[run$c]}"
  if [ ${#SRT[@]} -gt 0 ]; then
    printf '   srt %7s req/s (run/srt %s)' "${RPS[srt$c]}" "$(ratio "${RPS[run$c]}" "${RPS[srt$c]}")"
  fi
  echo
done
printf '  median latency, 1 client: direct %s us, ringfence proxy %s us (+%s us), ringfence run %s us (+%s us)' "${MED[direct1]}" "${MED[rf1]}" "$((MED[rf1] - MED[direct1]))" "${MED[run1]}" "$((MED[run1] - MED[direct1]))"
[ ${#SRT[@]} -gt 0 ] && printf ', srt %s us (+%s us)' "${MED[srt1]}" "$((MED[srt1] - MED[direct1]))"
echo

# --- memory ---------------------------------------------------------------------
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
echo "==> ringfence proxy memory with $CONNS open CONNECT tunnels"
BEFORE="$(rss "$RF_PID")"
mkfifo "$WORK/hold.in"
"$TOOLS/load" hold "$RF_ADDR" "$TARGET" "$CONNS" <"$WORK/hold.in" >"$WORK/hold.out" &
PIDS+=($!)
exec 3>"$WORK/hold.in"
for _ in $(seq 300); do grep -q ready "$WORK/hold.out" 2>/dev/null && break; sleep 0.1; done
OPEN="$(awk '{ print $2 }' "$WORK/hold.out")"
sleep 0.5
WITH="$(rss "$RF_PID")"
exec 3>&-
printf '  RSS idle %s KiB; with %s tunnels open %s KiB (%.1f MiB)\n' "$BEFORE" "${OPEN:-0}" "$WITH" "$(awk -v k="$WITH" 'BEGIN { print k / 1024 }')"
echo "==> $(wc -l <"$WORK/decisions.jsonl") decisions logged by ringfence during the run"
