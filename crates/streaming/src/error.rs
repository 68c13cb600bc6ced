//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong while speaking a streaming protocol.
#[derive(Debug, Error)]
pub enum StreamingError {
    /// The underlying connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not valid SPDY/3.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    /// A SPDY header block could not be compressed or decompressed.
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// The peer reset a stream (RST_STREAM) with this status code.
    #[error("SPDY stream {stream_id} reset by peer (status {status})")]
    StreamReset {
        /// The stream that was reset.
        stream_id: u32,
        /// The RST_STREAM status code.
        status: u32,
    },
    /// The SPDY session is closed (connection ended or GOAWAY received).
    #[error("SPDY session closed")]
    SessionClosed,
    /// The HTTP upgrade to a streaming protocol was refused or malformed.
    #[error("upgrade failed: {0}")]
    Upgrade(String),
    /// The WebSocket layer failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// A WebSocket handshake request is not acceptable.
    #[error("websocket handshake: {0}")]
    Handshake(String),
}
