//! No configuration, however wrong, makes the library panic; a configuration it accepts always
//! builds every policy it names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rampart_resilience::registry::{Registry, ResilienceConfig};

const KINDS: &[&str] = &[
    "breaker",
    "retry",
    "retry_budget",
    "timeout",
    "rate_limit",
    "bulkhead",
    "adaptive",
    "hedge",
    "pipeline",
    "bogus",
];

const KEYS: &[&str] = &[
    "window",
    "window_size",
    "window_duration",
    "consecutive_failures",
    "minimum_calls",
    "failure_rate",
    "slow_call_duration",
    "slow_call_rate",
    "wait_in_open",
    "wait_in_open_multiplier",
    "max_wait_in_open",
    "half_open_calls",
    "max_attempts",
    "max_elapsed",
    "base_delay",
    "max_delay",
    "multiplier",
    "jitter",
    "budget",
    "ratio",
    "min_retries_per_second",
    "timeout",
    "rate",
    "per",
    "burst",
    "max_wait",
    "max_concurrent",
    "max_queue",
    "algorithm",
    "initial_limit",
    "min_limit",
    "max_limit",
    "backoff_ratio",
    "smoothing",
    "rtt_tolerance",
    "long_window",
    "queue_size",
    "delay",
    "percentile",
    "max_hedges",
    "min_samples",
    "max_hedge_ratio",
    "deadline",
    "breaker",
    "retry",
    "rate_limit",
    "bulkhead",
    "adaptive",
    "hedge",
    "unknown_key",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0i64..2000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| if v.is_finite() {
            format!("{v:?}")
        } else {
            "nan".into()
        }),
        prop_oneof![
            Just("inf"),
            Just("-inf"),
            Just("nan"),
            Just("0.0"),
            Just("1.0"),
            Just("0.5")
        ]
        .prop_map(str::to_owned),
        prop_oneof![
            Just("\"0s\""),
            Just("\"1ms\""),
            Just("\"30s\""),
            Just("\"-1s\""),
            Just("\"1h\""),
            Just("\"999999999999h\""),
            Just("\"x\""),
            Just("\"count\""),
            Just("\"time\""),
            Just("\"consecutive\""),
            Just("\"full\""),
            Just("\"decorrelated\""),
            Just("\"aimd\""),
            Just("\"gradient2\""),
            Just("\"a\""),
            Just("\"\""),
        ]
        .prop_map(str::to_owned),
        "[a-z0-9.]{0,8}".prop_map(|s| format!("{s:?}")),
        Just("true".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{ a = 1 }".to_owned()),
    ]
}

fn document() -> impl Strategy<Value = String> {
    let section = (
        proptest::sample::select(KINDS),
        prop_oneof![Just("a"), Just("b")],
        proptest::collection::btree_map(proptest::sample::select(KEYS), value(), 0..6),
    );
    proptest::collection::vec(section, 0..6).prop_map(|sections| {
        let mut doc = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for (kind, name, keys) in sections {
            if !seen.insert((kind, name)) {
                continue;
            }
            doc.push_str(&format!("[{kind}.{name}]\n"));
            for (k, v) in keys {
                doc.push_str(&format!("{k} = {v}\n"));
            }
        }
        doc
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_document_is_accepted_or_reported_without_panicking(doc in document()) {
        match ResilienceConfig::from_toml_str(&doc, Some("fuzz.toml")) {
            Ok(config) => {
                // What validation accepts, building never refuses.
                let ev = rampart_resilience::Events::new();
                for (n, c) in &config.breaker { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.retry { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.retry_budget { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.timeout { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.rate_limit { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.bulkhead { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.adaptive { prop_assert!(c.build(n, &ev).is_ok()); }
                for (n, c) in &config.hedge { prop_assert!(c.build(n, &ev).is_ok()); }
                let registry = Registry::new(config.clone(), Default::default());
                for name in config.breaker.keys() { let _ = registry.breaker(name); }
                for name in config.retry.keys() { let _ = registry.retry(name); }
                for name in config.retry_budget.keys() { let _ = registry.retry_budget(name); }
                for name in config.timeout.keys() { let _ = registry.timeout(name); }
                for name in config.rate_limit.keys() { let _ = registry.rate_limiter(name); }
                for name in config.bulkhead.keys() { let _ = registry.bulkhead(name); }
                for name in config.adaptive.keys() { let _ = registry.adaptive_limiter(name); }
                for name in config.hedge.keys() { let _ = registry.hedge(name); }
                for name in config.pipeline.keys() { let _ = registry.pipeline(name); }
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    prop_assert!(!p.message.is_empty());
                    let kind = p.path.split('.').next().unwrap_or_default();
                    prop_assert!(KINDS.contains(&kind) || kind == "(syntax)", "{}", p.path);
                }
                prop_assert!(e.to_string().starts_with("fuzz.toml: "));
            }
        }
    }
}
