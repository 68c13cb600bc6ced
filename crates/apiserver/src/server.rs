//! The HTTPS listener: TLS with optional client certificates, authentication, and the
//! hand-off of each request to the router.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nodeless_store::Store;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::http_util::{self, Body};
use crate::pki;
use crate::storage::Storage;
use crate::ServerError;

/// How to run the API server.
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: Arc<dyn Store>,
    /// Admission plugins run after defaulting and validation (e.g. the serverless rules).
    pub admission: Admission,
    /// How often old revisions are compacted away (upstream: 5 minutes). Each round compacts
    /// up to the revision the previous round saw, so history lasts one to two intervals.
    pub compaction_interval: std::time::Duration,
    /// The range Service cluster IPs are allocated from (upstream's default `10.96.0.0/12`).
    pub service_cidr: crate::services::ServiceCidr,
    /// Components that serve GET requests under paths they claim (e.g. metering), behind
    /// authentication; consulted before the Kubernetes routes.
    pub extensions: Vec<Arc<dyn crate::extension::ApiExtension>>,
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// What every request handler shares.
pub(crate) struct AppState {
    pub storage: Storage,
    pub admission: Admission,
    pub tokens: HashMap<String, Identity>,
    /// Signs and verifies service account tokens.
    pub service_account_tokens: crate::tokens::TokenSigner,
    pub shutdown: watch::Receiver<bool>,
    /// The TLS client for the agents' servers (logs, exec, attach, port-forward).
    pub node_client: crate::node_proxy::NodeClient,
    /// Service cluster IP allocation on the write path.
    pub service_ips: crate::services::ServiceIps,
    /// The extensions of [`ServerConfig::extensions`].
    pub extensions: Vec<Arc<dyn crate::extension::ApiExtension>>,
}

/// A bound, ready API server.
pub struct ApiServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
    local_addr: SocketAddr,
    /// The admin kubeconfig written on start.
    pub kubeconfig_path: PathBuf,
    /// A kubeconfig for the cluster's own components (bearer token, cluster CA).
    pub component_kubeconfig: String,
}

fn tls_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(e.to_string())
}

impl ApiServer {
    /// Binds the listener, prepares the PKI and writes `DATA_DIR/kubeconfig`.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let pki = crate::cluster_ca::load_shared(&config.data_dir, config.store.as_ref()).await?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let hostname = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let names: Vec<String> = if hostname.is_empty() {
            vec![]
        } else {
            vec![hostname]
        };
        let server_pair = pki.issue_server_cert(&[local_addr.ip()], &names)?;
        let tls = tls_acceptor(pki.ca_cert_pem(), &server_pair)?;

        let admin = pki.admin_credentials()?;
        let host = if local_addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            local_addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let server_url = format!("https://{host}:{}", local_addr.port());
        let kubeconfig_path = config.data_dir.join("kubeconfig");
        pki::write_secret_file(
            &kubeconfig_path,
            &pki::kubeconfig(&server_url, pki.ca_cert_pem(), &admin, "nodeless"),
        )?;

        let entries = pki.component_tokens()?;
        let component_token = entries.first().map(|t| t.token.clone()).unwrap_or_default();
        let component_kubeconfig = pki::token_kubeconfig(
            &server_url,
            pki.ca_cert_pem(),
            &component_token,
            "nodeless-components",
        );
        let tokens = entries
            .into_iter()
            .map(|t| {
                (
                    t.token,
                    Identity {
                        user: t.user,
                        groups: t.groups,
                    },
                )
            })
            .collect();
        let service_account_tokens = crate::tokens::TokenSigner::new(&pki.service_account_key()?)
            .map_err(|e| ServerError::Pki(e.to_string()))?;
        let node_client = crate::node_proxy::NodeClient::new(
            pki.ca_cert_pem(),
            &pki.kubelet_client_credentials()?,
        )?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let storage = Storage::new(config.store);
        storage.ensure_system_namespaces().await?;
        let service_ips = crate::services::start(
            &storage,
            config.service_cidr,
            crate::services::advertise_address(local_addr),
            shutdown_rx.clone(),
        )
        .await;
        let state = Arc::new(AppState {
            storage,
            admission: config.admission,
            tokens,
            service_account_tokens,
            shutdown: shutdown_rx,
            node_client,
            service_ips,
            extensions: config.extensions,
        });
        tokio::task::spawn_blocking(crate::discovery::prepare_openapi_v3);
        tokio::spawn(compaction_loop(
            state.storage.clone(),
            config.compaction_interval,
            state.shutdown.clone(),
        ));
        Ok(Self {
            listener,
            tls,
            state,
            shutdown_tx,
            local_addr,
            kubeconfig_path,
            component_kubeconfig,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, ends open watches and
    /// waits briefly for requests in flight.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Self {
            listener,
            tls,
            state,
            shutdown_tx,
            ..
        } = self;
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(c) => c,
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                    };
                    let _ = tcp.set_nodelay(true);
                    let tls = tls.clone();
                    let state = state.clone();
                    connections.spawn(async move {
                        if let Err(e) = serve_connection(tls, tcp, state).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!("shutting down the API server");
        let _ = shutdown_tx.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            connections.abort_all();
        }
        Ok(())
    }
}

