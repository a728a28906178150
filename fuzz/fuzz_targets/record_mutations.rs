//! Fuzz target: see `freshet::fuzzing::record_mutations`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    freshet::fuzzing::record_mutations(data);
});
