//! Times in and out of the API: RFC 3339 or Unix seconds in, RFC 3339 (UTC, milliseconds) out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ApiError;

/// `t` as RFC 3339 in UTC with milliseconds (`2026-11-23T20:05:00.123Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The longest time a query parameter may hold (as the OpenAPI document says).
pub(crate) const MAX_TIME_LEN: usize = 64;

/// Parses the query parameter `name`: RFC 3339 (`2026-11-23T20:00:00Z`) or Unix seconds.
pub(crate) fn parse(name: &str, value: &str) -> Result<SystemTime, ApiError> {
    if value.len() > MAX_TIME_LEN {
        return Err(ApiError::bad_request(format!(
            "`{name}` is longer than {MAX_TIME_LEN} characters"
        )));
    }
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_secs(secs));
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| {
            let ms = u64::try_from(t.timestamp_millis()).ok()?;
            Some(UNIX_EPOCH + Duration::from_millis(ms))
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` must be RFC 3339 (2026-01-31T12:00:00Z) or Unix seconds, got {value:?}"
            ))
        })
}

/// `d` in milliseconds, as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_rfc3339_and_unix_seconds_and_refuses_the_rest() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse("from", "1800000000").unwrap(), t);
        assert_eq!(parse("from", &rfc3339(t)).unwrap(), t);
        assert_eq!(
            parse("from", "2027-01-15T08:00:00+01:00").unwrap(),
            parse("from", "2027-01-15T07:00:00Z").unwrap()
        );
        let e = parse("to", "yesterday").unwrap_err();
        assert!(e.message.contains("`to`"), "{e}");
    }
}
