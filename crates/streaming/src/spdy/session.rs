//! SPDY/3.1 sessions: a reader task and a writer task over any byte stream, and streams
//! that are `AsyncRead + AsyncWrite` (shutdown = FIN half-close).
//!
//! Flow control: this side advertises the default 64 KiB window (a SETTINGS frame at start)
//! and returns WINDOW_UPDATEs as the application consumes data. It honours the peer's send
//! windows once the peer has announced an initial window size in SETTINGS; peers that never do
//! (moby/spdystream, used by kubectl, the kubelet and containerd, implements no flow control)
//! are sent data without window limits. Receive buffers are capped per stream: past the cap
//! the reader stops reading the connection, which pushes back through TCP.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::AbortHandle;

use super::frame::{
    Frame, Setting, FLAG_FIN, FLAG_UNIDIRECTIONAL, RST_CANCEL, RST_PROTOCOL_ERROR,
    RST_REFUSED_STREAM, SETTINGS_INITIAL_WINDOW_SIZE,
};
use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use crate::StreamingError;

/// The default SPDY/3 stream window.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// Largest data frame this side sends.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// Per-stream receive buffer past which the reader stops reading the connection.
const RECV_BUFFER_LIMIT: usize = 1024 * 1024;
/// Bytes of data frames queued for the writer past which stream writes wait.
const SEND_QUEUE_LIMIT: usize = 256 * 1024;

/// Which end of the connection this session is (decides stream and ping id parity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens odd-numbered streams (kubectl's side, or the agent toward a runtime).
    Client,
    /// Opens even-numbered streams and accepts the client's.
    Server,
}

struct StreamSlot {
    recv: VecDeque<Bytes>,
    recv_len: usize,
    /// The peer sent FIN (or the stream was opened unidirectional toward us).
    remote_fin: bool,
    /// This side sent FIN.
    local_fin: bool,
    /// RST_STREAM seen (from either side), with the status if from the peer.
    reset: Option<u32>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    send_window: i64,
    /// Bytes consumed by the application not yet returned in a WINDOW_UPDATE.
    unacked: u32,
    reply: Option<oneshot::Sender<Result<(), StreamingError>>>,
}

impl StreamSlot {
    fn new(send_window: i64) -> Self {
        Self {
            recv: VecDeque::new(),
            recv_len: 0,
            remote_fin: false,
            local_fin: false,
            reset: None,
            read_waker: None,
            write_waker: None,
            send_window,
            unacked: 0,
            reply: None,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

struct State {
    streams: HashMap<u32, StreamSlot>,
    next_stream_id: u32,
    next_ping_id: u32,
    last_peer_stream_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    /// The peer announced SETTINGS_INITIAL_WINDOW_SIZE, so it does flow control.
    peer_flow_control: bool,
    initial_send_window: i64,
    /// The connection's read side ended (EOF, error, or the session was dropped).
    closed: bool,
    /// The writer failed; nothing more can be sent.
    write_failed: bool,
    /// GOAWAY sent or received: no new streams.
    going_away: bool,
    queued_bytes: usize,
    queue_wakers: Vec<Waker>,
    session_unacked: u32,
}

struct Inner {
    role: Role,
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<Queued>,
    /// Signalled when a stream's receive buffer drains (the reader may be waiting).
    drained: Notify,
    closed_tx: watch::Sender<bool>,
    reader: Mutex<Option<AbortHandle>>,
}

/// A frame queued for the writer, with the data bytes it accounts for.
struct Queued {
    frame: Frame,
    data_len: usize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update; the state is still
        // the best information there is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, frame: Frame) {
        self.send_counted(frame, 0);
    }

    fn send_counted(&self, frame: Frame, data_len: usize) {
        if self.tx.send(Queued { frame, data_len }).is_err() {
            tracing::debug!("spdy: writer gone, frame dropped");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reader.abort();
        }
    }
}

/// A SPDY/3.1 session over a connection (after the HTTP upgrade).
///
/// The connection is driven by background tasks; it closes when the session and all its
/// streams are dropped (the writer flushes queued frames first).
pub struct SpdySession {
    inner: Arc<Inner>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<SpdyStream>>,
}

impl SpdySession {
    /// Starts the client side of a session (odd stream ids). Must run inside a tokio runtime.
    pub fn client<IO>(io: IO) -> Result<Self, StreamingError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, Role::Client)
    }

