#!/usr/bin/env bash
# Replication's cost, measured (issue 14): `freshet bench` against one release broker (rf 1)
# and against three release brokers on this machine (a topic of replication factor 3, acks=all,
# min.insync.replicas 2), in interleaved rounds so that both see the same machine, next to the
# disk's limit measured in the same run (dd oflag=direct conv=fdatasync). Per round and setup:
#   1. produce at max rate for PRODUCE_S seconds (1 KiB messages, acks=all, 4 partitions);
#   2. publish and end-to-end latency at a fixed rate (RATE msg/s, produce and consume at once).
# Every process is started here on free 127.0.0.1 ports and ended by PID. The three brokers and
# the client share the machine's cores (2 on the development VM): the figures are what
# replication costs on one machine, not a three-machine cluster's throughput.
# Usage: cargo build --release && bash benches/replication.sh   (about 4 minutes per round)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${FRESHET_BIN:-target/release/freshet}
OUT=${FRESHET_REPL_OUT:-target/perf-replication}
ROUNDS=${FRESHET_REPL_ROUNDS:-2}
PRODUCE_S=${FRESHET_REPL_PRODUCE_S:-10}
LATENCY_S=${FRESHET_REPL_LATENCY_S:-15}
RATE=${FRESHET_REPL_RATE:-5000}
rm -rf "$OUT"
mkdir -p "$OUT/data"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
say() { echo "$*" | tee -a "$RESULTS"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; d=json.load(open('$1')); print(eval(sys.argv[1]))" "$2"; }
wait_ready() { timeout 60 bash -c "until curl -sf http://127.0.0.1:$1/ready >/dev/null; do sleep 0.2; done"; }

say "== limits (load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs)"
dd_mb_s() {
  dd if=/dev/zero of="$OUT/data/ddtest" bs=1M count=512 oflag=direct conv=fdatasync 2>&1 | tail -1 |
    python3 -c 'import re,sys; l=sys.stdin.read(); m=re.search(r"(\d+) bytes.*copied, ([\d.]+) s", l); print(round(int(m.group(1))/float(m.group(2))/1e6))'
  rm -f "$OUT/data/ddtest"
}
DD_MB_S=$(dd_mb_s)
say "dd bs=1M count=512 oflag=direct conv=fdatasync: $DD_MB_S MB/s"

# start_nodes N ROUND: starts N brokers (one shard each; a quorum of N when N > 1), sets ADDRS
# (their Kafka listeners) and PIDS.
start_nodes() {
  local n=$1 round=$2 voters="" i
  local -a kafka=() ctrl=() admin=()
  for ((i = 0; i < n; i++)); do
    kafka+=("$(free_port)") ctrl+=("$(free_port)") admin+=("$(free_port)")
  done
  if ((n > 1)); then
    for ((i = 0; i < n; i++)); do voters+="${voters:+,}$i@127.0.0.1:${ctrl[$i]}"; done
  fi
  ADDRS=""
  for ((i = 0; i < n; i++)); do
    local args=(start --listen "127.0.0.1:${kafka[$i]}" --admin-listen "127.0.0.1:${admin[$i]}"
      --data-dir "$OUT/data/r$round-n$n-$i" --shards 1 --log warn)
    if ((n > 1)); then
      args+=(--node-id "$i" --controller-listen "127.0.0.1:${ctrl[$i]}" --controller-quorum-voters "$voters")
    fi
    "$BIN" "${args[@]}" 2>"$OUT/broker-r$round-n$n-$i.log" &
    PIDS+=($!)
    ADDRS+="${ADDRS:+,}127.0.0.1:${kafka[$i]}"
  done
  for ((i = 0; i < n; i++)); do wait_ready "${admin[$i]}"; done
  sleep 2 # the brokers register and unfence
}

stop_nodes() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

COMMON=(--partitions 4 --message-size 1024 --acks all --batch-size 1000000 --inflight 8 --quiet
  --broker-metrics off)

# run_setup NAME RF ROUND
run_setup() {
  local name=$1 rf=$2 round=$3
  local out="$OUT/r$round-$name"
  "$BIN" bench --bootstrap "${ADDRS%%,*}" "${COMMON[@]}" --replication-factor "$rf" --rate 0 \
    --consumers 0 --duration "${PRODUCE_S}s" --warmup 2s --out "$out-max" >"$out-max.txt" 2>&1 || true
  local s="$out-max/summary.json"
  say "round $round $name max: $(json "$s" 'round(d["produce"]["mb_per_s"])') MB/s ($(json "$s" 'round(d["produce"]["msg_per_s"])') msg/s) = $((100 * $(json "$s" 'round(d["produce"]["mb_per_s"])') / DD_MB_S))% of dd; publish p50/p99/p99.9 $(json "$s" '"/".join("%.1f" % d["publish_latency_ms"][k] for k in ("p50","p99","p99_9"))') ms"
  "$BIN" bench --bootstrap "${ADDRS%%,*}" "${COMMON[@]}" --replication-factor "$rf" --rate "$RATE" \
    --consumers 1 --linger 1ms --duration "${LATENCY_S}s" --warmup 3s --out "$out-rate" \
    >"$out-rate.txt" 2>&1 || true
  s="$out-rate/summary.json"
  say "round $round $name at $RATE msg/s: achieved $(json "$s" 'round(d["produce"]["msg_per_s"])') msg/s; publish p50/p99/p99.9 $(json "$s" '"/".join("%.2f" % d["publish_latency_ms"][k] for k in ("p50","p99","p99_9"))') ms; e2e p50/p99/p99.9 $(json "$s" '"/".join("%.2f" % d["e2e_latency_ms"][k] for k in ("p50","p99","p99_9"))') ms; counts match: $(json "$s" 'd["counts_match"]')"
}

for ((round = 1; round <= ROUNDS; round++)); do
  say "== round $round (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  start_nodes 1 "$round"
  run_setup single-rf1 1 "$round"
  stop_nodes
  start_nodes 3 "$round"
  run_setup three-rf3 3 "$round"
  stop_nodes
done
say "dd at the end: $(dd_mb_s) MB/s"
say "results in $RESULTS"
