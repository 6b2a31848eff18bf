//! Fuzz target: [`eddy_fuzz::cel_predicate`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::cel_predicate(data));
