//! One proxied connection: two pipes (client to server, server to client) that apply the toxics,
//! and the reset / close handling around them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::toxic::{ByteLimit, Control, Side};

/// Largest chunk read at once; the unit in which toxics apply.
const CHUNK: usize = 16 * 1024;
/// Chunks read ahead of the writer per direction (at most 1 MiB). Reading ahead lets latency
/// pipeline a burst instead of delaying each chunk in turn, and lets a blackhole keep reading.
const QUEUE: usize = 64;
/// A bandwidth-limited direction writes slices of this fraction of a second's worth of bytes, so a
/// change of rate is seen within about 10 ms.
const SLICES_PER_SECOND: u64 = 100;

/// Counters shared by the proxy and all its connections.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) bytes_upstream: AtomicU64,
    pub(super) bytes_downstream: AtomicU64,
}

/// Counts a connection as open for as long as it lives, even when its task is aborted.
#[derive(Debug)]
pub(super) struct OpenGuard(Arc<Counters>);

impl OpenGuard {
    pub(super) fn new(counters: Arc<Counters>) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a pipe, or a whole connection, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The reader saw end of stream and the writer passed it on (half-close).
    Eof,
    /// A close-after budget ran out, or the proxy is going away: close cleanly.
    Close,
    /// A reset was asked for, or an I/O error: reset both sides.
    Reset,
}

/// A chunk read from one side, stamped with the time it was read.
#[derive(Debug)]
struct Chunk {
    read_at: Instant,
    data: Vec<u8>,
}

/// Aborts a connection: `SO_LINGER` 0 makes the close send RST instead of FIN.
pub(super) fn reset(stream: TcpStream) {
    // `set_linger` is deprecated since tokio 1.49 because a non-zero linger blocks on close; a zero
    // linger never blocks. `set_zero_linger` needs tokio 1.50, the workspace asks for 1.48.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Proxies `client` to `upstream` until either side closes, a toxic closes or resets the
/// connection, or the task is aborted (which drops, and so closes, both sockets).
///
/// `epoch` is the reset epoch when the client was accepted; a later epoch resets the connection.
pub(super) async fn run(
    client: TcpStream,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    epoch: u64,
    counters: Arc<Counters>,
    _open: OpenGuard,
) {
    let mut reset_watch = control.clone();
    let reset_asked = async move {
        // An error means the proxy is gone; resetting is as good as anything then.
        let _ = reset_watch
            .wait_for(|c| c.reset_peer || c.reset_epoch != epoch)
            .await;
    };
    tokio::pin!(reset_asked);

    let connected = tokio::select! {
        connected = TcpStream::connect(upstream) => connected,
        () = &mut reset_asked => return reset(client),
    };
    // The closest a proxy can come to passing on "connection refused" is a reset.
    let Ok(mut server) = connected else {
        return reset(client);
    };
    let mut client = client;
    // Toxics decide the timing; Nagle's algorithm would add its own.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let flow = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pipe(
            client_read,
            server_write,
            Side::Upstream,
            control.clone(),
            &counters.bytes_upstream,
        );
        let down = pipe(
            server_read,
            client_write,
            Side::Downstream,
            control.clone(),
            &counters.bytes_downstream,
        );
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                flow = &mut up, if !up_done => match flow {
                    Flow::Eof => up_done = true,
                    other => break other,
                },
                flow = &mut down, if !down_done => match flow {
                    Flow::Eof => down_done = true,
                    other => break other,
                },
                () = &mut reset_asked => break Flow::Reset,
            }
            if up_done && down_done {
                break Flow::Eof;
            }
        }
    };

    match flow {
        Flow::Reset => {
            reset(client);
            reset(server);
        }
        Flow::Close => {
            // FIN first, so data already written is delivered before any reset that closing a
            // socket with unread data would send.
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
        Flow::Eof => {}
    }
}

/// One direction: a reader that reads ahead into a queue, and a writer that applies the toxics.
async fn pipe<R, W>(
    reader: R,
    writer: W,
    side: Side,
    control: watch::Receiver<Control>,
    forwarded: &AtomicU64,
) -> Flow
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let read = read_chunks(reader, tx);
    let write = forward(rx, writer, side, control, forwarded);
    tokio::pin!(read, write);
    tokio::select! {
        flow = &mut read => match flow {
            // The writer drains the queue, then passes the end of stream on.
            Flow::Eof => write.await,
            other => other,
        },
        flow = &mut write => flow,
    }
}

async fn read_chunks<R: AsyncRead + Unpin>(mut reader: R, tx: mpsc::Sender<Chunk>) -> Flow {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => return Flow::Eof,
            Ok(n) => n,
            Err(_) => return Flow::Reset,
        };
        let chunk = Chunk {
            read_at: Instant::now(),
            data: buf[..n].to_vec(),
        };
        if tx.send(chunk).await.is_err() {
            // The writer has finished and its outcome decides the pipe.
            return Flow::Eof;
        }
    }
}

