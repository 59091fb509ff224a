#!/usr/bin/env bash
# Transparent capture benchmark: the same download and the same small requests direct on the
# host, inside `ringfence run` through the explicit proxy, and inside `ringfence run
# --transparent` (TUN device + the supervisor's user-space TCP stack), in one run, with ratios.
# The upstream listens on this host's first non-loopback address (a host-local literal the
# policy allows with its port), since the sandbox's own 127.0.0.1 is not the host's.
# Measures, never asserts; not part of the tests. Needs /dev/net/tun usable by the caller.
#
# Usage: bench/transparent.sh --run      (from any directory; without --run it only says what
#                                         it would measure)
# Environment: SIZE_MB (default 200), RUNS (default 5), RPS_SECONDS (default 5),
#   SETUPS (connections opened one after another for the setup time, default 200),
#   BASELINE (another ringfence binary, say an earlier build: its transparent download is
#   measured in the same rounds, for a before/after in one run).
set -euo pipefail

if [ "${1:-}" != "--run" ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_MB="${SIZE_MB:-200}"
RUNS="${RUNS:-5}"
RPS_SECONDS="${RPS_SECONDS:-5}"
SETUPS="${SETUPS:-200}"

WORK=""
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$WORK" ] && rm -rf -- "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
WORK="$(mktemp -d /tmp/ringfence-transparent-bench.XXXXXX)"

echo "==> building ringfence (release) and the benchmark tools"
(cd "$ROOT" && cargo build --release -q -p ringfence)
RF="$ROOT/target/release/ringfence"
TOOLS="$ROOT/target/bench-proxy"
mkdir -p "$TOOLS"
gcc -O2 -pthread -o "$TOOLS/upstream" "$ROOT/bench/proxy/upstream.c"
gcc -O2 -pthread -o "$TOOLS/load" "$ROOT/bench/proxy/load.c"

ADDR="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -m1 -E '^[0-9]+\.' || true)"
[ -n "$ADDR" ] || { echo "no non-loopback IPv4 address on this host"; exit 1; }
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
UPSTREAM_ADDR="$ADDR" "$TOOLS/upstream" "$PORT" "$((SIZE_MB * 1024 * 1024))" >"$WORK/upstream.out" &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$WORK/upstream.out" 2>/dev/null && break; sleep 0.1; done
TARGET="$ADDR:$PORT"
echo "{\"network\":{\"allowedDomains\":[\"$TARGET\"]}}" >"$WORK/rf.json"

in_proxy() { (cd / && "$RF" run -s "$WORK/rf.json" -- sh -c "HP=\"\${HTTP_PROXY#http://}\"; $1"); }
in_tp() { (cd / && "${TP_RF:-$RF}" run -s "$WORK/rf.json" --transparent -- sh -c "$1"); }
if ! in_tp true 2>"$WORK/tp.err"; then
  echo "transparent mode is unavailable here:"; sed 's/^/  /' "$WORK/tp.err"; exit 1
fi

URL="http://$TARGET/big"
CURL="curl -s --noproxy '*' -o /dev/null -w '%{speed_download}'"
declare -A T=([direct]=0 [proxy]=0 [tp]=0 [base]=0)
BASELINE="${BASELINE:-}"
keep() { local s="${2%%.*}"; [ "${s:-0}" -gt "${T[$1]}" ] && T[$1]="$s"; return 0; }
echo "==> throughput: one ${SIZE_MB} MB download, best of $RUNS"
for _ in $(seq "$RUNS"); do
  keep direct "$(sh -c "$CURL $URL" || echo 0)"
  keep proxy "$(in_proxy "curl -s --noproxy '' -x \"\$HTTP_PROXY\" -o /dev/null -w '%{speed_download}' $URL" || echo 0)"
  keep tp "$(in_tp "$CURL $URL" || echo 0)"
  [ -z "$BASELINE" ] || keep base "$(TP_RF="$BASELINE" in_tp "$CURL $URL" || echo 0)"
