//! The agent's HTTPS server: the part of the kubelet's API (`pkg/kubelet/server`) that the
//! API server calls for `kubectl logs`, `exec`, `attach`, `cp` and `port-forward`.
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /containerLogs/{ns}/{pod}/{container}` | the container's CRI log file, see [`LogOptions`] |
//! | `GET\|POST /exec/{ns}/{pod}/{container}?command=…&input&output&error&tty` | exec stream |
//! | `GET\|POST /attach/{ns}/{pod}/{container}?input&output&error&tty` | attach stream |
//! | `GET\|POST /portForward/{ns}/{pod}?port=…` | port-forward stream |
//!
//! Clients must present a certificate signed by the cluster CA (the API server's
//! kubelet-client certificate). Streams are served as the kubelet serves them: the runtime
//! prepares the stream (CRI `Exec`, `Attach`, `PortForward`) and returns a URL of its
//! streaming server, and this server proxies the client's upgraded connection (SPDY/3.1 or
//! WebSocket) to it byte for byte. Errors are plain text with the HTTP status, as the
//! kubelet's are; the API server turns them into `Status` objects.

pub mod authz;
mod logs;
mod streams;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::runtime::{Runtime, Sandbox};

pub use logs::LogOptions;

/// Errors of starting the agent's server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificates or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// The listener failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The response body of the agent's server.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The server's TLS: its serving certificate and the CA its clients' certificates must be
/// signed by.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

fn tls_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(e.to_string())
}

impl ServerTls {
    /// TLS from PEM: the serving certificate (chain), its key, and the client CA.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> Result<Self, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut client_ca_pem.as_bytes()) {
            roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
        }
        if roots.is_empty() {
            return Err(ServerError::Tls("no CA certificate for clients".into()));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(tls_err)?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(tls_err)?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(tls_err)?
            .ok_or_else(|| ServerError::Tls("no private key".into()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// Where the streams of a pod go: the running containers and sandboxes the agent's pod
/// workers know. The lead's pod workers implement it; [`KubeTargets`] answers from the pod's
/// status in the API server.
#[async_trait]
pub trait StreamTargets: Send + Sync + 'static {
    /// The runtime's id of the container's current attempt, if it was started.
    async fn container_id(&self, namespace: &str, pod: &str, container: &str) -> Option<String>;

    /// The pod's sandbox, if it exists.
    async fn sandbox(&self, namespace: &str, pod: &str) -> Option<Sandbox>;
}

/// [`StreamTargets`] from the pods' status as the agent wrote it to the API server: container
/// ids come from `containerStatuses[].containerID`, the sandbox is the runtime's sandbox of
/// the pod's uid ([`Runtime::list_sandboxes`]).
pub struct KubeTargets {
    client: kube::Client,
    runtime: Arc<dyn Runtime>,
}

impl KubeTargets {
    /// Targets looked up with `client` in the pods' status, and in `runtime`'s sandboxes.
    pub fn new(client: kube::Client, runtime: Arc<dyn Runtime>) -> Self {
        Self { client, runtime }
    }

    async fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(pod) => pod,
            Err(error) => {
                tracing::debug!(%error, "reading the pod for a stream");
                None
            }
        }
    }
}

#[async_trait]
impl StreamTargets for KubeTargets {
    async fn container_id(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let status = self.pod(namespace, pod).await?.status?;
        status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .find(|s| s.name == container)
            .and_then(|s| s.container_id.clone())
            .filter(|id| !id.is_empty())
    }

    /// The runtime's sandbox of the pod; for a runtime that lists none (the simulated one), a
    /// sandbox with the pod's IP and no id, so that the runtime itself answers.
    async fn sandbox(&self, namespace: &str, pod: &str) -> Option<Sandbox> {
        let pod = self.pod(namespace, pod).await?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match self.runtime.list_sandboxes().await {
            Ok(sandboxes) => {
                if let Some((sandbox, _)) = sandboxes.into_iter().find(|(_, u)| *u == uid) {
                    return Some(sandbox);
                }
            }
            Err(error) => tracing::debug!(%error, "listing the runtime's sandboxes"),
        }
        let ip = pod.status?.pod_ip?.parse().ok()?;
        Some(Sandbox {
            id: String::new(),
            ip,
        })
    }
}

/// What the request handlers share.
pub(crate) struct Context {
    pub runtime: Arc<dyn Runtime>,
    pub targets: Arc<dyn StreamTargets>,
    pub state_dir: PathBuf,
}

/// Serves the agent's API on `listener` until the future is dropped. `state_dir` is the
/// agent's [`crate::AgentConfig::state_dir`] (where the logs are).
pub async fn serve(
    listener: TcpListener,
    tls: ServerTls,
    runtime: Arc<dyn Runtime>,
    targets: Arc<dyn StreamTargets>,
    state_dir: PathBuf,
) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let context = Arc::new(Context {
        runtime,
        targets,
        state_dir,
    });
    tracing::info!(addr = %listener.local_addr()?, "agent server listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "agent server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let context = context.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "agent server: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| authz::PeerIdentity::from_certificate(der));
            let service = hyper::service::service_fn(move |req| {
                let context = context.clone();
                let authorized = authz::authorize(identity.as_ref(), req.method());
                async move {
                    Ok::<_, Infallible>(match authorized {
                        Ok(()) => handle(context, req).await,
                        Err(message) => {
                            tracing::info!(%message, path = %req.uri().path(), "agent server: refused");
                            text_response(StatusCode::FORBIDDEN, message)
                        }
                    })
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "agent server: connection ended with an error");
            }
        });
    }
}

/// Binds the agent's server on `config.node_ip` at `config.kubelet_port` (0: a free port),
/// records the bound port in `config.kubelet_port` (the Node advertises it), and spawns the
/// server with
/// [`KubeTargets`]; call it before [`crate::run_with_runtime`] with the same runtime.
pub async fn spawn(
    config: &mut crate::AgentConfig,
    tls: ServerTls,
    runtime: Arc<dyn Runtime>,
    client: kube::Client,
) -> Result<tokio::task::JoinHandle<Result<(), ServerError>>, ServerError> {
    let listener = TcpListener::bind((config.node_ip, config.kubelet_port)).await?;
    config.kubelet_port = listener.local_addr()?.port();
    let targets = Arc::new(KubeTargets::new(client, runtime.clone()));
    Ok(tokio::spawn(serve(
        listener,
        tls,
        runtime,
        targets,
        config.state_dir.clone(),
    )))
}

/// A whole-body response.
pub(crate) fn text_response(code: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An error answer: its status and plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub code: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn into_response(self) -> Response<Body> {
        text_response(self.code, self.message)
    }
}

impl From<crate::runtime::RuntimeError> for HttpError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        use crate::runtime::RuntimeError as E;
        let code = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Unsupported(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(code, e.to_string())
    }
}

/// The decoded query parameters, in order, repeated keys kept (`command=a&command=b`).
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The last value of a parameter.
pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A boolean parameter as Go's `strconv.ParseBool` reads it; present without a value is true
/// (`?follow`).
pub(crate) fn query_flag(pairs: &[(String, String)], key: &str) -> Result<bool, HttpError> {
    match query_get(pairs, key) {
        None => Ok(false),
        Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(HttpError::bad_request(format!(
            "invalid value {other:?} for boolean parameter {key}"
        ))),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(context: Arc<Context>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    tracing::debug!(method = %req.method(), %path, "agent server request");
    match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["healthz"]) => text_response(StatusCode::OK, "ok"),
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            let pairs = query_pairs(req.uri().query());
            logs::container_logs(&context, ns, pod, container, &pairs)
                .await
                .unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            streams::exec_or_attach(&context, req, &ns, &pod, &container, false).await
        }
        (&Method::GET | &Method::POST, ["attach", ns, pod, container]) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            streams::exec_or_attach(&context, req, &ns, &pod, &container, true).await
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            streams::port_forward(&context, req, &ns, &pod).await
        }
        (_, ["healthz" | "containerLogs" | "exec" | "attach" | "portForward", ..]) => {
            text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text_response(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

#[cfg(test)]
mod tests;
