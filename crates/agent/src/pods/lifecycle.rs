//! Container lifecycle as the kubelet runs it: the `postStart` and `preStop` hooks (exec,
//! httpGet, sleep) and the termination message (`terminationMessagePath`, or the log's tail
//! with `terminationMessagePolicy: FallbackToLogsOnError`).

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::{Mount, Runtime};

/// The most of a termination message file that is read (upstream's 4 KiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 4096;
/// The most of the log that becomes a fallback termination message (upstream's 2 KiB).
pub(crate) const MAX_LOG_MESSAGE_BYTES: usize = 2048;
/// The log lines a fallback termination message is taken from (upstream's 80).
pub(crate) const MAX_LOG_MESSAGE_LINES: usize = 80;
/// The termination message path when the spec has none (the API server defaults it too).
const DEFAULT_MESSAGE_PATH: &str = "/dev/termination-log";

/// The host file behind one attempt's termination message.
pub(crate) fn message_file(
    state_dir: &Path,
    pod_uid: &str,
    container: &str,
    attempt: u32,
) -> PathBuf {
    state_dir
        .join("pods")
        .join(pod_uid)
        .join("containers")
        .join(container)
        .join(format!("{attempt}-termination-log"))
}

/// Where the container writes its termination message, or `None` when it has none.
fn message_path(container: &Container) -> Option<&str> {
    match container.termination_message_path.as_deref() {
        None => Some(DEFAULT_MESSAGE_PATH),
        Some("") => None,
        Some(path) => Some(path),
    }
}

/// Creates the empty, world-writable termination message file of one attempt (any user
/// may write it, as upstream) and returns its mount; `None` when the container has no
/// termination message path.
pub(crate) fn prepare_message_file(
    state_dir: &Path,
    pod: &Pod,
    container: &Container,
    attempt: u32,
) -> std::io::Result<Option<Mount>> {
    use std::os::unix::fs::PermissionsExt;
    let Some(container_path) = message_path(container) else {
        return Ok(None);
    };
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid.is_empty() || uid.contains('/') || container.name.contains('/') {
        return Ok(None);
    }
    let file = message_file(state_dir, uid, &container.name, attempt);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, b"")?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
    Ok(Some(Mount {
        host_path: file,
        container_path: container_path.to_string(),
        read_only: false,
    }))
}

/// How long the log is given to receive a container's last output after its exit was seen
/// (the runtime copies output to the log on its own).
const LOG_SETTLE: Duration = Duration::from_millis(300);

/// The termination message of a run that ended with `exit_code`: the message file's first
/// 4 KiB, or with `FallbackToLogsOnError` and a failure, the log's tail when the file is
/// empty.
pub(crate) async fn termination_message(
    container: &Container,
    message_file: &Path,
    log_file: &Path,
    exit_code: i32,
) -> String {
    let from_file = read_prefix(message_file, MAX_MESSAGE_BYTES);
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        && exit_code != 0;
    if !from_file.is_empty() || !fallback {
        return from_file;
    }
    tokio::time::sleep(LOG_SETTLE).await;
    match std::fs::read(log_file) {
        Ok(log) => log_tail(
            &String::from_utf8_lossy(&log),
            MAX_LOG_MESSAGE_LINES,
            MAX_LOG_MESSAGE_BYTES,
        ),
        Err(_) => String::new(),
    }
}