done
mbs() { awk -v b="$1" 'BEGIN { printf "%8.0f MB/s", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%6.2f", a / b; else printf "   n/a" }'; }
printf '  %-26s %s\n' "direct" "$(mbs "${T[direct]}")"
printf '  %-26s %s   %s x direct\n' "explicit proxy (run)" "$(mbs "${T[proxy]}")" "$(ratio "${T[proxy]}" "${T[direct]}")"
printf '  %-26s %s   %s x direct   %s x proxy\n' "transparent (run)" "$(mbs "${T[tp]}")" "$(ratio "${T[tp]}" "${T[direct]}")" "$(ratio "${T[tp]}" "${T[proxy]}")"
[ -z "$BASELINE" ] || printf '  %-26s %s   %s x direct   %s x proxy\n' "transparent (BASELINE)" "$(mbs "${T[base]}")" "$(ratio "${T[base]}" "${T[direct]}")" "$(ratio "${T[base]}" "${T[proxy]}")"

echo "==> small requests (GET, keep-alive, 1 client), ${RPS_SECONDS} s each"
read -r _ R_D M_D _ _ < <("$TOOLS/load" rps - "$TARGET" 1 "$RPS_SECONDS")
read -r _ R_P M_P _ _ < <(in_proxy "$TOOLS/load rps \"\$HP\" $TARGET 1 $RPS_SECONDS")
read -r _ R_T M_T _ _ < <(in_tp "$TOOLS/load rps - $TARGET 1 $RPS_SECONDS")
printf '  direct %7s req/s   proxy %7s req/s (%s x direct)   transparent %7s req/s (%s x direct, %s x proxy)\n' \
  "$R_D" "$R_P" "$(ratio "$R_P" "$R_D")" "$R_T" "$(ratio "$R_T" "$R_D")" "$(ratio "$R_T" "$R_P")"
printf '  median latency: direct %s us, proxy %s us, transparent %s us\n' "$M_D" "$M_P" "$M_T"

# Connection setup: SETUPS connections one after another, each until its first answer.
cat >"$WORK/setup.py" <<PY
import socket, sys, time
proxy = sys.argv[1] if len(sys.argv) > 1 else ""
req = (b"GET http://$TARGET/small HTTP/1.1\r\nHost: $TARGET\r\n\r\n" if proxy
       else b"GET /small HTTP/1.1\r\nHost: $TARGET\r\n\r\n")
host, port = (proxy or "$TARGET").rsplit(":", 1)
t = time.perf_counter()
for _ in range($SETUPS):
    s = socket.create_connection((host, int(port)))
    s.sendall(req)
    s.recv(4096)
    s.close()
print(int((time.perf_counter() - t) * 1e6 / $SETUPS))
PY
chmod 644 "$WORK/setup.py"
cp "$WORK/setup.py" "$TOOLS/setup.py"
S_D="$(python3 "$TOOLS/setup.py")"
S_P="$(in_proxy "python3 $TOOLS/setup.py \"\$HP\"")"
S_T="$(in_tp "python3 $TOOLS/setup.py")"
printf '==> connection setup + first answer (%s in a row): direct %s us, proxy %s us, transparent %s us (%s x proxy)\n' \
  "$SETUPS" "$S_D" "$S_P" "$S_T" "$(ratio "$S_T" "$S_P")"

# Startup: a sandboxed true with and without the capture.
start_ms() { local t0 t1; t0="$(date +%s%N)"; for _ in 1 2 3 4 5 6 7 8 9 10; do (cd / && "$RF" run -s "$WORK/rf.json" "$@" -- true); done; t1="$(date +%s%N)"; echo $(( (t1 - t0) / 100000 )); }
B="$(start_ms)"; TP="$(start_ms --transparent)"
printf '==> startup of a sandboxed true (mean of 10): %s.%02d ms, with --transparent %s.%02d ms\n' \
  "$((B / 100))" "$((B % 100))" "$((TP / 100))" "$((TP % 100))"
