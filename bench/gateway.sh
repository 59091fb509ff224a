#!/usr/bin/env bash
# Gateway load: `ringfence proxy --clients` (one authenticated client, decisions logged) vs
# Squid (Debian package squid, a well-known forward proxy) in the same run, both on loopback
# against the same upstream (bench/proxy/upstream.c), driven by bench/proxy/load.c:
#   - TUNNELS concurrent CONNECT tunnels opened and held (how many opened, the proxy's RSS)
#   - while they are held: RATE small requests/s on a fixed schedule from CONC keep-alive
#     clients for SECONDS_RPS (achieved rate, p50 and p99 latency counted from when each
#     request was due, errors, the latency added over direct at the same rate), then the same
#     clients back to back (the most requests/s)
#   - then one request through every held tunnel (how many still answer), and the RSS after
# Measures, never asserts. Run as root (it raises the open-file limit and starts squid).
# A proxy holds two descriptors per tunnel: when the open-file limit cannot be raised far
# enough for one process, each proxy runs as PROCS processes on one port (ringfence: one
# SO_REUSEPORT listener each, Squid: `workers PROCS`), and the figures are their sums.
# Everything it starts is stopped at exit.
#
# Usage: bench/gateway.sh
# Environment: TUNNELS (default 10000), RATE (default 5000), CONC (default 64),
#   SECONDS_RPS (default 10), PROCS (default: as few as the open-file limit allows),
#   NO_SQUID=1 to leave Squid out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TUNNELS="${TUNNELS:-10000}"
CONC="${CONC:-64}"
SECONDS_RPS="${SECONDS_RPS:-10}"
RATE="${RATE:-5000}"

