//! A chaos TCP proxy: sits between a client and a server on 127.0.0.1 and injects faults
//! ([`Toxic`]s) switched at run time.
//!
//! Point the client at [`ChaosProxy::addr`] instead of the server. With no toxic set, bytes pass
//! through unchanged (half-closes included). [`ChaosProxy::set`] adds latency, a bandwidth limit,
//! a blackhole, a close after some bytes, resets, or refused connections; [`ChaosProxy::remove`]
//! takes them away again. Changes reach open connections before their next chunk of data.
//! Dropping the proxy closes its listener and every connection through it.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use rampart_testkit::proxy::{ChaosProxy, Direction, Toxic};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An echo server to stand behind the proxy.
//! let server = TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = server.local_addr()?;
//! tokio::spawn(async move {
//!     let (mut stream, _) = server.accept().await?;
//!     let (mut from, mut to) = stream.split();
//!     tokio::io::copy(&mut from, &mut to).await
//! });
//!
//! let proxy = ChaosProxy::start(upstream).await?;
//! proxy.set(Toxic::Latency {
//!     latency: Duration::from_millis(50),
//!     jitter: Duration::ZERO,
//!     direction: Direction::Downstream,
//! });
//!
//! let mut client = TcpStream::connect(proxy.addr()).await?;
//! let started = Instant::now();
//! client.write_all(b"ping").await?;
//! let mut answer = [0; 4];
//! client.read_exact(&mut answer).await?;
//! assert_eq!(&answer, b"ping");
//! assert!(started.elapsed() >= Duration::from_millis(50));
//!
//! // Dropping the proxy closes the connection through it.
//! drop(proxy);
//! assert_eq!(client.read(&mut answer).await?, 0);
//! # Ok(())
//! # }
//! ```

mod connection;
mod toxic;

use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use self::connection::{Counters, OpenGuard};
use self::toxic::Control;
pub use self::toxic::{Direction, Toxic, ToxicKind};

/// Backlog of the listening socket.
const BACKLOG: u32 = 1024;
/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Why the proxy could not start or listen again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The listening socket could not be opened, bound or put into listening state.
    #[error("could not listen on {addr}")]
    Listen {
        /// The address the proxy tried to listen on.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// [`ChaosProxy::start`] was not called from within a tokio runtime.
    #[error(
        "the chaos proxy must be started from within a tokio runtime with I/O and time enabled"
    )]
    NoRuntime,
}

/// Counters of a [`ChaosProxy`], from [`ChaosProxy::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Connections accepted since the proxy started, including those reset at once.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes forwarded from clients to the server.
    pub bytes_upstream: u64,
    /// Bytes forwarded from the server to clients.
    pub bytes_downstream: u64,
}

/// A TCP proxy on 127.0.0.1 that injects faults switched at run time.
///
/// All its work runs in tasks it owns: dropping it closes the listener at once and aborts every
/// connection (the sockets are closed when the runtime next runs the aborted tasks). See the
/// [module documentation](self) for an example.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    runtime: Handle,
    task: JoinHandle<()>,
}

/// State shared by the handle and the accept loop.
#[derive(Debug)]
struct Shared {
    listener: Mutex<ListenerSlot>,
    control: watch::Sender<Control>,
    counters: Arc<Counters>,
    /// Source of fresh ids for close-after settings.
    next_id: AtomicU64,
}

/// The listening socket, absent while [`Toxic::Refuse`] is set.
#[derive(Debug, Default)]
struct ListenerSlot {
    listener: Option<TcpListener>,
    /// The accept loop's waker. Closing a listener does not wake a task waiting on it, so opening
    /// the next one must.
    waker: Option<Waker>,
}

