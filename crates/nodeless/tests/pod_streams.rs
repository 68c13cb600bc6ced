//! End-to-end: `kubectl exec`, `attach`-free streams, `cp`, `port-forward` and `logs` on real
//! containers (`--runtime containerd`), through the API server and the agent's server to
//! containerd's streaming server, with every kubectl of the supported range (1.27 speaks
//! SPDY, 1.33 WebSocket v5 and the port-forward tunnel, translated by the agent).
//!
//! They skip (with a message) while `nodeless up` does not run the agent's server, i.e.
//! while its Node advertises no kubelet port.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::{eventually, kubectl_versions, Cluster};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(90);

fn cluster() -> (Registry, Cluster) {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let cluster = Cluster::start_containerd(Some(&registry.host()), &[]);
    (registry, cluster)
}

/// Whether the cluster's Node advertises the agent's server (else the tests skip).
fn serves_streams(c: &Cluster) -> bool {
    let nodes = c.get_json(&["nodes"]);
    let port = nodes["items"][0]["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(0);
    if port == 0 {
        eprintln!("skipping: the node advertises no kubelet port (the agent's server is not wired into `nodeless up`)");
    }
    port > 0
}

fn start_pod(c: &Cluster, name: &str, script: &str) {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", script],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
        }]},
    });
    c.ok_stdin(&["apply", "-f", "-"], &pod.to_string());
    eventually(c, LIMIT, &format!("{name} running"), || {
        (c.get_json(&["pod", name])["status"]["phase"] == "Running").then_some(())
    });
}

/// Runs kubectl with optional stdin and a deadline; exit code, stdout, stderr.
fn run(
    c: &Cluster,
    kubectl: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .env("HOME", c.dir.path())
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exec_cp_and_logs_on_real_containers() {
    let (_registry, c) = cluster();
    if !serves_streams(&c) {
        return;
    }
    start_pod(&c, "shell", "echo started; sleep 3600");
    for kubectl in kubectl_versions() {
        let k = kubectl.as_path();
        let (code, out, err) = run(
            &c,
            k,
            &["exec", "-v=7", "shell", "--", "echo", "hello"],
            None,
        );
        if k.ends_with("kubectl.1.33") {
            // The newest kubectl speaks WebSocket v5, which the agent translates.
            assert!(
                err.contains("The subprotocol is v5.channel.k8s.io"),
                "{err}"
            );
        }
        assert_eq!((code, out.as_str()), (0, "hello\n"), "{k:?}: {err}");
        // stdin reaches the process and its end ends it (v5's half-close).
        let (code, out, err) = run(&c, k, &["exec", "-i", "shell", "--", "cat"], Some("abc\n"));
        assert_eq!((code, out.as_str()), (0, "abc\n"), "{k:?}: {err}");
        let (code, _, err) = run(&c, k, &["exec", "shell", "--", "sh", "-c", "exit 3"], None);
        assert_eq!(code, 3, "{k:?}: {err}");
        assert!(err.contains("command terminated with exit code 3"), "{err}");
        let (code, _, err) = run(&c, k, &["exec", "shell", "--", "/no/such"], None);
        assert_ne!(code, 0);
        assert!(!err.is_empty());
        // cp is tar over exec.
        let local = c.dir.path().join("copied.txt");
        std::fs::write(&local, "copied content\n").unwrap();
        let local_str = local.to_string_lossy().into_owned();
        let (code, _, err) = run(&c, k, &["cp", &local_str, "shell:/tmp/copied.txt"], None);
        assert_eq!(code, 0, "{k:?}: {err}");
        let (_, out, _) = run(
            &c,
            k,
            &["exec", "shell", "--", "cat", "/tmp/copied.txt"],
            None,
        );
        assert_eq!(out, "copied content\n");
        let back = c.dir.path().join("back.txt");
        let back_str = back.to_string_lossy().into_owned();
        let (code, _, err) = run(&c, k, &["cp", "shell:/tmp/copied.txt", &back_str], None);
        assert_eq!(code, 0, "{k:?}: {err}");
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied content\n");
        let (code, out, err) = run(&c, k, &["logs", "shell"], None);
        assert_eq!((code, out.as_str()), (0, "started\n"), "{err}");
        eprintln!("{k:?}: exec, cp and logs work");
    }
}

#[test]
fn port_forward_reaches_a_container_port() {
    let (_registry, c) = cluster();
    if !serves_streams(&c) {
        return;
    }
    start_pod(
        &c,
        "server",
        "while true; do echo hello from the pod | nc -l -p 8080; done",
    );
    for kubectl in kubectl_versions() {
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["port-forward", "pod/server", ":8080"])
            .env("HOME", c.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let line = lines.next().expect("a forwarding line").unwrap();
        let port: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        let mut got = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                got.clear();
                let _ = tcp.read_to_string(&mut got);
                if got.contains("hello from the pod") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(got.contains("hello from the pod"), "{kubectl:?}: {got:?}");
        eprintln!("{kubectl:?}: port-forward works");
    }
}

#[test]
fn attach_streams_a_running_containers_output() {
    let (_registry, c) = cluster();
    if !serves_streams(&c) {
        return;
    }
    start_pod(
        &c,
        "ticker",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done",
    );
    for kubectl in kubectl_versions() {
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["attach", "ticker", "-c", "main"])
            .env("HOME", c.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        let _ = child.kill();
        let _ = child.wait();
        let line = line.unwrap_or_else(|_| panic!("{kubectl:?}: no output from attach"));
        assert!(line.starts_with("tick "), "{kubectl:?}: {line}");
    }
}
