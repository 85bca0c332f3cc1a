//! Fuzz target: see `sfu_suite::fuzz_harness::sdp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfu_suite::fuzz_harness::sdp(data));