    /// Starts the server side of a session (even stream ids; accepts the client's streams).
    pub fn server<IO>(io: IO) -> Result<Self, StreamingError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::start(io, Role::Server)
    }

    /// Starts a session for the given role.
    pub fn start<IO>(io: IO, role: Role) -> Result<Self, StreamingError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let compressor = HeaderCompressor::new()?;
        let (read_half, write_half) = tokio::io::split(io);
        let (tx, rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (closed_tx, _) = watch::channel(false);
        let (first_id, first_ping) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        let inner = Arc::new(Inner {
            role,
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_stream_id: first_id,
                next_ping_id: first_ping,
                last_peer_stream_id: 0,
                pings: HashMap::new(),
                peer_flow_control: false,
                initial_send_window: DEFAULT_WINDOW as i64,
                closed: false,
                write_failed: false,
                going_away: false,
                queued_bytes: 0,
                queue_wakers: Vec::new(),
                session_unacked: 0,
            }),
            tx,
            drained: Notify::new(),
            closed_tx,
            reader: Mutex::new(None),
        });
        // Announce our window so a flow-controlling peer knows we do flow control too.
        inner.send(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: DEFAULT_WINDOW,
            }],
        });
        tokio::spawn(writer_task(
            write_half,
            rx,
            compressor,
            Arc::downgrade(&inner),
        ));
        let reader = tokio::spawn(reader_task(read_half, Arc::downgrade(&inner), incoming_tx));
        *inner.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader.abort_handle());
        Ok(Self {
            inner,
            incoming: tokio::sync::Mutex::new(incoming_rx),
        })
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// Opens a stream with these headers and waits for the peer's SYN_REPLY (wrap in a
    /// timeout if the peer may never answer; kubectl waits 30 s).
    pub async fn open_stream(&self, headers: Headers) -> Result<SpdyStream, StreamingError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let stream_id = {
            let mut state = self.inner.lock();
            if state.closed || state.going_away || state.write_failed {
                return Err(StreamingError::SessionClosed);
            }
            let stream_id = state.next_stream_id;
            if stream_id > 0x7fff_ffff {
                return Err(StreamingError::Protocol("stream ids exhausted".into()));
            }
            state.next_stream_id += 2;
            let mut slot = StreamSlot::new(state.initial_send_window);
            slot.reply = Some(reply_tx);
            state.streams.insert(stream_id, slot);
            self.inner.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            });
            stream_id
        };
        let stream = SpdyStream {
            inner: self.inner.clone(),
            stream_id,
            headers,
        };
        match reply_rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StreamingError::SessionClosed),
        }
    }

    /// The next stream the peer opened (already answered with SYN_REPLY), or `None` once the
    /// connection has ended.
    pub async fn accept(&self) -> Option<SpdyStream> {
        self.incoming.lock().await.recv().await
    }

    /// Sends a PING and waits for its echo; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, StreamingError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.lock();
            if state.closed || state.write_failed {
                return Err(StreamingError::SessionClosed);
            }
            let id = state.next_ping_id;
            state.next_ping_id = if id > 0x7fff_fffd {
                2 - (id & 1)
            } else {
                id + 2
            };
            state.pings.insert(id, tx);
            self.inner.send(Frame::Ping { id });
        }
        let started = Instant::now();
        rx.await.map_err(|_| StreamingError::SessionClosed)?;
        Ok(started.elapsed())
    }

    /// Sends GOAWAY: no new streams either way; existing streams go on.
    pub fn goaway(&self) {
        let mut state = self.inner.lock();
        if state.going_away {
            return;
        }
        state.going_away = true;
        let last = state.last_peer_stream_id;
        self.inner.send(Frame::GoAway {
            last_good_stream_id: last,
            status: 0,
        });
    }

    /// Whether the connection's read side has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Waits until the connection's read side has ended.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed_tx.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

