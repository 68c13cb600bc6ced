//! `exec`, `attach` and `portForward`: the runtime prepares the stream and names a URL of its
//! streaming server; the client's upgrade request is sent there, and once the streaming
//! server has switched protocols (101) the two connections are joined byte for byte. SPDY/3.1
//! passes through unchanged, as do WebSocket protocols the runtime speaks itself.
//!
//! The WebSocket protocols of newer kubectl that runtimes do not speak (containerd 1.6 has no
//! `v5.channel.k8s.io` and no port-forward tunnel) are translated with `nodeless-streaming`,
//! as upstream's API server translates them toward the kubelet: this server answers the
//! WebSocket upgrade itself and talks SPDY (`v4.channel.k8s.io`, `portforward.k8s.io`) to the
//! runtime.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use nodeless_streaming::spdy::{spdy_upgrade, PORT_FORWARD_PROTOCOL, REMOTE_COMMAND_PROTOCOLS};
use nodeless_streaming::translate::{
    exec_websocket_to_spdy, portforward_websocket_to_spdy, ExecStreams,
};
use nodeless_streaming::websocket::{
    self, PORT_FORWARD_TUNNEL_PROTOCOL, STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V5,
};

use super::{query_flag, query_pairs, Body, Context, HttpError};
use crate::runtime::StreamRequest;

/// The WebSocket protocols this server translates to SPDY for exec and attach.
const TRANSLATED_EXEC_PROTOCOLS: [&str; 2] = [STREAM_PROTOCOL_V5, STREAM_PROTOCOL_V4];
/// The WebSocket protocol this server translates to SPDY for port-forward.
const TRANSLATED_PORT_FORWARD_PROTOCOLS: [&str; 1] = [PORT_FORWARD_TUNNEL_PROTOCOL];

/// What a stream carries, to pick its translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    /// exec or attach, with these standard streams.
    Command(ExecStreams),
    /// port-forward.
    PortForward,
}

/// Whether a WebSocket request offers a protocol this server translates for `kind`.
fn translates(headers: &HeaderMap, kind: StreamKind) -> bool {
    if !websocket::is_websocket_upgrade(headers) {
        return false;
    }
    let supported: &[&'static str] = match kind {
        StreamKind::Command(_) => &TRANSLATED_EXEC_PROTOCOLS,
        StreamKind::PortForward => &TRANSLATED_PORT_FORWARD_PROTOCOLS,
    };
    websocket::select_protocol(&websocket::requested_protocols(headers), supported).is_some()
}

/// The headers of an upgrade that the two ends negotiate with.
const HOP_HEADERS: [&str; 3] = ["host", "authorization", "content-length"];

