//! libFuzzer target `management_body`: drives `gatewayd::fuzzing::management_body`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/management_body/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::management_body(data));
