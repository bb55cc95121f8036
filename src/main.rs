//! tapir: the command line. Parses flags into a [`tapir_config::VmConfig`],
//! hands it to the VMM, and turns the outcome into an exit status.

mod cli;
mod logger;

use std::process::ExitCode;

fn main() -> ExitCode {
    logger::init();
    match cli::main() {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("tapir: {msg}");
            ExitCode::from(1)
        }
    }
}
