//! The registry: configuration from TOML with every problem reported at once, and policies shared
//! by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rampart_resilience::breaker::BreakerState;
use rampart_resilience::registry::{Registry, ResilienceConfig};

#[test]
fn every_problem_is_reported_at_once_with_file_and_key_path() {
    let src = r#"
        [breaker.payments]
        failure_rate = 1.5          # above 1
        window_sise = 10            # unknown key (typo)
        wait_in_open = "-5s"        # negative duration
        minimum_calls = "many"      # wrong type

        [retry.payments]
        max_attempts = 0
        budget = "nope"             # no such budget

        [rate_limit.api]
        rate = 0.0

        [bulkhead.db]
        max_concurrent = 0

        [timeout.slow]
        timeout = "0s"

        [breakers.typo]             # unknown kind
        failure_rate = 0.5

        [pipeline.checkout]
        breaker = "missing"
        deadline = "0s"
    "#;
    let err = ResilienceConfig::from_toml_str(src, Some("rampart.toml")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("rampart.toml: "), "{text}");
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "breaker.payments.failure_rate",
        "breaker.payments.window_sise",
        "breaker.payments.wait_in_open",
        "breaker.payments.minimum_calls",
        "retry.payments.max_attempts",
        "retry.payments.budget",
        "rate_limit.api.rate",
        "bulkhead.db.max_concurrent",
        "timeout.slow.timeout",
        "breakers",
        "pipeline.checkout.breaker",
        "pipeline.checkout.deadline",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing; got:\n{text}"
        );
    }
    let problem = |path: &str| {
        err.problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap()
    };
    assert!(
        problem("breaker.payments.window_sise").contains("window_size"),
        "unknown keys list the known ones"
    );
    assert!(problem("breaker.payments.wait_in_open").contains("negative"));
    for p in &err.problems {
        assert!(
            !p.message.contains('\n'),
            "one line per problem: {:?}",
            p.message
        );
    }
    assert!(problem("breaker.payments.failure_rate").contains("got 1.5"));
}

#[test]
fn a_syntax_error_and_an_unreadable_file_name_the_file() {
    let err = ResilienceConfig::from_toml_str("[breaker.x\n", Some("broken.toml")).unwrap_err();
    assert!(err.to_string().starts_with("broken.toml: "), "{err}");
    let err = ResilienceConfig::from_file("/nonexistent/rampart.toml").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/rampart.toml"),
        "{err}"
    );
    assert!(err.to_string().contains("cannot be read"), "{err}");
}

#[test]
fn a_section_must_be_a_table() {
    let err = ResilienceConfig::from_toml_str("breaker = 5\n[retry]\nx = 1\n", None).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["breaker", "retry.x"], "{err}");
}

