//! Fuzz target: [`eddy_fuzz::job_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy_fuzz::job_file(data));
