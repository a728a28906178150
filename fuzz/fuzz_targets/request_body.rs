//! Fuzz target: see `freshet::fuzzing::request_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| freshet::fuzzing::request_body(data));