/// Per-direction state of the writer.
struct Writer<'a, W> {
    writer: W,
    side: Side,
    control: watch::Receiver<Control>,
    forwarded: &'a AtomicU64,
    /// The close-after setting being counted, and the bytes forwarded under it.
    limit: Option<(ByteLimit, u64)>,
    /// When the bandwidth-limited link is free again.
    link_free_at: Instant,
}

/// What to do after a chunk.
enum Next {
    Continue,
    Stop(Flow),
}

async fn forward<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Chunk>,
    writer: W,
    side: Side,
    control: watch::Receiver<Control>,
    forwarded: &AtomicU64,
) -> Flow {
    let mut w = Writer {
        writer,
        side,
        control,
        forwarded,
        limit: None,
        link_free_at: Instant::now(),
    };
    while let Some(chunk) = rx.recv().await {
        if let Next::Stop(flow) = w.deliver(chunk).await {
            return flow;
        }
    }
    match w.writer.shutdown().await {
        Ok(()) => Flow::Eof,
        Err(_) => Flow::Reset,
    }
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    /// Waits for the toxics to change. `false` when the proxy is gone.
    async fn toxics_changed(&mut self) -> bool {
        self.control.changed().await.is_ok()
    }

    async fn deliver(&mut self, chunk: Chunk) -> Next {
        // Latency: wait until the chunk is due, re-reading the toxics whenever they change.
        loop {
            let toxics = self.control.borrow_and_update().link(self.side).clone();
            if toxics.blackhole {
                return Next::Continue;
            }
            let due = chunk.read_at + toxics.sample_delay();
            if Instant::now() >= due {
                break;
            }
            tokio::select! {
                () = sleep_until(due) => break,
                changed = self.toxics_changed() => if !changed {
                    return Next::Stop(Flow::Close);
                },
            }
        }

        let mut data = chunk.data.as_slice();
        while !data.is_empty() {
            let toxics = self.control.borrow_and_update().link(self.side).clone();
            if toxics.blackhole {
                return Next::Continue;
            }
            let mut len = data.len();
            if let Some(remaining) = self.limit_remaining(toxics.close_after) {
                if remaining == 0 {
                    return Next::Stop(Flow::Close);
                }
                len = len.min(usize::try_from(remaining).unwrap_or(usize::MAX));
            }
            if let Some(rate) = toxics.bandwidth {
                if rate == 0 {
                    if !self.toxics_changed().await {
                        return Next::Stop(Flow::Close);
                    }
                    continue;
                }
                let per_slice =
                    usize::try_from((rate / SLICES_PER_SECOND).max(1)).unwrap_or(usize::MAX);
                len = len.min(per_slice);
                let start = self.link_free_at.max(Instant::now());
                let done = start + transmission_time(len, rate);
                tokio::select! {
                    () = sleep_until(done) => {}
                    changed = self.toxics_changed() => {
                        if !changed {
                            return Next::Stop(Flow::Close);
                        }
                        continue;
                    }
                }
                self.link_free_at = done;
            }
            let (now, rest) = data.split_at(len);
            if self.write(now).await.is_err() {
                return Next::Stop(Flow::Reset);
            }
            data = rest;
        }
        let limit = self.control.borrow().link(self.side).close_after;
        match self.limit_remaining(limit) {
            Some(0) => Next::Stop(Flow::Close),
            _ => Next::Continue,
        }
    }

    /// Bytes left under the close-after toxic, restarting the count when the toxic was set anew.
    fn limit_remaining(&mut self, limit: Option<ByteLimit>) -> Option<u64> {
        let Some(limit) = limit else {
            self.limit = None;
            return None;
        };
        let sent = match self.limit {
            Some((counting, sent)) if counting.id == limit.id => sent,
            _ => {
                self.limit = Some((limit, 0));
                0
            }
        };
        Some(limit.bytes.saturating_sub(sent))
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.write_all(data).await?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        self.forwarded.fetch_add(len, Ordering::Relaxed);
        if let Some((_, sent)) = &mut self.limit {
            *sent = sent.saturating_add(len);
        }
        Ok(())
    }
}

/// How long `len` bytes take at `rate` bytes per second, rounded up to the nanosecond so that a
/// sum of slices is never shorter than the whole.
fn transmission_time(len: usize, rate: u64) -> Duration {
    let nanos = (len as u128 * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmission_time_rounds_up() {
        assert_eq!(transmission_time(1, 3), Duration::from_nanos(333_333_334));
        assert_eq!(transmission_time(1000, 1000), Duration::from_secs(1));
    }
}
