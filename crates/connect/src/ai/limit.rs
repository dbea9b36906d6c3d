//! Limits shaped like providers bill: requests per minute and tokens per minute.
//!
//! Two GCRA limiters from `rampart-resilience` ([`RateLimiter`]): one counting requests, one
//! counting tokens. A call is charged 1 request and its *estimated* tokens up front (prompt
//! estimate + `max_tokens`, see [`ChatRequest::estimated_cost`](super::ChatRequest::estimated_cost));
//! when the answer's `usage` arrives the token limiter is corrected by the difference. The
//! provider's own view wins at once: `x-ratelimit-remaining-requests` / `-tokens` lower what is
//! available, a remaining of 0 with `x-ratelimit-reset-*` pauses until the reset, and a 429's
//! `Retry-After` pauses both.

use std::time::Duration;

use rampart_resilience::rate_limit::{RateLimitConfig, RateLimiter};
use rampart_resilience::{ConfigError, Events};
use reqwest::header::HeaderMap;

/// Requests and tokens per minute for one provider (or one model of it). Either may be absent.
#[derive(Debug, Clone, Default)]
pub struct BillingLimits {
    requests: Option<RateLimiter>,
    tokens: Option<RateLimiter>,
}

/// What was charged for one call, to be corrected when its usage is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "correct the charge with the answer's usage"]
pub struct Charge {
    /// Tokens charged up front.
    pub tokens: u32,
}

/// Why the limits refused a call now, and how long until it would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long until the call would be admitted.
    pub retry_after: Option<Duration>,
}

impl BillingLimits {
    /// No limits: every call passes.
    pub fn unlimited() -> Self {
        BillingLimits::default()
    }

    /// `requests_per_minute` and `tokens_per_minute` (either `None` for no limit), named `name`
    /// (`"{name}.requests"`, `"{name}.tokens"` in events). A full minute's worth may pass at once,
    /// as providers allow.
    pub fn per_minute(
        name: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
        events: &Events,
    ) -> Result<Self, ConfigError> {
        let build = |what: &str, rate: Option<u32>| {
            rate.map(|rate| {
                RateLimitConfig::new(f64::from(rate), Duration::from_secs(60))
                    .build(&format!("{name}.{what}"), events)
            })
            .transpose()
        };
        Ok(BillingLimits {
            requests: build("requests", requests_per_minute)?,
            tokens: build("tokens", tokens_per_minute)?,
        })
    }

    /// The request limiter, if any.
    pub fn requests(&self) -> Option<&RateLimiter> {
        self.requests.as_ref()
    }

    /// The token limiter, if any.
    pub fn tokens(&self) -> Option<&RateLimiter> {
        self.tokens.as_ref()
    }

    /// Admits a call estimated at `tokens` now, or says how long until it would pass. A call
    /// estimated at more tokens than a whole minute allows is charged the minute's worth (else it
    /// could never pass; the provider decides).
    pub fn try_admit(&self, tokens: u32) -> Result<Charge, Throttled> {
        if let Some(requests) = &self.requests {
            requests.try_acquire(1).map_err(|e| Throttled {
                retry_after: e.retry_after(),
            })?;
        }
        let mut charged = 0;
        if let Some(limiter) = &self.tokens {
            charged = tokens.min(limiter.burst());
            if let Err(e) = limiter.try_acquire(charged) {
                if let Some(requests) = &self.requests {
                    requests.refund(1);
                }
                return Err(Throttled {
                    retry_after: e.retry_after(),
                });
            }
        }
        Ok(Charge { tokens: charged })
    }

    /// Corrects a charge with the tokens the answer counted.
    pub fn correct(&self, charge: Charge, actual_tokens: u32) {
        let Some(limiter) = &self.tokens else { return };
        if actual_tokens > charge.tokens {
            limiter.charge(actual_tokens - charge.tokens);
        } else {
            limiter.refund(charge.tokens - actual_tokens);
        }
    }

    /// Gives a charge back whole: the call was not made, or failed before the provider counted it.
    pub fn cancel(&self, charge: Charge) {
        if let Some(requests) = &self.requests {
            requests.refund(1);
        }
        if let Some(tokens) = &self.tokens {
            tokens.refund(charge.tokens);
        }
    }

