//! End-to-end: the built-in agent on the simulated runtime and the scheduler, through kubectl:
//! the virtual Node and its Lease, pods that run, complete, fail and are deleted, a pod too big
//! for the node, and two hundred pods at once.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Cluster};
use serde_json::Value;

fn wait_node_ready(c: &Cluster) -> String {
    eventually(c, Duration::from_secs(30), "a Ready node", || {
        let out = c.ok(&["get", "nodes", "--no-headers"]);
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
    })
}

fn pod_manifest(name: &str, policy: &str, annotations: &[(&str, &str)], cpu: &str) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{annotations}spec:\n  restartPolicy: {policy}\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits:\n        cpu: \"{cpu}\"\n        memory: 64Mi\n"
    )
}

fn phase(c: &Cluster, pod: &str) -> String {
    c.get_json(&["pod", pod])["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn node_registers_ready_with_a_lease() {
    let c = Cluster::start();
    let node = wait_node_ready(&c);
    let n = c.get_json(&["node", &node]);
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/hostname"],
        node.as_str()
    );
    assert_eq!(n["metadata"]["labels"]["type"], "virtual-kubelet");
    assert!(n["status"]["allocatable"]["cpu"].is_string(), "{n}");
    assert!(n["status"]["capacity"]["pods"].is_string(), "{n}");
    let addresses = n["status"]["addresses"].as_array().unwrap();
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "InternalIP" && a["address"] == "127.0.0.1"));
    assert!(addresses.iter().any(|a| a["type"] == "Hostname"));
    assert!(n["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("simulated://"));
    assert_eq!(n["spec"]["podCIDR"], "10.244.0.0/16");
    let lease = eventually(&c, Duration::from_secs(15), "the node lease", || {
        let out = c.kubectl(&["get", "lease", "-n", "kube-node-lease", &node, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(lease["spec"]["holderIdentity"], node.as_str());
    let renew = lease["spec"]["renewTime"].as_str().unwrap();
    // MicroTime: 2024-01-02T03:04:05.123456Z
    assert_eq!(renew.len(), 27, "{renew}");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
}

#[test]
fn pods_run_complete_fail_and_go_away() {
    let c = Cluster::start();
    wait_node_ready(&c);

    // A pod runs with an IP, conditions and container statuses.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest("web", "Always", &[], "100m"),
    );
    c.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let pod = c.get_json(&["pod", "web"]);
    let status = &pod["status"];
    assert_eq!(status["phase"], "Running");
    let ip = status["podIP"].as_str().unwrap();
    assert!(ip.starts_with("10.244."), "{ip}");
    assert_eq!(status["hostIP"], "127.0.0.1");
    assert!(status["startTime"].is_string());
    for t in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        let cond = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["type"] == t);
        assert_eq!(
            cond.map(|x| x["status"].clone()),
            Some("True".into()),
            "{t}: {status}"
        );
    }
    let cs = &status["containerStatuses"][0];
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert!(cs["containerID"]
        .as_str()
        .unwrap()
        .starts_with("simulated://"));
    assert!(cs["imageID"].as_str().unwrap().starts_with("simulated://"));
    eventually(&c, Duration::from_secs(15), "the Scheduled event", || {
        let out = c.ok(&["describe", "pod", "web"]);
        out.contains("Successfully assigned default/web to")
            .then_some(())
    });
    let wide = c.ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(wide.contains("Running") && wide.contains(ip), "{wide}");

    // restartPolicy Never: Succeeded; with an exit code: Failed.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest(
            "done",
            "Never",
            &[("sim.nodeless.io/run-seconds", "0.5")],
            "100m",
        ),
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest(
            "broken",
            "Never",
            &[("sim.nodeless.io/exit-code", "3")],
            "100m",
        ),
    );
    eventually(&c, Duration::from_secs(30), "pod/done Succeeded", || {
        (phase(&c, "done") == "Succeeded").then_some(())
    });
    let done = c.get_json(&["pod", "done"]);
    let terminated = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0);
    assert_eq!(terminated["reason"], "Completed");
    eventually(&c, Duration::from_secs(30), "pod/broken Failed", || {
        (phase(&c, "broken") == "Failed").then_some(())
    });
    let broken = c.get_json(&["pod", "broken"]);
    let terminated = &broken["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3);
    assert_eq!(terminated["reason"], "Error");

    // OnFailure with a failing container restarts it.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest(
            "flaky",
            "OnFailure",
            &[
                ("sim.nodeless.io/run-seconds", "0.2"),
                ("sim.nodeless.io/exit-code", "1"),
            ],
            "100m",
        ),
    );
    eventually(&c, Duration::from_secs(30), "pod/flaky restarted", || {
        let p = c.get_json(&["pod", "flaky"]);
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"].as_i64().unwrap_or(0) >= 1
            && cs["lastState"]["terminated"]["exitCode"] == 1
            && p["status"]["phase"] == "Running")
            .then_some(())
    });

    // Deleting a running pod (with its grace period) removes it.
    c.ok(&["delete", "pod", "web", "--wait=true", "--timeout=30s"]);
    let gone = c.kubectl(&["get", "pod", "web"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));

    // A pod too big for what the node has left stays Pending, with a condition and an event.
    // The node offers 1024 vCPU; 63 pods of 16 vCPU and `flaky` leave less than 16.
    let allocatable = c.get_json(&["nodes"])["items"][0]["status"]["allocatable"]["cpu"].clone();
    assert_eq!(allocatable, "1024");
    let fillers: String = (0..63)
        .map(|i| {
            format!(
                "---\n{}",
                pod_manifest(&format!("filler-{i}"), "Always", &[], "16")
            )
        })
        .collect();
    c.ok_stdin(&["create", "-f", "-"], &fillers);
    eventually(&c, Duration::from_secs(60), "the fillers bound", || {
        let list = c.get_json(&["pods"]);
        let bound = list["items"]
            .as_array()?
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count();
        (bound >= 63 + 3).then_some(())
    });
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest("huge", "Always", &[], "16"),
    );
    let message = eventually(&c, Duration::from_secs(30), "huge unschedulable", || {
        let p = c.get_json(&["pod", "huge"]);
        let cond = p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|x| x["type"] == "PodScheduled")?
            .clone();
        (cond["status"] == "False" && cond["reason"] == "Unschedulable")
            .then(|| cond["message"].as_str().unwrap_or_default().to_string())
    });
    assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
    assert_eq!(phase(&c, "huge"), "Pending");
    let events = eventually(
        &c,
        Duration::from_secs(15),
        "a FailedScheduling event",
        || {
            let out = c.ok(&["get", "events"]);
            out.contains("FailedScheduling").then_some(out)
        },
    );
    assert!(events.contains("Insufficient cpu"), "{events}");
    assert!(events.contains("pod/huge"), "{events}");

    // Room freed by a deleted pod lets the pending one in.
    c.ok(&["delete", "pod", "filler-0", "--wait=true", "--timeout=30s"]);
    c.ok(&["wait", "--for=condition=Ready", "pod/huge", "--timeout=60s"]);
}

