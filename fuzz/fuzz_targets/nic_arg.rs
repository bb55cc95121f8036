//! The `--nic` parser: any string is a NIC spec or one clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapir_config::NicArg;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Err(e) = s.parse::<NicArg>() {
            // Every error renders as one line.
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
});
