//! Connections from the API server to the agents' servers (the kubelet API): where a node's
//! server is (its address and `daemonEndpoints.kubeletEndpoint.Port`), mutual TLS with the
//! API server's kubelet-client certificate, and the upgrade-aware proxy that joins a
//! client's `exec`/`attach`/`portforward` connection to the agent's.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nodeless_api::registry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::http_util::{self, Body};
use crate::pki::CertPair;
use crate::storage::Storage;
use crate::{ApiError, ServerError};

/// Upstream's default kubelet port, used when a node advertises none.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Headers that belong to the hop between the client and the API server.
const HOP_HEADERS: [&str; 4] = [
    "host",
    "authorization",
    "content-length",
    "impersonate-user",
];

/// Where a node's server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// The address to dial (an IP or a host name).
    pub host: String,
    /// The server's port.
    pub port: u16,
}

impl NodeAddress {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The address of a Node's server: its InternalIP (then ExternalIP, then Hostname) and its
/// advertised kubelet port (upstream's default 10250 when it advertises none).
pub fn node_address(node: &Value) -> Option<NodeAddress> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    let of_type = |wanted: &str| {
        addresses.iter().find_map(|a| {
            (a.get("type")?.as_str()? == wanted)
                .then(|| a.get("address")?.as_str().map(str::to_string))
                .flatten()
        })
    };
    let host = of_type("InternalIP")
        .or_else(|| of_type("ExternalIP"))
        .or_else(|| of_type("Hostname"))
        .filter(|h| !h.is_empty())?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(NodeAddress { host, port })
}

/// Looks up the node a pod is bound to and where its server is.
pub async fn locate_node(storage: &Storage, node_name: &str) -> Result<NodeAddress, ApiError> {
    let kind = registry::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not registered"))?;
    let node = storage.get_existing(kind, None, node_name).await?;
    node_address(&node).ok_or_else(|| {
        ApiError::bad_request(format!("node {node_name:?} has no address to reach it at"))
    })
}

/// The API server's TLS client for the agents' servers.
pub struct NodeClient {
    connector: tokio_rustls::TlsConnector,
}

fn tls_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(e.to_string())
}

impl NodeClient {
    /// A client that trusts `ca_pem` and presents `client`.
    pub fn new(ca_pem: &str, client: &CertPair) -> Result<Self, ServerError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
        }
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut client.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(tls_err)?;
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut client.key_pem.as_bytes())
                .map_err(tls_err)?
                .ok_or_else(|| ServerError::Tls("no private key for the kubelet client".into()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sends one request to a node's server and returns its answer (the body streams).
    async fn send(
        &self,
        node: &NodeAddress,
        request: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, ApiError> {
        let url = format!(
            "{} https://{}{}",
            request.method(),
            node.authority(),
            request.uri()
        );
        let failed = |e: &dyn std::fmt::Display| {
            ApiError::internal(format!("error dialing backend: {url}: {e}"))
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(node.authority())
                .await
                .map_err(|e| failed(&e))?;
            let _ = tcp.set_nodelay(true);
            let name = match node.host.parse::<std::net::IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(node.host.clone()).map_err(|e| failed(&e))?,
            };
            self.connector
                .connect(name, tcp)
                .await
                .map_err(|e| failed(&e))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| failed(&"timed out"))??;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "connection to an agent");
            }
        });
        let mut request = request;
        if let Ok(host) = http::HeaderValue::from_str(&node.authority()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        sender.send_request(request).await.map_err(|e| failed(&e))
    }

    /// GETs `path_and_query` from a node's server and streams its body back; a failure of
    /// the agent becomes a `Status` (its text as the message, as upstream's response checker).
    pub async fn get_streaming(
        &self,
        node: &NodeAddress,
        path_and_query: &str,
    ) -> Result<Response<Body>, ApiError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path_and_query)
            .body(Empty::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let answer = self.send(node, request).await?;
        if !answer.status().is_success() {
            return Err(agent_error(answer).await);
        }
        let content_type = answer
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_string();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let mut body = answer.into_body();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return };
                if let Ok(data) = frame.into_data() {
                    if tx.send(data).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(http_util::stream_response(&content_type, stream))
    }

    /// Proxies an upgrade request (exec, attach, port-forward) to a node's server: sends it
    /// on with its upgrade headers, and when the agent switches protocols answers 101 with the
    /// agent's headers and copies bytes both ways until either side closes.
    pub async fn proxy_upgrade(
        &self,
        node: &NodeAddress,
        path_and_query: &str,
        mut client: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let mut onward = Request::new(Empty::<Bytes>::new());
        *onward.method_mut() = client.method().clone();
        *onward.uri_mut() = path_and_query
            .parse()
            .map_err(|e| ApiError::internal(format!("the agent's URL: {e}")))?;
        copy_headers(client.headers(), onward.headers_mut());
        let client_upgrade = hyper::upgrade::on(&mut client);
        let mut answer = self.send(node, onward).await?;
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(agent_error(answer).await);
        }
        let mut resp = Response::new(Empty::<Bytes>::new().boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_headers(answer.headers(), resp.headers_mut());
        let agent_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (client, agent) = match tokio::try_join!(client_upgrade, agent_upgrade) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "stream upgrade failed");
                    return;
                }
            };
            let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
                tracing::debug!(%error, "stream ended with an error");
            }
        });
        Ok(resp)
    }
}

/// Copies headers onward, without those of this hop.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_HEADERS.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// An agent's error answer as a `Status`: its text is the message, as upstream's
/// `GenericHttpResponseChecker` does (400 stays BadRequest, 404 NotFound, others by code).
async fn agent_error(answer: Response<Incoming>) -> ApiError {
    let code = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)])
        .trim()
        .to_string();
    let text = if text.is_empty() {
        format!("the agent answered {code}")
    } else {
        text
    };
    match code {
        400 => ApiError::bad_request(text),
        404 => ApiError::no_route(text),
        500 => ApiError::internal(text),
        502 | 503 => ApiError::unavailable(text),
        _ => ApiError::bad_request(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_are_reached_at_their_internal_ip_and_kubelet_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 41234}},
        }});
        assert_eq!(
            node_address(&node),
            Some(NodeAddress {
                host: "10.0.0.7".into(),
                port: 41234
            })
        );
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}});
        assert_eq!(node_address(&bare).unwrap().authority(), "n1:10250");
        assert_eq!(node_address(&json!({"status": {}})), None);
        let v6 = NodeAddress {
            host: "::1".into(),
            port: 1,
        };
        assert_eq!(v6.authority(), "[::1]:1");
    }
}