WORK=""
PIDS=()
cleanup() {
  local p
  exec 3>&- 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  [ -n "$WORK" ] && rm -rf -- "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || { echo "bench/gateway.sh: run as root (open-file limit, squid)" >&2; exit 1; }
# Each tunnel is two sockets in the proxy, one in the client and one in the upstream.
ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE="$(ulimit -n)"
# Per proxy process: two per tunnel, two per load client, and a reserve.
NEED=$((TUNNELS * 2 + CONC * 2 + 1000))
PROCS="${PROCS:-$(( (NEED + NOFILE - 1001) / (NOFILE - 1000) ))}"
[ "$PROCS" -ge 1 ] || PROCS=1
if [ "$PROCS" -gt 1 ]; then
  echo "note: the open-file limit is $NOFILE and cannot be raised here; $TUNNELS tunnels need about $NEED" \
    "descriptors in one proxy, so each proxy runs as $PROCS processes on one port" >&2
fi
[ $((TUNNELS + CONC + 100)) -le "$NOFILE" ] || { echo "bench/gateway.sh: TUNNELS=$TUNNELS exceeds what the load client can hold with the limit $NOFILE" >&2; exit 1; }
WORK="$(mktemp -d /tmp/ringfence-gateway-bench.XXXXXX)"
chmod 755 "$WORK"

if [ "${NO_SQUID:-0}" != 1 ] && ! command -v squid >/dev/null; then
  echo "==> installing squid (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends squid >/dev/null
fi

echo "==> building ringfence (release) and the benchmark tools"
(cd "$ROOT" && cargo build --release -q -p ringfence)
RF="$ROOT/target/release/ringfence"
TOOLS="$ROOT/target/bench-proxy"
mkdir -p "$TOOLS"
gcc -O2 -pthread -o "$TOOLS/upstream" "$ROOT/bench/proxy/upstream.c"
gcc -O2 -pthread -o "$TOOLS/load" "$ROOT/bench/proxy/load.c"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# rss PID...: their resident memory together, KiB.
rss() { local p t=0; for p in "$@"; do t=$((t + $(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo "$t"; }
kids() { pgrep -P "$1" | tr '\n' ' '; }
wait_port() { # wait_port PORT: until something listens there (10 s)
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

UP_PORT="$(free_port)"
"$TOOLS/upstream" "$UP_PORT" 1048576 >"$WORK/upstream.out" &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$WORK/upstream.out" 2>/dev/null && break; sleep 0.1; done
TARGET="127.0.0.1:$UP_PORT"

# --- ringfence: one client with a token and a policy that allows the upstream -----------------
TOKEN_OUT="$("$RF" proxy --new-client-token)"
TOKEN="$(awk '/^token:/ { print $2 }' <<<"$TOKEN_OUT")"
HASH="$(awk '/^tokenSha256:/ { print $2 }' <<<"$TOKEN_OUT")"
printf '{"network": {"allowedDomains": ["127.0.0.1:%s"]}}\n' "$UP_PORT" >"$WORK/agent.json"
printf '{}\n' >"$WORK/gateway.json"
printf '{"clients": [{"name": "agent-1", "tokenSha256": "%s", "settings": "agent.json"}]}\n' "$HASH" >"$WORK/clients.json"
RF_PORT="$(free_port)"
# PROCS gateway processes, each on its own SO_REUSEPORT listener of one port (the kernel spreads
# connections over them); the launcher stops them when it is stopped.
cat >"$WORK/launch.py" <<'PY'
import signal, socket, subprocess, sys
port, n, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
kids = []
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    args = [a.replace("{N}", str(i)).replace("{FD}", str(s.fileno())) for a in cmd]
    kids.append(subprocess.Popen(args, pass_fds=[s.fileno()]))
    s.close()
def stop(*_):
    for k in kids:
        k.terminate()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
for k in kids:
    k.wait()
PY
(cd "$WORK" && exec python3 "$WORK/launch.py" "$RF_PORT" "$PROCS" "$RF" proxy -s gateway.json \
  --clients clients.json --listen-fd "{FD}" --log "$WORK/decisions-{N}.log" 2>"$WORK/rf.err") &
RF_PID=$!
PIDS+=("$RF_PID")
wait_port "$RF_PORT" || { cat "$WORK/rf.err"; exit 1; }
for _ in $(seq 50); do [ "$(pgrep -c -P "$RF_PID")" -ge "$PROCS" ] && break; sleep 0.1; done
sleep 0.5
RF_AUTH="$(printf 'agent-1:%s' "$TOKEN" | base64 -w0)"

# --- squid: CONNECT and plain HTTP to the upstream's port only, no cache, no log ------------
SQ_PORT=""
if [ "${NO_SQUID:-0}" != 1 ]; then
  SQ_PORT="$(free_port)"
  mkdir -p "$WORK/squid"
  chown proxy: "$WORK/squid" 2>/dev/null || true
  cat >"$WORK/squid.conf" <<EOF
http_port 127.0.0.1:$SQ_PORT
acl up_port port $UP_PORT
acl to_local dst 127.0.0.1
acl CONNECT method CONNECT
http_access allow to_local up_port
http_access deny all
cache deny all
access_log none
cache_log $WORK/squid/cache.log
pid_filename $WORK/squid/squid.pid
coredump_dir $WORK/squid
max_filedescriptors 65536
workers $PROCS
shutdown_lifetime 0 seconds
EOF
  if [ "$PROCS" -gt 1 ]; then
    # SMP mode: a master, a coordinator and the workers, talking over unix sockets in its
    # run directory.
    mkdir -p /var/run/squid && chown proxy: /var/run/squid 2>/dev/null || true
    squid --foreground -f "$WORK/squid.conf" &
  else
    squid -N -f "$WORK/squid.conf" &
  fi
  SQ_PID=$!
  PIDS+=("$SQ_PID")
  wait_port "$SQ_PORT" || { cat "$WORK/squid/cache.log"; exit 1; }
fi

direct_rate="$("$TOOLS/load" rate - "$TARGET" "$CONC" "$SECONDS_RPS" "$RATE")"
echo "==> direct, $RATE req/s from $CONC clients for $SECONDS_RPS s: requests rps p50_us p99_us errors = $direct_rate"
read -r _ _ DIRECT_P50 DIRECT_P99 _ <<<"$direct_rate"
direct="$("$TOOLS/load" rps - "$TARGET" "$CONC" "$SECONDS_RPS")"
echo "==> direct, $CONC clients back to back for $SECONDS_RPS s: requests rps p50_us p99_us errors = $direct"
read -r _ _ DIRECT_MAX_P50 DIRECT_MAX_P99 _ <<<"$direct"

measure() { # measure NAME ROOTPID ADDR AUTH: ROOTPID's children (ringfence) or tree (squid)
  local name="$1" root="$2" addr="$3" auth="$4" pids idle with during opened rated max alive after
  if [ "$name" = ringfence ]; then pids="$(kids "$root")"; else pids="$root $(kids "$root")"; fi
  # shellcheck disable=SC2086
  idle="$(rss $pids)"
  rm -f "$WORK/hold.in" "$WORK/hold.out"
  mkfifo "$WORK/hold.in"
  LOAD_PROXY_AUTH="$auth" "$TOOLS/load" hold "$addr" "$TARGET" "$TUNNELS" <"$WORK/hold.in" >"$WORK/hold.out" &
  local hold_pid=$!
  PIDS+=("$hold_pid")
  exec 3>"$WORK/hold.in"
  for _ in $(seq 1200); do grep -q ready "$WORK/hold.out" 2>/dev/null && break; sleep 0.1; done
  opened="$(awk '/^ready/ { print $2 }' "$WORK/hold.out")"
  sleep 0.5
  # shellcheck disable=SC2086
  with="$(rss $pids)"
  rated="$(LOAD_PROXY_AUTH="$auth" "$TOOLS/load" rate "$addr" "$TARGET" "$CONC" "$SECONDS_RPS" "$RATE")"
  # shellcheck disable=SC2086
  during="$(rss $pids)"
  max="$(LOAD_PROXY_AUTH="$auth" "$TOOLS/load" rps "$addr" "$TARGET" "$CONC" "$SECONDS_RPS")"
  exec 3>&-
  wait "$hold_pid" 2>/dev/null || true
  alive="$(awk '/^alive/ { print $2 }' "$WORK/hold.out")"
  sleep 1
  # shellcheck disable=SC2086
  after="$(rss $pids)"
  read -r n r p50 p99 errs <<<"$rated"
  read -r mn mr mp50 mp99 merrs <<<"$max"
  printf '==> %s (%s process%s)\n' "$name" "$PROCS" "$([ "$PROCS" -gt 1 ] && echo es)"
  printf '  tunnels: %s of %s opened and held, %s of them answered a request at the end\n' \
    "${opened:-0}" "$TUNNELS" "${alive:-0}"
  printf '  RSS: idle %s KiB, with the tunnels %s KiB, after the %s req/s load %s KiB, tunnels closed %s KiB\n' \
    "$idle" "$with" "$RATE" "$during" "$after"
  printf '  %s req/s asked, %s clients for %s s, tunnels held: %s requests, %s req/s, p50 %s us, p99 %s us, %s errors\n' \
    "$RATE" "$CONC" "$SECONDS_RPS" "$n" "$r" "$p50" "$p99" "$errs"
  printf '    added latency over direct at the same rate: p50 +%s us, p99 +%s us\n' "$((p50 - DIRECT_P50))" "$((p99 - DIRECT_P99))"
  printf '  back to back, %s clients for %s s, tunnels held: %s requests, %s req/s, p50 %s us, p99 %s us, %s errors\n' \
    "$CONC" "$SECONDS_RPS" "$mn" "$mr" "$mp50" "$mp99" "$merrs"
  printf '    added latency over direct back to back: p50 +%s us, p99 +%s us\n' "$((mp50 - DIRECT_MAX_P50))" "$((mp99 - DIRECT_MAX_P99))"
  eval "R_${name//[^a-z]/}=\"$mr $p50 $p99 $with\""
  sleep 1
}

measure ringfence "$RF_PID" "127.0.0.1:$RF_PORT" "$RF_AUTH"
if [ -n "$SQ_PORT" ]; then
  measure squid "$SQ_PID" "127.0.0.1:$SQ_PORT" ""
  read -r rr rp50 rp99 rmem <<<"$R_ringfence"
  read -r sr sp50 sp99 smem <<<"$R_squid"
  echo "==> ringfence / squid"
  awk -v a="$rr" -v b="$sr" -v c="$rp50" -v d="$sp50" -v e="$rp99" -v f="$sp99" -v g="$rmem" -v h="$smem" -v rate="$RATE" \
    'BEGIN { printf "  most req/s %.2f; at %s req/s p50 %.2f, p99 %.2f; RSS with the tunnels %.2f\n", a/b, rate, c/d, e/f, g/h }'
fi
echo "==> $(cat "$WORK"/decisions-*.log | wc -l) decisions logged by ringfence (each with client agent-1)"
