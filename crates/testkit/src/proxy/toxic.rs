//! The faults a [`ChaosProxy`](super::ChaosProxy) can inject, and the per-direction state they
//! compile to.

use std::time::Duration;

/// Which way through the proxy a toxic acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Client to server: the requests.
    Upstream,
    /// Server to client: the answers.
    Downstream,
    /// Both ways. The default.
    #[default]
    Both,
}

/// A fault injected by the proxy, switched on with [`ChaosProxy::set`](super::ChaosProxy::set).
///
/// Every toxic acts on open connections as well as new ones: a change is seen before the next
/// chunk of data is forwarded, and a chunk that is waiting (for its latency or its share of the
/// bandwidth) re-reads the toxics at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Toxic {
    /// Delays every chunk of data by `latency` plus a uniform random extra in `[0, jitter]`,
    /// counted from the moment the proxy read it. Chunks are pipelined: a burst of chunks is
    /// delayed once, not once per chunk in turn.
    Latency {
        /// Fixed delay of every chunk.
        latency: Duration,
        /// Upper bound of the random extra delay added to `latency`.
        jitter: Duration,
        /// Which way to delay.
        direction: Direction,
    },
    /// Limits throughput to `bytes_per_second` in each chosen direction, per connection. A byte
    /// is delivered no earlier than its transmission time at that rate, so `n` bytes take at
    /// least `n / bytes_per_second`. Zero stalls the direction (data is held, not dropped) until
    /// the toxic changes.
    Bandwidth {
        /// Rate limit in bytes per second; zero holds all data.
        bytes_per_second: u64,
        /// Which way to limit.
        direction: Direction,
    },
    /// Resets (RST, through `SO_LINGER` 0) every open connection at once, and every new
    /// connection right after it is accepted, for as long as the toxic is set. Both the client
    /// and the server side of each connection are reset.
    ResetPeer,
    /// Reads data and discards it: nothing is forwarded in the chosen direction, and the writer
    /// is never told. With [`Direction::Both`] or [`Direction::Upstream`] the server never sees
    /// a request, so the client waits for an answer that never comes.
    Blackhole {
        /// Which way to discard.
        direction: Direction,
    },
    /// Forwards exactly `bytes` more bytes in the chosen direction on each connection, counted
    /// from when the toxic is set (or the connection opens, if later), then closes that
    /// connection cleanly (FIN to both sides).
    CloseAfter {
        /// Bytes forwarded before the connection is closed.
        bytes: u64,
        /// Which way to count.
        direction: Direction,
    },
    /// Closes the proxy's listening socket, so new connections are refused (`ECONNREFUSED`) by
    /// the kernel; open connections are kept. Removing the toxic listens again on the same port.
    /// Connections that had completed the handshake but were not yet accepted when the listener
    /// closed are reset by the kernel.
    Refuse,
}

impl Toxic {
    /// The kind of this toxic, as used by [`ChaosProxy::remove`](super::ChaosProxy::remove).
    #[must_use]
    pub fn kind(&self) -> ToxicKind {
        match self {
            Self::Latency { .. } => ToxicKind::Latency,
            Self::Bandwidth { .. } => ToxicKind::Bandwidth,
            Self::ResetPeer => ToxicKind::ResetPeer,
            Self::Blackhole { .. } => ToxicKind::Blackhole,
            Self::CloseAfter { .. } => ToxicKind::CloseAfter,
            Self::Refuse => ToxicKind::Refuse,
        }
    }
}

/// The kind of a [`Toxic`], without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToxicKind {
    /// [`Toxic::Latency`].
    Latency,
    /// [`Toxic::Bandwidth`].
    Bandwidth,
    /// [`Toxic::ResetPeer`].
    ResetPeer,
    /// [`Toxic::Blackhole`].
    Blackhole,
    /// [`Toxic::CloseAfter`].
    CloseAfter,
    /// [`Toxic::Refuse`].
    Refuse,
}

impl ToxicKind {
    /// Every kind, in the order [`ChaosProxy::clear`](super::ChaosProxy::clear) removes them.
    pub(super) const ALL: [Self; 6] = [
        Self::Latency,
        Self::Bandwidth,
        Self::ResetPeer,
        Self::Blackhole,
        Self::CloseAfter,
        Self::Refuse,
    ];
}

/// One way through a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Upstream,
    Downstream,
}

/// A close-after budget; `id` tells one setting from the next, so a connection restarts its count
/// when the toxic is set again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ByteLimit {
    pub(super) bytes: u64,
    pub(super) id: u64,
}

/// The toxics acting on one side of every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LinkToxics {
    /// Fixed latency and jitter bound.
    pub(super) latency: Option<(Duration, Duration)>,
    pub(super) bandwidth: Option<u64>,
    pub(super) blackhole: bool,
    pub(super) close_after: Option<ByteLimit>,
}

