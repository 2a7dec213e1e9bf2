//! Fuzzes `overlay::wire::fuzzing::sleeve_open`: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| overlay::wire::fuzzing::sleeve_open(data));
