//! Serde helpers for human-readable durations (`"250ms"`, `"30s"`) in connector configuration,
//! read with [`rampart_resilience::parse_duration`] so every Rampart config spells durations the
//! same way.

#![cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]

/// `#[serde(with = "crate::duration::serde_duration")]` for a `Duration` field.
pub(crate) mod serde_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Reads a duration string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        rampart_resilience::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// `#[serde(with = "crate::duration::serde_duration::option")]` for an `Option<Duration>`.
    pub(crate) mod option {
        use serde::{Deserialize, Deserializer};
        use std::time::Duration;

        /// Reads an optional duration string.
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => rampart_resilience::parse_duration(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

/// Pushes a problem when `d` is under 1 ms.
pub(crate) fn at_least_1ms(
    errors: &mut rampart_resilience::ConfigError,
    path: String,
    d: std::time::Duration,
) {
    if d < std::time::Duration::from_millis(1) {
        errors.push(
            path,
            format!(
                "must be at least 1ms, got {}",
                rampart_resilience::format_duration(d)
            ),
        );
    }
}
