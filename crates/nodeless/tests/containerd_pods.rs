//! End-to-end: real pods on the supervised containerd (`--runtime containerd`), with images
//! built from busybox-static and pulled from a registry on loopback through a mirror: a pod
//! runs to completion with its output in its log, exit codes and restarts reach the status,
//! a container over its memory limit is OOMKilled, a missing image backs off, limits become
//! cgroup values, and nothing is left behind when pods go away.

mod common;

use std::process::Command;
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);

/// A registry with `busybox` (as `docker.io/library/busybox:latest`) and a cluster that pulls
/// `docker.io` through it.
fn cluster() -> (Registry, Cluster) {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let cluster = Cluster::start_containerd(Some(&registry.host()), &[]);
    (registry, cluster)
}

fn pod(name: &str, restart_policy: &str, script: &str, extra: Value) -> String {
    let mut container = json!({
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", script],
        "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart_policy, "containers": [container]}
    })
    .to_string()
}

fn pod_json(c: &Cluster, name: &str) -> Value {
    c.get_json(&["pod", name])
}

fn phase(c: &Cluster, name: &str) -> String {
    pod_json(c, name)["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The CRI log of the first attempt of the pod's `main` container.
fn log_file(c: &Cluster, name: &str) -> String {
    let p = pod_json(c, name);
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    let path = c
        .dir
        .path()
        .join(format!("agent/logs/default_{name}_{uid}/main/0.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_pod_runs_to_completion_in_a_real_container() {
    let (_registry, c) = cluster();
    let node = c.get_json(&["nodes"])["items"][0].clone();
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("containerd://"),
        "{node}"
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "hello",
            "Never",
            "echo hello from $(hostname); grep hello /etc/hosts; cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
            json!({}),
        ),
    );
    eventually(&c, LIMIT, "the pod to succeed", || {
        (phase(&c, "hello") == "Succeeded").then_some(())
    });
    let p = pod_json(&c, "hello");
    let status = &p["status"]["containerStatuses"][0];
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{p}");
    assert_eq!(status["state"]["terminated"]["reason"], "Completed", "{p}");
    assert!(status["containerID"]
        .as_str()
        .unwrap_or_default()
        .starts_with("containerd://"));
    assert!(status["imageID"]
        .as_str()
        .unwrap_or_default()
        .contains("sha256:"));
    let ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let subnet = c.network.as_ref().unwrap().subnet.clone();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip} not in {subnet}");
    let log = log_file(&c, "hello");
    assert!(log.contains("stdout F hello from hello"), "{log}");
    assert!(log.contains(&format!("{ip}\thello")), "{log}");
    assert!(
        log.contains(&(64u64 << 20).to_string()),
        "memory limit in the container: {log}"
    );
    // The finished pod's sandbox is released; its log stays.
    eventually(&c, LIMIT, "the sandbox to stop", || {
        let running = c.ctr(&["tasks", "ls"]);
        (!running.contains("RUNNING")).then_some(())
    });
    assert!(!log_file(&c, "hello").is_empty());
}

#[test]
fn exit_codes_restarts_oom_and_pull_failures_reach_the_status() {
    let (_registry, c) = cluster();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod("fails", "Never", "exit 3", json!({})),
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod("crashes", "Always", "echo once; exit 1", json!({})),
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "hungry",
            "Never",
            "dd if=/dev/zero of=/dev/null bs=128M count=1",
            json!({}),
        ),
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "missing",
            "Never",
            "true",
            json!({"image": "no-such-image:v1"}),
        ),
    );
    eventually(&c, LIMIT, "the failing pod to fail", || {
        (phase(&c, "fails") == "Failed").then_some(())
    });
    let failed = &pod_json(&c, "fails")["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(failed["exitCode"], 3);
    assert_eq!(failed["reason"], "Error");

    let oom = eventually(&c, LIMIT, "the hungry pod to be OOM-killed", || {
        let p = pod_json(&c, "hungry");
        let t = p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
        t.is_object().then_some(t)
    });
    assert_eq!(oom["reason"], "OOMKilled", "{oom}");
    assert_eq!(oom["exitCode"], 137, "{oom}");

    let crashing = eventually(&c, LIMIT, "the crashing pod to back off", || {
        let p = pod_json(&c, "crashes");
        let s = p["status"]["containerStatuses"][0].clone();
        (s["restartCount"].as_i64().unwrap_or(0) >= 1
            && s["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            .then_some(s)
    });
    assert_eq!(
        crashing["lastState"]["terminated"]["exitCode"], 1,
        "{crashing}"
    );

    let waiting = eventually(&c, LIMIT, "the missing image to back off", || {
        let p = pod_json(&c, "missing");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ImagePullBackOff").then_some(w)
    });
    assert!(waiting["message"]
        .as_str()
        .unwrap_or_default()
        .contains("no-such-image"));
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=missing",
    ]);
    assert!(events.contains("Failed to pull image"), "{events}");
}

#[test]
fn deleted_pods_leave_nothing_behind() {
    let (_registry, c) = cluster();
    for name in ["one", "two"] {
        c.ok_stdin(
            &["apply", "-f", "-"],
            &pod(name, "Always", "sleep 3600", json!({})),
        );
    }
    eventually(&c, LIMIT, "both pods to run", || {
        (phase(&c, "one") == "Running" && phase(&c, "two") == "Running").then_some(())
    });
    let uid = pod_json(&c, "one")["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cgroup = format!("/sys/fs/cgroup/memory/nodeless/pod{uid}");
    assert!(std::path::Path::new(&cgroup).exists(), "{cgroup}");
    let limit = std::fs::read_to_string(format!("{cgroup}/memory.limit_in_bytes")).unwrap();
    let provisioned = pod_json(&c, "one")["metadata"]["annotations"]
        ["nodeless.io/capacity-provisioned"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(provisioned, "0.25vCPU 0.5GiB");
    assert_eq!(limit.trim(), (512u64 << 20).to_string());
    c.ok(&["delete", "pod", "one", "two", "--grace-period=1"]);
    eventually(&c, LIMIT, "the pods to be gone", || {
        c.ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    eventually(&c, LIMIT, "containerd to hold no container", || {
        c.ctr(&["containers", "ls", "-q"])
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(
        !std::path::Path::new(&cgroup).exists(),
        "{cgroup} left behind"
    );
}

#[test]
fn a_missing_cni_plugin_is_named_with_its_package() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--cni-bin-dir"])
        .arg(empty.path())
        .output()
        .expect("run nodeless");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apt-get install containernetworking-plugins"),
        "{stderr}"
    );
    assert!(!dir.path().join("kubeconfig").exists());
}
