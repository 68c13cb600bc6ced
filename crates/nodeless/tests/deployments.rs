//! End-to-end: Deployments, ReplicaSets and ReplicationControllers on the simulated runtime,
//! through kubectl: the pod-template-hash, `kubectl scale`, rolling updates with revision
//! annotations, `kubectl rollout status/history/undo/pause/resume/restart`, Recreate, a
//! progress deadline that passes, adoption of orphaned pods, and an RC that keeps its replicas.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Active (not terminating) pods with this label selector.
fn active_pods(c: &Cluster, selector: &str) -> Vec<Value> {
    items(&c.get_json(&["pods", "-l", selector]))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn replica_sets(c: &Cluster, selector: &str) -> Vec<Value> {
    items(&c.get_json(&["rs", "-l", selector]))
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn deployment_manifest(name: &str, replicas: u32, image: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n{strategy}  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n        resources:\n          limits: {{cpu: 250m, memory: 64Mi}}\n"
    )
}

/// Waits until `kubectl get deploy` shows every replica updated and available.
fn wait_rolled_out(c: &Cluster, name: &str, replicas: i64) {
    eventually(c, LONG, &format!("deployment {name} rolled out"), || {
        let d = c.get_json(&["deploy", name]);
        let s = &d["status"];
        let done = s["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
            && s["updatedReplicas"].as_i64().unwrap_or(0) == replicas
            && s["replicas"].as_i64().unwrap_or(0) == replicas
            && s["availableReplicas"].as_i64().unwrap_or(0) == replicas;
        done.then_some(())
    });
}

#[test]
fn deployment_scales_rolls_out_and_rolls_back() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("web", 3, "busybox:1.36", ""),
    );
    // One ReplicaSet named after the template hash, three pods carrying it.
    let rs = eventually(&c, LONG, "one rs with 3 pods", || {
        let sets = replica_sets(&c, "app=web");
        let pods = active_pods(&c, "app=web");
        (sets.len() == 1 && pods.len() == 3).then(|| sets[0].clone())
    });
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .expect("hash label on the rs")
        .to_string();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        annotation(&rs, "deployment.kubernetes.io/revision"),
        Some("1")
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    for pod in active_pods(&c, "app=web") {
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], hash);
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["name"],
            format!("web-{hash}")
        );
        assert_eq!(pod["metadata"]["generateName"], format!("web-{hash}-"));
    }
    let status = c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    // kubectl scale up and down.
    c.ok(&["scale", "deploy/web", "--replicas=5"]);
    eventually(&c, LONG, "5 pods", || {
        (active_pods(&c, "app=web").len() == 5).then_some(())
    });
    wait_rolled_out(&c, "web", 5);
    c.ok(&["scale", "deploy/web", "--replicas=1"]);
    eventually(&c, LONG, "1 pod", || {
        (active_pods(&c, "app=web").len() == 1).then_some(())
    });
    wait_rolled_out(&c, "web", 1);
    c.ok(&["scale", "deploy/web", "--replicas=3"]);
    wait_rolled_out(&c, "web", 3);

    // An image change rolls out a second ReplicaSet; the first goes to zero.
    c.ok(&["set", "image", "deploy/web", "app=busybox:1.37"]);
    let status = c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let sets = eventually(&c, LONG, "two rs, old at zero", || {
        let sets = replica_sets(&c, "app=web");
        let old = sets
            .iter()
            .find(|s| s["metadata"]["name"] == format!("web-{hash}"))?;
        (sets.len() == 2 && spec_replicas(old) == 0 && old["status"]["replicas"] == 0)
            .then_some(sets)
    });
    let new = sets
        .iter()
        .find(|s| s["metadata"]["name"] != format!("web-{hash}"))
        .expect("the new rs");
    assert_eq!(
        annotation(new, "deployment.kubernetes.io/revision"),
        Some("2")
    );
    assert_eq!(spec_replicas(new), 3);
    assert_eq!(
        new["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    let d = c.get_json(&["deploy", "web"]);
    assert_eq!(
        annotation(&d, "deployment.kubernetes.io/revision"),
        Some("2")
    );
    let conditions: BTreeSet<String> = d["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            format!(
                "{}={}:{}",
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        conditions.contains("Available=True:MinimumReplicasAvailable"),
        "{conditions:?}"
    );
    assert!(
        conditions.contains("Progressing=True:NewReplicaSetAvailable"),
        "{conditions:?}"
    );
    for pod in active_pods(&c, "app=web") {
        assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1.37");
    }
    let history = c.ok(&["rollout", "history", "deploy/web"]);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    let revision_one = c.ok(&["rollout", "history", "deploy/web", "--revision=1"]);
    assert!(revision_one.contains("busybox:1.36"), "{revision_one}");

    // Undo brings the first template back as revision 3, in the first ReplicaSet.
    c.ok(&["rollout", "undo", "deploy/web"]);
    let status = c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let first = eventually(&c, LONG, "the first rs back at 3", || {
        let rs = c.get_json(&["rs", &format!("web-{hash}")]);
        (spec_replicas(&rs) == 3
            && annotation(&rs, "deployment.kubernetes.io/revision") == Some("3"))
        .then_some(rs)
    });
    assert_eq!(
        annotation(&first, "deployment.kubernetes.io/revision-history"),
        Some("1")
    );
    let d = c.get_json(&["deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    assert_eq!(replica_sets(&c, "app=web").len(), 2);
    wait_rolled_out(&c, "web", 3);
    eventually(&c, LONG, "only old-image pods", || {
        let pods = active_pods(&c, "app=web");
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1.36"))
        .then_some(())
    });
}

#[test]
fn paused_rollouts_wait_and_restart_rolls_out() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("api", 2, "busybox:1.36", ""),
    );
    wait_rolled_out(&c, "api", 2);
    c.ok(&["rollout", "pause", "deploy/api"]);
    c.ok(&["set", "image", "deploy/api", "app=busybox:1.37"]);
    eventually(&c, LONG, "Progressing DeploymentPaused", || {
        let d = c.get_json(&["deploy", "api"]);
        d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
            .then_some(())
    });
    // Paused: no new ReplicaSet however long we look (the controller has had its chance).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replica_sets(&c, "app=api").len(), 1);
    c.ok(&["rollout", "resume", "deploy/api"]);
    let status = c.ok(&["rollout", "status", "deploy/api", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    assert_eq!(replica_sets(&c, "app=api").len(), 2);

    c.ok(&["rollout", "restart", "deploy/api"]);
    let status = c.ok(&["rollout", "status", "deploy/api", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let sets = replica_sets(&c, "app=api");
    assert_eq!(sets.len(), 3);
    let newest = sets
        .iter()
        .find(|s| annotation(s, "deployment.kubernetes.io/revision") == Some("3"))
        .expect("revision 3");
    assert!(newest["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .is_string());
    assert_eq!(spec_replicas(newest), 2);
}

#[test]
fn min_ready_seconds_delay_availability() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("slow", 2, "busybox:1.36", "  minReadySeconds: 4\n"),
    );
    // Ready first, available only once ready for 4 s.
    eventually(&c, LONG, "2 ready, 0 available", || {
        let s = c.get_json(&["deploy", "slow"])["status"].clone();
        (s["readyReplicas"] == 2 && s["availableReplicas"].as_i64().unwrap_or(0) == 0).then_some(())
    });
    let rs = &replica_sets(&c, "app=slow")[0];
    assert_eq!(rs["spec"]["minReadySeconds"], 4);
    wait_rolled_out(&c, "slow", 2);
    let rs = &replica_sets(&c, "app=slow")[0];
    assert_eq!(rs["status"]["availableReplicas"], 2);
}

#[test]
fn recreate_history_limit_and_progress_deadline() {
    let c = Cluster::start();
    let recreate = "  strategy: {type: Recreate}\n  revisionHistoryLimit: 1\n";
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("batch", 2, "busybox:1.35", recreate),
    );
    wait_rolled_out(&c, "batch", 2);
    for image in ["busybox:1.36", "busybox:1.37"] {
        c.ok(&["set", "image", "deploy/batch", &format!("app={image}")]);
        let status = c.ok(&["rollout", "status", "deploy/batch", "--timeout=90s"]);
        assert!(status.contains("successfully rolled out"), "{status}");
    }
    // Three revisions, one old ReplicaSet kept.
    eventually(&c, LONG, "history limited to one old rs", || {
        let sets = replica_sets(&c, "app=batch");
        let revisions: BTreeSet<&str> = sets
            .iter()
            .filter_map(|s| annotation(s, "deployment.kubernetes.io/revision"))
            .collect();
        (revisions == BTreeSet::from(["2", "3"])).then_some(())
    });

    // A surge of 0 with an unavailability of 0 could never progress: refused.
    let frozen = "  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 0}\n";
    let out = c.kubectl_with(
        &c.kubectl,
        &["apply", "-f", "-"],
        Some(&deployment_manifest("frozen", 2, "busybox:1.36", frozen)),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may not be 0 when `maxSurge` is 0"),
        "{stderr}"
    );

    // A rollout whose pods never get ready (an init container that runs for an hour) passes
    // its progress deadline.
    let stuck = "  progressDeadlineSeconds: 3\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n";
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("stuck", 1, "busybox:1.36", stuck),
    );
    wait_rolled_out(&c, "stuck", 1);
    c.ok(&[
        "patch",
        "deploy/stuck",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/metadata/annotations","value":{"sim.nodeless.io/run-seconds.wait":"3600"}},
            {"op":"add","path":"/spec/template/spec/initContainers","value":[{"name":"wait","image":"busybox","resources":{"limits":{"cpu":"250m","memory":"64Mi"}}}]}]"#,
    ]);
    eventually(&c, LONG, "ProgressDeadlineExceeded", || {
        let d = c.get_json(&["deploy", "stuck"]);
        d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "ProgressDeadlineExceeded"
            })
            .then_some(())
    });
    let out = c.kubectl(&["rollout", "status", "deploy/stuck", "--timeout=30s"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exceeded its progress deadline"),
        "{stderr}"
    );
    // maxUnavailable 0 kept the old pod serving.
    let d = c.get_json(&["deploy", "stuck"]);
    assert_eq!(d["status"]["availableReplicas"], 1);
}

#[test]
fn orphaned_pods_are_adopted_and_rc_keeps_its_replicas() {
    let c = Cluster::start();
    let rs = |name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: shared}}\n  template:\n    metadata:\n      labels: {{app: shared}}\n    spec:\n      containers:\n      - name: app\n        image: busybox\n        resources:\n          limits: {{cpu: 250m, memory: 64Mi}}\n"
        )
    };
    c.ok_stdin(&["apply", "-f", "-"], &rs("first"));
    eventually(&c, LONG, "3 ready pods", || {
        let r = c.get_json(&["rs", "first"]);
        (r["status"]["readyReplicas"] == 3 && r["status"]["availableReplicas"] == 3).then_some(())
    });
    let names: BTreeSet<String> = active_pods(&c, "app=shared")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3);
    c.ok(&["delete", "rs", "first", "--cascade=orphan"]);
    eventually(&c, LONG, "orphaned pods", || {
        let pods = active_pods(&c, "app=shared");
        (pods.len() == 3
            && pods.iter().all(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|refs| refs.is_empty())
            }))
        .then_some(())
    });
    c.ok_stdin(&["apply", "-f", "-"], &rs("second"));
    let second_uid = c.get_json(&["rs", "second"])["metadata"]["uid"].clone();
    eventually(&c, LONG, "pods adopted by the second rs", || {
        let pods = active_pods(&c, "app=shared");
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == second_uid)
            .then_some(())
    });
    // The same three pods: nothing was created.
    let after: BTreeSet<String> = active_pods(&c, "app=shared")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after, names);
    let owner = &active_pods(&c, "app=shared")[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);

    // A ReplicationController (map selector) replaces a deleted pod and releases a relabelled one.
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: legacy\nspec:\n  replicas: 2\n  selector: {app: legacy}\n  template:\n    metadata:\n      labels: {app: legacy}\n    spec:\n      containers:\n      - name: app\n        image: busybox\n        resources:\n          limits: {cpu: 250m, memory: 64Mi}\n";
    c.ok_stdin(&["apply", "-f", "-"], rc);
    eventually(&c, LONG, "rc ready", || {
        let r = c.get_json(&["rc", "legacy"]);
        (r["status"]["readyReplicas"] == 2 && r["status"]["observedGeneration"] == 1).then_some(())
    });
    let pods = active_pods(&c, "app=legacy");
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually(&c, LONG, "rc replaced the pod", || {
        let pods = active_pods(&c, "app=legacy");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    });
    let relabelled = active_pods(&c, "app=legacy")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&["label", "pod", &relabelled, "app=elsewhere", "--overwrite"]);
    eventually(&c, LONG, "released and replaced", || {
        let released = c.get_json(&["pod", &relabelled]);
        let free = released["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty());
        (free && active_pods(&c, "app=legacy").len() == 2).then_some(())
    });
    c.ok(&["scale", "rc", "legacy", "--replicas=1"]);
    eventually(&c, LONG, "rc scaled to 1", || {
        let r = c.get_json(&["rc", "legacy"]);
        (active_pods(&c, "app=legacy").len() == 1 && r["status"]["replicas"] == 1).then_some(())
    });
}

