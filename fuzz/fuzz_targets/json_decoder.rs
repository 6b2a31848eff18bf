//! Fuzz target: [`eddy_fuzz::json_decoder`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::json_decoder(data));
