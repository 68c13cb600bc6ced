//! End-to-end: `kubectl logs` (and the failures of `exec` and `port-forward`) through the API
//! server to an agent's server, against the simulated runtime, whose containers log a line
//! when they start and one when they exit. The agent runs in the test process with its own
//! Node, its server's certificate issued by the cluster's CA, as `nodeless up` runs its own;
//! the pods are bound to that Node by name. Every kubectl version of the supported range runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, kubectl_versions, Cluster};
use nodeless_agent::server::{KubeTargets, ServerTls};
use nodeless_agent::{AgentConfig, PodIpAllocator, Runtime, SimulatedRuntime};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);

/// An agent with its server, in a thread of its own, until dropped.
struct TestAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _state: tempfile::TempDir,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start_agent(c: &Cluster, node: &str) -> TestAgent {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_path_buf();
    let kubeconfig = c.kubeconfig.clone();
    let data_dir = c.dir.path().to_path_buf();
    let node = node.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_agent(kubeconfig, data_dir, state_dir, node, stopped));
    });
    TestAgent {
        stop: Some(stop),
        thread: Some(thread),
        _state: state,
    }
}

async fn run_agent(
    kubeconfig: PathBuf,
    data_dir: PathBuf,
    state_dir: PathBuf,
    node: String,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let ip = "127.0.0.1".parse().unwrap();
    let creds = nodeless_apiserver::pki::issue_agent_serving_cert(&data_dir, &node, &[ip]).unwrap();
    let tls = ServerTls::from_pem(&creds.cert_pem, &creds.key_pem, &creds.ca_pem).unwrap();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let mut config = AgentConfig::simulated();
    config.node_name = node;
    config.node_ip = ip;
    config.kubelet_port = listener.local_addr().unwrap().port();
    config.state_dir = state_dir.clone();
    config.restart_backoff_initial = Duration::from_secs(1);
    config.simulated.sandbox_create_delay = Duration::from_secs(2);
    let addresses = Arc::new(PodIpAllocator::new(config.pod_cidr));
    let runtime: Arc<dyn Runtime> =
        Arc::new(SimulatedRuntime::new(config.simulated.clone(), addresses));
    let targets = Arc::new(KubeTargets::new(client.clone(), runtime.clone()));
    let server = nodeless_agent::server::serve(listener, tls, runtime.clone(), targets, state_dir);
    tokio::select! {
        result = server => panic!("the agent server ended: {result:?}"),
        result = nodeless_agent::run_with_runtime(client, config, runtime) => {
            panic!("the agent ended: {result:?}")
        }
        _ = stopped => {}
    }
}

fn apply_pod(
    c: &Cluster,
    name: &str,
    node: &str,
    policy: &str,
    annotations: Value,
    names: &[&str],
) {
    let containers: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({"name": n, "image": "nginx",
                   "resources": {"limits": {"cpu": "250m", "memory": "512Mi"}}})
        })
        .collect();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"nodeName": node, "restartPolicy": policy, "containers": containers},
    });
    c.ok_stdin(&["apply", "-f", "-"], &pod.to_string());
}

fn pod(c: &Cluster, name: &str) -> Value {
    c.get_json(&["pod", name])
}

fn wait_running(c: &Cluster, name: &str) {
    eventually(c, LIMIT, &format!("{name} running"), || {
        (pod(c, name)["status"]["phase"] == "Running").then_some(())
    });
}

