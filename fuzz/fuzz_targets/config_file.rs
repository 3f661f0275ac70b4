//! libFuzzer target `config_file`: drives `gatewayd::fuzzing::config_file`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/config_file/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::config_file(data));
