use std::net::SocketAddr;
use std::sync::Mutex;

use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::ServerName;

use super::logs::{format_rfc3339_nano, parse_cri_line};
use super::*;
use crate::runtime::{
    ContainerExit, ContainerInputs, ContainerState, RuntimeError, StartedContainer,
};

#[test]
fn cri_lines_parse_and_malformed_ones_do_not() {
    let line = parse_cri_line(b"2024-01-02T03:04:05.123456789Z stderr P half a").unwrap();
    assert_eq!(line.stream, "stderr");
    assert!(line.partial);
    assert_eq!(line.text, b"half a");
    assert_eq!(
        format_rfc3339_nano(line.time),
        "2024-01-02T03:04:05.123456789Z"
    );
    let empty = parse_cri_line(b"2024-01-02T03:04:05Z stdout F").unwrap();
    assert_eq!(empty.text, b"");
    assert!(parse_cri_line(b"garbage").is_none());
    assert!(parse_cri_line(b"2024-01-02T03:04:05Z stdin F x").is_none());
    assert!(parse_cri_line(b"2024-01-02T03:04:05Z stdout X x").is_none());
}

#[test]
fn times_format_as_go_rfc3339_nano() {
    let t = time::OffsetDateTime::parse(
        "2024-01-02T03:04:05.500000000Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(format_rfc3339_nano(t), "2024-01-02T03:04:05.5Z");
    let whole = t.replace_nanosecond(0).unwrap();
    assert_eq!(format_rfc3339_nano(whole), "2024-01-02T03:04:05Z");
}

#[test]
fn log_options_validate_as_upstream() {
    let now = time::OffsetDateTime::now_utc();
    let q = |s: &str| LogOptions::from_query(&query_pairs(Some(s)), now);
    let o = q("follow&tailLines=3&timestamps=true&limitBytes=10").unwrap();
    assert!(o.follow && o.timestamps && !o.previous);
    assert_eq!((o.tail_lines, o.limit_bytes), (Some(3), Some(10)));
    assert_eq!(
        q("sinceSeconds=5").unwrap().since,
        Some(now - Duration::from_secs(5))
    );
    assert_eq!(
        q("tailLines=-1").unwrap_err().message,
        "tailLines: Invalid value: -1: must be greater than or equal to 0"
    );
    assert!(q("limitBytes=0").is_err());
    assert!(q("sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z").is_err());
    assert!(q("follow=maybe").is_err());
}

use std::time::Duration;

/// Test targets: one known container id, no sandbox.
struct FixedTargets(Option<String>);

#[async_trait]
impl StreamTargets for FixedTargets {
    async fn container_id(&self, _: &str, _: &str, _: &str) -> Option<String> {
        self.0.clone()
    }
    async fn sandbox(&self, _: &str, _: &str) -> Option<Sandbox> {
        None
    }
}

/// A runtime whose one container runs until told otherwise.
struct FlagRuntime {
    running: Mutex<bool>,
}

#[async_trait]
impl Runtime for FlagRuntime {
    fn version(&self) -> String {
        "flag://0".into()
    }
    async fn create_sandbox(&self, _: &Pod) -> Result<Sandbox, RuntimeError> {
        Err(RuntimeError::Failed("no".into()))
    }
    async fn start_container(
        &self,
        _: &Sandbox,
        _: &Pod,
        _: &k8s_openapi::api::core::v1::Container,
        _: u32,
        _: &ContainerInputs,
    ) -> Result<StartedContainer, RuntimeError> {
        Err(RuntimeError::Failed("no".into()))
    }
    async fn container_state(&self, _: &str) -> Result<ContainerState, RuntimeError> {
        if *self.running.lock().unwrap() {
            Ok(ContainerState::Running)
        } else {
            Ok(ContainerState::Exited(ContainerExit {
                exit_code: 0,
                reason: "Completed".into(),
                finished_at: std::time::SystemTime::now(),
            }))
        }
    }
    async fn wait_container(&self, _: &str) -> Result<ContainerExit, RuntimeError> {
        std::future::pending().await
    }
    async fn stop_sandbox(&self, _: &Sandbox, _: Duration) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn remove_sandbox(&self, _: &Sandbox) -> Result<(), RuntimeError> {
        Ok(())
    }
}

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
    /// Another agent's client certificate: the cluster's CA, but not `system:masters`.
    node: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf =
        |client: bool, issuer: Option<(&rcgen::Certificate, &KeyPair)>, subject: (&str, &str)| {
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, subject.0);
            params
                .distinguished_name
                .push(DnType::OrganizationName, subject.1);
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let key = KeyPair::generate().unwrap();
            let cert = match issuer {
                Some((ca, ca_key)) => params.signed_by(&key, ca, ca_key).unwrap(),
                None => params.self_signed(&key).unwrap(),
            };
            (cert.pem(), key.serialize_pem())
        };
    Pki {
        ca_pem: ca.pem(),
        server: leaf(
            false,
            Some((&ca, &ca_key)),
            ("system:node:test", "system:nodes"),
        ),
        client: leaf(
            true,
            Some((&ca, &ca_key)),
            ("kube-apiserver-kubelet-client", "system:masters"),
        ),
        stranger: leaf(true, None, ("stranger", "system:masters")),
        node: leaf(
            true,
            Some((&ca, &ca_key)),
            ("system:node:other", "system:nodes"),
        ),
    }
}

async fn start(
    pki: &Pki,
    state_dir: PathBuf,
    runtime: Arc<dyn Runtime>,
    targets: Arc<dyn StreamTargets>,
) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = ServerTls::from_pem(&pki.server.0, &pki.server.1, &pki.ca_pem).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, tls, runtime, targets, state_dir));
    addr
}

