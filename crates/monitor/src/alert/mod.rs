//! Alerting: rules over targets' health, the alert lifecycle (pending, firing, resolved),
//! grouping, silences, inhibition by dependency, acknowledgement and escalation, routing to
//! receivers, and notifications delivered through a durable outbox that loses nothing.
//!
//! The guide is `docs/alerting.md`.

pub mod config;
pub mod engine;
pub mod matcher;
pub mod model;
pub mod notify;
pub mod outbox;
mod persist;
pub mod route;
pub mod rule;
mod service;
pub mod silence;

pub use engine::{
    AckError, AlertEngine, AlertState, AlertView, DurableState, EngineConfig, EngineStats,
    EscalationPolicy, EscalationTier, TargetInfo,
};
pub use matcher::{MatchOp, Matcher};
pub use model::{
    Acknowledgement, AlertSnapshot, AlertStatus, Fingerprint, Labels, Notification, Severity,
};
pub use notify::{Notifier, NotifyError};
pub use outbox::{DeliveryConfig, DeliveryEvent, Outbox, OutboxEntry, OutboxFilter, OutboxStore};
pub use persist::AlertStateStore;
pub use route::{GroupBy, Route};
pub use rule::{Condition, Rule, Template, default_rules};
pub use service::{AlertService, EVALUATE_EVERY};
pub use silence::{MaintenanceWindow, Schedule, Silence};

use crate::store::StoreFuture;

/// Where the alert engine puts the notifications it makes: the durable outbox in the daemon,
/// a plain queue in tests. `Ok` means every notification is accepted, durably where the sink is
/// durable, in the order given.
pub trait NotificationSink: Send + Sync {
    /// Accepts `notifications`, in order.
    fn enqueue(&self, notifications: Vec<Notification>) -> StoreFuture<'_, ()>;
}

// The notifiers' configuration and the dead man's switch.
pub mod watchdog;

pub use notify::{ReceiverConfig, ReceiverKind};
pub use watchdog::{
    PingConfig, PingMethod, Watchdog, WatchdogConfig, WatchdogHandle, WatchdogStatus,
};

/// The guide, `docs/alerting.md`: its examples run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../../docs/alerting.md")]
struct AlertingGuide;
