//! CoAP (RFC 7252) over UDP: a client with confirmable messages and retransmission, block-wise
//! GET (RFC 7959 Block2), observe (RFC 7641) and a ping health check, over `coap-lite` and tokio.
//!
//! Every request is sent as a confirmable message and retransmitted as RFC 7252 §4.2 says: the
//! first wait is drawn uniformly from `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]` (from a
//! per-client seeded RNG), doubled after each retransmission, and after `MAX_RETRANSMIT`
//! retransmissions the request fails with [`CoapError::Timeout`]. All three are configurable, so a
//! test can run at `ACK_TIMEOUT` = 50 ms rather than the standard 2 s (whose worst case is 93 s).
//! Piggybacked and separate responses are both understood; confirmable responses are
//! acknowledged.
//!
//! [`CoapClient::get`] follows Block2: when the server answers with the first block of a larger
//! representation, the client asks for the next blocks and returns the whole body (at most
//! `max_body` bytes). [`CoapClient::put`] and [`CoapClient::post`] send bodies larger than
//! `block_size` in Block1 blocks.
//!
//! ```no_run
//! use rampart_connect::coap::{CoapClient, CoapConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = CoapClient::connect(&CoapConfig::new("coap://127.0.0.1:5683"), "coap").await?;
//! client.put("/config/led", b"on".to_vec()).await?;
//! let answer = client.get("/sensors/temperature").await?;
//! println!("{} {:?}", answer.code, String::from_utf8_lossy(&answer.payload));
//! let mut updates = client.observe("/sensors/temperature").await?;
//! while let Some(update) = updates.next().await {
//!     println!("now {:?}", update.payload);
//! }
//! println!("ping {:?}", client.ping().await?);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use rampart_resilience::ConfigError;
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How to reach a CoAP server and how patiently. Unknown keys are refused; durations are strings.
///
/// ```toml
/// url = "coap://127.0.0.1:5683"
/// ack_timeout = "2s"
/// ack_random_factor = 1.5
/// max_retransmit = 4
/// block_size = 1024
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapConfig {
    /// The server: `coap://host:port` (port 5683 when left out). Required.
    pub url: String,
    /// RFC 7252 ACK_TIMEOUT: the shortest first wait for an acknowledgement. Default `"2s"`; at
    /// least 1 ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::ack_timeout"
    )]
    pub ack_timeout: Duration,
    /// RFC 7252 ACK_RANDOM_FACTOR: the first wait is up to this times `ack_timeout`. Default 1.5;
    /// 1 to 4.
    #[serde(default = "defaults::ack_random_factor")]
    pub ack_random_factor: f64,
    /// RFC 7252 MAX_RETRANSMIT: retransmissions before giving up. Default 4; at most 20.
    #[serde(default = "defaults::max_retransmit")]
    pub max_retransmit: u32,
    /// The block size asked for in Block2 (16, 32, ... 1024 bytes). Default 1024.
    #[serde(default = "defaults::block_size")]
    pub block_size: u16,
    /// Largest body assembled from blocks. Default 1 MiB.
    #[serde(default = "defaults::max_body")]
    pub max_body: usize,
    /// Longest wait for a separate response after the empty acknowledgement. Default `"10s"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::response_timeout"
    )]
    pub response_timeout: Duration,
    /// Seed of the client's RNG (first timeouts, tokens, message ids). Default: random.
    #[serde(default)]
    pub seed: Option<u64>,
}

mod defaults {
    use std::time::Duration;
    pub(super) fn ack_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn ack_random_factor() -> f64 {
        1.5
    }
    pub(super) fn max_retransmit() -> u32 {
        4
    }
    pub(super) fn block_size() -> u16 {
        1024
    }
    pub(super) fn max_body() -> usize {
        1 << 20
    }
    pub(super) fn response_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("coap://")
        .ok_or_else(|| "must start with coap:// (DTLS is not supported)".to_owned())?
        .trim_end_matches('/');
    if rest.contains('/') {
        return Err("must not have a path".to_owned());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !rest.starts_with('[') || h.ends_with(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("has a bad port {p:?}"))?,
        ),
        _ => (rest, 5683),
    };
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    Ok((host.to_owned(), port))
}