/// GETs `path` with a client certificate; the status and body.
async fn get(
    addr: SocketAddr,
    pki: &Pki,
    client: &(String, String),
    path: &str,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut client.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut client.1.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", "agent")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

fn write_log(dir: &Path, attempt: u32, lines: &[&str]) {
    let path = dir.join(format!("logs/shop_web_u1/app/{attempt}.log"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

use std::path::Path;

#[tokio::test]
async fn logs_are_served_to_cluster_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    write_log(
        dir.path(),
        0,
        &[
            "2024-01-01T00:00:00.100000000Z stdout F first run",
            "2024-01-01T00:00:01Z stdout F crashed",
        ],
    );
    write_log(
        dir.path(),
        1,
        &[
            "2024-01-01T00:01:00.000000000Z stdout F one",
            "2024-01-01T00:01:01.000000000Z stderr P two ",
            "2024-01-01T00:01:01.500000000Z stderr F halves",
            "2024-01-01T00:01:02.000000000Z stdout F three",
        ],
    );
    let pki = pki();
    let runtime = Arc::new(FlagRuntime {
        running: Mutex::new(false),
    });
    let addr = start(
        &pki,
        dir.path().to_path_buf(),
        runtime,
        Arc::new(FixedTargets(Some("c1".into()))),
    )
    .await;
    let c = &pki.client;
    assert_eq!(
        get(addr, &pki, c, "/healthz").await.unwrap(),
        (200, "ok\n".into())
    );
    let logs = |q: &str| {
        let path = format!("/containerLogs/shop/web/app{q}");
        let pki = &pki;
        async move { get(addr, pki, c, &path).await }
    };
    assert_eq!(
        logs("").await.unwrap(),
        (200, "one\ntwo halves\nthree\n".into())
    );
    assert_eq!(logs("?tailLines=1").await.unwrap().1, "three\n");
    assert_eq!(
        logs("?previous=true").await.unwrap().1,
        "first run\ncrashed\n"
    );
    assert_eq!(
        logs("?timestamps=true&tailLines=2").await.unwrap().1,
        "2024-01-01T00:01:01.5Z halves\n2024-01-01T00:01:02Z three\n"
    );
    assert_eq!(logs("?limitBytes=5").await.unwrap().1, "one\nt");
    assert_eq!(
        logs("?sinceTime=2024-01-01T00:01:01.2Z").await.unwrap().1,
        "halves\nthree\n"
    );
    let missing = get(addr, &pki, c, "/containerLogs/shop/web/side")
        .await
        .unwrap();
    assert_eq!(
        missing,
        (
            400,
            "container \"side\" in pod \"web\" is waiting to start: ContainerCreating\n".into()
        )
    );
    // A client without a certificate of the cluster CA is turned away.
    assert!(get(addr, &pki, &pki.stranger, "/healthz").await.is_err());
    // Another agent's certificate is the cluster's, but it may not read this agent's pods.
    let (code, message) = get(addr, &pki, &pki.node, "/containerLogs/shop/web/main")
        .await
        .unwrap();
    assert_eq!(code, 403, "{message}");
    assert!(
        message.starts_with(
            "Forbidden (user=system:node:other, verb=get, resource=nodes, subresource=proxy)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn previous_without_a_restart_is_an_upstream_error() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 0, &["2024-01-01T00:00:00Z stdout F hi"]);
    let pki = pki();
    let runtime = Arc::new(FlagRuntime {
        running: Mutex::new(false),
    });
    let addr = start(
        &pki,
        dir.path().into(),
        runtime,
        Arc::new(FixedTargets(None)),
    )
    .await;
    let (code, body) = get(
        addr,
        &pki,
        &pki.client,
        "/containerLogs/shop/web/app?previous=1",
    )
    .await
    .unwrap();
    assert_eq!(code, 400);
    assert_eq!(
        body,
        "previous terminated container \"app\" in pod \"web\" not found\n"
    );
}

#[tokio::test]
async fn follow_streams_new_lines_until_the_container_ends() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 0, &["2024-01-01T00:00:00Z stdout F early"]);
    let pki = pki();
    let runtime = Arc::new(FlagRuntime {
        running: Mutex::new(true),
    });
    let addr = start(
        &pki,
        dir.path().into(),
        runtime.clone(),
        Arc::new(FixedTargets(Some("c1".into()))),
    )
    .await;
    let path = dir.path().join("logs/shop_web_u1/app/0.log");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2024-01-01T00:00:01Z stdout F late\n")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        *runtime.running.lock().unwrap() = false;
    });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        get(
            addr,
            &pki,
            &pki.client,
            "/containerLogs/shop/web/app?follow=true",
        ),
    )
    .await
    .expect("follow ends when the container ends")
    .unwrap();
    writer.await.unwrap();
    assert_eq!(result, (200, "early\nlate\n".into()));
}

#[tokio::test]
async fn streams_of_a_runtime_without_them_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let runtime = Arc::new(FlagRuntime {
        running: Mutex::new(true),
    });
    let addr = start(
        &pki,
        dir.path().into(),
        runtime,
        Arc::new(FixedTargets(Some("c1".into()))),
    )
    .await;
    let (code, body) = get(
        addr,
        &pki,
        &pki.client,
        "/exec/shop/web/app?command=ls&output=1",
    )
    .await
    .unwrap();
    assert_eq!(
        (code, body.as_str()),
        (400, "not supported by this runtime: exec\n")
    );
    let (code, _) = get(addr, &pki, &pki.client, "/portForward/shop/web?port=80")
        .await
        .unwrap();
    assert_eq!(code, 404);
    let (code, _) = get(addr, &pki, &pki.client, "/nothing").await.unwrap();
    assert_eq!(code, 404);
}