/// Compacts the store every interval up to the revision seen one interval before.
async fn compaction_loop(
    storage: Storage,
    interval: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let mut previous: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(rev) = previous {
            match storage.store().compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compacted"),
                Err(nodeless_store::StoreError::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
        previous = storage.store().current_revision().await.ok();
    }
}

fn tls_acceptor(
    ca_pem: &str,
    server: &pki::CertPair,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.map_err(tls_err)?).map_err(tls_err)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(tls_err)?;
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(tls_err)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut server.key_pem.as_bytes())
        .map_err(tls_err)?
        .ok_or_else(|| ServerError::Tls("no private key in server.key".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The user and groups of a verified client certificate (CN and O, as upstream).
fn identity_from_cert(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity { user, groups })
}

async fn serve_connection(
    tls: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    state: Arc<AppState>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream =
        tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp)).await??;
    let cert_identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| identity_from_cert(c.as_ref()));
    let state_shutdown = state.shutdown.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let cert_identity = cert_identity.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(state, cert_identity, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1000);
    let mut shutdown = state_shutdown;
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = shutdown.changed() => {}
    }
    // Finish the requests in flight, refuse new ones, and close.
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Paths anyone may read, as upstream's `system:public-info-viewer`.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

async fn handle(
    state: Arc<AppState>,
    cert_identity: Option<Identity>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let identity = match (cert_identity, bearer) {
        (Some(identity), _) => Some(identity),
        (None, Some(token)) => crate::tokens::authenticate_bearer(&state, &token).await,
        (None, None) => None,
    };
    let identity = match identity {
        Some(identity) => Some(identity),
        None => bootstrap_identity(&state, &req).await,
    };
    if identity.is_none() && !is_public(uri.path()) {
        return http_util::error_response(&crate::ApiError::unauthorized());
    }
    if let Some(identity) = &identity {
        if let Some(response) = crate::extension::dispatch(&state.extensions, identity, &req).await
        {
            tracing::debug!(%method, %uri, status = response.status().as_u16(), "extension request");
            return response;
        }
    }
    // exec, attach and port-forward take over the connection: they get the request itself.
    if let Some(path) = crate::handlers::connect::stream_route(uri.path()) {
        let response = crate::handlers::connect::stream(&state, path, req).await;
        tracing::debug!(%method, %uri, status = response.status().as_u16(), "stream request");
        return response;
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, crate::http_util::MAX_BODY_BYTES);
    let body: Bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                crate::ApiError::too_large("Request entity too large: limit is 3145728")
            } else {
                crate::ApiError::bad_request(format!("reading the request body: {e}"))
            };
            return http_util::error_response(&err);
        }
    };
    let request = http_util::ApiRequest::new(parts, body, identity);
    let response = crate::handlers::dispatch(&state, request).await;
    tracing::debug!(%method, %uri, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

/// The identity of a request whose bearer token is a valid bootstrap token (agents joining).
async fn bootstrap_identity(state: &AppState, req: &Request<Incoming>) -> Option<Identity> {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = header.strip_prefix("Bearer ")?.trim();
    crate::bootstrap_token::authenticate(&state.storage, token).await
}
