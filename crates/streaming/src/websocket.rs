//! The Kubernetes WebSocket streaming protocols: `channel.k8s.io` binary channel frames
//! (v4: first byte = channel; v5 adds channel 255, "close", whose payload names the channel
//! being half-closed), the handshake pieces for a server that does its own HTTP upgrade
//! (hyper), and WebSocket wrappers over an already-upgraded connection.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};
use http::header::{SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::WebSocketStream;

use crate::StreamingError;

/// Remote command over WebSocket, version 5 (kubectl ≥ 1.30): v4 plus the close channel.
pub const STREAM_PROTOCOL_V5: &str = "v5.channel.k8s.io";
/// Remote command over WebSocket, version 4 (Status JSON on the error channel).
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
/// Port-forward over WebSocket: SPDY/3.1 frames tunnelled in binary messages (KEP-4006).
pub const PORT_FORWARD_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Channel 0: standard input (client → server).
pub const CHANNEL_STDIN: u8 = 0;
/// Channel 1: standard output.
pub const CHANNEL_STDOUT: u8 = 1;
/// Channel 2: standard error.
pub const CHANNEL_STDERR: u8 = 2;
/// Channel 3: the error channel (a `metav1.Status` JSON when the command ends).
pub const CHANNEL_ERROR: u8 = 3;
/// Channel 4: terminal resize events (`{"Width":..,"Height":..}` JSON).
pub const CHANNEL_RESIZE: u8 = 4;
/// Channel 255 (v5 only): close; the payload's first byte names the channel being closed.
pub const CHANNEL_CLOSE: u8 = 255;

/// The channel protocol version negotiated for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelProtocol {
    /// `v4.channel.k8s.io` (and the older binary `channel.k8s.io` versions).
    V4,
    /// `v5.channel.k8s.io`.
    V5,
}

impl ChannelProtocol {
    /// The protocol for a negotiated subprotocol name (binary channel protocols only).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            STREAM_PROTOCOL_V5 => Some(Self::V5),
            STREAM_PROTOCOL_V4 | "v3.channel.k8s.io" | "v2.channel.k8s.io" | "channel.k8s.io" => {
                Some(Self::V4)
            }
            _ => None,
        }
    }
}

/// One binary message of a channel protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelFrame {
    /// Bytes on a channel.
    Data {
        /// The channel (`CHANNEL_*`).
        channel: u8,
        /// The bytes.
        payload: Bytes,
    },
    /// v5: the sender will write no more on `channel` (half-close).
    Close {
        /// The closed channel.
        channel: u8,
    },
}

impl ChannelFrame {
    /// Data on a channel.
    pub fn data(channel: u8, payload: impl Into<Bytes>) -> Self {
        Self::Data {
            channel,
            payload: payload.into(),
        }
    }

    /// The message bytes: the channel byte, then the payload.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Data { channel, payload } => {
                let mut out = BytesMut::with_capacity(payload.len() + 1);
                out.put_u8(*channel);
                out.put_slice(payload);
                out.freeze()
            }
            Self::Close { channel } => Bytes::from(vec![CHANNEL_CLOSE, *channel]),
        }
    }

    /// Parses a binary message; `None` for an empty message (which carries nothing).
    /// Under v4, channel 255 is ordinary data; under v5 it is a close signal.
    pub fn decode(
        message: &[u8],
        protocol: ChannelProtocol,
    ) -> Result<Option<Self>, StreamingError> {
        let Some((&channel, payload)) = message.split_first() else {
            return Ok(None);
        };
        if channel == CHANNEL_CLOSE && protocol == ChannelProtocol::V5 {
            let Some(&closed) = payload.first() else {
                return Err(StreamingError::Handshake(
                    "v5 close message without a channel".into(),
                ));
            };
            return Ok(Some(Self::Close { channel: closed }));
        }
        Ok(Some(Self::data(channel, Bytes::copy_from_slice(payload))))
    }
}

/// `Sec-WebSocket-Accept` for a request's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept_key(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes())
}

/// Whether the request asks for a WebSocket upgrade (`Connection: upgrade` and
/// `Upgrade: websocket`).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket")
}

