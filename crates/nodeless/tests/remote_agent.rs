//! End-to-end: agents on other machines. A `nodeless agent --runtime simulated` child process
//! joins a `nodeless server` (or a `nodeless up`) with a bootstrap token from
//! `nodeless token create`: it gets its client and serving certificates through
//! CertificateSigningRequests, its Node goes Ready, pods are scheduled onto it and run, and
//! `kubectl logs` reaches it through its CA-signed serving certificate. Bad tokens are refused.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// A `nodeless agent` child process, killed on drop.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nodeless(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run nodeless")
}

/// `nodeless token create` against the cluster's data dir.
fn create_token(c: &Cluster, ttl: &str) -> String {
    let out = nodeless(&[
        "token",
        "create",
        "--ttl",
        ttl,
        "--data-dir",
        c.dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The API server's URL, read from the admin kubeconfig.
fn server_url(c: &Cluster) -> String {
    let text = std::fs::read_to_string(&c.kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string()
}

fn agent_args(c: &Cluster, token: &str, node: &str, pod_cidr: &str, dir: &Path) -> Vec<String> {
    [
        "agent",
        "--server",
        &server_url(c),
        "--token",
        token,
        "--ca-cert",
        c.dir.path().join("pki/ca.crt").to_str().unwrap(),
        "--node-name",
        node,
        "--data-dir",
        dir.to_str().unwrap(),
        "--runtime",
        "simulated",
        "--pod-cidr",
        pod_cidr,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_agent(c: &Cluster, token: &str, node: &str, pod_cidr: &str) -> Agent {
    start_agent_in(c, tempfile::tempdir().unwrap(), token, node, pod_cidr)
}

fn start_agent_in(
    c: &Cluster,
    dir: tempfile::TempDir,
    token: &str,
    node: &str,
    pod_cidr: &str,
) -> Agent {
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(agent_args(c, token, node, pod_cidr, dir.path()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nodeless agent");
    Agent { child, dir }
}

/// Runs an agent that is expected to give up: its exit status and its log.
fn agent_refused(c: &Cluster, token: &str, node: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(agent_args(c, token, node, "10.251.0.0/24", dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent with a bad token did not exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn wait_node_ready(c: &Cluster, agent: &Agent, node: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = c.kubectl(&["get", "node", node, "-o", "json"]);
        if let Ok(obj) = serde_json::from_slice::<Value>(&out.stdout) {
            let ready = obj["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|cond| cond["type"] == "Ready" && cond["status"] == "True");
            if ready {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "node {node} is not Ready; agent log:\n{}\nserver log:\n{}",
                agent.log(),
                c.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The node names of the Deployment's Running pods, once `replicas` of them run.
fn running_pods_by_node(c: &Cluster, app: &str, replicas: usize) -> Vec<(String, String)> {
    eventually(c, LIMIT, "the deployment's pods run", || {
        let pods = c.get_json(&["pods", "-l", &format!("app={app}")]);
        let running: Vec<(String, String)> = pods["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        (running.len() == replicas).then_some(running)
    })
}

#[test]
fn an_agent_joins_a_server_with_a_bootstrap_token() {
    let c = Cluster::start_server_in(tempfile::tempdir().unwrap());
    assert!(
        c.log()
            .contains("nodeless agent --server https://127.0.0.1:"),
        "the server logs the join command:\n{}",
        c.log()
    );
    let token = create_token(&c, "1h");
    assert!(
        token.len() == 23 && token.as_bytes()[6] == b'.',
        "token: {token}"
    );
    let id = &token[..6];
    let secret = c.get_json(&[
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");

    let agent = start_agent(&c, &token, "remote-1", "10.250.1.0/24");
    wait_node_ready(&c, &agent, "remote-1");
    // Both certificates came through CSRs, signed and approved in the server.
    let csrs = c.get_json(&["csr"]);
    let signers: Vec<&str> = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|csr| csr["status"]["certificate"].is_string())
        .filter_map(|csr| csr["spec"]["signerName"].as_str())
        .collect();
    assert!(
        signers.contains(&"kubernetes.io/kube-apiserver-client-kubelet"),
        "{csrs}"
    );
    assert!(signers.contains(&"kubernetes.io/kubelet-serving"), "{csrs}");
    let requesters: Vec<&str> = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|csr| csr["spec"]["username"].as_str())
        .collect();
    assert!(
        requesters.contains(&format!("system:bootstrap:{id}").as_str()),
        "{requesters:?}"
    );
    assert!(
        requesters.contains(&"system:node:remote-1"),
        "{requesters:?}"
    );
    let table = c.ok(&["get", "csr"]);
    assert!(table.contains("Approved,Issued"), "{table}");

    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    let pods = running_pods_by_node(&c, "web", 2);
    assert!(pods.iter().all(|(_, node)| node == "remote-1"), "{pods:?}");
    let ip = c.ok(&["get", "pod", &pods[0].0, "-o", "jsonpath={.status.podIP}"]);
    assert!(
        ip.starts_with("10.250.1."),
        "pod IP {ip} from the agent's CIDR"
    );
    let logs = c.ok(&["logs", &pods[0].0]);
    assert!(
        logs.contains("simulated container busybox started"),
        "{logs}"
    );

    // A wrong secret, an unknown id, and an expired token are all refused with a clear error.
    let wrong = format!("{id}.0000000000000000");
    let (ok, err) = agent_refused(&c, &wrong, "bad-1");
    assert!(!ok);
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(err.contains("invalid, expired or deleted"), "{err}");
    let (ok, err) = agent_refused(&c, "zzzzzz.0123456789abcdef", "bad-2");
    assert!(!ok && err.contains("401 Unauthorized"), "{err}");
    c.ok_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-old000", "namespace": "kube-system"},
            "stringData": {"token-id": "old000", "token-secret": "0123456789abcdef",
                           "expiration": "2020-01-01T00:00:00Z",
                           "usage-bootstrap-authentication": "true"}}"#,
    );
    let (ok, err) = agent_refused(&c, "old000.0123456789abcdef", "bad-3");
    assert!(!ok && err.contains("401 Unauthorized"), "{err}");
    let (ok, err) = agent_refused(&c, "not-a-token", "bad-4");
    assert!(!ok && err.contains("not a bootstrap token"), "{err}");
    // The refused agents registered nothing.
    let nodes = c.ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/remote-1");

    // Restarted, the agent uses the client certificate it kept: its token no longer matters.
    let dir = {
        let mut agent = agent;
        let _ = Command::new("kill")
            .arg(agent.child.id().to_string())
            .status();
        let _ = agent.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut agent.dir, dir)
    };
    assert!(dir.path().join("pki/client.crt").exists());
    let agent = start_agent_in(
        &c,
        dir,
        "zzzzzz.0123456789abcdef",
        "remote-1",
        "10.250.1.0/24",
    );
    wait_for_log(&agent, "using the kept client certificate");
    // Its server has a new port and certificate; the Node advertises the port once it reports.
    let logs = eventually(&c, LIMIT, "logs through the restarted agent", || {
        let out = c.kubectl(&["logs", &pods[1].0]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    assert!(logs.contains("started"), "{logs}\n{}", agent.log());
    drop(agent);
}

fn wait_for_log(agent: &Agent, text: &str) {
    let deadline = Instant::now() + LIMIT;
    while !agent.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A CSR object for another signer: the server stores it, `kubectl certificate approve` and
/// `deny` decide it, and no signer of nodeless signs it.
fn csr_manifest(name: &str) -> String {
    use base64::Engine;
    let (request, _key) =
        nodeless_apiserver::certificates::node_certificate_request("someone", &[]).unwrap();
    serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": "example.com/custom",
            "usages": ["client auth"],
            "username": "forged",
        },
    })
    .to_string()
}

#[test]
fn kubectl_approves_and_denies_certificate_signing_requests() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], &csr_manifest("custom-a"));
    c.ok_stdin(&["apply", "-f", "-"], &csr_manifest("custom-b"));
    let a = c.get_json(&["csr", "custom-a"]);
    assert_eq!(
        a["spec"]["username"], "nodeless-admin",
        "the requester is recorded"
    );
    assert!(a["status"]["conditions"].is_null(), "{a}");
    c.ok(&["certificate", "approve", "custom-a"]);
    c.ok(&["certificate", "deny", "custom-b"]);
    let a = c.get_json(&["csr", "custom-a"]);
    assert_eq!(a["status"]["conditions"][0]["type"], "Approved", "{a}");
    assert!(
        a["status"]["conditions"][0]["lastUpdateTime"].is_string(),
        "{a}"
    );
    let b = c.get_json(&["csr", "custom-b"]);
    assert_eq!(b["status"]["conditions"][0]["type"], "Denied", "{b}");
    // A status write cannot undo the decision.
    let mut changed = a.clone();
    changed["status"]["conditions"] = serde_json::json!([]);
    c.ok_stdin(
        &["replace", "--subresource=status", "-f", "-"],
        &changed.to_string(),
    );
    let a = c.get_json(&["csr", "custom-a"]);
    assert_eq!(a["status"]["conditions"][0]["type"], "Approved", "{a}");
    // The request is immutable.
    c.ok(&[
        "patch",
        "csr",
        "custom-a",
        "--type=merge",
        "-p",
        r#"{"spec": {"signerName": "example.com/other"}}"#,
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let a = c.get_json(&["csr", "custom-a"]);
    assert_eq!(a["spec"]["signerName"], "example.com/custom", "{a}");
    assert!(
        a["status"]["certificate"].is_null(),
        "not nodeless's signer: {a}"
    );
    let table = c.ok(&["get", "csr"]);
    assert!(table.contains("SIGNERNAME"), "{table}");
    assert!(table.contains("REQUESTOR"), "{table}");
    assert!(table.contains("Approved"), "{table}");
    assert!(table.contains("Denied"), "{table}");
}

#[test]
fn a_second_agent_joins_nodeless_up_and_pods_spread_over_both() {
    let c = Cluster::start();
    let token = create_token(&c, "10m");
    let agent = start_agent(&c, &token, "remote-2", "10.250.2.0/24");
    wait_node_ready(&c, &agent, "remote-2");
    let nodes = c.get_json(&["nodes"]);
    let ready = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|cond| cond["type"] == "Ready" && cond["status"] == "True")
        })
        .count();
    assert_eq!(ready, 2, "{nodes}");
    c.ok(&[
        "create",
        "deployment",
        "spread",
        "--image=busybox",
        "--replicas=6",
    ]);
    let pods = running_pods_by_node(&c, "spread", 6);
    let on_remote = pods.iter().filter(|(_, n)| n == "remote-2").count();
    assert!(
        (2..=4).contains(&on_remote),
        "pods spread over both nodes: {pods:?}"
    );
    let remote_pod = pods.iter().find(|(_, n)| n == "remote-2").unwrap();
    let logs = c.ok(&["logs", &remote_pod.0]);
    assert!(logs.contains("started"), "{logs}");
    drop(agent);
}

#[test]
fn the_pods_of_a_killed_agent_are_recreated_on_the_other_node() {
    // A short grace period, and pods that do not wait once their node is unreachable.
    let c = Cluster::start_with(&[
        "--node-monitor-grace-period",
        "15s",
        "--default-unreachable-toleration-seconds",
        "0",
    ]);
    let token = create_token(&c, "10m");
    let mut agent = start_agent(&c, &token, "remote-3", "10.250.3.0/24");
    wait_node_ready(&c, &agent, "remote-3");
    c.ok(&[
        "create",
        "deployment",
        "moved",
        "--image=busybox",
        "--replicas=4",
    ]);
    let before = running_pods_by_node(&c, "moved", 4);
    let lost: Vec<String> = before
        .iter()
        .filter(|(_, node)| node == "remote-3")
        .map(|(name, _)| name.clone())
        .collect();
    assert!(!lost.is_empty(), "some pods ran on the agent: {before:?}");

    // The agent's machine goes away: no SIGTERM, no goodbye.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();

    let after = eventually(
        &c,
        Duration::from_secs(90),
        "the pods run on the other node",
        || {
            let pods = c.get_json(&["pods", "-l", "app=moved"]);
            let items = pods["items"].as_array()?;
            let all_elsewhere = items.len() == 4
                && items.iter().all(|p| {
                    p["status"]["phase"] == "Running" && p["spec"]["nodeName"] != "remote-3"
                });
            all_elsewhere.then(|| pods.clone())
        },
    );
    for name in &lost {
        assert!(
            !after.to_string().contains(name.as_str()),
            "{name} was replaced, not kept: {after}"
        );
    }
    let node = c.get_json(&["node", "remote-3"]);
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cond| cond["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "Unknown", "{node}");
    let deployment = c.get_json(&["deployment", "moved"]);
    assert_eq!(deployment["status"]["availableReplicas"], 4, "{deployment}");
}