impl LinkToxics {
    /// The delay for the next chunk: the latency plus a fresh random jitter.
    pub(super) fn sample_delay(&self) -> Duration {
        match self.latency {
            None => Duration::ZERO,
            Some((latency, jitter)) if jitter.is_zero() => latency,
            Some((latency, jitter)) => {
                let bound = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                latency.saturating_add(Duration::from_nanos(fastrand::u64(0..=bound)))
            }
        }
    }
}

/// The state every connection watches: toxics per side, and the reset requests.
#[derive(Debug, Clone, Default)]
pub(super) struct Control {
    pub(super) upstream: LinkToxics,
    pub(super) downstream: LinkToxics,
    /// [`Toxic::ResetPeer`] is set.
    pub(super) reset_peer: bool,
    /// Bumped by every [`ChaosProxy::reset_all`](super::ChaosProxy::reset_all); a connection
    /// accepted under an older epoch resets itself.
    pub(super) reset_epoch: u64,
}

impl Control {
    pub(super) fn link(&self, side: Side) -> &LinkToxics {
        match side {
            Side::Upstream => &self.upstream,
            Side::Downstream => &self.downstream,
        }
    }

    fn each_link(&mut self, direction: Direction, mut f: impl FnMut(&mut LinkToxics)) {
        if direction != Direction::Downstream {
            f(&mut self.upstream);
        }
        if direction != Direction::Upstream {
            f(&mut self.downstream);
        }
    }

    /// Sets a toxic other than [`Toxic::Refuse`], which lives with the listener. `id` is fresh for
    /// every call.
    pub(super) fn apply(&mut self, toxic: &Toxic, id: u64) {
        match *toxic {
            Toxic::Latency {
                latency,
                jitter,
                direction,
            } => self.each_link(direction, |l| l.latency = Some((latency, jitter))),
            Toxic::Bandwidth {
                bytes_per_second,
                direction,
            } => self.each_link(direction, |l| l.bandwidth = Some(bytes_per_second)),
            Toxic::ResetPeer => self.reset_peer = true,
            Toxic::Blackhole { direction } => self.each_link(direction, |l| l.blackhole = true),
            Toxic::CloseAfter { bytes, direction } => {
                self.each_link(direction, |l| l.close_after = Some(ByteLimit { bytes, id }));
            }
            Toxic::Refuse => {}
        }
    }

    /// Removes every toxic of `kind` in both directions; [`ToxicKind::Refuse`] is not kept here.
    pub(super) fn remove(&mut self, kind: ToxicKind) {
        match kind {
            ToxicKind::Latency => self.each_link(Direction::Both, |l| l.latency = None),
            ToxicKind::Bandwidth => self.each_link(Direction::Both, |l| l.bandwidth = None),
            ToxicKind::ResetPeer => self.reset_peer = false,
            ToxicKind::Blackhole => self.each_link(Direction::Both, |l| l.blackhole = false),
            ToxicKind::CloseAfter => self.each_link(Direction::Both, |l| l.close_after = None),
            ToxicKind::Refuse => {}
        }
    }

    /// The toxics set, one per kind and direction ([`Toxic::Refuse`] excluded).
    pub(super) fn toxics(&self) -> Vec<Toxic> {
        let mut out = Vec::new();
        let (up, down) = (&self.upstream, &self.downstream);
        push_per_direction(
            &mut out,
            up.latency,
            down.latency,
            |(latency, jitter), direction| Toxic::Latency {
                latency,
                jitter,
                direction,
            },
        );
        push_per_direction(
            &mut out,
            up.bandwidth,
            down.bandwidth,
            |bytes_per_second, direction| Toxic::Bandwidth {
                bytes_per_second,
                direction,
            },
        );
        if self.reset_peer {
            out.push(Toxic::ResetPeer);
        }
        push_per_direction(
            &mut out,
            up.blackhole.then_some(()),
            down.blackhole.then_some(()),
            |(), direction| Toxic::Blackhole { direction },
        );
        push_per_direction(
            &mut out,
            up.close_after.map(|l| l.bytes),
            down.close_after.map(|l| l.bytes),
            |bytes, direction| Toxic::CloseAfter { bytes, direction },
        );
        out
    }
}

/// Pushes one toxic for both directions when the two sides agree, else one per side that has it.
fn push_per_direction<T: PartialEq + Copy>(
    out: &mut Vec<Toxic>,
    up: Option<T>,
    down: Option<T>,
    make: impl Fn(T, Direction) -> Toxic,
) {
    match (up, down) {
        (Some(u), Some(d)) if u == d => out.push(make(u, Direction::Both)),
        (u, d) => {
            if let Some(u) = u {
                out.push(make(u, Direction::Upstream));
            }
            if let Some(d) = d {
                out.push(make(d, Direction::Downstream));
            }
        }
    }
}
