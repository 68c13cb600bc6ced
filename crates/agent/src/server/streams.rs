//! `exec`, `attach` and `portForward`: the runtime prepares the stream and names a URL of its
//! streaming server; the client's upgrade request is sent there, and once the streaming
//! server has switched protocols (101) the two connections are joined byte for byte. SPDY/3.1
//! and WebSocket (`v4.channel.k8s.io`, `v5.channel.k8s.io`, `portforward.k8s.io`) pass through
//! unchanged; the runtime's streaming server speaks them.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::{query_flag, query_pairs, Body, Context, HttpError};
use crate::runtime::StreamRequest;

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
        Ok::<_, HttpError>(url)
    };
    match prepared.await {
        Ok(url) => proxy_upgrade(req, &url).await,
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
        Ok(url) => proxy_upgrade(req, &url).await,
        Err(e) => e.into_response(),
    }
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
