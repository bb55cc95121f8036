//! virtio-net's queue path: split rings, kicks and frames chosen by the
//! fuzzer (`tapir_nic::fuzz::run_virtio`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tapir_nic::fuzz::run_virtio(data);
});