/// The subprotocols a request offers, in its order (every `Sec-WebSocket-Protocol` header,
/// comma-separated).
pub fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first offered protocol (in the client's order, as the Kubernetes servers choose)
/// that is supported.
pub fn select_protocol<S: AsRef<str>>(
    requested: &[S],
    supported: &[&'static str],
) -> Option<&'static str> {
    requested
        .iter()
        .find_map(|offered| supported.iter().copied().find(|s| *s == offered.as_ref()))
}

/// Validates a WebSocket upgrade request and builds the `101 Switching Protocols` response
/// (Upgrade, Connection, Sec-WebSocket-Accept, Sec-WebSocket-Protocol) with the chosen
/// subprotocol. Send it, take the upgraded connection (hyper `upgrade::on`), and wrap it with
/// [`accept_upgraded`].
pub fn upgrade_response(
    request_headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<(Response<()>, &'static str), StreamingError> {
    if !is_websocket_upgrade(request_headers) {
        return Err(StreamingError::Handshake("not a WebSocket upgrade".into()));
    }
    let version = request_headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if version.trim() != "13" {
        return Err(StreamingError::Handshake(format!(
            "unsupported Sec-WebSocket-Version {version:?}"
        )));
    }
    let key = request_headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| StreamingError::Handshake("missing Sec-WebSocket-Key".into()))?;
    let requested = requested_protocols(request_headers);
    let protocol = select_protocol(&requested, supported).ok_or_else(|| {
        StreamingError::Handshake(format!(
            "requested protocol(s) are not supported: {requested:?}; supports {supported:?}"
        ))
    })?;
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, websocket_accept_key(key))
        .header(SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(())
        .map_err(|e| StreamingError::Handshake(e.to_string()))?;
    Ok((response, protocol))
}

/// The server side of a WebSocket over a connection whose HTTP upgrade is already done.
pub async fn accept_upgraded<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, WsRole::Server, None).await
}

/// The client side of a WebSocket over a connection whose HTTP upgrade is already done.
pub async fn connect_upgraded<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, WsRole::Client, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The example handshake of RFC 6455 §1.3.
    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn channel_frames_encode_and_decode() {
        let frame = ChannelFrame::data(CHANNEL_STDOUT, &b"hi"[..]);
        assert_eq!(&frame.encode()[..], b"\x01hi");
        assert_eq!(
            ChannelFrame::decode(b"\x01hi", ChannelProtocol::V4).unwrap(),
            Some(frame)
        );
        assert_eq!(
            ChannelFrame::decode(b"", ChannelProtocol::V5).unwrap(),
            None
        );
        // v5 close of stdin.
        let close = ChannelFrame::Close {
            channel: CHANNEL_STDIN,
        };
        assert_eq!(&close.encode()[..], &[255, 0]);
        assert_eq!(
            ChannelFrame::decode(&[255, 0], ChannelProtocol::V5).unwrap(),
            Some(close)
        );
        // v4 knows no close: 255 is just a channel number.
        assert_eq!(
            ChannelFrame::decode(&[255, 0], ChannelProtocol::V4).unwrap(),
            Some(ChannelFrame::data(255, &[0u8][..]))
        );
        assert!(ChannelFrame::decode(&[255], ChannelProtocol::V5).is_err());
    }

    fn upgrade_request(protocols: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        for p in protocols {
            headers.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(p).unwrap());
        }
        headers
    }

    #[test]
    fn protocol_selection_follows_the_clients_order() {
        let headers = upgrade_request(&["v5.channel.k8s.io, v4.channel.k8s.io", "channel.k8s.io"]);
        assert_eq!(
            requested_protocols(&headers),
            ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
        );
        let supported = [STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V5];
        assert_eq!(
            select_protocol(&requested_protocols(&headers), &supported),
            Some(STREAM_PROTOCOL_V5)
        );
        assert_eq!(
            select_protocol(&["base64.channel.k8s.io"], &supported),
            None
        );
    }

    #[test]
    fn upgrade_response_carries_accept_and_protocol() {
        let headers = upgrade_request(&[PORT_FORWARD_TUNNEL_PROTOCOL]);
        let (response, protocol) =
            upgrade_response(&headers, &[PORT_FORWARD_TUNNEL_PROTOCOL]).unwrap();
        assert_eq!(protocol, PORT_FORWARD_TUNNEL_PROTOCOL);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_PROTOCOL],
            PORT_FORWARD_TUNNEL_PROTOCOL
        );
        assert_eq!(response.headers()[UPGRADE], "websocket");

        assert!(upgrade_response(&headers, &[STREAM_PROTOCOL_V5]).is_err());
        let mut old = upgrade_request(&[STREAM_PROTOCOL_V5]);
        old.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(upgrade_response(&old, &[STREAM_PROTOCOL_V5]).is_err());
        let mut plain = upgrade_request(&[STREAM_PROTOCOL_V5]);
        plain.remove(UPGRADE);
        assert!(!is_websocket_upgrade(&plain));
        assert!(upgrade_response(&plain, &[STREAM_PROTOCOL_V5]).is_err());
    }
}
