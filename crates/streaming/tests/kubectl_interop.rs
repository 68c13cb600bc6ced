//! Real kubectl against this crate: a fake API server (discovery, one pod, the exec
//! subresource) whose exec endpoint is served by this crate, with an in-process SPDY
//! "runtime" (`cat`, then exit code 3) behind it.
//!
//! - kubectl 1.27 speaks SPDY/3.1 (moby/spdystream) straight to the runtime's SPDY server
//!   session: header compression, stream setup and half-close against a real Go peer.
//! - kubectl 1.33 speaks WebSocket `v5.channel.k8s.io`, translated by
//!   `exec_websocket_to_spdy` into SPDY toward the runtime.
//!
//! Skipped when the kubectl binaries are not installed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nodeless_streaming::spdy::{self, SpdySession, SpdyStream};
use nodeless_streaming::translate::{
    exec_websocket_to_spdy, portforward_websocket_to_spdy, ExecStreams,
};
use nodeless_streaming::websocket::{
    accept_upgraded, is_websocket_upgrade, upgrade_response, PORT_FORWARD_TUNNEL_PROTOCOL,
    STREAM_PROTOCOL_V5,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const EXIT_3_STATUS: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","uid":"u1"},"spec":{"containers":[{"name":"c","image":"busybox"}]},"status":{"phase":"Running"}}"#;
const API_VERSIONS: &str = r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#;
const API_GROUPS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const CORE_RESOURCES: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]}]}"#;

fn kubectl(version: &str) -> Option<PathBuf> {
    let path = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"));
    path.exists().then_some(path)
}

/// The runtime: accepts the streams kubectl asked for, echoes stdin to stdout until EOF,
/// then reports exit code 3 on the error stream.
async fn cat_runtime<IO>(io: IO, expected: usize)
where
    IO: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = SpdySession::server(io).unwrap();
    let mut streams: HashMap<String, SpdyStream> = HashMap::new();
    for _ in 0..expected {
        let stream = tokio::time::timeout(Duration::from_secs(10), session.accept())
            .await
            .expect("kubectl opened its streams")
            .expect("a stream");
        let kind = stream.headers().get("streamType").unwrap_or("").to_string();
        streams.insert(kind, stream);
    }
    let mut stdin = streams.remove("stdin").expect("stdin stream");
    let mut stdout = streams.remove("stdout").expect("stdout stream");
    let mut error = streams.remove("error").expect("error stream");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdin.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n]).await.unwrap();
    }
    if let Some(mut stderr) = streams.remove("stderr") {
        stderr.write_all(b"stdin closed\n").await.unwrap();
        stderr.shutdown().await.unwrap();
    }
    stdout.shutdown().await.unwrap();
    error.write_all(EXIT_3_STATUS.as_bytes()).await.unwrap();
    error.shutdown().await.unwrap();
    // Let the frames go out before the connection closes, like the kubelet does.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The port-forward runtime: every `data` stream echoes what it receives, prefixed with its
