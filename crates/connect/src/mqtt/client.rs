//! The managed client and the task that drives its connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rampart_resilience::breaker::CircuitBreaker;
use rampart_resilience::retry::Backoff;
use rampart_resilience::{Events, Outcome};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Packet, QoS};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{MqttConfig, MqttError};

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting (TCP and CONNECT/CONNACK under way).
    Connecting,
    /// Connected: the broker accepted the CONNECT.
    Connected,
    /// Not connected; waiting before the next attempt (backoff, or an open breaker).
    Disconnected,
    /// Stopped by [`MqttClient::disconnect`]; it will not connect again.
    Closed,
}

/// What the connection did, in order. Sent to every receiver of [`MqttClient::events`] (a slow
/// receiver misses the oldest, see [`tokio::sync::broadcast`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A connect attempt starts; `attempt` counts the attempts since the last connection (0 the
    /// first).
    Connecting {
        /// Attempts made since the client was last connected.
        attempt: u32,
    },
    /// The broker accepted the connection.
    Connected {
        /// Whether the broker resumed a persistent session (then subscriptions were kept).
        session_present: bool,
        /// Filters the client subscribed to again because the broker had not kept them.
        resubscribed: usize,
    },
    /// A connect attempt failed, or an established connection was lost.
    Disconnected {
        /// What happened, as text.
        error: String,
        /// Whether a connection had been established (false: the connect itself failed).
        was_connected: bool,
    },
    /// The client waits this long before its next attempt (full jitter, seeded per client).
    BackingOff {
        /// Failed attempts in a row so far, minus one (0 before the first retry).
        retry: u32,
        /// The delay drawn.
        delay: Duration,
    },
    /// The breaker on connect is open: no attempt is made; the client looks again after `wait`.
    BreakerOpen {
        /// How long the client waits before asking the breaker again.
        wait: Duration,
    },
    /// The client stopped.
    Closed,
}

/// A message the broker delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// Whether it was a retained message.
    pub retain: bool,
}

/// The messages the broker delivers to one [`MqttClient`], in order.
#[derive(Debug)]
pub struct Messages {
    rx: mpsc::Receiver<Message>,
}

impl Messages {
    /// The next message; `None` once the client is closed and every message has been read.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

struct Shared {
    /// Filter → QoS of every subscription made through the client, for resubscribing.
    subscriptions: Mutex<BTreeMap<String, QoS>>,
}

/// A managed MQTT client: one connection to a broker, kept up by a task of its own. Started by
/// [`MqttConfig::connect`]; see the [module documentation](super).
///
/// Dropping it stops the task without a DISCONNECT (the broker then publishes the last will);
/// [`disconnect`](Self::disconnect) leaves cleanly.
pub struct MqttClient {
    client: AsyncClient,
    shared: Arc<Shared>,
    state: watch::Receiver<ConnectionState>,
    events: broadcast::Sender<ConnectionEvent>,
    breaker: CircuitBreaker,
    task: JoinHandle<()>,
    client_id: String,
}

impl std::fmt::Debug for MqttClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttClient")
            .field("client_id", &self.client_id)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttClient {
    pub(super) fn start(
        config: &MqttConfig,
        path: &str,
    ) -> Result<(MqttClient, Messages), MqttError> {
        let options = config.options()?;
        let breaker = config
            .breaker
            .build(&format!("{path}.breaker"), &Events::new())?;
        let (client, mut eventloop) = AsyncClient::new(options, config.request_queue);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(config.connect_timeout.as_secs());
        eventloop.set_network_options(network);
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let (events, _) = broadcast::channel(256);
        let (messages_tx, rx) = mpsc::channel(config.message_queue);
        let shared = Arc::new(Shared {
            subscriptions: Mutex::new(BTreeMap::new()),
        });
        let driver = Driver {
            eventloop,
            client: client.clone(),
            shared: shared.clone(),
            state: state_tx,
            events: events.clone(),
            messages: messages_tx,
            breaker: breaker.clone(),
            backoff: config.reconnect.backoff(),
            rng: fastrand::Rng::with_seed(config.seed()),
        };
        let task = tokio::spawn(driver.run());
        Ok((
            MqttClient {
                client,
                shared,
                state,
                events,
                breaker,
                task,
                client_id: config.client_id.clone(),
            },
            Messages { rx },
        ))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Where the connection is now.
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// A receiver of the connection's state changes.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// A receiver of the connection's events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    /// The circuit breaker on connect.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Waits until the client is connected, at most `within`.
    ///
    /// # Errors
    /// [`MqttError::NotConnected`] after `within`; [`MqttError::Closed`] when the client stopped.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), MqttError> {
        let mut state = self.state.clone();
        let wait =
            state.wait_for(|s| matches!(s, ConnectionState::Connected | ConnectionState::Closed));
        match tokio::time::timeout(within, wait).await {
            Err(_) => Err(MqttError::NotConnected(within)),
            Ok(Err(_)) => Err(MqttError::Closed),
            Ok(Ok(s)) if *s == ConnectionState::Closed => Err(MqttError::Closed),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Publishes `payload` on `topic`. Returns once the request is queued for the connection
    /// (waiting while the queue is full); QoS 1/2 delivery is then retried by the connection,
    /// within the in-flight limit. Queued while disconnected, it is sent after the reconnect
    /// when the session resumes; a clean new session drops what the old one had not sent.
    ///
    /// # Errors
    /// [`MqttError::Request`] when the client is closed or the topic is invalid.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<(), MqttError> {
        Ok(self
            .client
            .publish_bytes(topic, qos, retain, payload.into())
            .await?)
    }

    /// Like [`publish`](Self::publish), but fails at once instead of waiting for room.
    ///
    /// # Errors
    /// [`MqttError::Request`] when the queue is full or the client closed.
    pub fn try_publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<(), MqttError> {
        Ok(self
            .client
            .try_publish(topic, qos, retain, payload.into())?)
    }

    /// Subscribes to `filter` (wildcards allowed). The subscription is kept and made again after
    /// every reconnect into a new session.
    ///
    /// # Errors
    /// [`MqttError::Request`] when the client is closed or the filter is invalid.
    pub async fn subscribe(&self, filter: impl Into<String>, qos: QoS) -> Result<(), MqttError> {
        let filter = filter.into();
        self.client.subscribe(filter.clone(), qos).await?;
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(filter, qos);
        Ok(())
    }

    /// Unsubscribes from `filter`; it is no longer made again after reconnects.
    ///
    /// # Errors
    /// [`MqttError::Request`] when the client is closed.
    pub async fn unsubscribe(&self, filter: impl Into<String>) -> Result<(), MqttError> {
        let filter = filter.into();
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&filter);
        Ok(self.client.unsubscribe(filter).await?)
    }

    /// The filters the client is subscribed to (and subscribes to again after reconnects).
    pub fn subscriptions(&self) -> Vec<(String, QoS)> {
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect()
    }

    /// Leaves cleanly: sends DISCONNECT (so no last will is published) when connected, waits at
    /// most one second for it to go out, and stops the connection task.
    pub async fn disconnect(self) {
        if self.state() == ConnectionState::Connected && self.client.try_disconnect().is_ok() {
            let mut state = self.state.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                state.wait_for(|s| *s != ConnectionState::Connected),
            )
            .await;
        }
        self.task.abort();
    }
}