#[test]
fn running_pods_keep_their_ip_across_a_restart() {
    let c = Cluster::start();
    wait_node_ready(&c);
    c.ok_stdin(
        &["apply", "-f", "-"],
        &pod_manifest("keep", "Always", &[], "100m"),
    );
    c.ok(&["wait", "--for=condition=Ready", "pod/keep", "--timeout=60s"]);
    let ip = c.get_json(&["pod", "keep"])["status"]["podIP"].clone();
    let c = Cluster::start_in(c.stop(), &[]);
    wait_node_ready(&c);
    c.ok(&["wait", "--for=condition=Ready", "pod/keep", "--timeout=60s"]);
    let pod = c.get_json(&["pod", "keep"]);
    assert_eq!(pod["status"]["podIP"], ip);
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(c.get_json(&["nodes"])["items"].as_array().unwrap().len(), 1);
}

#[test]
fn two_hundred_pods_all_run() {
    let c = Cluster::start();
    wait_node_ready(&c);
    let manifest: String = (0..200)
        .map(|i| {
            format!(
                "---\n{}",
                pod_manifest(&format!("p{i}"), "Always", &[], "10m")
            )
        })
        .collect();
    let started = Instant::now();
    c.ok_stdin(&["create", "-f", "-"], &manifest);
    let ips = eventually(&c, Duration::from_secs(180), "200 running pods", || {
        let list = c.get_json(&["pods"]);
        let items = list["items"].as_array()?;
        let running: Vec<String> = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
            .collect();
        (running.len() == 200).then_some(running)
    });
    let unique: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), 200, "pod IPs are unique");
    eprintln!("200 pods Running after {:?}", started.elapsed());
}

#[test]
fn describe_tells_the_pods_story() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: storied\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n",
    );
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/storied",
        "--timeout=60s",
    ]);
    let described = eventually(
        &c,
        std::time::Duration::from_secs(30),
        "the kubelet's events",
        || {
            let text = c.ok(&["describe", "pod", "storied"]);
            (text.contains("Started")
                && text.contains("Created")
                && text.contains("Pulled")
                && text.contains("Scheduled"))
            .then_some(text)
        },
    );
    assert!(described.contains("Started container main"), "{described}");
    assert!(described.contains("busybox:1.36"), "{described}");
}