    /// Applies the provider's rate-limit headers (OpenAI's names, also used by most compatible
    /// providers): `x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens`,
    /// `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens` (durations like `1s`, `6m0s`,
    /// `20ms`, or plain seconds).
    pub fn observe_headers(&self, headers: &HeaderMap) {
        let apply = |limiter: &Option<RateLimiter>, remaining: &str, reset: &str| {
            let Some(limiter) = limiter else { return };
            let Some(left) = header_str(headers, remaining).and_then(|v| v.parse::<u64>().ok())
            else {
                return;
            };
            let left = u32::try_from(left).unwrap_or(u32::MAX);
            if left == 0
                && let Some(reset) = header_str(headers, reset).and_then(parse_reset)
            {
                limiter.pause_for(reset);
            } else {
                limiter.limit_available(left);
            }
        };
        apply(
            &self.requests,
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        );
        apply(
            &self.tokens,
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        );
    }

    /// Admits nothing for `d` (a 429's `Retry-After`).
    pub fn pause_for(&self, d: Duration) {
        for limiter in [&self.requests, &self.tokens].into_iter().flatten() {
            limiter.pause_for(d);
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Retry-After` in seconds (RFC 9110 also allows an HTTP date, which AI providers do not send:
/// such a value is ignored), or OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(d);
    }
    // `try_from`: a negative, infinite or absurdly large value is ignored, never a panic.
    header_str(headers, "retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// A reset as OpenAI writes it: a sequence of number+unit (`h`, `m`, `s`, `ms`), such as `6m0s`,
/// `1.5s` or `20ms`; a bare number is seconds.
pub(crate) fn parse_reset(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0.0_f64;
    let mut rest = value;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn resets_parse_as_openai_writes_them() {
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(parse_reset("5x"), None);
        assert_eq!(parse_reset("1e30"), None);
        assert_eq!(parse_reset("-1s"), None);
    }

    #[test]
    fn retry_after_reads_seconds_or_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
        let mut absurd = HeaderMap::new();
        absurd.insert("retry-after", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&absurd), None);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_charged_estimates_then_corrected_from_usage() {
        let limits = BillingLimits::per_minute("p", Some(3), Some(1000), &Events::new()).unwrap();
        let charge = limits.try_admit(400).unwrap();
        assert_eq!(charge.tokens, 400);
        assert_eq!(limits.tokens().unwrap().available(), 600);
        // The answer counted 150: 250 come back.
        limits.correct(charge, 150);
        assert_eq!(limits.tokens().unwrap().available(), 850);
        // One counted more than estimated: the difference is charged.
        let charge = limits.try_admit(100).unwrap();
        limits.correct(charge, 300);
        assert_eq!(limits.tokens().unwrap().available(), 550);
        // Too many tokens: refused, and the request slot is given back.
        let refused = limits.try_admit(600).unwrap_err();
        assert!(refused.retry_after.unwrap() > Duration::ZERO);
        assert_eq!(limits.requests().unwrap().available(), 1);
        // More than a minute's worth is charged the minute's worth.
        limits.tokens().unwrap().refund(1000);
        assert_eq!(limits.try_admit(5000).unwrap().tokens, 1000);
        // Out of requests.
        assert!(limits.try_admit(0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn provider_headers_update_the_limits_at_once() {
        let limits =
            BillingLimits::per_minute("p", Some(100), Some(10_000), &Events::new()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("5"),
        );
        headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "x-ratelimit-reset-tokens",
            HeaderValue::from_static("1m30s"),
        );
        limits.observe_headers(&headers);
        assert_eq!(limits.requests().unwrap().available(), 5);
        assert_eq!(limits.tokens().unwrap().available(), 0);
        let refused = limits.try_admit(1).unwrap_err();
        assert_eq!(refused.retry_after, Some(Duration::from_secs(90)));
        // A 429's Retry-After pauses requests too.
        limits.pause_for(Duration::from_secs(2));
        assert_eq!(limits.requests().unwrap().available(), 0);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert!(limits.try_admit(1).is_ok());
    }
}
