//! The binary's logger: lines from the `log` crate (the NIC workers, for
//! one) go to stderr as `tapir: <level>: <message>`, like tapir's other
//! messages. The level is `warn` unless `TAPIR_LOG` says otherwise (`off`,
//! `error`, `warn`, `info`, `debug` or `trace`).

use std::fmt;
use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The environment variable that sets the level.
pub const LEVEL_ENV: &str = "TAPIR_LOG";

/// Writes each record to stderr.
struct Stderr;

static STDERR: Stderr = Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write under the lock: lines of different threads do not mix.
            let line = line(record.level(), record.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// The line printed for a record.
fn line(level: Level, msg: &fmt::Arguments<'_>) -> String {
    let label = match level {
        Level::Error => "error",
        // As tapir's other warnings are spelled.
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    format!("tapir: {label}: {msg}\n")
}

/// The level that `TAPIR_LOG` (`value`) asks for: `warn` when unset or
/// empty, `Err` when it is not a level name.
fn level(value: Option<&str>) -> Result<LevelFilter, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(LevelFilter::Warn),
        Some(v) => v.parse().map_err(|_| v.to_string()),
    }
}

/// Installs the logger with the level from the environment (a value that
/// is not a level is reported and the default used).
pub fn init() {
    let value = std::env::var_os(LEVEL_ENV).map(|v| v.to_string_lossy().into_owned());
    let level = level(value.as_deref()).unwrap_or_else(|v| {
        eprintln!(
            "tapir: warning: {LEVEL_ENV}={v:?} is not a log level (off, error, warn, info, \
             debug, trace); using warn"
        );
        LevelFilter::Warn
    });
    if log::set_logger(&STDERR).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_defaults_to_warn_and_takes_names() {
        assert_eq!(level(None), Ok(LevelFilter::Warn));
        assert_eq!(level(Some("")), Ok(LevelFilter::Warn));
        assert_eq!(level(Some("debug")), Ok(LevelFilter::Debug));
        assert_eq!(level(Some(" TRACE ")), Ok(LevelFilter::Trace));
        assert_eq!(level(Some("off")), Ok(LevelFilter::Off));
        assert_eq!(level(Some("loud")), Err("loud".to_string()));
    }

    #[test]
    fn lines_look_like_tapirs_other_messages() {
        assert_eq!(
            line(Level::Error, &format_args!("NIC net0: worker stopped")),
            "tapir: error: NIC net0: worker stopped\n"
        );
        assert_eq!(
            line(Level::Warn, &format_args!("x {}", 1)),
            "tapir: warning: x 1\n"
        );
        assert_eq!(line(Level::Debug, &format_args!("d")), "tapir: debug: d\n");
    }
}