impl CoapConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        CoapConfig {
            url: url.into(),
            ack_timeout: defaults::ack_timeout(),
            ack_random_factor: defaults::ack_random_factor(),
            max_retransmit: defaults::max_retransmit(),
            block_size: defaults::block_size(),
            max_body: defaults::max_body(),
            response_timeout: defaults::response_timeout(),
            seed: None,
        }
    }

    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if let Err(p) = parse_url(&self.url) {
            errors.push(format!("{path}.url"), p);
        }
        crate::duration::at_least_1ms(errors, format!("{path}.ack_timeout"), self.ack_timeout);
        crate::duration::at_least_1ms(
            errors,
            format!("{path}.response_timeout"),
            self.response_timeout,
        );
        if !(1.0..=4.0).contains(&self.ack_random_factor) {
            errors.push(
                format!("{path}.ack_random_factor"),
                format!("must be between 1 and 4, got {}", self.ack_random_factor),
            );
        }
        if self.max_retransmit > 20 {
            errors.push(
                format!("{path}.max_retransmit"),
                format!("must be at most 20, got {}", self.max_retransmit),
            );
        }
        if !(16..=1024).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            errors.push(
                format!("{path}.block_size"),
                format!("must be 16, 32, 64, ... or 1024, got {}", self.block_size),
            );
        }
        if self.max_body == 0 {
            errors.push(format!("{path}.max_body"), "must be at least 1".to_owned());
        }
    }

    /// The waits between transmissions of one message when no acknowledgement comes, for a
    /// first wait `first` (the RNG draws it from `[ack_timeout, ack_timeout * ack_random_factor]`):
    /// `first, 2 first, 4 first, ...`, `max_retransmit + 1` of them. Their sum is how long a
    /// request to a silent server takes to fail.
    pub fn waits(&self, first: Duration) -> Vec<Duration> {
        (0..=self.max_retransmit)
            .map(|n| first.saturating_mul(1 << n.min(31)))
            .collect()
    }

    /// The shortest and longest time a request to a silent server takes to fail.
    pub fn give_up_after(&self) -> (Duration, Duration) {
        let sum = |first: Duration| self.waits(first).into_iter().sum::<Duration>();
        (
            sum(self.ack_timeout),
            sum(self.ack_timeout.mul_f64(self.ack_random_factor)),
        )
    }
}

/// What can go wrong with a CoAP request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoapError {
    /// The configuration is invalid; every problem is listed with its key path.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The socket failed.
    #[error("coap i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No acknowledgement after every retransmission.
    #[error("no acknowledgement after {transmissions} transmissions over {waited:?}")]
    Timeout {
        /// Datagrams sent (1 + retransmissions).
        transmissions: u32,
        /// Time from the first transmission to giving up.
        waited: Duration,
    },
    /// Acknowledged, but the separate response did not come in time.
    #[error("no response within {0:?} after the acknowledgement")]
    ResponseTimeout(Duration),
    /// The server answered with a reset.
    #[error("the server reset the exchange")]
    Reset,
    /// A message could not be encoded or a reply made no sense.
    #[error("coap message: {0}")]
    Message(String),
    /// The body assembled from blocks would exceed `max_body`.
    #[error("the body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The client is closed.
    #[error("the coap client is closed")]
    Closed,
}

/// A response.
#[derive(Debug, Clone, PartialEq)]
pub struct CoapResponse {
    /// The code as the RFC writes it: `"2.05"`.
    pub code: String,
    /// The code's meaning.
    pub kind: ResponseType,
    /// The body (whole, when it came in blocks).
    pub payload: Vec<u8>,
    /// The Observe option's value, on notifications.
    pub observe: Option<u32>,
}

impl CoapResponse {
    /// Whether the code is 2.xx.
    pub fn is_success(&self) -> bool {
        self.code.starts_with('2')
    }

    fn from_packet(packet: &Packet) -> Result<CoapResponse, CoapError> {
        let MessageClass::Response(kind) = packet.header.code else {
            return Err(CoapError::Message(format!(
                "expected a response, got {}",
                packet.header.code
            )));
        };
        Ok(CoapResponse {
            code: packet.header.code.to_string(),
            kind,
            payload: packet.payload.clone(),
            observe: packet
                .get_first_option(CoapOption::Observe)
                .map(|v| uint(v) as u32),
        })
    }
}

fn uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .fold(0, |n, b| (n << 8) | u64::from(*b))
}