/// Reads the stream options of an exec or attach (upstream's `input`/`output`/`error`/`tty`;
/// `stdin`/`stdout`/`stderr` too).
pub(crate) fn stream_request(
    raw_query: Option<&str>,
    with_command: bool,
) -> Result<StreamRequest, HttpError> {
    let pairs = query_pairs(raw_query);
    let either = |a: &str, b: &str| -> Result<bool, HttpError> {
        Ok(query_flag(&pairs, a)? || query_flag(&pairs, b)?)
    };
    let request = StreamRequest {
        command: if with_command {
            pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            Vec::new()
        },
        tty: query_flag(&pairs, "tty")?,
        stdin: either("input", "stdin")?,
        stdout: either("output", "stdout")?,
        stderr: either("error", "stderr")?,
    };
    if !request.stdin && !request.stdout && !request.stderr {
        return Err(HttpError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if with_command && request.command.is_empty() {
        return Err(HttpError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    Ok(request)
}

/// `exec` (or `attach`) into a running container.
pub(crate) async fn exec_or_attach(
    context: &Arc<Context>,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    attach: bool,
) -> Response<Body> {
    let prepared = async {
        let request = stream_request(req.uri().query(), !attach)?;
        let id = context
            .targets
            .container_id(namespace, pod, container)
            .await
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::NOT_FOUND,
                    format!("container {container:?} in pod {pod:?} is not running"),
                )
            })?;
        let url = if attach {
            context.runtime.attach(&id, &request).await?
        } else {
            context.runtime.exec(&id, &request).await?
        };
        Ok::<_, HttpError>((url, request))
    };
    match prepared.await {
        Ok((url, request)) => {
            let kind = StreamKind::Command(ExecStreams {
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr && !request.tty,
                tty: request.tty,
            });
            if translates(req.headers(), kind) {
                translate(req, &url, kind).await
            } else {
                proxy_upgrade(req, &url).await
            }
        }
        Err(e) => e.into_response(),
    }
}

/// `portForward` into a pod's network namespace.
pub(crate) async fn port_forward(
    context: &Arc<Context>,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
) -> Response<Body> {
    let prepared = async {
        let pairs = query_pairs(req.uri().query());
        let mut ports = Vec::new();
        for (_, value) in pairs.iter().filter(|(k, _)| k == "port") {
            for part in value.split(',').filter(|p| !p.is_empty()) {
                let port = part
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| HttpError::bad_request(format!("invalid port {part:?}")))?;
                ports.push(port);
            }
        }
        let sandbox = context
            .targets
            .sandbox(namespace, pod)
            .await
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::NOT_FOUND,
                    format!("pod {pod:?} in namespace {namespace:?} has no running sandbox"),
                )
            })?;
        Ok::<_, HttpError>(context.runtime.port_forward(&sandbox, &ports).await?)
    };
    match prepared.await {
        Ok(url) if translates(req.headers(), StreamKind::PortForward) => {
            translate(req, &url, StreamKind::PortForward).await
        }
        Ok(url) => proxy_upgrade(req, &url).await,
        Err(e) => e.into_response(),
    }
}

/// Answers a WebSocket client itself and talks SPDY to the runtime's streaming server: the
/// SPDY upgrade is done first (so that a refusal reaches the client as an HTTP error), then
/// the client gets its 101 and the translation runs until either side ends.
async fn translate(mut req: Request<Incoming>, url: &str, kind: StreamKind) -> Response<Body> {
    let target = match parse_stream_url(url) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let (supported, spdy_protocols): (&[&'static str], &[&str]) = match kind {
        StreamKind::Command(_) => (&TRANSLATED_EXEC_PROTOCOLS, REMOTE_COMMAND_PROTOCOLS),
        StreamKind::PortForward => (&TRANSLATED_PORT_FORWARD_PROTOCOLS, &[PORT_FORWARD_PROTOCOL]),
    };
    let (handshake, _) = match websocket::upgrade_response(req.headers(), supported) {
        Ok(answer) => answer,
        Err(e) => return HttpError::bad_request(e.to_string()).into_response(),
    };
    let upstream = async {
        let tcp = tokio::net::TcpStream::connect(&target.authority).await?;
        let _ = tcp.set_nodelay(true);
        spdy_upgrade(
            tcp,
            &target.authority,
            &target.path_and_query,
            spdy_protocols,
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let (upstream, protocol) = match upstream.await {
        Ok(pair) => pair,
        Err(e) => {
            return HttpError::new(
                StatusCode::BAD_GATEWAY,
                format!("upgrading to the runtime's streaming server: {e}"),
            )
            .into_response()
        }
    };
    tracing::debug!(%protocol, ?kind, "translating a WebSocket stream to SPDY");
    let client_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let client = match client_upgrade.await {
            Ok(upgraded) => websocket::accept_upgraded(TokioIo::new(upgraded)).await,
            Err(error) => {
                tracing::debug!(%error, "stream upgrade failed");
                return;
            }
        };
        let result = match kind {
            StreamKind::Command(streams) => exec_websocket_to_spdy(client, upstream, streams).await,
            StreamKind::PortForward => portforward_websocket_to_spdy(client, upstream).await,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "translated stream ended with an error");
        }
    });
    let (parts, ()) = handshake.into_parts();
    let mut resp = Response::new(Empty::<bytes::Bytes>::new().boxed());
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = parts.headers;
    resp
}

