//! Serde helpers for human-readable durations (`"250ms"`, `"30s"`) in pool configuration, read with
//! [`rampart_resilience::parse_duration`] so every Rampart config spells durations the same way.

/// `#[serde(with = "crate::duration::serde_duration")]` for a `Duration` field.
pub(crate) mod serde_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Reads a duration string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        rampart_resilience::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// `#[serde(with = "crate::duration::serde_duration::option")]` for an `Option<Duration>` field.
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
