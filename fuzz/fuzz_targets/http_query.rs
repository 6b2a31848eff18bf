//! Fuzz target: [`eddy_fuzz::http_query`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::http_query(data));