/// The JSON patch that makes a template's pods never ready (an init container that runs for
/// an hour on the simulated runtime).
const NEVER_READY: &str = r#"[{"op":"add","path":"/spec/template/metadata/annotations","value":{"sim.nodeless.io/run-seconds.wait":"3600"}},
    {"op":"add","path":"/spec/template/spec/initContainers","value":[{"name":"wait","image":"busybox","resources":{"limits":{"cpu":"250m","memory":"64Mi"}}}]}]"#;

#[test]
fn scaling_mid_rollout_is_proportional() {
    let c = Cluster::start();
    let strategy = "  strategy:\n    rollingUpdate: {maxSurge: 3, maxUnavailable: 2}\n";
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("prop", 10, "busybox:1.36", strategy),
    );
    wait_rolled_out(&c, "prop", 10);
    let first = replica_sets(&c, "app=prop")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&["patch", "deploy/prop", "--type=json", "-p", NEVER_READY]);
    // Surge 3 and unavailability 2 of 10: old 8, new 5 (never ready), and there it stays.
    let sizes = |c: &Cluster| -> Option<(i64, i64)> {
        let sets = replica_sets(c, "app=prop");
        if sets.len() != 2 {
            return None;
        }
        let old = sets
            .iter()
            .find(|s| s["metadata"]["name"] == first.as_str())?;
        let new = sets
            .iter()
            .find(|s| s["metadata"]["name"] != first.as_str())?;
        Some((spec_replicas(old), spec_replicas(new)))
    };
    eventually(&c, LONG, "old 8 new 5", || {
        (sizes(&c) == Some((8, 5))).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sizes(&c), Some((8, 5)), "the stuck rollout moved");
    // Scaling to 20 (23 with surge) spreads the 10 extra replicas 6 and 4, as upstream.
    c.ok(&["scale", "deploy/prop", "--replicas=20"]);
    eventually(&c, LONG, "old 14 new 9", || {
        (sizes(&c) == Some((14, 9))).then_some(())
    });
    eventually(&c, LONG, "9 updated, 23 in all", || {
        let s = c.get_json(&["deploy", "prop"])["status"].clone();
        (s["updatedReplicas"] == 9 && s["replicas"] == 23).then_some(())
    });
}

