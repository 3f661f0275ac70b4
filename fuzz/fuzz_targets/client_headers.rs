//! libFuzzer target `client_headers`: drives `gatewayd::fuzzing::client_headers`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/client_headers/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::client_headers(data));
