//! Alerting: rules over targets' health, the alert lifecycle (pending, firing, resolved),
//! grouping, silences, inhibition by dependency, acknowledgement and escalation, routing to
//! receivers, and notifications delivered through a durable outbox that loses nothing.
//!
//! The guide is `docs/alerting.md`.

pub mod model;
pub mod notify;
pub mod outbox;

pub use model::{
    Acknowledgement, AlertSnapshot, AlertStatus, Fingerprint, Labels, Notification, Severity,
};
pub use notify::{Notifier, NotifyError};
pub use outbox::{DeliveryConfig, DeliveryEvent, Outbox, OutboxEntry, OutboxFilter, OutboxStore};

use crate::store::StoreFuture;

/// Where the alert engine puts the notifications it makes: the durable outbox in the daemon,
/// a plain queue in tests. `Ok` means every notification is accepted, durably where the sink is
/// durable, in the order given.
pub trait NotificationSink: Send + Sync {
    /// Accepts `notifications`, in order.
    fn enqueue(&self, notifications: Vec<Notification>) -> StoreFuture<'_, ()>;
}