struct Driver {
    eventloop: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ConnectionEvent>,
    messages: mpsc::Sender<Message>,
    breaker: CircuitBreaker,
    backoff: Backoff,
    rng: fastrand::Rng,
}

impl Driver {
    fn emit(&self, event: ConnectionEvent) {
        let _ = self.events.send(event);
    }

    fn set(&self, state: ConnectionState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    async fn run(mut self) {
        // Failed attempts since the last connection.
        let mut failures: u32 = 0;
        let mut prev = self.backoff.base_delay();
        loop {
            // Not connected: ask the breaker, then try.
            let Some(permit) = self.breaker.try_acquire_owned() else {
                let wait = self.backoff.max_delay().min(Duration::from_secs(1));
                self.set(ConnectionState::Disconnected);
                self.emit(ConnectionEvent::BreakerOpen { wait });
                tokio::time::sleep(wait).await;
                continue;
            };
            self.set(ConnectionState::Connecting);
            self.emit(ConnectionEvent::Connecting { attempt: failures });
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    permit.record(Outcome::Success);
                    failures = 0;
                    prev = self.backoff.base_delay();
                    let resubscribed = if ack.session_present {
                        0
                    } else {
                        self.resubscribe()
                    };
                    self.set(ConnectionState::Connected);
                    self.emit(ConnectionEvent::Connected {
                        session_present: ack.session_present,
                        resubscribed,
                    });
                    let error = self.connected().await;
                    let Some(error) = error else {
                        self.set(ConnectionState::Closed);
                        self.emit(ConnectionEvent::Closed);
                        return;
                    };
                    self.set(ConnectionState::Disconnected);
                    self.emit(ConnectionEvent::Disconnected {
                        error: error.to_string(),
                        was_connected: true,
                    });
                }
                Ok(_) => {
                    // Not reachable: a poll without a network connects first. Count it as done.
                    permit.record(Outcome::Ignored);
                    continue;
                }
                Err(error) => {
                    permit.record(Outcome::Failure);
                    self.set(ConnectionState::Disconnected);
                    self.emit(ConnectionEvent::Disconnected {
                        error: error.to_string(),
                        was_connected: false,
                    });
                }
            }
            let delay = self.backoff.delay(failures, prev, &mut self.rng);
            prev = delay;
            self.emit(ConnectionEvent::BackingOff {
                retry: failures,
                delay,
            });
            failures = failures.saturating_add(1);
            let until = Instant::now() + delay;
            tokio::time::sleep_until(until).await;
        }
    }

    /// Subscribes again to every kept filter; returns how many.
    fn resubscribe(&self) -> usize {
        let filters: Vec<rumqttc::SubscribeFilter> = self
            .shared
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), *q))
            .collect();
        let n = filters.len();
        if n > 0 && self.client.try_subscribe_many(filters).is_err() {
            // The request queue is full: the filters are still kept, and the next reconnect
            // tries again. Subscriptions made by callers already wait in the queue.
            return 0;
        }
        n
    }

    /// Drives an established connection until it fails (`Some`) or the client disconnected
    /// cleanly (`None`).
    async fn connected(&mut self) -> Option<ConnectionError> {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let message = Message {
                        topic: publish.topic,
                        payload: publish.payload,
                        qos: publish.qos,
                        retain: publish.retain,
                    };
                    // Nobody reading (the receiver was dropped) is fine: the message is dropped.
                    let _ = self.messages.send(message).await;
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return None,
                Ok(_) => {}
                Err(error) => return Some(error),
            }
        }
    }
}
