//! libFuzzer target `period`: drives `gatewayd::fuzzing::period`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/period/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::period(data));