fn encode_uint(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// A Block2 option: (block number, more, size exponent).
fn block(packet: &Packet) -> Option<(u64, bool, u8)> {
    let v = uint(packet.get_first_option(CoapOption::Block2)?);
    Some((v >> 4, v & 0x8 != 0, (v & 0x7) as u8))
}

#[derive(Default)]
struct Routes {
    /// Waiting for the ACK or RST of a message id.
    acks: HashMap<u16, oneshot::Sender<Packet>>,
    /// Waiting for the (separate) response with a token.
    responses: HashMap<Vec<u8>, oneshot::Sender<Packet>>,
    /// Observations: notifications with a token.
    observers: HashMap<Vec<u8>, mpsc::Sender<Packet>>,
    /// Message ids of the last confirmable messages acknowledged, so a retransmitted duplicate
    /// (our ACK was lost) is acknowledged again rather than reset (RFC 7252 §4.5).
    acknowledged: std::collections::VecDeque<u16>,
}

/// How many acknowledged message ids are remembered for duplicate detection.
const REMEMBERED_ACKS: usize = 64;

struct Shared {
    socket: UdpSocket,
    routes: Mutex<Routes>,
    rng: Mutex<fastrand::Rng>,
    next_mid: Mutex<u16>,
    config: CoapConfig,
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A CoAP client bound to one server. Cheap to share behind an `Arc`; requests may run at once.
pub struct CoapClient {
    shared: Arc<Shared>,
    receiver: JoinHandle<()>,
}

impl std::fmt::Debug for CoapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapClient")
            .field("url", &self.shared.config.url)
            .finish_non_exhaustive()
    }
}

impl Drop for CoapClient {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// Removes an exchange's routes however it ends.
struct RouteGuard<'a> {
    shared: &'a Shared,
    mid: u16,
    token: Vec<u8>,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        let mut routes = self.shared.routes();
        routes.acks.remove(&self.mid);
        routes.responses.remove(&self.token);
    }
}

/// Notifications of an observed resource. Dropping it forgets the observation: the next
/// notification is answered with a reset, which ends it at the server.
pub struct Observation {
    rx: mpsc::Receiver<Packet>,
    /// The newest Observe value delivered and when it arrived.
    last: Option<(u32, Instant)>,
    token: Vec<u8>,
    shared: Arc<Shared>,
    /// The first response (the resource's state when the observation began).
    pub first: CoapResponse,
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation")
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl Observation {
    /// The next notification; `None` when the client is gone. A notification older than the
    /// newest one seen (it was overtaken in the network) is skipped, as RFC 7641 §3.4 says.
    pub async fn next(&mut self) -> Option<CoapResponse> {
        loop {
            let packet = self.rx.recv().await?;
            let Ok(response) = CoapResponse::from_packet(&packet) else {
                continue;
            };
            let now = Instant::now();
            if let (Some(seq), Some((last, at))) = (response.observe, self.last)
                && !fresher(last, at, seq, now)
            {
                continue;
            }
            if let Some(seq) = response.observe {
                self.last = Some((seq, now));
            }
            return Some(response);
        }
    }
}

/// Whether a notification with Observe value `v2` arriving at `t2` is newer than the one with
/// `v1` that arrived at `t1` (RFC 7641 §3.4: 24-bit serial arithmetic, or 128 s later).
fn fresher(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || t2 > t1 + Duration::from_secs(128)
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.shared.routes().observers.remove(&self.token);
    }
}