/// An `http://host:port/path` URL split into its address and request target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StreamUrl {
    pub authority: String,
    pub path_and_query: String,
}

/// Splits the runtime's streaming URL (plain HTTP, as containerd serves it on loopback).
pub(crate) fn parse_stream_url(url: &str) -> Result<StreamUrl, HttpError> {
    let internal = |why: &str| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} {why}"),
        )
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| internal("is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(internal("has no host"));
    }
    let authority = if authority.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(StreamUrl {
        authority,
        path_and_query: path.to_string(),
    })
}

/// Copies the headers of an upgrade onward, without those of this hop.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_HEADERS.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Sends the client's upgrade request to the runtime's streaming server; when it switches
/// protocols, answers 101 with its headers and joins the two connections; otherwise passes
/// its answer back.
async fn proxy_upgrade(mut req: Request<Incoming>, url: &str) -> Response<Body> {
    let target = match parse_stream_url(url) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let bad_gateway = |what: &str, e: &dyn std::fmt::Display| {
        HttpError::new(
            StatusCode::BAD_GATEWAY,
            format!("{what} the runtime's streaming server: {e}"),
        )
        .into_response()
    };
    let tcp = match tokio::net::TcpStream::connect(&target.authority).await {
        Ok(tcp) => tcp,
        Err(e) => return bad_gateway("connecting to", &e),
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(e) => return bad_gateway("talking to", &e),
        };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "streaming server connection");
        }
    });
    let mut onward = Request::new(Empty::<bytes::Bytes>::new());
    *onward.method_mut() = req.method().clone();
    *onward.uri_mut() = match target.path_and_query.parse() {
        Ok(uri) => uri,
        Err(e) => return bad_gateway("addressing", &e),
    };
    copy_headers(req.headers(), onward.headers_mut());
    if let Ok(host) = http::HeaderValue::from_str(&target.authority) {
        onward.headers_mut().insert(http::header::HOST, host);
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut answer = match sender.send_request(onward).await {
        Ok(answer) => answer,
        Err(e) => return bad_gateway("asking", &e),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut resp = Response::new(http_body_util::Full::new(body).boxed());
        *resp.status_mut() = status;
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.clone());
        }
        return resp;
    }
    let mut resp = Response::new(Empty::<bytes::Bytes>::new().boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    copy_headers(answer.headers(), resp.headers_mut());
    let backend_upgrade = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "stream upgrade failed");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!(%error, "stream ended with an error");
        }
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_urls_split_into_address_and_target() {
        assert_eq!(
            parse_stream_url("http://127.0.0.1:3456/exec/abc?x=1").unwrap(),
            StreamUrl {
                authority: "127.0.0.1:3456".into(),
                path_and_query: "/exec/abc?x=1".into()
            }
        );
        assert_eq!(
            parse_stream_url("http://[::1]:80/attach/t")
                .unwrap()
                .authority,
            "[::1]:80"
        );
        assert_eq!(
            parse_stream_url("http://host").unwrap().authority,
            "host:80"
        );
        assert!(parse_stream_url("https://h:1/x").is_err());
        assert!(parse_stream_url("http:///x").is_err());
    }

    #[test]
    fn exec_options_read_upstream_and_short_names() {
        let r = stream_request(
            Some("command=sh&command=-c&command=echo+hi&output=1&tty=1"),
            true,
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert!(r.stdout && r.tty && !r.stdin && !r.stderr);
        let r = stream_request(Some("stdin=true&stderr=true"), false).unwrap();
        assert!(r.stdin && r.stderr && r.command.is_empty());
        assert_eq!(
            stream_request(Some("command=ls"), true)
                .unwrap_err()
                .message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(stream_request(Some("output=1"), true).is_err());
    }
}