/// port; `error` streams stay open and silent.
async fn echo_port_runtime<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = SpdySession::server(io).unwrap();
    let mut error_streams = Vec::new();
    while let Some(stream) = session.accept().await {
        let request_id = stream.headers().get("requestID").map(str::to_string);
        assert!(request_id.is_some(), "requestID header");
        match stream.headers().get("streamType") {
            Some("error") => error_streams.push(stream),
            Some("data") => {
                let port = stream.headers().get("port").unwrap_or("?").to_string();
                let mut stream = stream;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let mut answer = format!("{port}:").into_bytes();
                        answer.extend_from_slice(&buf[..n]);
                        if stream.write_all(&answer).await.is_err() {
                            break;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
            other => panic!("unexpected stream type {other:?}"),
        }
    }
}

fn flags(query: &str) -> ExecStreams {
    let on = |name: &str| query.split('&').any(|kv| kv == format!("{name}=true"));
    ExecStreams {
        stdin: on("stdin"),
        stdout: on("stdout"),
        stderr: on("stderr"),
        tty: on("tty"),
    }
}

fn json(body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Which exec transports the fake API server served.
type Transports = Arc<Mutex<Vec<&'static str>>>;

async fn handle(
    mut req: Request<hyper::body::Incoming>,
    transports: Transports,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let response = match path.as_str() {
        "/api" => json(API_VERSIONS),
        "/apis" => json(API_GROUPS),
        "/api/v1" => json(CORE_RESOURCES),
        "/api/v1/namespaces/default/pods/p" => json(POD),
        "/api/v1/namespaces/default/pods/p/portforward" => {
            let upgrade = hyper::upgrade::on(&mut req);
            if is_websocket_upgrade(req.headers()) {
                transports.lock().unwrap().push("websocket");
                let (head, _) = upgrade_response(req.headers(), &[PORT_FORWARD_TUNNEL_PROTOCOL])
                    .unwrap()
                    .0
                    .into_parts();
                tokio::spawn(async move {
                    let upgraded = TokioIo::new(upgrade.await.unwrap());
                    let ws = accept_upgraded(upgraded).await;
                    let (agent_side, runtime_side) = tokio::io::duplex(64 * 1024);
                    tokio::spawn(echo_port_runtime(runtime_side));
                    let _ = portforward_websocket_to_spdy(ws, agent_side).await;
                });
                Response::from_parts(head, Full::new(Bytes::new()))
            } else {
                assert!(spdy::is_spdy_upgrade(req.headers()));
                transports.lock().unwrap().push("spdy");
                tokio::spawn(async move {
                    let upgraded = TokioIo::new(upgrade.await.unwrap());
                    echo_port_runtime(upgraded).await;
                });
                let (head, ()) = spdy::upgrade_response("portforward.k8s.io")
                    .unwrap()
                    .into_parts();
                Response::from_parts(head, Full::new(Bytes::new()))
            }
        }
        "/api/v1/namespaces/default/pods/p/exec" => {
            let streams = flags(&query);
            let expected = 1
                + streams.stdin as usize
                + streams.stdout as usize
                + (streams.stderr && !streams.tty) as usize;
            let upgrade = hyper::upgrade::on(&mut req);
            if is_websocket_upgrade(req.headers()) {
                transports.lock().unwrap().push("websocket");
                let (head, _) = upgrade_response(req.headers(), &[STREAM_PROTOCOL_V5])
                    .unwrap()
                    .0
                    .into_parts();
                tokio::spawn(async move {
                    let upgraded = TokioIo::new(upgrade.await.unwrap());
                    let ws = accept_upgraded(upgraded).await;
                    let (agent_side, runtime_side) = tokio::io::duplex(64 * 1024);
                    let runtime = tokio::spawn(cat_runtime(runtime_side, expected));
                    exec_websocket_to_spdy(ws, agent_side, streams)
                        .await
                        .unwrap();
                    runtime.await.unwrap();
                });
                Response::from_parts(head, Full::new(Bytes::new()))
            } else {
                assert!(spdy::is_spdy_upgrade(req.headers()));
                let offered = spdy::requested_protocols(req.headers());
                assert!(
                    offered.iter().any(|p| p == "v4.channel.k8s.io"),
                    "{offered:?}"
                );
                transports.lock().unwrap().push("spdy");
                tokio::spawn(async move {
                    let upgraded = TokioIo::new(upgrade.await.unwrap());
                    cat_runtime(upgraded, expected).await;
                });
                let (head, ()) = spdy::upgrade_response("v4.channel.k8s.io")
                    .unwrap()
                    .into_parts();
                Response::from_parts(head, Full::new(Bytes::new()))
            }
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    };
    Ok(response)
}

async fn serve() -> (String, Transports) {
    let transports = Transports::default();
    let recorder = transports.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, recorder.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (format!("http://{address}"), transports)
}

async fn run_exec(kubectl: &Path, server: &str, stdin: &[u8]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(kubectl)
        .args(["--server", server, "--cache-dir"])
        .arg(home.path().join("cache"))
        .args(["exec", "-i", "p", "--", "cat"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finished")
        .unwrap()
}

async fn check(version: &str, transport: &str) {
    let Some(kubectl) = kubectl(version) else {
        eprintln!("kubectl {version} not installed; skipped");
        return;
    };
    let (server, transports) = serve().await;
    // Large enough to need many frames (and WINDOW_UPDATE-free flow toward spdystream).
    let input: Vec<u8> = (0..300_000).map(|i| b'a' + (i % 26) as u8).collect();
    let output = run_exec(&kubectl, &server, &input).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.stdout == input,
        "stdout echoed ({} bytes); stderr: {stderr}",
        output.stdout.len()
    );
    assert!(stderr.contains("stdin closed"), "stderr: {stderr}");
    assert_eq!(
        output.status.code(),
        Some(3),
        "exit code from the Status; stderr: {stderr}"
    );
    assert_eq!(*transports.lock().unwrap(), [transport]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_exec_over_spdy() {
    check("1.27", "spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_exec_over_websocket_v5() {
    check("1.33", "websocket").await;
}

async fn check_port_forward(version: &str, transport: &str) {
    let Some(kubectl) = kubectl(version) else {
        eprintln!("kubectl {version} not installed; skipped");
        return;
    };
    let (server, transports) = serve().await;
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(kubectl)
        .args(["--server", &server, "--cache-dir"])
        .arg(home.path().join("cache"))
        .args(["port-forward", "--address", "127.0.0.1", "p", ":8080"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("kubectl started forwarding")
        .unwrap()
        .expect("a Forwarding line");
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    for round in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(&local).await.unwrap();
        let message = format!("hello {round}");
        conn.write_all(message.as_bytes()).await.unwrap();
        let expected = format!("8080:{message}");
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(20), conn.read_exact(&mut got))
            .await
            .expect("echo arrived")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }
    child.kill().await.unwrap();
    assert_eq!(*transports.lock().unwrap(), [transport]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_port_forward_over_spdy() {
    check_port_forward("1.27", "spdy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_port_forward_over_websocket_tunnel() {
    check_port_forward("1.33", "websocket").await;
}