/// The first `limit` bytes of a file as text; empty when it cannot be read.
fn read_prefix(path: &Path, limit: usize) -> String {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(file) => {
            if file.take(limit as u64).read_to_end(&mut bytes).is_err() {
                return String::new();
            }
        }
        Err(_) => return String::new(),
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of a CRI-format log (`<time> <stream> <P|F> <text>`) as the
/// container wrote them, cut to their first `limit` bytes (as upstream reads the log with
/// `tailLines` and `limitBytes`).
pub(crate) fn log_tail(log: &str, lines: usize, limit: usize) -> String {
    let mut text = String::new();
    let mut complete: Vec<String> = Vec::new();
    for entry in log.lines() {
        let mut parts = entry.splitn(4, ' ');
        let (Some(_time), Some(_stream), Some(tag), content) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        text.push_str(content.unwrap_or_default());
        if tag != "P" {
            text.push('\n');
            complete.push(std::mem::take(&mut text));
        }
    }
    if !text.is_empty() {
        complete.push(text);
    }
    let start = complete.len().saturating_sub(lines);
    let mut tail = complete[start..].concat();
    if tail.len() > limit {
        let mut cut = limit;
        while !tail.is_char_boundary(cut) {
            cut -= 1;
        }
        tail.truncate(cut);
    }
    tail
}

/// What a hook needs to know of its container.
pub(crate) struct HookTarget<'a> {
    /// The container's spec.
    pub container: &'a Container,
    /// The runtime's id of the running container.
    pub container_id: &'a str,
    /// The pod's IP (httpGet's default host).
    pub pod_ip: IpAddr,
    /// The pod as upstream's `format.Pod` writes it: `name_namespace(uid)`.
    pub pod_name: &'a str,
}

/// Runs one hook to its end; `limit` bounds an exec (zero: no bound). The error is
/// upstream's message for the `FailedPostStartHook` / `FailedPreStopHook` events.
pub(crate) async fn run_hook(
    runtime: &dyn Runtime,
    handler: &LifecycleHandler,
    target: &HookTarget<'_>,
    limit: Duration,
) -> Result<(), String> {
    let name = &target.container.name;
    let pod = target.pod_name;
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let failed = |error: String, output: &str| {
            format!(
                "Exec lifecycle hook ([{}]) for Container {name:?} in Pod {pod:?} failed - error: {error}, message: {output:?}",
                command.join(" ")
            )
        };
        return match runtime
            .exec_sync(target.container_id, &command, limit)
            .await
        {
            Ok(output) if output.exit_code == 0 => Ok(()),
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                let combined = format!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
                Err(failed(
                    format!(
                        "command '{}' exited with {}: {stderr}",
                        command.join(" "),
                        output.exit_code
                    ),
                    &combined,
                ))
            }
            Err(error) => Err(failed(error.to_string(), "")),
        };
    }
    if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_default();
        return http_get(get, target)
            .await
            .map_err(|error| {
                format!(
                    "HTTP lifecycle hook ({path}) for Container {name:?} in Pod {pod:?} failed - error: {error}"
                )
            });
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if handler.tcp_socket.is_some() {
        // Upstream accepts tcpSocket for compatibility and does nothing with it.
        return Ok(());
    }
    Err(format!(
        "Invalid handler for Container {name:?} in Pod {pod:?}: no exec, httpGet or sleep"
    ))
}

/// The port an httpGet names: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {name:?}"))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {number}"))
}

/// The request line and headers of an httpGet hook.
fn http_request(get: &HTTPGetAction, host: &str, port: u16) -> String {
    let mut path = get.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let headers = get.http_headers.clone().unwrap_or_default();
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-lifecycle/1.33\r\n");
    }
    for header in &headers {
        request.push_str(&format!("{}: {}\r\n", header.name, header.value));
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

/// Sends an httpGet hook's request and reads the response's status line. As upstream, any
/// answer counts as success (the status code is not looked at); only failing to get one
/// fails the hook. `HTTPS` does not verify the certificate, as upstream.
async fn http_get(get: &HTTPGetAction, target: &HookTarget<'_>) -> Result<(), String> {
    let scheme = get.scheme.as_deref().unwrap_or("HTTP");
    let https = if scheme.eq_ignore_ascii_case("HTTP") {
        false
    } else if scheme.eq_ignore_ascii_case("HTTPS") {
        true
    } else {
        return Err(format!("unsupported scheme {scheme:?}"));
    };
    let host = get
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.pod_ip.to_string());
    let port = resolve_port(&get.port, target.container)?;
    let url = format!("{}://{host}:{port}", if https { "https" } else { "http" });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let request = http_request(get, &host, port);
    if https {
        let tls = super::hook_tls::connector()?
            .connect(super::hook_tls::server_name(&host)?, stream)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        exchange(tls, &request).await
    } else {
        exchange(stream, &request).await
    }
}