#[test]
fn a_burst_creates_exactly_the_replicas_and_records_events() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("burst", 120, "busybox:1.36", ""),
    );
    wait_rolled_out(&c, "burst", 120);
    assert_eq!(active_pods(&c, "app=burst").len(), 120);
    // No pod was ever created twice over (a surplus would have been deleted).
    let events = c.ok(&["get", "events"]);
    assert!(!events.contains("SuccessfulDelete"), "{events}");
    assert!(events.contains("ScalingReplicaSet"), "{events}");
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(
        !c.log().contains("deleted surplus pods"),
        "surplus pods were created"
    );
    c.ok(&["scale", "deploy/burst", "--replicas=0"]);
    eventually(&c, LONG, "no pods", || {
        active_pods(&c, "app=burst").is_empty().then_some(())
    });
    wait_rolled_out(&c, "burst", 0);
}

#[test]
fn a_restart_neither_duplicates_nor_loses_pods() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &deployment_manifest("steady", 4, "busybox:1.36", ""),
    );
    wait_rolled_out(&c, "steady", 4);
    let names = |c: &Cluster| -> BTreeSet<String> {
        active_pods(c, "app=steady")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let before = names(&c);
    assert_eq!(before.len(), 4);
    let dir = c.stop();
    let c = Cluster::start_in(dir, &[]);
    wait_rolled_out(&c, "steady", 4);
    // Give the controllers time to act on their fresh caches, then look again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(names(&c), before);
    assert_eq!(replica_sets(&c, "app=steady").len(), 1);
    c.ok(&["scale", "deploy/steady", "--replicas=6"]);
    wait_rolled_out(&c, "steady", 6);
    assert!(names(&c).is_superset(&before));
}
