//! libFuzzer target `gemini_array`: drives `gatewayd::fuzzing::gemini_array`, the function the corpus replay
//! test (`cargo test -p gatewayd fuzzing`) runs every file of `fuzz/corpus/gemini_array/` through.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatewayd::fuzzing::gemini_array(data));
