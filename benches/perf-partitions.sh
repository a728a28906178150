#!/usr/bin/env bash
# The partition-count matrix of docs/PERFORMANCE.md (issue 6): `freshet bench` against a release
# broker on 127.0.0.1 with 1, 10, 100 and 1000 partitions, for 1 and 2 shards, and the same
# workloads against Tansu (memory storage) side by side, next to the machine's limits measured
# at the start and at the end of the same run:
#   limits:  dd if=/dev/zero of=<datadir>/ddtest bs=1M count=1024 oflag=direct conv=fdatasync
#            iperf3 -s -1 on a free port; iperf3 -c 127.0.0.1 -t 5
#   per broker and partition count, on a freshly started broker (empty data directory):
#     produce  max rate, acks=all, 1 KiB, no consumers      (--duration M --warmup W)
#     consume  a backlog of BACKLOG_MB produced first, then drained (held in the tail cache)
#     mixed    max rate producing and consuming at once       (--duration M --warmup W)
#     latency  25/50/80% of the mixed max rate, publish and end-to-end percentiles
#   then: idle RSS of a fresh 1-shard broker with the default config, and its RSS with
#   10,000 partitions (100 topics x 100 partitions, each written to), and after a restart.
# Every broker is started here, on a free non-9092 port, and killed by PID.
# results: $OUT/results.txt (log), $OUT/results.md (tables), $OUT/<run>/summary.json.
# Usage: cargo build --release && bash benches/perf-partitions.sh   (about 15 minutes)
# Quick dry run: FRESHET_PERF_MEASURE_S=1 FRESHET_PERF_WARMUP_S=0.5 FRESHET_PERF_BACKLOG_MB=20 \
#   FRESHET_PERF_DD_COUNT=64 FRESHET_PERF_IPERF_S=1 bash benches/perf-partitions.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${FRESHET_BIN:-target/release/freshet}
OUT=${FRESHET_PERF_OUT:-target/perf-partitions}
TANSU=${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
MEASURE_S=${FRESHET_PERF_MEASURE_S:-8}
WARMUP_S=${FRESHET_PERF_WARMUP_S:-2}
BACKLOG_MB=${FRESHET_PERF_BACKLOG_MB:-800}
DD_COUNT=${FRESHET_PERF_DD_COUNT:-1024}
IPERF_S=${FRESHET_PERF_IPERF_S:-5}
read -r -a PARTITION_COUNTS <<<"${FRESHET_PERF_PARTITIONS:-1 10 100 1000}"
read -r -a SHARD_COUNTS <<<"${FRESHET_PERF_SHARDS:-1 2}"
# Brokers to measure: freshet-<N>shard for each shard count, and tansu if installed.
WITH_TANSU=${FRESHET_PERF_TANSU:-1}
WITH_10K=${FRESHET_PERF_10K:-1}
# Longest any one bench run may take before it is killed (it then counts as failed).
RUN_TIMEOUT_S=${FRESHET_PERF_RUN_TIMEOUT_S:-120}

rm -rf "$OUT"
mkdir -p "$OUT/data"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.txt"
: >"$RESULTS"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RESULTS"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; d=json.load(open('$1')); print(eval(sys.argv[1]))" "$2" 2>/dev/null || echo "?"; }
wait_port() { timeout 60 bash -c "until (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null; do sleep 0.1; done"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
BROKER_PID=
stop_broker() {
  if [[ -n $BROKER_PID ]]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
  fi
}
trap stop_broker EXIT

# limits TAG: dd and iperf3, appended to $OUT/limits.jsonl.
limits() {
  local tag=$1 dd dd_mb ip_port ip_pid ip_mb
  dd=$(dd if=/dev/zero of="$OUT/data/ddtest" bs=1M count="$DD_COUNT" oflag=direct conv=fdatasync 2>&1 | tail -1)
  rm -f "$OUT/data/ddtest"
  dd_mb=$(echo "$dd" | python3 -c 'import re,sys; l=sys.stdin.read(); m=re.search(r"(\d+) bytes.*copied, ([\d.]+) s", l); print(round(int(m.group(1))/float(m.group(2))/1e6))')
  ip_port=$(free_port)
  iperf3 -s -1 -B 127.0.0.1 -p "$ip_port" >/dev/null 2>&1 &
  ip_pid=$!
  sleep 0.5
  ip_mb=$(iperf3 -c 127.0.0.1 -p "$ip_port" -t "$IPERF_S" -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))')
  wait "$ip_pid" || true
  echo "{\"tag\": \"$tag\", \"dd_mb_s\": $dd_mb, \"iperf3_mb_s\": $ip_mb, \"loadavg\": \"$(loadavg)\"}" >>"$OUT/limits.jsonl"
  say "limits ($tag; load average $(loadavg); $(nproc) CPUs): dd bs=1M count=$DD_COUNT oflag=direct conv=fdatasync $dd_mb MB/s ($dd); iperf3 -t $IPERF_S loopback $ip_mb MB/s"
}

