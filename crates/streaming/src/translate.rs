//! Translation between what kubectl speaks and what a container runtime's streaming server
//! (containerd 1.6: SPDY up to v4, WebSocket without v5) understands.
//!
//! - [`exec_websocket_to_spdy`]: a WebSocket `v5.channel.k8s.io` (or v4) exec/attach client
//!   ⇄ SPDY `v4.channel.k8s.io` toward the runtime, so v5's stdin half-close reaches the process.
//! - [`portforward_websocket_to_spdy`]: port-forward's SPDY-over-WebSocket tunnel
//!   (`SPDY/3.1+portforward.k8s.io`) ⇄ a plain SPDY connection toward the runtime.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::spdy::{Headers, SpdySession, SpdyStream, STREAM_TYPE_HEADER};
use crate::websocket::{
    ChannelFrame, ChannelProtocol, CHANNEL_ERROR, CHANNEL_RESIZE, CHANNEL_STDERR, CHANNEL_STDIN,
    CHANNEL_STDOUT,
};
use crate::StreamingError;

/// How long each upstream stream may take to be accepted (kubectl waits 30 s too).
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// After the error stream ends, how long stdout/stderr may take to deliver what they hold.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the client's answer to our close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read size for copying stream data into WebSocket messages.
const COPY_BUFFER: usize = 32 * 1024;

/// Which standard streams an exec or attach carries. They must match what the runtime's
/// streaming URL was prepared with (the CRI Exec/Attach request), because the runtime waits
/// for exactly those SPDY streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStreams {
    /// Standard input is streamed.
    pub stdin: bool,
    /// Standard output is streamed.
    pub stdout: bool,
    /// Standard error is streamed (never with a terminal).
    pub stderr: bool,
    /// A terminal is allocated (adds the resize stream).
    pub tty: bool,
}

/// The SPDY streams of one remote command, opened in client-go's order.
struct ExecUpstream {
    error: SpdyStream,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<SpdyStream>,
}

async fn open_typed(
    session: &SpdySession,
    stream_type: &str,
) -> Result<SpdyStream, StreamingError> {
    let headers = Headers::new().with(STREAM_TYPE_HEADER, stream_type);
    tokio::time::timeout(STREAM_OPEN_TIMEOUT, session.open_stream(headers))
        .await
        .map_err(|_| {
            StreamingError::Protocol(format!("runtime did not accept the {stream_type} stream"))
        })?
}

async fn open_exec_streams(
    session: &SpdySession,
    streams: ExecStreams,
) -> Result<ExecUpstream, StreamingError> {
    let error = open_typed(session, "error").await?;
    let stdin = if streams.stdin {
        Some(open_typed(session, "stdin").await?)
    } else {
        None
    };
    let stdout = if streams.stdout {
        Some(open_typed(session, "stdout").await?)
    } else {
        None
    };
    let stderr = if streams.stderr && !streams.tty {
        Some(open_typed(session, "stderr").await?)
    } else {
        None
    };
    let resize = if streams.tty {
        Some(open_typed(session, "resize").await?)
    } else {
        None
    };
    Ok(ExecUpstream {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    })
}

/// A `metav1.Status` failure as the error channel carries it.
fn failure_status(message: &str) -> Bytes {
    let status = serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    });
    Bytes::from(status.to_string())
}

fn binary(frame: ChannelFrame) -> Message {
    Message::Binary(frame.encode())
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Copies one upstream stream into WebSocket messages on `channel` until EOF.
async fn pump_to_channel(mut stream: SpdyStream, channel: u8, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                let frame = ChannelFrame::data(channel, Bytes::copy_from_slice(&buf[..n]));
                if out.send(binary(frame)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(channel, error = %e, "exec: upstream stream read failed");
                return;
            }
        }
    }
}

/// Sends queued messages to the client; when every sender is gone, sends a normal close,
/// waits briefly for the client's answer, and returns.
async fn client_writer<W>(
    mut sink: futures::stream::SplitSink<WebSocketStream<W>, Message>,
    mut queue: mpsc::Receiver<Message>,
) -> Result<(), StreamingError>
where
    W: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = queue.recv().await {
        sink.send(message).await?;
    }
    sink.send(normal_close()).await?;
    sink.flush().await?;
    Ok(())
}

