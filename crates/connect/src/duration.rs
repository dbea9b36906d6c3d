//! Validation of durations in connector configuration (read with
//! `rampart_resilience::serde_duration`, so every Rampart config spells durations the same way).

#![cfg_attr(
    not(any(
        feature = "postgres",
        feature = "redis",
        feature = "ai",
        feature = "mqtt",
        feature = "coap"
    )),
    allow(dead_code)
)]

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
