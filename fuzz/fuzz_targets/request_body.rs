//! libFuzzer target `request_body`: drives `gatewayd::fuzzing::request_body`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/request_body/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::request_body(data));