/// Writes `request` and checks that an HTTP response starts to come back.
async fn exchange<S>(mut stream: S, request: &str) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        read += n;
    }
    if head[..read].starts_with(b"HTTP/") {
        Ok(())
    } else {
        Err("malformed HTTP response".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ExecOutput, RuntimeError};
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPHeader};

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_log_tail_is_the_last_lines_cut_to_the_byte_limit() {
        let log = "2024-01-01T00:00:00Z stdout F one\n\
                   2024-01-01T00:00:01Z stderr P tw\n\
                   2024-01-01T00:00:01Z stderr F o\n\
                   2024-01-01T00:00:02Z stdout F three\n";
        assert_eq!(log_tail(log, 80, 2048), "one\ntwo\nthree\n");
        assert_eq!(log_tail(log, 2, 2048), "two\nthree\n");
        assert_eq!(log_tail(log, 2, 6), "two\nth");
        let many: String = (0..200)
            .map(|i| format!("2024-01-01T00:00:00Z stdout F line {i}\n"))
            .collect();
        let tail = log_tail(&many, MAX_LOG_MESSAGE_LINES, MAX_LOG_MESSAGE_BYTES);
        assert!(tail.starts_with("line 120\n"), "{tail}");
        assert!(tail.ends_with("line 199\n"));
        assert_eq!(log_tail("", 80, 2048), "");
        assert_eq!(log_tail("2024 stdout F é", 80, 1), "");
    }

    #[tokio::test(start_paused = true)]
    async fn messages_come_from_the_file_or_fall_back_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msg");
        let log = dir.path().join("0.log");
        std::fs::write(&log, "2024-01-01T00:00:00Z stderr F boom\n").unwrap();
        let plain = container(serde_json::json!({"name": "a"}));
        let fallback = container(
            serde_json::json!({"name": "a", "terminationMessagePolicy": "FallbackToLogsOnError"}),
        );
        assert_eq!(termination_message(&plain, &file, &log, 1).await, "");
        assert_eq!(
            termination_message(&fallback, &file, &log, 1).await,
            "boom\n"
        );
        assert_eq!(
            termination_message(&fallback, &file, &log, 0).await,
            "",
            "a success never falls back"
        );
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        assert_eq!(
            termination_message(&fallback, &file, &log, 1).await.len(),
            4096
        );
        std::fs::write(&file, "done").unwrap();
        assert_eq!(termination_message(&plain, &file, &log, 0).await, "done");
    }

    #[test]
    fn message_files_are_prepared_per_attempt() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u-1"}
        }))
        .unwrap();
        let c = container(serde_json::json!({"name": "app"}));
        let mount = prepare_message_file(dir.path(), &pod, &c, 2)
            .unwrap()
            .unwrap();
        assert_eq!(mount.container_path, "/dev/termination-log");
        assert_eq!(
            mount.host_path,
            dir.path().join("pods/u-1/containers/app/2-termination-log")
        );
        let mode = std::fs::metadata(&mount.host_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666);
        let own = container(serde_json::json!({"name": "app", "terminationMessagePath": "/tmp/x"}));
        assert_eq!(
            prepare_message_file(dir.path(), &pod, &own, 0)
                .unwrap()
                .unwrap()
                .container_path,
            "/tmp/x"
        );
        let none = container(serde_json::json!({"name": "app", "terminationMessagePath": ""}));
        assert!(prepare_message_file(dir.path(), &pod, &none, 0)
            .unwrap()
            .is_none());
    }

    #[test]
    fn http_hooks_resolve_named_ports_and_send_their_headers() {
        let mut c = container(serde_json::json!({"name": "web"}));
        c.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }]);
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::String("81".into()), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("grpc".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
        let get = HTTPGetAction {
            path: Some("hook".into()),
            http_headers: Some(vec![HTTPHeader {
                name: "X-Why".into(),
                value: "start".into(),
            }]),
            ..Default::default()
        };
        let request = http_request(&get, "10.0.0.1", 8080);
        assert!(request.starts_with("GET /hook HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n"));
        assert!(request.contains("X-Why: start\r\n"));
        assert!(request.ends_with("Connection: close\r\n\r\n"));
    }

    /// A runtime whose exec answers with a fixed outcome.
    struct ExecRuntime(i32);

    #[async_trait::async_trait]
    impl Runtime for ExecRuntime {
        fn version(&self) -> String {
            "test://0".into()
        }
        async fn create_sandbox(&self, _: &Pod) -> Result<crate::runtime::Sandbox, RuntimeError> {
            Err(RuntimeError::Unsupported("sandbox".into()))
        }
        async fn start_container(
            &self,
            _: &crate::runtime::Sandbox,
            _: &Pod,
            _: &Container,
            _: u32,
            _: &crate::runtime::ContainerInputs,
        ) -> Result<crate::runtime::StartedContainer, RuntimeError> {
            Err(RuntimeError::Unsupported("start".into()))
        }
        async fn container_state(
            &self,
            _: &str,
        ) -> Result<crate::runtime::ContainerState, RuntimeError> {
            Err(RuntimeError::Unsupported("state".into()))
        }
        async fn wait_container(
            &self,
            _: &str,
        ) -> Result<crate::runtime::ContainerExit, RuntimeError> {
            Err(RuntimeError::Unsupported("wait".into()))
        }
        async fn stop_sandbox(
            &self,
            _: &crate::runtime::Sandbox,
            _: Duration,
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn remove_sandbox(&self, _: &crate::runtime::Sandbox) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn exec_sync(
            &self,
            _: &str,
            _: &[String],
            _: Duration,
        ) -> Result<ExecOutput, RuntimeError> {
            Ok(ExecOutput {
                exit_code: self.0,
                stdout: b"out ".to_vec(),
                stderr: b"err".to_vec(),
            })
        }
    }

    #[tokio::test]
    async fn exec_hooks_fail_with_upstreams_message() {
        let c = container(serde_json::json!({"name": "app"}));
        let target = loopback_target(&c);
        let handler = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), "exit 3".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            run_hook(&ExecRuntime(0), &handler, &target, Duration::ZERO).await,
            Ok(())
        );
        let error = run_hook(&ExecRuntime(3), &handler, &target, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"app\" in Pod \"p_default(u)\" \
             failed - error: command 'sh -c exit 3' exited with 3: err, message: \"out err\""
        );
        let refused = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        let error = run_hook(&ExecRuntime(0), &refused, &target, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            error.starts_with("HTTP lifecycle hook () for Container \"app\""),
            "{error}"
        );
        let sleep = LifecycleHandler {
            sleep: Some(k8s_openapi::api::core::v1::SleepAction { seconds: 0 }),
            ..Default::default()
        };
        assert_eq!(
            run_hook(&ExecRuntime(1), &sleep, &target, Duration::ZERO).await,
            Ok(())
        );
    }

    /// A hook target whose pod IP is loopback, where the tests' servers listen.
    fn loopback_target(c: &Container) -> HookTarget<'_> {
        HookTarget {
            container: c,
            container_id: "x",
            pod_ip: "127.0.0.1".parse().unwrap(),
            pod_name: "p_default(u)",
        }
    }

    #[tokio::test]
    async fn https_hooks_accept_a_self_signed_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pod.local".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = tls.read(&mut buf).await.unwrap();
            tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            tls.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let c = container(serde_json::json!({"name": "app"}));
        let target = loopback_target(&c);
        let handler = |scheme: &str| LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/secure".into()),
                port: IntOrString::Int(i32::from(port)),
                scheme: Some(scheme.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            run_hook(&ExecRuntime(0), &handler("HTTPS"), &target, Duration::ZERO).await,
            Ok(())
        );
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /secure HTTP/1.1\r\n"), "{request}");
        let error = run_hook(&ExecRuntime(0), &handler("FTP"), &target, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(error.contains("unsupported scheme \"FTP\""), "{error}");
    }

    #[tokio::test]
    async fn http_hooks_succeed_on_any_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let c = container(serde_json::json!({"name": "app"}));
        let target = loopback_target(&c);
        let handler = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/started".into()),
                port: IntOrString::Int(i32::from(port)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            run_hook(&ExecRuntime(0), &handler, &target, Duration::ZERO).await,
            Ok(())
        );
        assert!(server
            .await
            .unwrap()
            .starts_with("GET /started HTTP/1.1\r\n"));
    }
}
