//! libFuzzer target `usage_observer`: drives `gatewayd::fuzzing::usage_observer`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/usage_observer/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::usage_observer(data));
