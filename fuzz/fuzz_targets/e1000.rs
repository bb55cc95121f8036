//! The e1000 model's state machine: register accesses, ring contents,
//! frames, worker runs, clock and cable chosen by the fuzzer
//! (`tapir_nic::fuzz::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapir_nic::fuzz::{run, Target};

fuzz_target!(|data: &[u8]| {
    run(Target::E1000, data);
});
