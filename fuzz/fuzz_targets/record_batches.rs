//! Fuzz target: see `freshet::fuzzing::record_batches`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| freshet::fuzzing::record_batches(data));
