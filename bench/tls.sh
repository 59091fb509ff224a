#!/usr/bin/env bash
# TLS termination benchmark: HTTPS through ringfence's proxy as an opaque CONNECT tunnel, through
# ringfence's terminating proxy (`network.tlsTerminate`), and through srt's terminating proxy,
# all in one run, against the same loopback HTTPS upstream (bench/proxy/tls_upstream.c, with a
# test CA of this run). The clients (curl, HTTP/1.1) run inside `ringfence run` and inside `srt`.
#   - throughput of one large download (best of RUNS)
#   - small requests per second on one keep-alive connection, and with 16 in parallel
#   - the cost of a new connection (CONNECT, TLS handshake, one request, close), whose excess
#     over the opaque tunnel is what termination adds: the client's handshake with the proxy's
#     minted leaf and the proxy's own verified handshake upstream
# Prints ratios to the opaque tunnel (target: terminated throughput at least 0.5x) and
# ringfence/srt. Measures, never asserts. Not run by .ci/run (by hand; about 2 minutes).
#
# Usage: bench/tls.sh
# Environment: SIZE_MB (default 200), RUNS (default 3), REQS (default 2000), HANDSHAKES
#   (default 200), RF_BIN (a ringfence binary; otherwise built with --release), SRT_CLI (srt's
#   dist/cli.js; otherwise RINGFENCE_SRT_DIR's or the one scripts/test installs), NO_SRT=1.
# Needs gcc, OpenSSL's headers (libssl-dev), openssl and curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_MB="${SIZE_MB:-200}"
RUNS="${RUNS:-3}"
REQS="${REQS:-2000}"
HANDSHAKES="${HANDSHAKES:-200}"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in gcc openssl curl; do
  command -v "$tool" >/dev/null || { echo "bench/tls.sh: $tool is needed"; exit 1; }
done
[ -f /usr/include/openssl/ssl.h ] || { echo "bench/tls.sh: OpenSSL's headers are needed (apt-get install libssl-dev)"; exit 1; }

if [ -n "${RF_BIN:-}" ]; then
  RF="$RF_BIN"
else
  echo "==> building ringfence (release)"
  (cd "$ROOT" && cargo build --release -q -p ringfence)
  RF="$ROOT/target/release/ringfence"
fi
# The tools, certificates and request lists live in the worktree's target dir, which both
# sandboxes can read (ringfence's /tmp is private).
TOOLS="$ROOT/target/bench-tls"
rm -rf "$TOOLS"
mkdir -p "$TOOLS/cwd"
chmod 755 "$TOOLS" "$TOOLS/cwd"
# srt runs from this empty directory: from / it searches the whole tree for files to protect.
gcc -O2 -pthread -o "$TOOLS/tls_upstream" "$ROOT/bench/proxy/tls_upstream.c" -lssl -lcrypto

