//! Durations on the command line (`--timeout 30s`): a whole number with
//! an optional unit, `ms`, `s` (the default), `m` or `h`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Errors in a duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not a number with a known unit.
    #[error("invalid duration '{}': expected a whole number with an optional unit ms, s, m or h (e.g. 30s, 2m, 500ms)", .0.escape_debug())]
    Invalid(String),
    /// Zero.
    #[error("invalid duration '{}': must be more than 0", .0.escape_debug())]
    Zero(String),
    /// Larger than tapir can wait.
    #[error("invalid duration '{}': too long", .0.escape_debug())]
    TooLong(String),
}

/// A parsed duration that remembers how the user wrote it, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDuration {
    /// The duration.
    pub duration: Duration,
    text: String,
}

impl fmt::Display for UserDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Longest duration accepted: a year, far past any test's patience and
/// well inside what `Instant` arithmetic handles.
const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

impl FromStr for UserDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || DurationError::Invalid(s.to_string());
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(invalid());
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| DurationError::TooLong(s.to_string()))?;
        let millis_per = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        let millis = n
            .checked_mul(millis_per)
            .ok_or_else(|| DurationError::TooLong(s.to_string()))?;
        let duration = Duration::from_millis(millis);
        if duration.is_zero() {
            return Err(DurationError::Zero(s.to_string()));
        }
        if duration > MAX {
            return Err(DurationError::TooLong(s.to_string()));
        }
        Ok(UserDuration {
            duration,
            text: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        s.parse::<UserDuration>().unwrap().duration
    }

    #[test]
    fn units() {
        assert_eq!(d("30"), Duration::from_secs(30));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!("30s".parse::<UserDuration>().unwrap().to_string(), "30s");
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "", "s", "1.5s", "-1", "+1", "10x", "1 s", "5sec", "1m30s", "ms",
        ] {
            assert_eq!(
                bad.parse::<UserDuration>(),
                Err(DurationError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            "0ms".parse::<UserDuration>().unwrap_err().to_string(),
            "invalid duration '0ms': must be more than 0"
        );
        assert!(matches!(
            "99999999999999999999".parse::<UserDuration>(),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            "9000h".parse::<UserDuration>(),
            Err(DurationError::TooLong(_))
        ));
        assert_eq!(
            "1m30s".parse::<UserDuration>().unwrap_err().to_string(),
            "invalid duration '1m30s': expected a whole number with an optional unit ms, s, m or h (e.g. 30s, 2m, 500ms)"
        );
    }
}