/// Runs kubectl with a deadline: a hang is a failure. The exit status, stdout and stderr.
fn kubectl_timed(
    c: &Cluster,
    kubectl: &Path,
    args: &[&str],
    limit: Duration,
) -> (bool, String, String) {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .env("HOME", c.dir.path())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kubectl {args:?} did not finish in {limit:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logs(c: &Cluster, kubectl: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    kubectl_timed(c, kubectl, &all, Duration::from_secs(30))
}

#[test]
fn kubectl_logs_reads_the_agents_container_logs() {
    let c = Cluster::start();
    let node = "logs-node";
    let _agent = start_agent(&c, node);
    eventually(&c, LIMIT, "the node registers", || {
        let out = c.kubectl(&["get", "node", node, "-o", "json"]);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        (node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()? > 0).then_some(())
    });

    apply_pod(&c, "multi", node, "Always", json!({}), &["app", "side"]);
    // Before its sandbox exists the pod is ContainerCreating, as upstream says.
    let (ok, _, err) = logs(&c, &c.kubectl, &["multi", "-c", "app"]);
    assert!(!ok);
    assert!(
        err.contains("is waiting to start: ContainerCreating") || err.contains("is not available"),
        "{err}"
    );
    wait_running(&c, "multi");
    apply_pod(
        &c,
        "crashy",
        node,
        "Always",
        json!({"sim.nodeless.io/run-seconds": "0.5", "sim.nodeless.io/exit-code": "3"}),
        &["app"],
    );

    for kubectl in kubectl_versions() {
        let k = kubectl.as_path();
        // kubectl picks the first container itself; the API insists on a name.
        let (ok, out, err) = logs(&c, k, &["multi"]);
        assert!(ok, "{err}");
        assert_eq!(out, "simulated container app started (attempt 0)\n");
        let (ok, _, err) = kubectl_timed(
            &c,
            k,
            &["get", "--raw", "/api/v1/namespaces/default/pods/multi/log"],
            Duration::from_secs(30),
        );
        assert!(!ok);
        assert!(
            err.contains(
                "a container name must be specified for pod multi, choose one of: [app side]"
            ),
            "{err}"
        );
        let (ok, out, err) = logs(&c, k, &["multi", "-c", "app"]);
        assert!(ok, "{err}");
        assert_eq!(out, "simulated container app started (attempt 0)\n");
        let (ok, _, err) = logs(&c, k, &["multi", "-c", "nope"]);
        assert!(!ok);
        assert!(
            err.contains("container nope is not valid for pod multi"),
            "{err}"
        );
        let (ok, _, err) = kubectl_timed(
            &c,
            k,
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods/multi/log?container=nope",
            ],
            Duration::from_secs(30),
        );
        assert!(!ok);
        assert!(
            err.contains("(BadRequest)")
                && err.contains("container nope is not valid for pod multi"),
            "{err}"
        );
        let (ok, _, err) = logs(&c, k, &["multi", "-c", "side", "--previous"]);
        assert!(!ok);
        assert!(
            err.contains("previous terminated container \"side\" in pod \"multi\" not found"),
            "{err}"
        );
        let (ok, out, err) = logs(&c, k, &["multi", "-c", "side", "--timestamps"]);
        assert!(ok, "{err}");
        let (time, text) = out.trim_end().split_once(' ').unwrap();
        assert_eq!(text, "simulated container side started (attempt 0)");
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
        let (ok, out, _) = logs(&c, k, &["pod/multi", "-c", "side", "--since=1h"]);
        assert!(ok);
        assert_eq!(out, "simulated container side started (attempt 0)\n");
    }

    eventually(&c, LIMIT, "crashy restarts", || {
        let restarts =
            pod(&c, "crashy")["status"]["containerStatuses"][0]["restartCount"].as_i64()?;
        (restarts >= 1).then_some(())
    });
    for kubectl in kubectl_versions() {
        let k = kubectl.as_path();
        let (ok, out, err) = logs(&c, k, &["crashy", "--previous"]);
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with("simulated container app started (attempt "),
            "{out}"
        );
        assert_eq!(lines[1], "simulated container app exited with code 3");
        let (ok, out, err) = logs(&c, k, &["crashy", "--previous", "--tail=1"]);
        assert!(ok, "{err}");
        assert_eq!(out, "simulated container app exited with code 3\n");
        let (ok, out, _) = logs(&c, k, &["crashy", "--previous", "--limit-bytes=9"]);
        assert!(ok);
        assert_eq!(out, "simulated");
    }

    // -f streams until the container ends.
    for (i, kubectl) in kubectl_versions().iter().enumerate() {
        let name = format!("short-{i}");
        apply_pod(
            &c,
            &name,
            node,
            "Never",
            json!({"sim.nodeless.io/run-seconds": "3"}),
            &["app"],
        );
        wait_running(&c, &name);
        let started = Instant::now();
        let (ok, out, err) =
            kubectl_timed(&c, kubectl, &["logs", "-f", &name], Duration::from_secs(30));
        assert!(ok, "{err}");
        assert_eq!(
            out,
            "simulated container app started (attempt 0)\nsimulated container app exited with code 0\n"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    // A pod that is not scheduled has no log yet; streams into it are refused.
    let unscheduled = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nowhere"},
        "spec": {"nodeSelector": {"no-such": "node"}, "containers": [{"name": "app", "image": "nginx",
            "resources": {"limits": {"cpu": "250m", "memory": "512Mi"}}}]},
    });
    c.ok_stdin(&["apply", "-f", "-"], &unscheduled.to_string());
    let (ok, out, err) = logs(&c, &c.kubectl, &["nowhere"]);
    assert!(ok, "{err}");
    assert_eq!(out, "");
    let raw = c.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/nowhere/log?tailLines=-1",
    ]);
    assert!(!raw.status.success());
    let err = String::from_utf8_lossy(&raw.stderr);
    assert!(err.contains("must be greater than or equal to 0"), "{err}");
}

#[test]
fn exec_and_port_forward_on_the_simulated_runtime_fail_with_a_status() {
    let c = Cluster::start();
    let node = "streams-node";
    let _agent = start_agent(&c, node);
    apply_pod(&c, "web", node, "Always", json!({}), &["app"]);
    wait_running(&c, "web");
    for kubectl in kubectl_versions() {
        let k = kubectl.as_path();
        let (ok, _, err) =
            kubectl_timed(&c, k, &["exec", "web", "--", "ls"], Duration::from_secs(30));
        assert!(!ok);
        assert!(err.contains("not supported by this runtime: exec"), "{err}");
        let (ok, _, err) = kubectl_timed(
            &c,
            k,
            &["attach", "web", "-c", "app"],
            Duration::from_secs(30),
        );
        assert!(!ok);
        assert!(
            err.contains("not supported by this runtime: attach"),
            "{err}"
        );
        let (ok, _, err) = kubectl_timed(
            &c,
            k,
            &["port-forward", "pod/web", "0:80"],
            Duration::from_secs(30),
        );
        assert!(!ok);
        assert!(
            err.contains("not supported by this runtime: port-forward"),
            "{err}"
        );
    }
    let (ok, _, err) = kubectl_timed(
        &c,
        &c.kubectl,
        &["exec", "web", "-c", "nope", "--", "ls"],
        Duration::from_secs(30),
    );
    assert!(!ok);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );
}