echo "==> a test CA and the upstream's certificate for 127.0.0.1"
(
  cd "$TOOLS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj /CN=bench-tls-ca -addext basicConstraints=critical,CA:true \
    -addext keyUsage=critical,keyCertSign,cRLSign
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout up.key -out up.csr -subj /CN=127.0.0.1
  printf 'subjectAltName=IP:127.0.0.1\n' >up.ext
  openssl x509 -req -in up.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out up.pem -days 2 -extfile up.ext
) >/dev/null 2>&1
# The terminating CA, the same for ringfence and srt (tlsTerminate.caCertPath/caKeyPath; RSA,
# which srt 0.0.83 needs). Each
# client trusts one certificate (curl reads its CA file for every connection, and the bundles
# the sandboxes are given hold the system roots too, which would add the same ~ms to each).
(
  cd "$TOOLS"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout mitm.key -out mitm.pem \
    -days 2 -subj /CN=bench-tls-terminating-ca -addext basicConstraints=critical,CA:true \
    -addext keyUsage=critical,keyCertSign,cRLSign
) >/dev/null 2>&1
chmod a+r "$TOOLS"/*
chmod 600 "$TOOLS"/*.key

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
"$TOOLS/tls_upstream" "$PORT" "$((SIZE_MB * 1024 * 1024))" "$TOOLS/up.pem" "$TOOLS/up.key" >"$TOOLS/upstream.out" &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$TOOLS/upstream.out" 2>/dev/null && break; sleep 0.1; done
U="https://127.0.0.1:$PORT"

for i in $(seq "$REQS"); do printf 'url = "%s/s"\noutput = "/dev/null"\n' "$U"; done >"$TOOLS/keepalive.cfg"
for i in $(seq "$HANDSHAKES"); do printf 'url = "%s/s"\noutput = "/dev/null"\n' "$U"; done >"$TOOLS/new.cfg"

cat >"$TOOLS/opaque.json" <<EOF
{"network": {"allowedDomains": ["127.0.0.1:$PORT"]}}
EOF
cat >"$TOOLS/terminated.json" <<EOF
{"network": {"allowedDomains": ["127.0.0.1:$PORT"],
             "tlsTerminate": {"caCertPath": "$TOOLS/mitm.pem", "caKeyPath": "$TOOLS/mitm.key"}}}
EOF
cat >"$TOOLS/srt.json" <<EOF
{"network": {"allowedDomains": ["127.0.0.1:$PORT"], "deniedDomains": [],
             "tlsTerminate": {"caCertPath": "$TOOLS/mitm.pem", "caKeyPath": "$TOOLS/mitm.key"}},
 "filesystem": {"denyRead": [], "allowWrite": [], "denyWrite": []}}
EOF

# What runs inside each sandbox: one line per figure. CAFLAG is the client's trust: the
# upstream's CA for the opaque tunnel, the terminating CA otherwise.
inner() { # inner CAFLAG
  cat <<EOF
C="curl -s --http1.1 --noproxy '' $1"
ns() { date +%s%N; }
for i in \$(seq $RUNS); do echo "thr \$(\$C -o /dev/null -w '%{speed_download}' $U/big)"; done
t0=\$(ns); \$C -K $TOOLS/keepalive.cfg || echo failed; t1=\$(ns); echo "rps1 \$(( $REQS * 1000000000 / (t1 - t0) ))"
t0=\$(ns); \$C -Z --parallel-max 16 -K $TOOLS/keepalive.cfg || echo failed; t1=\$(ns); echo "rps16 \$(( $REQS * 1000000000 / (t1 - t0) ))"
t0=\$(ns); \$C -H 'Connection: close' -K $TOOLS/new.cfg || echo failed; t1=\$(ns); echo "conn_us \$(( (t1 - t0) / 1000 / $HANDSHAKES ))"
EOF
}

SRT=()
if [ "${NO_SRT:-0}" != 1 ]; then
  if [ -z "${SRT_CLI:-}" ]; then
    for d in "${RINGFENCE_SRT_DIR:-}" /var/cache/ringfence-test/srt-0.0.83/node_modules/@anthropic-ai/sandbox-runtime; do
      [ -n "$d" ] && [ -f "$d/dist/cli.js" ] && { SRT_CLI="$d/dist/cli.js"; break; }
    done
  fi
  if [ -n "${SRT_CLI:-}" ] && command -v node >/dev/null; then
    SRT=(node "$SRT_CLI" -s "$TOOLS/srt.json" --)
    if ! (cd "$TOOLS/cwd" && "${SRT[@]}" true) >/dev/null 2>"$TOOLS/srt.err"; then
      echo "    srt cannot run here (it needs bubblewrap, socat and ripgrep); left out:"
      sed 's/^/    /' "$TOOLS/srt.err" | tail -3
      SRT=()
    fi
  else
    echo "    srt not found (set SRT_CLI or RINGFENCE_SRT_DIR; scripts/test installs it); left out"
  fi
fi

declare -A THR RPS1 RPS16 CONN
measure() { # measure KEY CMD...: runs the inner script, keeps the best of each figure
  local key="$1" line k v
  shift
  THR[$key]="${THR[$key]:-0}" RPS1[$key]="${RPS1[$key]:-0}" RPS16[$key]="${RPS16[$key]:-0}" CONN[$key]="${CONN[$key]:-0}"
  while read -r k v; do
    v="${v%%.*}"
    case "$k" in
      thr) [ "$v" -gt "${THR[$key]}" ] && THR[$key]="$v" ;;
      rps1) [ "$v" -gt "${RPS1[$key]}" ] && RPS1[$key]="$v" ;;
      rps16) [ "$v" -gt "${RPS16[$key]}" ] && RPS16[$key]="$v" ;;
      conn_us) { [ "${CONN[$key]}" = 0 ] || [ "$v" -lt "${CONN[$key]}" ]; } && CONN[$key]="$v" ;;
      failed) echo "    $key: a curl run failed" ;;
    esac
  done < <("$@" 2>"$TOOLS/$key.err" || true)
  return 0
}

echo "==> 2 rounds, each: ${SIZE_MB} MB download $RUNS times, $REQS small requests (1 and 16 connections), $HANDSHAKES new connections"
for round in 1 2; do
  measure opaque env -C / "$RF" run -s "$TOOLS/opaque.json" -- sh -c "$(inner "--cacert $TOOLS/ca.pem")"
  measure terminated env -C / SSL_CERT_FILE="$TOOLS/ca.pem" "$RF" run -s "$TOOLS/terminated.json" -- sh -c "$(inner "--cacert $TOOLS/mitm.pem")"
  if [ ${#SRT[@]} -gt 0 ]; then
    measure srt env -C "$TOOLS/cwd" NODE_EXTRA_CA_CERTS="$TOOLS/ca.pem" "${SRT[@]}" sh -c "$(inner "--cacert $TOOLS/mitm.pem")"
  fi
done

mbs() { awk -v b="$1" 'BEGIN { printf "%7.0f MB/s", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
row() { # row KEY LABEL
  printf '  %-26s %s  %6s req/s (1 conn)  %6s req/s (16 conns)  %6s us per new connection\n' \
    "$2" "$(mbs "${THR[$1]}")" "${RPS1[$1]}" "${RPS16[$1]}" "${CONN[$1]}"
}
row opaque "ringfence, opaque tunnel"
row terminated "ringfence, terminated"
[ ${#SRT[@]} -gt 0 ] && row srt "srt, terminated"
echo "  terminated / opaque: throughput $(ratio "${THR[terminated]}" "${THR[opaque]}")x (target 0.5x)," \
  "requests/s $(ratio "${RPS1[terminated]}" "${RPS1[opaque]}")x (1 conn), $(ratio "${RPS16[terminated]}" "${RPS16[opaque]}")x (16 conns)"
echo "  handshake cost of termination: $(( ${CONN[terminated]} - ${CONN[opaque]} )) us per new connection over the opaque tunnel"
if [ ${#SRT[@]} -gt 0 ]; then
  echo "  ringfence / srt (terminated): throughput $(ratio "${THR[terminated]}" "${THR[srt]}")x," \
    "requests/s $(ratio "${RPS1[terminated]}" "${RPS1[srt]}")x (1 conn), $(ratio "${RPS16[terminated]}" "${RPS16[srt]}")x (16 conns)," \
    "new connection $(ratio "${CONN[srt]}" "${CONN[terminated]}")x faster"
fi
for k in opaque terminated srt; do
  if [ "${THR[$k]:-x}" = 0 ] && [ -s "$TOOLS/$k.err" ]; then
    echo "  ($k measured nothing; its stderr:)"
    tail -3 "$TOOLS/$k.err" | sed 's/^/    /'
  fi
done
exit 0