impl ChaosProxy {
    /// Starts a proxy listening on a free port of 127.0.0.1 and forwarding to `upstream`.
    ///
    /// Each accepted connection opens its own connection to `upstream`; if that fails, the client
    /// connection is reset.
    ///
    /// # Errors
    ///
    /// [`ProxyError::NoRuntime`] outside a tokio runtime, [`ProxyError::Listen`] if no listening
    /// socket can be opened.
    pub async fn start(upstream: SocketAddr) -> Result<Self, ProxyError> {
        let runtime = Handle::try_current().map_err(|_| ProxyError::NoRuntime)?;
        let requested = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = listen(requested)?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Listen {
            addr: requested,
            source,
        })?;
        let shared = Arc::new(Shared {
            listener: Mutex::new(ListenerSlot {
                listener: Some(listener),
                waker: None,
            }),
            control: watch::Sender::new(Control::default()),
            counters: Arc::default(),
            next_id: AtomicU64::new(0),
        });
        let task = runtime.spawn(serve(Arc::clone(&shared), upstream));
        Ok(Self {
            addr,
            upstream,
            shared,
            runtime,
            task,
        })
    }

    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to; it stays the same for the life of the proxy.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server the proxy forwards to.
    #[must_use]
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Sets a toxic, replacing the one of the same kind in the directions it names; a toxic of
    /// that kind in the other direction stays. So upstream and downstream can have different
    /// latencies, say. Setting [`Toxic::CloseAfter`] again restarts its count.
    ///
    /// Takes effect on open connections before their next chunk, and chunks waiting for their
    /// latency or bandwidth share re-read it at once. [`Toxic::Refuse`] closes the listener before
    /// this returns; [`Toxic::ResetPeer`] resets open connections promptly, not before this
    /// returns.
    pub fn set(&self, toxic: Toxic) {
        if toxic == Toxic::Refuse {
            let closed = self.shared.slot().listener.take();
            drop(closed);
            return;
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.control.send_modify(|c| c.apply(&toxic, id));
    }

    /// Removes the toxic of `kind` in both directions; nothing happens if none is set.
    ///
    /// Removing [`ToxicKind::Refuse`] listens again on the same port before this returns.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Listen`] if removing [`ToxicKind::Refuse`] cannot listen on the port again
    /// (another socket took it); the toxic then stays set and the call can be retried.
    pub fn remove(&self, kind: ToxicKind) -> Result<(), ProxyError> {
        if kind != ToxicKind::Refuse {
            self.shared.control.send_modify(|c| c.remove(kind));
            return Ok(());
        }
        let waker = {
            let mut slot = self.shared.slot();
            if slot.listener.is_some() {
                return Ok(());
            }
            // Registering the socket with tokio's I/O driver needs the runtime's context.
            let _runtime = self.runtime.enter();
            slot.listener = Some(listen(self.addr)?);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Removes every toxic.
    ///
    /// # Errors
    ///
    /// As [`ChaosProxy::remove`]: only if listening again fails; every other toxic is removed
    /// even then.
    pub fn clear(&self) -> Result<(), ProxyError> {
        for kind in ToxicKind::ALL {
            self.remove(kind)?;
        }
        Ok(())
    }

    /// The toxics set now, one entry per kind and direction ([`Direction::Both`] when both
    /// directions have the same setting).
    #[must_use]
    pub fn toxics(&self) -> Vec<Toxic> {
        let mut toxics = self.shared.control.borrow().toxics();
        if self.shared.slot().listener.is_none() {
            toxics.push(Toxic::Refuse);
        }
        toxics
    }

    /// Resets (RST) every connection open now, both its client and its server side. New
    /// connections are not affected; for those, see [`Toxic::ResetPeer`].
    ///
    /// The resets are sent promptly by the connections' tasks, not before this returns.
    pub fn reset_all(&self) {
        self.shared
            .control
            .send_modify(|c| c.reset_epoch = c.reset_epoch.wrapping_add(1));
    }

    /// Counters of connections and bytes.
    #[must_use]
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            bytes_upstream: c.bytes_upstream.load(Ordering::Relaxed),
            bytes_downstream: c.bytes_downstream.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        // The accept loop owns the connections' tasks in a `JoinSet`: aborting it aborts them all.
        self.task.abort();
        let closed = self.shared.slot().listener.take();
        drop(closed);
    }
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, ListenerSlot> {
        // The slot is consistent at every point a panic could occur.
        self.listener.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let mut slot = self.slot();
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        match &slot.listener {
            Some(listener) => listener.poll_accept(cx),
            None => Poll::Pending,
        }
    }

    fn admit(&self, client: TcpStream, upstream: SocketAddr, connections: &mut JoinSet<()>) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let (epoch, reset_now) = {
            let control = self.control.borrow();
            (control.reset_epoch, control.reset_peer)
        };
        if reset_now {
            connection::reset(client);
            return;
        }
        let open = OpenGuard::new(Arc::clone(&self.counters));
        connections.spawn(connection::run(
            client,
            upstream,
            self.control.subscribe(),
            epoch,
            Arc::clone(&self.counters),
            open,
        ));
    }
}

/// The accept loop; owns every connection's task.
async fn serve(shared: Arc<Shared>, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = poll_fn(|cx| shared.poll_accept(cx)) => match accepted {
                Ok((client, _)) => shared.admit(client, upstream, &mut connections),
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Opens a listening socket with `SO_REUSEADDR`, so that the port can be listened on again while
/// connections accepted on it are still open or in `TIME_WAIT`.
fn listen(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let open = || {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    open().map_err(|source| ProxyError::Listen { addr, source })
}
