//! Fuzzes `overlay::wire::fuzzing::odp`: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| overlay::wire::fuzzing::odp(data));