# start_broker KIND DATADIR: starts freshet-<N>shard or tansu on a free port; sets BROKER_PID, ADDR.
start_broker() {
  local kind=$1 data=$2 port
  port=$(free_port)
  ADDR="127.0.0.1:$port"
  case $kind in
    freshet-*shard)
      local shards=${kind#freshet-}
      shards=${shards%shard}
      "$BIN" start --listen "$ADDR" --data-dir "$data" --shards "$shards" \
        --config "$OUT/broker.toml" --log warn 2>>"$OUT/$kind.log" &
      ;;
    tansu)
      "$TANSU" broker --listener-url "tcp://$ADDR" --advertised-listener-url "tcp://$ADDR" \
        --storage-engine memory://tansu/ >>"$OUT/tansu.log" 2>&1 &
      ;;
  esac
  BROKER_PID=$!
  wait_port "$port"
  sleep 0.3
}

# bench NAME ARGS...: one `freshet bench` run into $OUT/NAME (failures are recorded, not fatal).
bench() {
  local name=$1
  shift
  local rc=0 t0
  t0=$(date +%s.%N)
  timeout "$RUN_TIMEOUT_S" "$BIN" bench --bootstrap "$ADDR" "${COMMON[@]}" "$@" --quiet \
    --out "$OUT/$name" >"$OUT/$name.txt" 2>&1 || rc=$?
  echo "{\"name\": \"$name\", \"rc\": $rc, \"loadavg\": \"$(loadavg)\", \"args\": \"$*\", \"elapsed_s\": $(python3 -c "import time; print(round(time.time() - $t0, 1))")}" >>"$OUT/runs.jsonl"
  return 0
}

# The tail cache holds the whole backlog, so the consume figure is of cached data.
cat >"$OUT/broker.toml" <<EOF
tail_cache_bytes_per_shard = 1073741824
EOF
COMMON=(--producers 2 --message-size 1024 --acks all --batch-size 1000000 --inflight 8)

say "== start; git $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $BIN; load average $(loadavg)"
limits start

KINDS=()
for s in "${SHARD_COUNTS[@]}"; do KINDS+=("freshet-${s}shard"); done
if [[ $WITH_TANSU == 1 ]]; then
  if [[ -x $TANSU ]]; then KINDS+=(tansu); else say "tansu not installed ($TANSU): skipped"; fi
fi

