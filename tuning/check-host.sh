#!/usr/bin/env bash
# Reports the host settings Freshet depends on and what `freshet tune apply` would change.
# Changes nothing. Usage: bash tuning/check-host.sh [DATA_DIR]   (see tuning/README.md)
set -eu
data_dir=${1:-./freshet-data}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${FRESHET_BIN:-}
if [[ -z $bin ]]; then
  # The newest build in this checkout, else one on the PATH.
  bin=$(ls -t "$here/target/release/freshet" "$here/target/debug/freshet" 2>/dev/null | head -1 || true)
  [[ -n $bin ]] || bin=$(command -v freshet || true)
fi
if [[ -z $bin ]]; then
  echo "freshet binary not found: run 'cargo build --release' first (or set FRESHET_BIN)" >&2
  exit 1
fi
exec "$bin" tune check --data-dir "$data_dir"
