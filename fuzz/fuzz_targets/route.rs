//! libFuzzer target `route`: drives `gatewayd::fuzzing::route`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/route/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::route(data));
