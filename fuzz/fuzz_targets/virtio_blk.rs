//! virtio-blk's request queue: descriptors, request headers, data and ring
//! indexes chosen by the fuzzer (`tapir_block::fuzz::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tapir_block::fuzz::run(data);
});
