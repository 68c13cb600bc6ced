//! End-to-end: LimitRange and ResourceQuota as upstream, with quota counted in provisioned
//! sizes: LimitRange defaults that feed a pod's size and refusals above its max, a `cpu: 1`
//! quota that admits four of the smallest pods and refuses the fifth, the quota's usage in
//! `kubectl get/describe quota`, a Deployment held at what the quota allows (FailedCreate) and
//! released by scaling down, and `count/deployments.apps`.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn pod_manifest(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: quota}}\nspec:\n  containers:\n  - name: main\n    image: busybox\n{resources}"
    )
}

fn refused(c: &Cluster, manifest: &str) -> String {
    let out = c.kubectl_with(&c.kubectl, &["create", "-f", "-"], Some(manifest));
    assert!(!out.status.success(), "accepted:\n{manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn used(c: &Cluster, quota: &str, resource: &str) -> Option<String> {
    let q = c.get_json(&["quota", quota]);
    q["status"]["used"][resource].as_str().map(str::to_string)
}

fn wait_used(c: &Cluster, quota: &str, resource: &str, want: &str) {
    eventually(c, LONG, &format!("{quota} {resource} used {want}"), || {
        (used(c, quota, resource).as_deref() == Some(want)).then_some(())
    });
}

#[test]
fn limit_range_defaults_feed_sizing_and_max_is_enforced() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 512Mi}\n    defaultRequest: {cpu: 250m, memory: 256Mi}\n    max: {cpu: \"1\", memory: 1Gi}\n  - type: PersistentVolumeClaim\n    max: {storage: 1Gi}\n",
    );
    c.ok_stdin(&["create", "-f", "-"], &pod_manifest("plain", ""));
    let pod = c.get_json(&["pod", "plain"]);
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["cpu"], "500m", "{resources}");
    assert_eq!(resources["limits"]["memory"], "512Mi", "{resources}");
    assert_eq!(resources["requests"]["cpu"], "250m", "{resources}");
    assert_eq!(resources["requests"]["memory"], "256Mi", "{resources}");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container main; cpu, memory limit for container main"
    );
    // The defaulted limits are what the pod is sized by (0.5 vCPU needs at least 1 GiB).
    assert_eq!(
        annotations["nodeless.io/capacity-provisioned"],
        "0.5vCPU 1GiB"
    );
    assert_eq!(pod["status"]["qosClass"], "Burstable");

    let big = pod_manifest("big", "    resources:\n      limits: {cpu: \"2\"}\n");
    let err = refused(&c, &big);
    assert!(
        err.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{err}"
    );

    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {storage: 5Gi}\n";
    let err = refused(&c, claim);
    assert!(
        err.contains("maximum storage usage per PersistentVolumeClaim is 1Gi, but request is 5Gi"),
        "{err}"
    );
}

