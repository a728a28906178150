#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (issue 7), starting from the
# committed seed corpus (fuzz/seeds/<target>) plus whatever corpus earlier local runs left in
# fuzz/corpus/<target> (not committed).
#
#   bash tests/fuzz.sh                 # each target FUZZ_SECONDS (default 25) seconds
#   FUZZ_SECONDS=300 bash tests/fuzz.sh frames   # one target, longer
#
# Installs cargo-fuzz into ~/.cargo/bin (`cargo install cargo-fuzz --locked`) when missing, and
# says so. Builds with fuzz/Cargo.lock as committed (checked with --locked first), so a run
# changes no tracked file. libFuzzer needs nightly compiler flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 allows them. Targets are built without a sanitizer (the
# code under test is safe Rust; this keeps the build and the runs fast) and with debug
# assertions on. A crash stops the run with a non-zero exit; its input is in
# fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/ (the normal `cargo test` runs
# every file there through the same code, src/fuzzing.rs) and fix the bug.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-25}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz into ${CARGO_HOME:-$HOME/.cargo}/bin (cargo install cargo-fuzz --locked; remove it with cargo uninstall cargo-fuzz)"
  cargo install cargo-fuzz --locked --quiet
fi

# cargo fuzz has no --locked: check first that the committed lock file needs no change, rather
# than let the build rewrite it.
if ! cargo metadata --locked --format-version 1 >/dev/null; then
  echo "!! fuzz/Cargo.lock is out of date with Cargo.toml (the build would rewrite it):" \
    "run \`cargo update -w\` in fuzz/ and commit fuzz/Cargo.lock" >&2
  exit 1
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list)
fi

echo "==> cargo fuzz build (${targets[*]})"
cargo fuzz build --sanitizer none --debug-assertions

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "==> fuzzing $t for ${SECONDS_EACH}s"
  set +e
  # libFuzzer's progress lines (NEW, REDUCE, pulse) and its dictionary report are dropped.
  cargo fuzz run --sanitizer none --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 2>&1 |
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|# Uses: [0-9]+$|^###### '
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc != 0)); then
    echo "!! fuzz target $t FAILED; crashing input(s):" >&2
    ls -1 "artifacts/$t" >&2 || true
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz targets failed: ${failed[*]} (copy the artifacts to fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${SECONDS_EACH}s each without a crash"
