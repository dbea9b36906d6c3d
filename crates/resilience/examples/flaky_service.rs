//! Every policy at work on a flaky simulated service, printing what each one did.
//!
//! The simulated "payments" service goes through three phases of one second each: mostly healthy
//! (10 % errors, 5 % of calls hang for 300 ms), a hard outage (every call fails), and recovery. Eight
//! workers call it through a pipeline configured from TOML: a per-attempt timeout, retries with
//! jittered backoff and a shared retry budget, a circuit breaker, a rate limiter and a bulkhead, with
//! a fallback to a cached value around it all. Breaker transitions print as they happen; each
//! policy's counters print at the end.
//!
//! Run it with `cargo run --release -p rampart-resilience --example flaky_service`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rampart_resilience::fallback::Fallback;
use rampart_resilience::registry::Registry;
use rampart_resilience::{Error, Event, PolicyKind};
use tokio::time::Instant;

const CONFIG: &str = r#"
[timeout.payments]
timeout = "100ms"

[retry.payments]
max_attempts = 3
base_delay = "20ms"
max_delay = "200ms"
jitter = "full"
budget = "fleet"

[retry_budget.fleet]
ratio = 0.1
min_retries_per_second = 2

[breaker.payments]
window = "count"
window_size = 50
minimum_calls = 20
failure_rate = 0.5
wait_in_open = "400ms"
half_open_calls = 3

[rate_limit.payments]
rate = 250.0
per = "1s"
burst = 10
max_wait = "10ms"

[bulkhead.payments]
max_concurrent = 4
max_wait = "10ms"
"#;

#[derive(Debug)]
struct ServiceError(&'static str);

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The simulated dependency.
struct FlakyService {
    started: Instant,
    calls: AtomicU64,
}

impl FlakyService {
    async fn charge(&self, amount: u64) -> Result<u64, ServiceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let phase = self.started.elapsed().as_millis() / 1000;
        let roll = fastrand::u32(0..100);
        match phase {
            1 => Err(ServiceError("connection refused")),
            _ if roll < 5 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(amount)
            }
            0 if roll < 15 => Err(ServiceError("internal error")),
            _ => Ok(amount),
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    fallback: AtomicU64,
    by_kind: [AtomicU64; 7],
}

const KINDS: [&str; 7] = [
    "inner error",
    "timeout",
    "breaker open",
    "rate limited",
    "bulkhead full",
    "budget exhausted",
    "other",
];

fn kind_of(e: &Error<ServiceError>) -> usize {
    match e {
        Error::Inner(_) => 0,
        Error::Timeout { .. } => 1,
        Error::BreakerOpen { .. } => 2,
        Error::RateLimited { .. } => 3,
        Error::BulkheadFull { .. } => 4,
        Error::BudgetExhausted { .. } => 5,
        _ => 6,
    }
}

#[tokio::main]
async fn main() {
    let registry = Registry::from_toml_str(CONFIG, Some("flaky_service.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let _printer = registry.events().subscribe(move |event| match event {
        Event::BreakerStateChanged { name, from, to } => println!(
            "{:>6} ms  breaker {name}: {from} -> {to}",
            started.elapsed().as_millis()
        ),
        Event::Rejected {
            policy: PolicyKind::Budget,
            name,
        } => println!(
            "{:>6} ms  retry budget {name}: refused a retry",
            started.elapsed().as_millis()
        ),
        _ => {}
    });

    let service = Arc::new(FlakyService {
        started,
        calls: AtomicU64::new(0),
    });
    let pipeline = registry.pipeline("payments");
    let fallback = Fallback::new("cached-quote", registry.events());
    let tally = Arc::new(Tally::default());

    println!(
        "phase 1 (0-1 s): mostly healthy; phase 2 (1-2 s): outage; phase 3 (2-3 s): recovered\n"
    );
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (service, pipeline, fallback, tally) = (
                service.clone(),
                pipeline.clone(),
                fallback.clone(),
                tally.clone(),
            );
            tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(3) {
                    let result = fallback
                        .call_or_else(
                            || pipeline.call(|| service.charge(100)),
                            |err| {
                                tally.by_kind[kind_of(&err)].fetch_add(1, Ordering::Relaxed);
                                0 // the cached quote
                            },
                        )
                        .await;
                    match result {
                        Ok(0) => tally.fallback.fetch_add(1, Ordering::Relaxed),
                        _ => tally.ok.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }

    println!(
        "\nrequests: {} served, {} from the fallback",
        tally.ok.load(Ordering::Relaxed),
        tally.fallback.load(Ordering::Relaxed)
    );
    println!(
        "service calls actually made: {}",
        service.calls.load(Ordering::Relaxed)
    );
    println!("why the fallback was used:");
    for (i, kind) in KINDS.iter().enumerate() {
        let n = tally.by_kind[i].load(Ordering::Relaxed);
        if n > 0 {
            println!("  {kind:<17} {n}");
        }
    }
    let stats = registry.stats();
    println!("\nwhat each policy did:");
    for (name, s) in &stats.breaker {
        println!(
            "  breaker {name}: state {}, {} succeeded, {} failed, {} rejected while open, opened {} times",
            s.state, s.successful, s.failed, s.rejected, s.opened
        );
    }
    for (name, s) in &stats.retry {
        println!("  retry {name}: {s:?}");
    }
    for (name, s) in &stats.retry_budget {
        println!("  retry budget {name}: {s:?}");
    }
    for (name, s) in &stats.timeout {
        println!("  timeout {name}: {s:?}");
    }
    for (name, s) in &stats.rate_limit {
        println!("  rate limit {name}: {s:?}");
    }
    for (name, s) in &stats.bulkhead {
        println!("  bulkhead {name}: {s:?}");
    }
    println!("  fallback: {:?}", fallback.stats());
}