impl CoapClient {
    /// Validates `config` (problems under `path`), binds a UDP socket and connects it to the
    /// server.
    ///
    /// # Errors
    /// [`CoapError::Config`] listing every problem, [`CoapError::Io`] when the host does not
    /// resolve or the socket cannot be bound.
    pub async fn connect(config: &CoapConfig, path: &str) -> Result<CoapClient, CoapError> {
        let mut errors = ConfigError::new(None);
        config.validate(path, &mut errors);
        errors.into_result(())?;
        let (host, port) = parse_url(&config.url).map_err(CoapError::Message)?;
        let server = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| CoapError::Message(format!("{host} does not resolve")))?;
        let local: std::net::SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        let mut rng = config
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let next_mid = Mutex::new(rng.u16(..));
        let shared = Arc::new(Shared {
            socket,
            routes: Mutex::new(Routes::default()),
            rng: Mutex::new(rng),
            next_mid,
            config: config.clone(),
        });
        let receiver = tokio::spawn(receive(shared.clone()));
        Ok(CoapClient { shared, receiver })
    }

    /// GET `path`, following Block2 to the whole body.
    ///
    /// # Errors
    /// See [`CoapError`].
    pub async fn get(&self, path: &str) -> Result<CoapResponse, CoapError> {
        let szx = (self.shared.config.block_size.trailing_zeros() - 4) as u8;
        let mut body = Vec::new();
        let mut num = 0u64;
        loop {
            let mut packet = self.request(RequestType::Get, path);
            packet.add_option(CoapOption::Block2, encode_uint((num << 4) | u64::from(szx)));
            let reply = self.exchange(packet).await?;
            let mut response = CoapResponse::from_packet(&reply)?;
            let Some((got, more, server_szx)) = block(&reply) else {
                return Ok(response);
            };
            if got != num {
                return Err(CoapError::Message(format!(
                    "asked for block {num}, got {got}"
                )));
            }
            if body.len() + response.payload.len() > self.shared.config.max_body {
                return Err(CoapError::BodyTooLarge(self.shared.config.max_body));
            }
            body.extend_from_slice(&response.payload);
            if !more || !response.is_success() {
                response.payload = body;
                return Ok(response);
            }
            // The server may pick a smaller block: continue at its size.
            let size = 16u64 << server_szx;
            num = (body.len() as u64) / size;
            if server_szx != szx {
                return self.rest_at(path, body, num, server_szx).await;
            }
        }
    }

    /// Continues a block-wise GET at the server's block size.
    async fn rest_at(
        &self,
        path: &str,
        mut body: Vec<u8>,
        mut num: u64,
        szx: u8,
    ) -> Result<CoapResponse, CoapError> {
        loop {
            let mut packet = self.request(RequestType::Get, path);
            packet.add_option(CoapOption::Block2, encode_uint((num << 4) | u64::from(szx)));
            let reply = self.exchange(packet).await?;
            let mut response = CoapResponse::from_packet(&reply)?;
            let more = block(&reply).is_some_and(|(_, m, _)| m);
            if body.len() + response.payload.len() > self.shared.config.max_body {
                return Err(CoapError::BodyTooLarge(self.shared.config.max_body));
            }
            body.extend_from_slice(&response.payload);
            if !more || !response.is_success() {
                response.payload = body;
                return Ok(response);
            }
            num += 1;
        }
    }

    /// PUT `payload` to `path` (in Block1 blocks when larger than `block_size`).
    ///
    /// # Errors
    /// See [`CoapError`].
    pub async fn put(&self, path: &str, payload: Vec<u8>) -> Result<CoapResponse, CoapError> {
        self.send_body(RequestType::Put, path, payload).await
    }

    /// POST `payload` to `path` (in Block1 blocks when larger than `block_size`).
    ///
    /// # Errors
    /// See [`CoapError`].
    pub async fn post(&self, path: &str, payload: Vec<u8>) -> Result<CoapResponse, CoapError> {
        self.send_body(RequestType::Post, path, payload).await
    }

    /// Sends `payload` in one message, or in Block1 blocks of `block_size` when it is larger
    /// (RFC 7959 §2.5): each block waits for 2.31 Continue; a server asking for smaller blocks
    /// is followed. Returns the response to the last block, or the first that is not 2.31.
    async fn send_body(
        &self,
        method: RequestType,
        path: &str,
        payload: Vec<u8>,
    ) -> Result<CoapResponse, CoapError> {
        let mut szx = (self.shared.config.block_size.trailing_zeros() - 4) as u8;
        if payload.len() <= usize::from(self.shared.config.block_size) {
            let mut packet = self.request(method, path);
            packet.payload = payload;
            return CoapResponse::from_packet(&self.exchange(packet).await?);
        }
        let mut offset = 0usize;
        loop {
            let size = 16usize << szx;
            let num = (offset / size) as u64;
            let end = (offset + size).min(payload.len());
            let more = end < payload.len();
            let mut packet = self.request(method, path);
            packet.add_option(
                CoapOption::Block1,
                encode_uint((num << 4) | (u64::from(more) << 3) | u64::from(szx)),
            );
            packet.payload = payload[offset..end].to_vec();
            let reply = self.exchange(packet).await?;
            let response = CoapResponse::from_packet(&reply)?;
            if !more || response.kind != ResponseType::Continue {
                return Ok(response);
            }
            offset = end;
            if let Some(v) = reply.get_first_option(CoapOption::Block1) {
                let server_szx = (uint(v) & 0x7) as u8;
                if server_szx < szx {
                    szx = server_szx;
                }
            }
        }
    }

    /// DELETE `path`.
    ///
    /// # Errors
    /// See [`CoapError`].
    pub async fn delete(&self, path: &str) -> Result<CoapResponse, CoapError> {
        let packet = self.request(RequestType::Delete, path);
        CoapResponse::from_packet(&self.exchange(packet).await?)
    }

    /// Observes `path` (RFC 7641): a GET with Observe 0; the server then sends a notification
    /// whenever the resource changes. Up to 64 notifications wait unread; more are dropped.
    ///
    /// # Errors
    /// See [`CoapError`]; a server that does not grant the observation still answers, with no
    /// Observe option in [`Observation::first`].
    pub async fn observe(&self, path: &str) -> Result<Observation, CoapError> {
        let mut packet = self.request(RequestType::Get, path);
        // Observe 0: register (an empty uint is 0).
        packet.add_option(CoapOption::Observe, Vec::new());
        let token = packet.get_token().to_vec();
        let (tx, rx) = mpsc::channel(64);
        self.shared.routes().observers.insert(token.clone(), tx);
        let observation = |first: CoapResponse| Observation {
            last: first.observe.map(|seq| (seq, Instant::now())),
            rx,
            token: token.clone(),
            shared: self.shared.clone(),
            first,
        };
        match self.exchange(packet).await {
            Ok(reply) => Ok(observation(CoapResponse::from_packet(&reply)?)),
            Err(e) => {
                self.shared.routes().observers.remove(&token);
                Err(e)
            }
        }
    }

    /// CoAP ping: an empty confirmable message, which a live server answers with a reset.
    /// Returns the time to the reset; retransmits like any request.
    ///
    /// # Errors
    /// [`CoapError::Timeout`] when the server does not answer.
    pub async fn ping(&self) -> Result<Duration, CoapError> {
        let mut packet = Packet::new();
        packet.header.set_type(MessageType::Confirmable);
        packet.header.code = MessageClass::Empty;
        let start = Instant::now();
        match self.exchange(packet).await {
            Err(CoapError::Reset) => Ok(start.elapsed()),
            Ok(_) => Ok(start.elapsed()),
            Err(e) => Err(e),
        }
    }

    fn request(&self, method: RequestType, path: &str) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_type(MessageType::Confirmable);
        packet.header.code = MessageClass::Request(method);
        let token = self
            .shared
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .u64(..)
            .to_be_bytes()
            .to_vec();
        packet.set_token(token);
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        packet
    }

    /// Sends `packet` as a confirmable message with retransmissions; returns the response (or,
    /// for an empty message, the reset as [`CoapError::Reset`]).
    async fn exchange(&self, mut packet: Packet) -> Result<Packet, CoapError> {
        let shared = &*self.shared;
        let config = &shared.config;
        let mid = {
            let mut next = shared
                .next_mid
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *next = next.wrapping_add(1);
            *next
        };
        packet.header.message_id = mid;
        let token = packet.get_token().to_vec();
        let (ack_tx, mut ack_rx) = oneshot::channel();
        let (resp_tx, mut resp_rx) = oneshot::channel();
        {
            let mut routes = shared.routes();
            routes.acks.insert(mid, ack_tx);
            if !token.is_empty() {
                routes.responses.insert(token.clone(), resp_tx);
            }
        }
        let _guard = RouteGuard { shared, mid, token };
        let bytes = packet
            .to_bytes()
            .map_err(|e| CoapError::Message(e.to_string()))?;
        let factor = shared
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .f64();
        let first = config
            .ack_timeout
            .mul_f64(1.0 + factor * (config.ack_random_factor - 1.0));
        let start = Instant::now();
        let mut transmissions = 0u32;
        let mut wait = first;
        loop {
            shared.socket.send(&bytes).await?;
            transmissions += 1;
            let deadline = Instant::now() + wait;
            tokio::select! {
                ack = &mut ack_rx => {
                    let ack = ack.map_err(|_| CoapError::Closed)?;
                    if ack.header.get_type() == MessageType::Reset {
                        return Err(CoapError::Reset);
                    }
                    if ack.header.code != MessageClass::Empty {
                        return Ok(ack);
                    }
                    // An empty ACK: the response comes separately.
                    return match tokio::time::timeout(config.response_timeout, &mut resp_rx).await {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(_)) => Err(CoapError::Closed),
                        Err(_) => Err(CoapError::ResponseTimeout(config.response_timeout)),
                    };
                }
                response = &mut resp_rx, if !packet.get_token().is_empty() => {
                    // A separate response whose empty ACK was lost.
                    return response.map_err(|_| CoapError::Closed);
                }
                () = tokio::time::sleep_until(deadline) => {
                    if transmissions > config.max_retransmit {
                        return Err(CoapError::Timeout { transmissions, waited: start.elapsed() });
                    }
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }
}

/// Routes every datagram from the server to whoever waits for it.
async fn receive(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok(n) = shared.socket.recv(&mut buf).await else {
            // ICMP port unreachable and the like: the exchange's own timeout reports it.
            continue;
        };
        let Ok(packet) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        match packet.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                let waiter = shared.routes().acks.remove(&packet.header.message_id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(packet);
                }
            }
            kind @ (MessageType::Confirmable | MessageType::NonConfirmable) => {
                let token = packet.get_token().to_vec();
                let mid = packet.header.message_id;
                let delivered = {
                    let mut routes = shared.routes();
                    let delivered =
                        if kind == MessageType::Confirmable && routes.acknowledged.contains(&mid) {
                            // A duplicate: acknowledged again, not delivered twice.
                            true
                        } else if let Some(waiter) = routes.responses.remove(&token) {
                            waiter.send(packet).is_ok()
                        } else if let Some(observer) = routes.observers.get(&token) {
                            // A full queue drops the notification; the observation goes on.
                            let _ = observer.try_send(packet);
                            true
                        } else {
                            false
                        };
                    if delivered
                        && kind == MessageType::Confirmable
                        && !routes.acknowledged.contains(&mid)
                    {
                        if routes.acknowledged.len() == REMEMBERED_ACKS {
                            routes.acknowledged.pop_front();
                        }
                        routes.acknowledged.push_back(mid);
                    }
                    delivered
                };
                if kind == MessageType::Confirmable {
                    let mut reply = Packet::new();
                    reply.header.set_type(if delivered {
                        MessageType::Acknowledgement
                    } else {
                        MessageType::Reset
                    });
                    reply.header.code = MessageClass::Empty;
                    reply.header.message_id = mid;
                    if let Ok(bytes) = reply.to_bytes() {
                        let _ = shared.socket.send(&bytes).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_have_paths() {
        let mut c = CoapConfig::new("http://x");
        c.ack_random_factor = 0.5;
        c.max_retransmit = 99;
        c.block_size = 100;
        let mut errors = ConfigError::new(None);
        c.validate("coap.s", &mut errors);
        let text = errors.to_string();
        for key in [
            "coap.s.url",
            "coap.s.ack_random_factor",
            "coap.s.max_retransmit",
            "coap.s.block_size",
        ] {
            assert!(text.contains(key), "{text}");
        }
        assert!(toml::from_str::<CoapConfig>("url = \"coap://x\"\nbogus = 1").is_err());
    }

    #[test]
    fn urls_and_options() {
        assert_eq!(
            parse_url("coap://127.0.0.1:5684"),
            Ok(("127.0.0.1".into(), 5684))
        );
        assert_eq!(parse_url("coap://h"), Ok(("h".into(), 5683)));
        assert!(parse_url("coaps://h").is_err());
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(0x1234), vec![0x12, 0x34]);
        assert_eq!(uint(&[0x12, 0x34]), 0x1234);
    }

    #[test]
    fn notification_order() {
        let t = Instant::now();
        assert!(fresher(5, t, 6, t));
        assert!(!fresher(6, t, 5, t));
        assert!(!fresher(6, t, 6, t));
        // Wrapped around the 24-bit space.
        assert!(fresher((1 << 24) - 2, t, 1, t));
        assert!(!fresher(1, t, (1 << 24) - 2, t));
        // Anything after 128 s counts as newer.
        assert!(fresher(6, t, 5, t + Duration::from_secs(129)));
    }

    /// RFC 7252's defaults: ACK_TIMEOUT 2 s, factor 1.5, MAX_RETRANSMIT 4 give up after 62 s at
    /// the least and 93 s at the most.
    #[test]
    fn retransmission_schedule() {
        let c = CoapConfig::new("coap://x");
        assert_eq!(
            c.waits(Duration::from_secs(2)),
            [2, 4, 8, 16, 32].map(Duration::from_secs).to_vec()
        );
        assert_eq!(
            c.give_up_after(),
            (Duration::from_secs(62), Duration::from_secs(93))
        );
    }
}
