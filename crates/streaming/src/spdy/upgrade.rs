//! The client side of the HTTP/1.1 upgrade to SPDY/3.1 (what kubectl sends to a streaming
//! server's exec/attach/port-forward URL).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{PROTOCOL_HEADER, SPDY_UPGRADE};
use crate::StreamingError;

/// Largest HTTP response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest error body read from a refused upgrade.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// A connection whose first bytes were already read into a buffer (the bytes that followed
/// the `101` response head); reads return those first.
#[derive(Debug)]
pub struct PrefixedIo<S> {
    prefix: Bytes,
    io: S,
}

impl<S> PrefixedIo<S> {
    /// Wraps `io`, returning `prefix` before anything read from it.
    pub fn new(prefix: Bytes, io: S) -> Self {
        Self { prefix, io }
    }

    /// The unread buffered bytes and the connection.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.io)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Sends `POST {path_and_query}` with `Upgrade: SPDY/3.1` and one `X-Stream-Protocol-Version`
/// header per offered protocol (in preference order), and reads the response head.
///
/// On `101 Switching Protocols` returns the upgraded connection and the protocol the server
/// chose (empty if it named none, which Kubernetes reads as the oldest protocol). Any other
/// status is an [`StreamingError::Upgrade`] carrying the status and the start of the body.
pub async fn spdy_upgrade<S>(
    mut io: S,
    host: &str,
    path_and_query: &str,
    protocols: &[&str],
) -> Result<(PrefixedIo<S>, String), StreamingError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: {SPDY_UPGRADE}\r\nContent-Length: 0\r\n"
    );
    for protocol in protocols {
        request.push_str(&format!("{PROTOCOL_HEADER}: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;

    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let mut header_storage = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut header_storage);
        let parsed = response
            .parse(&buf)
            .map_err(|e| StreamingError::Upgrade(format!("malformed response: {e}")))?;
        if let httparse::Status::Complete(head_len) = parsed {
            let status = response.code.unwrap_or(0);
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            };
            if status != 101 {
                let content_length = header("content-length").and_then(|v| v.parse().ok());
                let reason = response.reason.unwrap_or("").to_string();
                let _ = buf.split_to(head_len);
                let body = read_error_body(&mut io, buf, content_length).await;
                return Err(StreamingError::Upgrade(format!(
                    "status {status} {reason}: {}",
                    body.trim()
                )));
            }
            let upgrade = header("upgrade").unwrap_or_default();
            if !upgrade.eq_ignore_ascii_case(SPDY_UPGRADE) {
                return Err(StreamingError::Upgrade(format!(
                    "101 with Upgrade {upgrade:?}, wanted {SPDY_UPGRADE}"
                )));
            }
            let protocol = header(PROTOCOL_HEADER).unwrap_or_default();
            if !protocol.is_empty() && !protocols.contains(&protocol.as_str()) {
                return Err(StreamingError::Upgrade(format!(
                    "server chose protocol {protocol:?}, not offered"
                )));
            }
            let _ = buf.split_to(head_len);
            return Ok((PrefixedIo::new(buf.freeze(), io), protocol));
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(StreamingError::Upgrade("response head too large".into()));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(StreamingError::Upgrade(
                "connection closed before the response head".into(),
            ));
        }
    }
}

async fn read_error_body<S: AsyncRead + Unpin>(
    io: &mut S,
    mut body: BytesMut,
    content_length: Option<usize>,
) -> String {
    let want = content_length.unwrap_or(MAX_ERROR_BODY).min(MAX_ERROR_BODY);
    let read = async {
        while body.len() < want {
            match io.read_buf(&mut body).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    // A server that keeps the connection open without a length must not hang us.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
    body.truncate(want);
    String::from_utf8_lossy(&body).into_owned()
}

/// Connects to a streaming URL as a CRI runtime returns it (`http://127.0.0.1:PORT/exec/TOKEN`)
/// and performs [`spdy_upgrade`] on it. Only `http` URLs (a runtime's loopback streaming
/// server); for TLS, connect yourself and call [`spdy_upgrade`].
pub async fn spdy_upgrade_url(
    url: &str,
    protocols: &[&str],
) -> Result<(PrefixedIo<tokio::net::TcpStream>, String), StreamingError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| StreamingError::Upgrade(format!("bad streaming URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(StreamingError::Upgrade(format!(
            "streaming URL {url:?}: only http is supported here"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| StreamingError::Upgrade(format!("streaming URL {url:?} has no host")))?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    spdy_upgrade(stream, authority.as_str(), path_and_query, protocols).await
}

/// Whether a request asks for the SPDY/3.1 upgrade (`Connection: upgrade`,
/// `Upgrade: SPDY/3.1`), as kubectl's SPDY executor and port-forwarder send it.
pub fn is_spdy_upgrade(headers: &http::HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has_token(http::header::CONNECTION, "upgrade") && has_token(http::header::UPGRADE, SPDY_UPGRADE)
}

/// The streaming protocols a SPDY upgrade request offers, in its order (every
/// `X-Stream-Protocol-Version` header, comma-separated values split).
pub fn requested_protocols(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `101 Switching Protocols` answer to a SPDY upgrade, naming the chosen streaming
/// protocol (pass the one the runtime chose when proxying; empty for none).
pub fn upgrade_response(protocol: &str) -> Result<http::Response<()>, StreamingError> {
    let mut builder = http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, SPDY_UPGRADE);
    if !protocol.is_empty() {
        builder = builder.header(PROTOCOL_HEADER, protocol);
    }
    builder
        .body(())
        .map_err(|e| StreamingError::Upgrade(format!("bad protocol {protocol:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn recognises_the_upgrade_and_lists_offered_protocols() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("Upgrade"));
        headers.insert("upgrade", HeaderValue::from_static("spdy/3.1"));
        headers.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        headers.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("v3.channel.k8s.io, v2.channel.k8s.io"),
        );
        assert!(is_spdy_upgrade(&headers));
        assert_eq!(
            requested_protocols(&headers),
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io"
            ]
        );
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(!is_spdy_upgrade(&headers));
    }

    #[test]
    fn upgrade_response_names_the_protocol() {
        let response = upgrade_response("portforward.k8s.io").unwrap();
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(response.headers()[PROTOCOL_HEADER], "portforward.k8s.io");
        assert!(upgrade_response("")
            .unwrap()
            .headers()
            .get(PROTOCOL_HEADER)
            .is_none());
        assert!(upgrade_response("bad\nvalue").is_err());
    }
}