for kind in "${KINDS[@]}"; do
  for p in "${PARTITION_COUNTS[@]}"; do
    data="$OUT/data/$kind-p$p"
    start_broker "$kind" "$data"
    cons=$((p < 4 ? p : 4))
    mcons=$((p < 2 ? p : 2))
    tag="$kind-p$p"
    idle_rss=$(rss_mib "$BROKER_PID")
    say "== $tag (pid $BROKER_PID, $ADDR, load average $(loadavg), idle RSS $idle_rss MiB)"
    bench "$tag-produce" --partitions "$p" --rate 0 --consumers 0 --duration "${MEASURE_S}s" --warmup "${WARMUP_S}s"
    say "produce: $(json "$OUT/$tag-produce/summary.json" '"%d msg/s, %d MB/s, publish p99 %.1f ms" % (d["produce"]["msg_per_s"], d["produce"]["mb_per_s"], d["publish_latency_ms"]["p99"])')"
    bench "$tag-consume" --partitions "$p" --rate 0 --consumers "$cons" --backlog-mb "$BACKLOG_MB" --drain-timeout 30s
    say "consume ($cons consumers, ${BACKLOG_MB} MB backlog): $(json "$OUT/$tag-consume/summary.json" '"%d msg/s, %d MB/s, counts match %s" % (d["consume"]["msg_per_s"], d["consume"]["mb_per_s"], d["counts_match"])')"
    bench "$tag-mixed" --partitions "$p" --rate 0 --consumers "$mcons" --duration "${MEASURE_S}s" --warmup "${WARMUP_S}s" --drain-timeout 10s
    mix=$(json "$OUT/$tag-mixed/summary.json" 'round(d["produce"]["msg_per_s"])')
    say "mixed max ($mcons consumers): $mix msg/s produced, $(json "$OUT/$tag-mixed/summary.json" '"%d MB/s consumed" % d["consume"]["mb_per_s"]')"
    if [[ $mix =~ ^[0-9]+$ && $mix -gt 0 ]]; then
      for pct in 25 50 80; do
        bench "$tag-rate$pct" --partitions "$p" --rate $((mix * pct / 100)) --consumers "$mcons" --linger 1ms \
          --duration "${MEASURE_S}s" --warmup "${WARMUP_S}s" --drain-timeout 5s
        say "$pct% ($((mix * pct / 100)) msg/s): $(json "$OUT/$tag-rate$pct/summary.json" '"achieved %d msg/s; publish p50/p99/p99.9 %.2f/%.2f/%.2f ms; e2e %.2f/%.2f/%.2f ms" % (d["produce"]["msg_per_s"], d["publish_latency_ms"]["p50"], d["publish_latency_ms"]["p99"], d["publish_latency_ms"]["p99_9"], d["e2e_latency_ms"]["p50"], d["e2e_latency_ms"]["p99"], d["e2e_latency_ms"]["p99_9"])')"
      done
    fi
    rss=$(rss_mib "$BROKER_PID")
    echo "{\"tag\": \"$tag\", \"rss_mib_idle\": ${idle_rss:-null}, \"rss_mib_after\": ${rss:-null}}" >>"$OUT/rss.jsonl"
    say "broker RSS after the runs: $rss MiB"
    stop_broker
    rm -rf "$data"
  done
done

if [[ $WITH_10K == 1 ]]; then
  # Default config (128 MiB tail cache per shard), 1 shard: idle, then 10,000 partitions.
  data="$OUT/data/10k"
  port=$(free_port)
  ADDR="127.0.0.1:$port"
  "$BIN" start --listen "$ADDR" --data-dir "$data" --shards 1 --log warn 2>>"$OUT/10k.log" &
  BROKER_PID=$!
  wait_port "$port"
  sleep 1
  idle=$(rss_mib "$BROKER_PID")
  # batch-size 1: each message is its own batch, so the sticky partitioner moves on after each
  # and every partition gets 2 messages.
  t0=$(date +%s.%N)
  timeout 300 "$BIN" bench --bootstrap "$ADDR" --topics 100 --partitions 100 --producers 1 --consumers 0 \
    --message-size 100 --batch-size 1 --linger 0ms --rate 0 --messages 20000 --acks all --keep-topics \
    --quiet --out "$OUT/10k" >"$OUT/10k.txt" 2>&1 || true
  t1=$(date +%s.%N)
  sleep 1
  rss10k=$(rss_mib "$BROKER_PID")
  stop_broker
  s0=$(date +%s.%N)
  "$BIN" start --listen "$ADDR" --data-dir "$data" --shards 1 --log warn 2>>"$OUT/10k.log" &
  BROKER_PID=$!
  wait_port "$port"
  s1=$(date +%s.%N)
  sleep 1
  rss_restart=$(rss_mib "$BROKER_PID")
  stop_broker
  parts=$(find "$data" -mindepth 1 -maxdepth 3 -type d -name '*-[0-9]*' | wc -l)
  echo "{\"idle_rss_mib\": $idle, \"rss_10k_mib\": $rss10k, \"rss_10k_restart_mib\": $rss_restart, \"create_and_write_s\": $(python3 -c "print(round($t1-$t0,1))"), \"restart_s\": $(python3 -c "print(round($s1-$s0,2))"), \"acked\": $(json "$OUT/10k/summary.json" 'd["acked_messages"]')}" >"$OUT/rss-10k.json"
  say "1 shard, default config: idle RSS $idle MiB; 100 topics x 100 partitions written ($(json "$OUT/10k/summary.json" 'd["acked_messages"]') msgs acked, $(python3 -c "print(round($t1-$t0,1))") s): RSS $rss10k MiB; after restart (listening in $(python3 -c "print(round($s1-$s0,2))") s): RSS $rss_restart MiB; partition dirs seen: $parts"
  rm -rf "$data"
fi

limits end
python3 benches/perf_report.py "$OUT" >"$OUT/results.md"
say "== done; tables in $OUT/results.md"