/// One SPDY stream: reads yield the peer's data until its FIN (or a reset, or the end of the
/// connection) as EOF; writes send data frames; `shutdown` sends FIN. Dropping a stream that is
/// not closed both ways resets it (RST_STREAM CANCEL).
pub struct SpdyStream {
    inner: Arc<Inner>,
    stream_id: u32,
    headers: Headers,
}

impl std::fmt::Debug for SpdyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyStream")
            .field("stream_id", &self.stream_id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl SpdyStream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.stream_id
    }

    /// The headers the stream was opened with (SYN_STREAM).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Aborts the stream (RST_STREAM CANCEL).
    pub fn reset(&self) {
        let mut state = self.inner.lock();
        if let Some(slot) = state.streams.get_mut(&self.stream_id) {
            if slot.reset.is_none() {
                slot.reset = Some(RST_CANCEL);
                slot.wake();
                self.inner.send(Frame::RstStream {
                    stream_id: self.stream_id,
                    status: RST_CANCEL,
                });
            }
        }
        drop(state);
        // The reader may be waiting for this stream's buffer to drain.
        self.inner.drained.notify_one();
    }

    /// Whether the peer reset the stream (with its status code).
    pub fn peer_reset(&self) -> Option<u32> {
        self.inner
            .lock()
            .streams
            .get(&self.stream_id)
            .and_then(|slot| slot.reset)
    }
}

impl Drop for SpdyStream {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        let closed = state.closed;
        if let Some(slot) = state.streams.remove(&self.stream_id) {
            let fully_closed = slot.reset.is_some() || (slot.local_fin && slot.remote_fin);
            if !fully_closed && !closed {
                self.inner.send(Frame::RstStream {
                    stream_id: self.stream_id,
                    status: RST_CANCEL,
                });
            }
        }
        drop(state);
        self.inner.drained.notify_one();
    }
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.inner.lock();
        let closed = state.closed;
        let peer_flow_control = state.peer_flow_control;
        let Some(slot) = state.streams.get_mut(&this.stream_id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.recv.is_empty() {
            if slot.remote_fin || slot.reset.is_some() || closed {
                return Poll::Ready(Ok(()));
            }
            slot.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let was_over = slot.recv_len >= RECV_BUFFER_LIMIT;
        let mut copied = 0;
        while buf.remaining() > 0 {
            let Some(front) = slot.recv.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            copied += n;
            if front.is_empty() {
                slot.recv.pop_front();
            }
        }
        slot.recv_len -= copied;
        slot.unacked += copied as u32;
        let mut updates = Vec::new();
        if slot.unacked >= DEFAULT_WINDOW / 2 && !slot.remote_fin {
            updates.push(Frame::WindowUpdate {
                stream_id: this.stream_id,
                delta: slot.unacked,
            });
            slot.unacked = 0;
        }
        let now_under = slot.recv_len < RECV_BUFFER_LIMIT;
        state.session_unacked += copied as u32;
        if state.session_unacked >= DEFAULT_WINDOW / 2 {
            // SPDY/3.1 session window; harmless for peers without flow control.
            if peer_flow_control {
                updates.push(Frame::WindowUpdate {
                    stream_id: 0,
                    delta: state.session_unacked,
                });
            }
            state.session_unacked = 0;
        }
        for update in updates {
            this.inner.send(update);
        }
        drop(state);
        if was_over && now_under {
            this.inner.drained.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut state = this.inner.lock();
        if state.write_failed || state.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            )));
        }
        if state.queued_bytes >= SEND_QUEUE_LIMIT {
            state.queue_wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let peer_flow_control = state.peer_flow_control;
        let Some(slot) = state.streams.get_mut(&this.stream_id) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "SPDY stream gone",
            )));
        };
        if let Some(status) = slot.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("SPDY stream reset (status {status})"),
            )));
        }
        if slot.local_fin {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after SPDY stream FIN",
            )));
        }
        let mut n = buf.len().min(MAX_DATA_FRAME);
        if peer_flow_control {
            if slot.send_window <= 0 {
                slot.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            n = n.min(slot.send_window as usize);
        }
        slot.send_window -= n as i64;
        state.queued_bytes += n;
        this.inner.send_counted(
            Frame::Data {
                stream_id: this.stream_id,
                flags: 0,
                data: Bytes::copy_from_slice(&buf[..n]),
            },
            n,
        );
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer task flushes whenever its queue runs empty.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.inner.lock();
        let Some(slot) = state.streams.get_mut(&this.stream_id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.local_fin || slot.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        slot.local_fin = true;
        this.inner.send(Frame::Data {
            stream_id: this.stream_id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        });
        Poll::Ready(Ok(()))
    }
}