#[test]
fn a_cpu_quota_counts_provisioned_sizes() {
    let c = Cluster::start();
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\nspec:\n  hard: {cpu: \"1\", memory: 4Gi, pods: \"10\"}\n",
    );
    // No limits: every pod gets the smallest size, 0.25 vCPU and 0.5 GiB.
    for i in 1..=4 {
        c.ok_stdin(&["create", "-f", "-"], &pod_manifest(&format!("p{i}"), ""));
    }
    let err = refused(&c, &pod_manifest("p5", ""));
    assert!(
        err.contains("pods \"p5\" is forbidden: exceeded quota: compute, requested: cpu=250m, used: cpu=1, limited: cpu=1"),
        "{err}"
    );
    let quota = c.get_json(&["quota", "compute"]);
    assert_eq!(quota["status"]["used"]["cpu"], "1", "{quota}");
    assert_eq!(quota["status"]["used"]["memory"], "2Gi", "{quota}");
    assert_eq!(quota["status"]["used"]["pods"], "4", "{quota}");
    eventually(&c, LONG, "status.hard from the controller", || {
        let q = c.get_json(&["quota", "compute"]);
        (q["status"]["hard"]["cpu"] == "1").then_some(())
    });
    let described = c.ok(&["describe", "quota", "compute"]);
    let cpu_line = described
        .lines()
        .find(|l| l.trim_start().starts_with("cpu"))
        .unwrap_or_default();
    assert_eq!(
        cpu_line.split_whitespace().collect::<Vec<_>>(),
        ["cpu", "1", "1"],
        "{described}"
    );
    let table = c.ok(&["get", "quota", "compute"]);
    assert!(table.contains("cpu: 1/1"), "{table}");

    // Deleting a pod releases its share (the controller recounts).
    c.ok(&["delete", "pod", "p1", "--wait=true"]);
    wait_used(&c, "compute", "cpu", "750m");
    // A dry run is checked but not charged.
    let out = c.kubectl_with(
        &c.kubectl,
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod_manifest("p5", "")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(used(&c, "compute", "cpu").as_deref(), Some("750m"));
    c.ok_stdin(&["create", "-f", "-"], &pod_manifest("p5", ""));
    assert_eq!(used(&c, "compute", "cpu").as_deref(), Some("1"));
    // A bigger pod is counted in its size: 0.5 vCPU is over what is left.
    c.ok(&["delete", "pod", "p2", "--wait=true"]);
    wait_used(&c, "compute", "cpu", "750m");
    let half = pod_manifest(
        "half",
        "    resources:\n      limits: {cpu: 300m, memory: 600Mi}\n",
    );
    let err = refused(&c, &half);
    assert!(
        err.contains(
            "exceeded quota: compute, requested: cpu=500m, used: cpu=750m, limited: cpu=1"
        ),
        "{err}"
    );
    // A pod that finishes stops counting.
    let short = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: short\n  annotations: {sim.nodeless.io/run-seconds: \"1\"}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n";
    c.ok_stdin(&["create", "-f", "-"], short);
    assert_eq!(used(&c, "compute", "cpu").as_deref(), Some("1"));
    eventually(&c, LONG, "the short pod Succeeded", || {
        let pod = c.get_json(&["pod", "short"]);
        (pod["status"]["phase"] == "Succeeded").then_some(())
    });
    wait_used(&c, "compute", "cpu", "750m");
    assert_eq!(used(&c, "compute", "pods").as_deref(), Some("3"));
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: busybox\n"
    )
}

fn active_pods(c: &Cluster, app: &str) -> usize {
    let list = c.get_json(&["pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_deployment_is_held_at_the_quota_and_scaling_down_frees_it() {
    let c = Cluster::start();
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\nspec:\n  hard: {cpu: \"1\"}\n",
    );
    c.ok_stdin(&["apply", "-f", "-"], &deployment("web", 6));
    eventually(&c, LONG, "a FailedCreate event for exceeded quota", || {
        let events = c.get_json(&["events", "--field-selector", "reason=FailedCreate"]);
        let found = events["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("exceeded quota: compute"))
            })
        });
        found.then_some(())
    });
    assert_eq!(active_pods(&c, "web"), 4);
    wait_used(&c, "compute", "cpu", "1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        active_pods(&c, "web"),
        4,
        "the quota holds the ReplicaSet at 4"
    );

    c.ok(&["scale", "deployment", "web", "--replicas=2"]);
    wait_used(&c, "compute", "cpu", "500m");
    c.ok_stdin(&["create", "-f", "-"], &pod_manifest("extra", ""));
    wait_used(&c, "compute", "cpu", "750m");

    // count/deployments.apps: a quota created after the first Deployment counts it at once.
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: objects\nspec:\n  hard: {count/deployments.apps: \"1\"}\n",
    );
    let out = c.kubectl_with(
        &c.kubectl,
        &["create", "-f", "-"],
        Some(&deployment("second", 1)),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployments.apps \"second\" is forbidden: exceeded quota: objects, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"),
        "{err}"
    );
    wait_used(&c, "objects", "count/deployments.apps", "1");
    let quota: Value = c.get_json(&["quota", "objects"]);
    assert_eq!(quota["status"]["hard"]["count/deployments.apps"], "1");
}

#[test]
fn concurrent_creates_stop_at_the_quota() {
    let c = Cluster::start();
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\nspec:\n  hard: {cpu: \"1\"}\n",
    );
    let admitted = std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..8)
            .map(|i| {
                let c = &c;
                scope.spawn(move || {
                    let manifest = pod_manifest(&format!("c{i}"), "");
                    let out = c.kubectl_with(&c.kubectl, &["create", "-f", "-"], Some(&manifest));
                    out.status.success()
                })
            })
            .collect();
        attempts
            .into_iter()
            .map(|a| a.join().unwrap_or(false))
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(admitted, 4, "four 0.25 vCPU pods fit in cpu: 1");
    assert_eq!(used(&c, "compute", "cpu").as_deref(), Some("1"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        used(&c, "compute", "cpu").as_deref(),
        Some("1"),
        "the controller agrees"
    );
}