#[tokio::test(start_paused = true)]
async fn callers_of_one_name_share_one_policy() {
    let registry = Registry::from_toml_str(
        r#"
        [breaker.payments]
        window = "consecutive"
        consecutive_failures = 2
        "#,
        None,
    )
    .unwrap();
    let a = registry.breaker("payments");
    let b = registry.breaker("payments");
    for _ in 0..2 {
        let _ = a.call(|| async { Err::<(), _>("down") }).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
    // A different name is a different breaker, with the defaults.
    let other = registry.breaker("inventory");
    assert_eq!(other.state(), BreakerState::Closed);
    assert_eq!(other.config().minimum_calls, 20);
    let stats = registry.stats();
    assert_eq!(stats.breaker["payments"].state, BreakerState::Open);
    assert_eq!(stats.breaker["payments"].failed, 2);
    assert!(stats.breaker.contains_key("inventory"));
    // A second registry is a separate world.
    let second = Registry::default();
    assert_eq!(second.breaker("payments").state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn retry_policies_naming_one_budget_share_it() {
    let registry = Registry::from_toml_str(
        r#"
        [retry.a]
        max_attempts = 10
        base_delay = "1ms"
        jitter = "none"
        budget = "fleet"

        [retry.b]
        max_attempts = 10
        base_delay = "1ms"
        jitter = "none"
        budget = "fleet"

        [retry_budget.fleet]
        ratio = 0.0
        min_retries_per_second = 3
        window = "1s"
        "#,
        None,
    )
    .unwrap();
    let (a, b) = (registry.retry("a"), registry.retry("b"));
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let fail = || async {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err::<(), _>("down")
    };
    let e1 = a.call(fail).await.unwrap_err();
    let e2 = b.call(fail).await.unwrap_err();
    assert!(e1.is_budget_exhausted(), "{e1:?}");
    assert!(e2.is_budget_exhausted(), "{e2:?}");
    // Three retries a second for the whole fleet, over both call sites: `a` spends them all, so
    // `b` gets none: 2 first attempts + 3 retries.
    assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 5);
    let stats = registry.stats();
    assert_eq!(stats.retry["a"].retries, 3);
    assert_eq!(stats.retry["b"].retries, 0);
    assert!(stats.retry_budget.contains_key("fleet"));
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_is_assembled_from_same_named_sections_or_its_own() {
    let registry = Registry::from_toml_str(
        r#"
        [timeout.payments]
        timeout = "50ms"

        [retry.payments]
        max_attempts = 2
        base_delay = "1ms"

        [pipeline.checkout]
        timeout = "payments"
        deadline = "1s"
        "#,
        None,
    )
    .unwrap();
    let implicit = registry.pipeline("payments");
    assert!(implicit.retry().is_some());
    assert!(
        implicit.breaker().is_none(),
        "no [breaker.payments] section"
    );
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<(), &str>(())
    };
    let err = implicit.call(slow).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        registry.stats().timeout["payments"].timeouts,
        2,
        "two attempts, each timed out"
    );

    let explicit = registry.pipeline("checkout");
    assert!(
        explicit.retry().is_none(),
        "the section names only a timeout"
    );
    // No section anywhere: a default timeout, retry and breaker.
    let fallback = registry.pipeline("unknown");
    assert!(fallback.retry().is_some() && fallback.breaker().is_some());
}

#[test]
fn every_kind_builds_from_its_defaults() {
    let registry = Registry::default();
    let _ = registry.breaker("x");
    let _ = registry.retry("x");
    let _ = registry.retry_budget("x");
    let _ = registry.timeout("x");
    let _ = registry.rate_limiter("x");
    let _ = registry.bulkhead("x");
    let _ = registry.adaptive_limiter("x");
    let _ = registry.hedge("x");
    let stats = registry.stats();
    assert_eq!(
        stats.breaker.len() + stats.retry.len() + stats.hedge.len(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limiters_are_shared_by_name_and_key_type() {
    let registry = Registry::from_toml_str(
        r#"
        [rate_limit.per-tenant]
        rate = 2.0
        per = "1s"
        burst = 2
        "#,
        None,
    )
    .unwrap();
    let a = registry.keyed_rate_limiter::<String>("per-tenant");
    let b = registry.keyed_rate_limiter::<String>("per-tenant");
    let acme = "acme".to_string();
    assert!(a.try_acquire(&acme, 1).is_ok());
    assert!(a.try_acquire(&acme, 1).is_ok());
    assert!(
        b.try_acquire(&acme, 1).is_err(),
        "b shares a's state for acme"
    );
    assert!(
        b.try_acquire(&"globex".to_string(), 1).is_ok(),
        "another tenant has its own limit"
    );
    // Another key type is another limiter.
    let by_id = registry.keyed_rate_limiter::<u64>("per-tenant");
    assert!(by_id.try_acquire(&7, 1).is_ok());
    // The registry's stats add up the limiters of one name across key types.
    let stats = &registry.stats().keyed_rate_limit["per-tenant"];
    assert_eq!((stats.permitted, stats.rejected), (4, 1));
    assert_eq!(stats.keys, 3, "acme and globex by name, 7 by id");
    assert_eq!(stats.max_keys, 2 * by_id.stats().max_keys);
}