async fn writer_task<W>(
    mut io: W,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    mut compressor: HeaderCompressor,
    inner: Weak<Inner>,
) where
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut data_bytes = 0;
        let mut next = Some(first);
        let mut result = Ok(());
        while let Some(queued) = next.take() {
            data_bytes += queued.data_len;
            if let Err(e) = queued.frame.encode(&mut out, &mut compressor) {
                result = Err(e);
                break;
            }
            if out.len() >= 64 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if result.is_ok() {
            result = async {
                io.write_all(&out).await?;
                io.flush().await?;
                Ok::<_, StreamingError>(())
            }
            .await;
        }
        out.clear();
        let Some(inner) = inner.upgrade() else {
            if result.is_err() {
                return;
            }
            continue;
        };
        let wakers = {
            let mut state = inner.lock();
            state.queued_bytes = state.queued_bytes.saturating_sub(data_bytes);
            if let Err(e) = &result {
                tracing::debug!(error = %e, "spdy: write failed");
                state.write_failed = true;
                for slot in state.streams.values_mut() {
                    slot.wake();
                }
            }
            std::mem::take(&mut state.queue_wakers)
        };
        for waker in wakers {
            waker.wake();
        }
        if result.is_err() {
            return;
        }
    }
    // Every sender is gone: the session and its streams were dropped.
    let _ = io.shutdown().await;
}

