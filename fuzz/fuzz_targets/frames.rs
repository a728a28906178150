//! Fuzz target: see `freshet::fuzzing::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| freshet::fuzzing::frames(data));
