#!/usr/bin/env bash
# Gateway load: `ringfence proxy --clients` (one authenticated client, decisions logged) vs
# Squid (Debian package squid, a well-known forward proxy) in the same run, both on loopback
# against the same upstream (bench/proxy/upstream.c), driven by bench/proxy/load.c:
#   - TUNNELS concurrent CONNECT tunnels opened and held (how many opened, the proxy's RSS)
#   - while they are held: small keep-alive requests from CONC clients for SECONDS
#     (requests/s, p50 and p99 latency, errors), and the latency added over a direct request
# Measures, never asserts. Run as root (it raises the open-file limit and starts squid).
# Everything it starts is stopped at exit.
#
# Usage: bench/gateway.sh
# Environment: TUNNELS (default 10000), CONC (default 64), SECONDS_RPS (default 10),
#   NO_SQUID=1 to leave Squid out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TUNNELS="${TUNNELS:-10000}"
CONC="${CONC:-64}"
SECONDS_RPS="${SECONDS_RPS:-10}"

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
if [ $((TUNNELS * 2 + 1000)) -gt "$(ulimit -n)" ]; then
  echo "note: the open-file limit is $(ulimit -n) and cannot be raised here; each proxy needs two per tunnel," \
    "so $TUNNELS tunnels will not all open (try TUNNELS=$(( ($(ulimit -n) - 1000) / 2 )))" >&2
fi
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
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
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
(cd "$WORK" && exec "$RF" proxy -s gateway.json --clients clients.json --listen "127.0.0.1:$RF_PORT" \
  --log "$WORK/decisions.log" 2>"$WORK/rf.err") &
RF_PID=$!
PIDS+=("$RF_PID")
wait_port "$RF_PORT" || { cat "$WORK/rf.err"; exit 1; }
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
workers 1
shutdown_lifetime 0 seconds
EOF
  squid -N -f "$WORK/squid.conf" &
  SQ_PID=$!
  PIDS+=("$SQ_PID")
  wait_port "$SQ_PORT" || { cat "$WORK/squid/cache.log"; exit 1; }
fi

direct="$("$TOOLS/load" rps - "$TARGET" "$CONC" "$SECONDS_RPS")"
echo "==> direct: $CONC clients for $SECONDS_RPS s: requests rps p50_us p99_us errors = $direct"
read -r _ _ DIRECT_P50 DIRECT_P99 _ <<<"$direct"

measure() { # measure NAME PID ADDR AUTH
  local name="$1" pid="$2" addr="$3" auth="$4" idle with opened rps
  idle="$(rss "$pid")"
  rm -f "$WORK/hold.in" "$WORK/hold.out"
  mkfifo "$WORK/hold.in"
  LOAD_PROXY_AUTH="$auth" "$TOOLS/load" hold "$addr" "$TARGET" "$TUNNELS" <"$WORK/hold.in" >"$WORK/hold.out" &
  local hold_pid=$!
  PIDS+=("$hold_pid")
  exec 3>"$WORK/hold.in"
  for _ in $(seq 1200); do grep -q ready "$WORK/hold.out" 2>/dev/null && break; sleep 0.1; done
  opened="$(awk '{ print $2 }' "$WORK/hold.out")"
  sleep 0.5
  with="$(rss "$pid")"
  rps="$(LOAD_PROXY_AUTH="$auth" "$TOOLS/load" rps "$addr" "$TARGET" "$CONC" "$SECONDS_RPS")"
  local after
  after="$(rss "$pid")"
  exec 3>&-
  wait "$hold_pid" 2>/dev/null || true
  read -r n r p50 p99 errs <<<"$rps"
  printf '==> %s\n' "$name"
  printf '  tunnels: %s of %s opened and held; RSS idle %s KiB, with them %s KiB, after the load %s KiB\n' \
    "${opened:-0}" "$TUNNELS" "$idle" "$with" "$after"
  printf '  with the tunnels held, %s clients for %s s: %s requests, %s req/s, p50 %s us, p99 %s us, %s errors\n' \
    "$CONC" "$SECONDS_RPS" "$n" "$r" "$p50" "$p99" "$errs"
  printf '  added latency over direct: p50 +%s us, p99 +%s us\n' "$((p50 - DIRECT_P50))" "$((p99 - DIRECT_P99))"
  eval "R_${name//[^a-z]/}=\"$r $p50 $p99 $with\""
  sleep 1
}

measure ringfence "$RF_PID" "127.0.0.1:$RF_PORT" "$RF_AUTH"
if [ -n "$SQ_PORT" ]; then
  measure squid "$SQ_PID" "127.0.0.1:$SQ_PORT" ""
  read -r rr rp50 rp99 rmem <<<"$R_ringfence"
  read -r sr sp50 sp99 smem <<<"$R_squid"
  echo "==> ringfence / squid"
  awk -v a="$rr" -v b="$sr" -v c="$rp50" -v d="$sp50" -v e="$rp99" -v f="$sp99" -v g="$rmem" -v h="$smem" \
    'BEGIN { printf "  req/s %.2f, p50 %.2f, p99 %.2f, RSS with the tunnels %.2f\n", a/b, c/d, e/f, g/h }'
fi
echo "==> $(wc -l <"$WORK/decisions.log") decisions logged by ringfence (each with client agent-1)"
