#!/usr/bin/env bash
# Issue 16's "10,000 partitions within 1 GiB RSS and without 10,000 open files" (docs/PERFORMANCE.md,
# "10,000 partitions"): a fresh `freshet start --shards 2` on free 127.0.0.1 ports (never 9092),
# 100 topics x 100 partitions created with confluent-kafka's AdminClient, 3 records of 100 bytes
# produced to every partition (acks=all), all consumed once, 30 s idle, then a restart (SIGTERM,
# start again on the same data directory: time to /ready and to every partition led) and a
# second full read. After each phase: VmRSS, VmHWM and the open descriptors (by kind) of the
# broker. The broker is the only process signalled, by PID. Figures: stdout and
# $FRESHET_10K_OUT/results.json (default target/ten-thousand-partitions).
# Usage: cargo build --release --bin freshet && bash benches/ten-thousand-partitions.sh
# Knobs (environment): FRESHET_BIN, FRESHET_10K_SHARDS (2), FRESHET_10K_TOPICS (100),
#   FRESHET_10K_PARTITIONS (100 per topic), FRESHET_10K_RECORDS (3 per partition),
#   FRESHET_10K_IDLE_S (30), FRESHET_10K_OUT, PYTHON (a python with confluent-kafka; default
#   .venv/bin/python, made by tests/run-all.sh, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export FRESHET_BIN=${FRESHET_BIN:-target/release/freshet}
[[ -x $FRESHET_BIN ]] || { echo "no $FRESHET_BIN: cargo build --release --bin freshet" >&2; exit 2; }
echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $FRESHET_BIN; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# librdkafka's own log lines (metadata refreshes, request timeouts) go to stderr.
exec "$PY" benches/ten_thousand_partitions.py