/// Serves a WebSocket exec/attach client (`v5.channel.k8s.io`; v4 works the same without the
/// close signal) against a runtime's SPDY streaming server.
///
/// `upstream` is a connection on which the SPDY upgrade to the runtime's exec/attach URL is
/// already done (see [`crate::spdy::spdy_upgrade`] with
/// [`crate::spdy::REMOTE_COMMAND_PROTOCOLS`]), negotiated to `v4.channel.k8s.io`.
///
/// Client channel 0 → SPDY stdin (a v5 close of channel 0 → FIN on stdin); SPDY stdout and
/// stderr → channels 1 and 2; channel 4 → the SPDY resize stream; the SPDY error stream's
/// Status JSON → channel 3. Ends when the runtime's error stream ends (after stdout/stderr
/// delivered what they hold), with a normal WebSocket close; or when the client goes away.
/// If the runtime refuses the streams, a Failure Status goes to channel 3 and the error is
/// returned.
pub async fn exec_websocket_to_spdy<W, S>(
    client: WebSocketStream<W>,
    upstream: S,
    streams: ExecStreams,
) -> Result<(), StreamingError>
where
    W: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut source) = client.split();
    let (out_tx, out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(client_writer(sink, out_rx));

    let session = SpdySession::client(upstream)?;
    let upstream = match open_exec_streams(&session, streams).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::debug!(error = %e, "exec: opening the runtime's streams failed");
            let status = failure_status(&format!("error starting the stream: {e}"));
            let _ = out_tx
                .send(binary(ChannelFrame::data(CHANNEL_ERROR, status)))
                .await;
            drop(out_tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let ExecUpstream {
        mut error,
        mut stdin,
        stdout,
        stderr,
        mut resize,
    } = upstream;

    let mut pumps = Vec::new();
    if let Some(stream) = stdout {
        pumps.push(tokio::spawn(pump_to_channel(
            stream,
            CHANNEL_STDOUT,
            out_tx.clone(),
        )));
    }
    if let Some(stream) = stderr {
        pumps.push(tokio::spawn(pump_to_channel(
            stream,
            CHANNEL_STDERR,
            out_tx.clone(),
        )));
    }

    let pump_aborts: Vec<_> = pumps.iter().map(|pump| pump.abort_handle()).collect();
    let upstream_done = async {
        let mut status = Vec::new();
        if let Err(e) = error.read_to_end(&mut status).await {
            tracing::debug!(error = %e, "exec: reading the runtime's error stream failed");
        }
        let drain = futures::future::join_all(pumps.iter_mut());
        if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, drain)
            .await
            .is_err()
        {
            tracing::debug!("exec: output streams still open after the error stream ended");
        }
        for pump in &pumps {
            pump.abort();
        }
        status
    };

    let client_reader = async {
        while let Some(message) = source.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Close(_)) => return,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "exec: client websocket read failed");
                    return;
                }
            };
            let frame = match ChannelFrame::decode(&data, ChannelProtocol::V5) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "exec: bad client message ignored");
                    continue;
                }
            };
            match frame {
                ChannelFrame::Data { channel, payload } => {
                    let target = match channel {
                        CHANNEL_STDIN => &mut stdin,
                        CHANNEL_RESIZE => &mut resize,
                        other => {
                            tracing::trace!(
                                channel = other,
                                "exec: client data on a read-only channel"
                            );
                            continue;
                        }
                    };
                    if let Some(stream) = target {
                        if let Err(e) = stream.write_all(&payload).await {
                            tracing::debug!(channel, error = %e, "exec: upstream write failed");
                            *target = None;
                        }
                    }
                }
                ChannelFrame::Close { channel } => {
                    let target = match channel {
                        CHANNEL_STDIN => &mut stdin,
                        CHANNEL_RESIZE => &mut resize,
                        _ => continue,
                    };
                    if let Some(stream) = target {
                        let _ = stream.shutdown().await;
                    }
                }
            }
        }
    };

    tokio::select! {
        status = upstream_done => {
            if !status.is_empty() {
                let _ = out_tx
                    .send(binary(ChannelFrame::data(CHANNEL_ERROR, status)))
                    .await;
            }
        }
        _ = client_reader => {
            tracing::debug!("exec: client went away");
        }
    }
    // A client that went away leaves the pumps running: stop them so the writer can finish.
    for pump in pump_aborts {
        pump.abort();
    }
    drop(out_tx);
    drop(session);
    let written = writer.await;
    // Give the client a moment to answer the close (best effort).
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(StreamingError::WebSocket(e))) => {
            tracing::debug!(error = %e, "exec: client websocket write failed");
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(join) => Err(StreamingError::Protocol(format!(
            "exec writer task: {join}"
        ))),
    }
}

/// Moves port-forward's tunnelled SPDY bytes both ways: each binary message from the client
/// is written to `upstream` (a connection already upgraded to SPDY with `portforward.k8s.io`),
/// and bytes read from `upstream` go to the client as binary messages. Ends when either side
/// closes.
pub async fn portforward_websocket_to_spdy<W, S>(
    client: WebSocketStream<W>,
    upstream: S,
) -> Result<(), StreamingError>
where
    W: AsyncRead + AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut sink, mut source) = client.split();
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_upstream = async {
        while let Some(message) = source.next().await {
            match message? {
                Message::Binary(data) => upstream_write.write_all(&data).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = upstream_write.shutdown().await;
        Ok::<_, StreamingError>(())
    };
    let to_client = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = upstream_read.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await?;
        }
        let _ = sink.send(normal_close()).await;
        Ok::<_, StreamingError>(())
    };
    tokio::select! {
        result = to_upstream => result,
        result = to_client => result,
    }
}
