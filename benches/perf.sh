#!/usr/bin/env bash
# The measurements of docs/PERFORMANCE.md, with `freshet bench` against a release broker on
# 127.0.0.1, next to the machine's limits measured in the same run:
#   1. disk: dd if=/dev/zero of=<datadir>/ddtest bs=1M count=1024 oflag=direct conv=fdatasync
#   2. loopback: iperf3 -s -1 on a free port, iperf3 -c 127.0.0.1 -t 5
#   3. for 1 and 2 shards: produce at max rate (acks=all, 1 KiB), consume of a backlog held in
#      the tail cache, the max rate producing and consuming at once, and publish/end-to-end
#      latency at 25/50/80% of that;
#   4. the same against `tansu` (memory storage) when a tansu binary is installed.
# Every broker is started here, on a non-9092 port, and killed by PID at the end.
# Usage: cargo build --release && bash benches/perf.sh   (about 6 minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${FRESHET_BIN:-target/release/freshet}
OUT=${FRESHET_PERF_OUT:-target/perf}
TANSU=${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
PRODUCE_S=${FRESHET_PERF_PRODUCE_S:-10}
LATENCY_S=${FRESHET_PERF_LATENCY_S:-15}
BACKLOG_MB=${FRESHET_PERF_BACKLOG_MB:-800}
rm -rf "$OUT"
mkdir -p "$OUT/data"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
say() { echo "$*" | tee -a "$RESULTS"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; d=json.load(open('$1')); print(eval(sys.argv[1]))" "$2"; }
wait_port() { timeout 30 bash -c "until (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null; do sleep 0.2; done"; }

say "== limits (load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs)"
DD=$(dd if=/dev/zero of="$OUT/data/ddtest" bs=1M count=1024 oflag=direct conv=fdatasync 2>&1 | tail -1)
rm -f "$OUT/data/ddtest"
DD_MB_S=$(echo "$DD" | python3 -c 'import re,sys; l=sys.stdin.read(); m=re.search(r"(\d+) bytes.*copied, ([\d.]+) s", l); print(round(int(m.group(1))/float(m.group(2))/1e6))')
say "dd bs=1M count=1024 oflag=direct conv=fdatasync: $DD_MB_S MB/s ($DD)"
IPORT=$(free_port)
iperf3 -s -1 -B 127.0.0.1 -p "$IPORT" >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5
IPERF_MB_S=$(iperf3 -c 127.0.0.1 -p "$IPORT" -t 5 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))')
wait "$IPERF_PID" || true
say "iperf3 -c 127.0.0.1 -t 5: $IPERF_MB_S MB/s"

# Holds the whole backlog in memory, so the consume figure is of cached data.
cat >"$OUT/broker.toml" <<EOF
tail_cache_bytes_per_shard = 1073741824
EOF

COMMON=(--partitions 4 --producers 2 --message-size 1024 --acks all --batch-size 1000000 --inflight 8 --quiet)

# run_suite NAME ADDR: produce max, consume backlog, latency at 25/50/80%.
run_suite() {
  local name=$1 addr=$2
  say "== $name (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$BIN" bench --bootstrap "$addr" "${COMMON[@]}" --rate 0 --consumers 0 \
    --duration "${PRODUCE_S}s" --warmup 2s --out "$OUT/$name-produce" >"$OUT/$name-produce.txt" 2>&1 || true
  local max_msg max_mb
  max_msg=$(json "$OUT/$name-produce/summary.json" 'round(d["produce"]["msg_per_s"])')
  max_mb=$(json "$OUT/$name-produce/summary.json" 'round(d["produce"]["mb_per_s"])')
  say "produce max rate, acks=all: $max_msg msg/s, $max_mb MB/s = $((100 * max_mb / DD_MB_S))% of dd; publish p99 $(json "$OUT/$name-produce/summary.json" 'd["publish_latency_ms"]["p99"]') ms"
  "$BIN" bench --bootstrap "$addr" "${COMMON[@]}" --rate 0 --consumers 4 \
    --backlog-mb "$BACKLOG_MB" --out "$OUT/$name-consume" >"$OUT/$name-consume.txt" 2>&1 || true
  local c_mb
  c_mb=$(json "$OUT/$name-consume/summary.json" 'round(d["consume"]["mb_per_s"])')
  say "consume of a ${BACKLOG_MB} MB backlog (4 consumers): $(json "$OUT/$name-consume/summary.json" 'round(d["consume"]["msg_per_s"])') msg/s, $c_mb MB/s = $((100 * c_mb / IPERF_MB_S))% of iperf3; counts match: $(json "$OUT/$name-consume/summary.json" 'd["counts_match"]')"
  # The latency runs produce and consume at once: their 100% is the max rate of that mix.
  "$BIN" bench --bootstrap "$addr" "${COMMON[@]}" --rate 0 --consumers 2 \
    --duration "${PRODUCE_S}s" --warmup 2s --out "$OUT/$name-mixed" >"$OUT/$name-mixed.txt" 2>&1 || true
  local mix_msg
  mix_msg=$(json "$OUT/$name-mixed/summary.json" 'round(d["produce"]["msg_per_s"])')
  say "produce+consume (2 consumers) max rate: $mix_msg msg/s, $(json "$OUT/$name-mixed/summary.json" 'round(d["produce"]["mb_per_s"])') MB/s produced, $(json "$OUT/$name-mixed/summary.json" 'round(d["consume"]["mb_per_s"])') MB/s consumed"
  for pct in 25 50 80; do
    local rate=$((mix_msg * pct / 100))
    "$BIN" bench --bootstrap "$addr" "${COMMON[@]}" --rate "$rate" --consumers 2 --linger 1ms \
      --duration "${LATENCY_S}s" --warmup 3s --out "$OUT/$name-rate$pct" >"$OUT/$name-rate$pct.txt" 2>&1 || true
    local s="$OUT/$name-rate$pct/summary.json"
    say "$pct% of the mixed max ($rate msg/s): achieved $(json "$s" 'round(d["produce"]["msg_per_s"])') msg/s; publish p50/p99/p99.9/max $(json "$s" '"/".join("%.2f" % d["publish_latency_ms"][k] for k in ("p50","p99","p99_9","max"))') ms; e2e $(json "$s" '"/".join("%.2f" % d["e2e_latency_ms"][k] for k in ("p50","p99","p99_9","max"))') ms; counts match: $(json "$s" 'd["counts_match"]')"
  done
}

for shards in 1 2; do
  PORT=$(free_port)
  "$BIN" start --listen "127.0.0.1:$PORT" --data-dir "$OUT/data/shards-$shards" --shards "$shards" \
    --config "$OUT/broker.toml" --log warn 2>"$OUT/broker-$shards.log" &
  PID=$!
  wait_port "$PORT"
  run_suite "freshet-${shards}shard" "127.0.0.1:$PORT"
  say "broker RSS after the runs: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status)"
  kill "$PID"
  wait "$PID" || true
done

if [[ -x $TANSU ]]; then
  PORT=$(free_port)
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine memory://tansu/ >"$OUT/tansu.log" 2>&1 &
  PID=$!
  wait_port "$PORT"
  run_suite tansu "127.0.0.1:$PORT"
  kill "$PID"
  wait "$PID" || true
else
  say "== tansu: not installed ($TANSU)"
fi
say "results in $OUT"
