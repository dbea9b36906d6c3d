//! Human-readable durations in configuration: `"250ms"`, `"30s"`, `"1m30s"`, `"2h"`.
//!
//! Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`. Parts add up (`"1m30s"` is 90 seconds);
//! fractions are allowed on the last part (`"1.5s"`). Negative durations are refused.

use std::time::Duration;

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write it like \"250ms\", \"30s\" or \"1m30s\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a human-readable duration such as `"30s"` or `"1m30s"`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(rampart_resilience::parse_duration("1m30s")?, Duration::from_secs(90));
/// assert_eq!(rampart_resilience::parse_duration("1.5s")?, Duration::from_millis(1500));
/// assert!(rampart_resilience::parse_duration("-1s").is_err());
/// # Ok::<(), rampart_resilience::DurationError>(())
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.starts_with('-') {
        return Err(err("durations cannot be negative"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("a number needs a unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" | "sec" | "secs" => 1e9,
            "m" | "min" | "mins" => 60e9,
            "h" | "hr" | "hrs" => 3600e9,
            "d" | "day" | "days" => 86_400e9,
            _ => return Err(err("unknown unit")),
        };
        let part = if num.contains('.') {
            let value: f64 = num.parse().map_err(|_| err("malformed number"))?;
            let nanos = value * nanos_per_unit;
            if !nanos.is_finite() || nanos > u64::MAX as f64 {
                return Err(err("too large"));
            }
            Duration::from_nanos(nanos.round() as u64)
        } else {
            let value: u64 = num.parse().map_err(|_| err("too large"))?;
            let nanos = (value as u128) * (nanos_per_unit as u128);
            if nanos > u64::MAX as u128 {
                return Err(err("too large"));
            }
            Duration::from_nanos(nanos as u64)
        };
        total = total.checked_add(part).ok_or_else(|| err("too large"))?;
        rest = tail.trim_start();
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// `#[serde(with = "rampart_resilience::serde_duration")]` for a `Duration` field written as
/// `"30s"`, and `rampart_resilience::serde_duration::option` for an `Option<Duration>`: every Rampart
/// configuration spells durations the same way.
pub mod serde_duration {
    use super::parse_duration;
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Reads a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// For `Option<Duration>` fields.
    pub mod option {
        use super::*;

        /// Reads an optional duration string.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_units_and_sums() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_bad_input_with_reason() {
        for bad in [
            "",
            "5",
            "s",
            "-1s",
            "5 parsecs",
            "1.2.3s",
            "99999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("invalid duration"), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(n in 0u64..u64::MAX / 2) {
            let d = Duration::from_nanos(n);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_duration(&s);
        }
    }
}