async fn reader_task<R>(mut io: R, inner: Weak<Inner>, incoming: mpsc::UnboundedSender<SpdyStream>)
where
    R: AsyncRead + Unpin,
{
    let mut decompressor = HeaderDecompressor::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let outcome: Result<(), StreamingError> = async {
        loop {
            loop {
                let frame = match Frame::parse(&mut buf, &mut decompressor)? {
                    Some(frame) => frame,
                    None => break,
                };
                let Some(inner) = inner.upgrade() else {
                    return Ok(());
                };
                let backpressure = handle_frame(&inner, frame, &incoming)?;
                if let Some(stream_id) = backpressure {
                    wait_for_drain(&inner, stream_id).await;
                }
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = &outcome {
        tracing::debug!(error = %e, "spdy: connection read ended with an error");
    }
    if let Some(inner) = inner.upgrade() {
        let mut state = inner.lock();
        state.closed = true;
        for slot in state.streams.values_mut() {
            if let Some(reply) = slot.reply.take() {
                let _ = reply.send(Err(StreamingError::SessionClosed));
            }
            slot.wake();
        }
        state.pings.clear();
        for waker in state.queue_wakers.drain(..) {
            waker.wake();
        }
        drop(state);
        inner.closed_tx.send_replace(true);
    }
}

/// Waits while the stream's receive buffer is over the limit (and the stream still exists).
async fn wait_for_drain(inner: &Arc<Inner>, stream_id: u32) {
    loop {
        let over = inner
            .lock()
            .streams
            .get(&stream_id)
            .is_some_and(|slot| slot.recv_len >= RECV_BUFFER_LIMIT && slot.reset.is_none());
        if !over {
            return;
        }
        inner.drained.notified().await;
    }
}

/// Applies one frame; returns a stream id whose receive buffer is over the limit.
fn handle_frame(
    inner: &Arc<Inner>,
    frame: Frame,
    incoming: &mpsc::UnboundedSender<SpdyStream>,
) -> Result<Option<u32>, StreamingError> {
    let mut state = inner.lock();
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let ours = match inner.role {
                Role::Client => stream_id % 2 == 1,
                Role::Server => stream_id % 2 == 0,
            };
            if stream_id == 0 || ours || stream_id <= state.last_peer_stream_id {
                inner.send(Frame::RstStream {
                    stream_id,
                    status: RST_PROTOCOL_ERROR,
                });
                return Ok(None);
            }
            state.last_peer_stream_id = stream_id;
            if state.going_away {
                inner.send(Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED_STREAM,
                });
                return Ok(None);
            }
            let mut slot = StreamSlot::new(state.initial_send_window);
            slot.remote_fin = flags & FLAG_FIN != 0;
            slot.local_fin = flags & FLAG_UNIDIRECTIONAL != 0;
            state.streams.insert(stream_id, slot);
            inner.send(Frame::SynReply {
                stream_id,
                flags: 0,
                headers: Headers::new(),
            });
            drop(state);
            let stream = SpdyStream {
                inner: inner.clone(),
                stream_id,
                headers,
            };
            if let Err(refused) = incoming.send(stream) {
                // Nobody accepts streams: dropping it resets it.
                drop(refused.0);
            }
        }
        Frame::SynReply {
            stream_id, flags, ..
        } => {
            if let Some(slot) = state.streams.get_mut(&stream_id) {
                if flags & FLAG_FIN != 0 {
                    slot.remote_fin = true;
                }
                if let Some(reply) = slot.reply.take() {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            if let Some(slot) = state.streams.get_mut(&stream_id) {
                if flags & FLAG_FIN != 0 {
                    slot.remote_fin = true;
                    slot.wake();
                }
            }
        }
        Frame::RstStream { stream_id, status } => {
            if let Some(slot) = state.streams.get_mut(&stream_id) {
                slot.reset = Some(status);
                if let Some(reply) = slot.reply.take() {
                    let _ = reply.send(Err(StreamingError::StreamReset { stream_id, status }));
                }
                slot.wake();
            }
            drop(state);
            inner.drained.notify_one();
        }
        Frame::Settings { entries, .. } => {
            for entry in entries {
                if entry.id == SETTINGS_INITIAL_WINDOW_SIZE {
                    let new = entry.value as i64;
                    let delta = new - state.initial_send_window;
                    state.initial_send_window = new;
                    state.peer_flow_control = true;
                    for slot in state.streams.values_mut() {
                        slot.send_window += delta;
                        slot.wake();
                    }
                }
            }
        }
        Frame::Ping { id } => {
            let mine = match inner.role {
                Role::Client => id % 2 == 1,
                Role::Server => id % 2 == 0,
            };
            if mine {
                if let Some(waiter) = state.pings.remove(&id) {
                    let _ = waiter.send(());
                }
            } else {
                inner.send(Frame::Ping { id });
            }
        }
        Frame::GoAway { .. } => {
            state.going_away = true;
        }
        Frame::WindowUpdate { stream_id, delta } => {
            if let Some(slot) = state.streams.get_mut(&stream_id) {
                slot.send_window += delta as i64;
                slot.wake();
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let Some(slot) = state.streams.get_mut(&stream_id) else {
                tracing::trace!(stream_id, "spdy: data for an unknown stream dropped");
                return Ok(None);
            };
            if slot.reset.is_some() {
                return Ok(None);
            }
            if !data.is_empty() {
                slot.recv_len += data.len();
                slot.recv.push_back(data);
            }
            if flags & FLAG_FIN != 0 {
                slot.remote_fin = true;
            }
            if let Some(w) = slot.read_waker.take() {
                w.wake();
            }
            if slot.recv_len >= RECV_BUFFER_LIMIT {
                return Ok(Some(stream_id));
            }
        }
        Frame::Unknown { frame_type } => {
            tracing::trace!(frame_type, "spdy: unknown control frame ignored");
        }
    }
    Ok(None)
}
