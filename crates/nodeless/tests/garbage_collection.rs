//! End-to-end: the garbage collector against the real binary, driven by kubectl:
//! background, orphan and foreground cascading deletion, dependents with several owners, and
//! the deletion of a namespace with everything in it.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{json, Value};

/// Polls `check` until it holds, panicking with `what` and the server log after a generous
/// deadline.
fn wait_until(c: &Cluster, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; log:\n{}", c.log());
}

/// The object (`kind/name`), or `None` once it is gone.
fn get(c: &Cluster, what: &str) -> Option<Value> {
    let out = c.kubectl(&["get", what, "-o", "json"]);
    if out.status.success() {
        return Some(serde_json::from_slice(&out.stdout).expect("JSON"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "kubectl get {what}: {stderr}"
    );
    None
}

fn uid(c: &Cluster, what: &str) -> String {
    c.get_json(&[what])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string()
}

/// An owner reference to `kind/name` (apiVersion v1) with the given uid.
fn owner(kind: &str, name: &str, uid: &str, block: bool) -> Value {
    json!({ "apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block })
}

fn create_configmap(c: &Cluster, name: &str, owners: Vec<Value>, finalizers: &[&str]) {
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "ownerReferences": owners, "finalizers": finalizers },
        "data": { "k": "v" },
    });
    c.ok_stdin(&["create", "-f", "-"], &manifest.to_string());
}

/// Removes every finalizer of `what` (`kind/name`) in `namespace`, as its controller would.
fn drop_finalizers(c: &Cluster, what: &str, namespace: &str) {
    c.ok(&[
        "patch",
        what,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn background_deletion_removes_dependents_of_any_kind() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "parent", "--from-literal=a=b"]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "secret-parent",
        "--from-literal=a=b",
    ]);
    let parent = uid(&c, "configmap/parent");
    let secret = uid(&c, "secret/secret-parent");
    // An owner of a kind that is not served is never taken for absent.
    let unserved = json!({ "apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "00000000-0000-0000-0000-000000000001" });
    create_configmap(&c, "unserved-owner", vec![unserved], &[]);
    create_configmap(
        &c,
        "child-1",
        vec![owner("ConfigMap", "parent", &parent, false)],
        &[],
    );
    create_configmap(
        &c,
        "child-2",
        vec![owner("ConfigMap", "parent", &parent, true)],
        &[],
    );
    create_configmap(
        &c,
        "grandchild",
        vec![
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "name": "child-1", "uid": uid(&c, "configmap/child-1") }),
        ],
        &[],
    );
    create_configmap(
        &c,
        "of-secret",
        vec![owner("Secret", "secret-parent", &secret, false)],
        &[],
    );
    // A reference whose uid matches no object (a previous incarnation) is dangling.
    create_configmap(
        &c,
        "stale",
        vec![owner(
            "ConfigMap",
            "parent",
            "11111111-2222-3333-4444-555555555555",
            false,
        )],
        &[],
    );
    wait_until(&c, "the stale dependent to go", || {
        get(&c, "configmap/stale").is_none()
    });

    c.ok(&["delete", "configmap", "parent", "--timeout=120s"]);
    c.ok(&["delete", "secret", "secret-parent", "--timeout=120s"]);
    for name in ["child-1", "child-2", "grandchild", "of-secret"] {
        wait_until(&c, &format!("{name} to be collected"), || {
            get(&c, &format!("configmap/{name}")).is_none()
        });
    }
    assert!(
        get(&c, "configmap/unserved-owner").is_some(),
        "an unverifiable owner must keep its dependent"
    );
}

#[test]
fn orphan_deletion_keeps_dependents_without_the_reference() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "parent", "--from-literal=a=b"]);
    c.ok(&["create", "configmap", "other-owner", "--from-literal=a=b"]);
    let parent = uid(&c, "configmap/parent");
    let other = uid(&c, "configmap/other-owner");
    create_configmap(
        &c,
        "child-1",
        vec![owner("ConfigMap", "parent", &parent, true)],
        &[],
    );
    create_configmap(
        &c,
        "child-2",
        vec![
            owner("ConfigMap", "parent", &parent, false),
            owner("ConfigMap", "other-owner", &other, false),
        ],
        &[],
    );
    // kubectl waits until the parent is gone, which takes the collector.
    c.ok(&[
        "delete",
        "configmap",
        "parent",
        "--cascade=orphan",
        "--timeout=120s",
    ]);
    wait_until(&c, "the parent to go", || {
        get(&c, "configmap/parent").is_none()
    });
    let child_1 = get(&c, "configmap/child-1").expect("child-1 is orphaned, not deleted");
    assert!(owner_uids(&child_1).is_empty(), "{child_1}");
    let child_2 = get(&c, "configmap/child-2").expect("child-2 is orphaned, not deleted");
    assert_eq!(owner_uids(&child_2), vec![other.clone()], "{child_2}");
    // Some time later they are still there.
    c.ok(&["create", "configmap", "marker", "--from-literal=a=b"]);
    let marker = uid(&c, "configmap/marker");
    create_configmap(
        &c,
        "marker-child",
        vec![owner("ConfigMap", "marker", &marker, false)],
        &[],
    );
    c.ok(&["delete", "configmap", "marker"]);
    wait_until(&c, "the marker's child to be collected", || {
        get(&c, "configmap/marker-child").is_none()
    });
    assert!(get(&c, "configmap/child-1").is_some());
    assert!(get(&c, "configmap/child-2").is_some());
}

#[test]
fn foreground_deletion_waits_for_blocking_dependents() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "parent", "--from-literal=a=b"]);
    let parent = uid(&c, "configmap/parent");
    // `held` keeps a finalizer of its own, so the parent must wait for it.
    create_configmap(
        &c,
        "held",
        vec![owner("ConfigMap", "parent", &parent, true)],
        &["example.com/hold"],
    );
    create_configmap(
        &c,
        "child",
        vec![owner("ConfigMap", "parent", &parent, true)],
        &[],
    );
    create_configmap(
        &c,
        "loose",
        vec![owner("ConfigMap", "parent", &parent, false)],
        &[],
    );
    let child = uid(&c, "configmap/child");
    create_configmap(
        &c,
        "grandchild",
        vec![owner("ConfigMap", "child", &child, true)],
        &[],
    );

    c.ok(&[
        "delete",
        "configmap",
        "parent",
        "--cascade=foreground",
        "--wait=false",
    ]);
    wait_until(&c, "the blocking dependents to go", || {
        get(&c, "configmap/child").is_none()
            && get(&c, "configmap/grandchild").is_none()
            && get(&c, "configmap/held")
                .is_some_and(|h| h["metadata"]["deletionTimestamp"].is_string())
    });
    let waiting = get(&c, "configmap/parent").expect("the parent waits for `held`");
    assert!(
        waiting["metadata"]["deletionTimestamp"].is_string(),
        "{waiting}"
    );
    let finalizers = waiting["metadata"]["finalizers"].to_string();
    assert!(finalizers.contains("foregroundDeletion"), "{waiting}");

    drop_finalizers(&c, "configmap/held", "default");
    wait_until(&c, "the parent and the rest to go", || {
        get(&c, "configmap/held").is_none()
            && get(&c, "configmap/parent").is_none()
            && get(&c, "configmap/loose").is_none()
    });
}

#[test]
fn foreground_deletion_through_kubectl_wait() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "parent", "--from-literal=a=b"]);
    let parent = uid(&c, "configmap/parent");
    create_configmap(
        &c,
        "child",
        vec![owner("ConfigMap", "parent", &parent, true)],
        &[],
    );
    // kubectl waits for the parent, which goes only after the child.
    c.ok(&[
        "delete",
        "configmap",
        "parent",
        "--cascade=foreground",
        "--timeout=120s",
    ]);
    assert!(
        get(&c, "configmap/child").is_none(),
        "the blocking child goes before its owner"
    );
}

#[test]
fn a_dependent_with_two_owners_survives_one() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "first", "--from-literal=a=b"]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "second",
        "--from-literal=a=b",
    ]);
    let first = uid(&c, "configmap/first");
    let second = uid(&c, "secret/second");
    create_configmap(
        &c,
        "shared",
        vec![
            owner("ConfigMap", "first", &first, false),
            owner("Secret", "second", &second, false),
        ],
        &[],
    );
    c.ok(&["delete", "configmap", "first"]);
    wait_until(&c, "the dangling reference to go", || {
        get(&c, "configmap/shared").is_some_and(|s| owner_uids(&s) == vec![second.clone()])
    });
    c.ok(&["delete", "secret", "second"]);
    wait_until(&c, "the shared dependent to be collected", || {
        get(&c, "configmap/shared").is_none()
    });
}

#[test]
fn a_cluster_scoped_owner_collects_namespaced_dependents() {
    let c = Cluster::start();
    let volume = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": { "name": "volume" },
        "spec": {
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "hostPath": { "path": "/tmp/volume" },
        },
    });
    c.ok_stdin(&["create", "-f", "-"], &volume.to_string());
    let volume_uid = uid(&c, "persistentvolume/volume");
    create_configmap(
        &c,
        "of-volume",
        vec![owner("PersistentVolume", "volume", &volume_uid, false)],
        &[],
    );
    // Another reference to the same uid in a namespace: still the same cluster-scoped owner.
    c.ok(&["create", "namespace", "other"]);
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "of-volume", "namespace": "other",
            "ownerReferences": [owner("PersistentVolume", "volume", &volume_uid, true)],
        },
    });
    c.ok_stdin(&["create", "-f", "-"], &manifest.to_string());
    c.ok(&[
        "delete",
        "persistentvolume",
        "volume",
        "--cascade=foreground",
        "--timeout=120s",
    ]);
    // kubectl returned once the volume was gone: the blocking dependent went first.
    let other = c.kubectl(&["get", "configmap", "of-volume", "-n", "other"]);
    assert!(
        !other.status.success(),
        "the blocking dependent outlived its owner"
    );
    wait_until(&c, "the non-blocking dependent to go", || {
        get(&c, "configmap/of-volume").is_none()
    });
}

#[test]
fn foreground_deletion_of_a_cycle_finishes() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "a", "--from-literal=k=v"]);
    let a = uid(&c, "configmap/a");
    create_configmap(&c, "b", vec![owner("ConfigMap", "a", &a, true)], &[]);
    let b = uid(&c, "configmap/b");
    c.ok(&[
        "patch",
        "configmap",
        "a",
        "--type=merge",
        "-p",
        &json!({ "metadata": { "ownerReferences": [owner("ConfigMap", "b", &b, true)] } })
            .to_string(),
    ]);
    c.ok(&[
        "delete",
        "configmap",
        "a",
        "--cascade=foreground",
        "--wait=false",
    ]);
    wait_until(&c, "both halves of the cycle to go", || {
        get(&c, "configmap/a").is_none() && get(&c, "configmap/b").is_none()
    });
}

#[test]
fn a_deleted_namespace_terminates_empties_and_goes() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "doomed"]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "-n",
        "doomed",
    ]);
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:80",
        "-n",
        "doomed",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=k=v",
        "-n",
        "doomed",
    ]);
    // A finalizer that only the test removes holds the namespace in Terminating.
    let held = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "held", "namespace": "doomed", "finalizers": ["test.nodeless.io/hold"] },
    });
    c.ok_stdin(&["create", "-f", "-"], &held.to_string());
    wait_until(&c, "the deployment's pods", || {
        c.ok(&["get", "pods", "-n", "doomed", "-o", "name"])
            .lines()
            .count()
            == 2
    });
    c.ok(&["create", "namespace", "kept"]);
    c.ok(&[
        "create",
        "configmap",
        "survivor",
        "--from-literal=k=v",
        "-n",
        "kept",
    ]);

    c.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let ns = c.get_json(&["namespace", "doomed"]);
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
    // Nothing new may be made in it, as upstream's NamespaceLifecycle admission refuses.
    let refused = c.fails(&["create", "configmap", "late", "-n", "doomed"]);
    assert!(
        refused.contains("is forbidden") && refused.contains("because it is being terminated"),
        "{refused}"
    );
    // Everything in it is deleted; the namespace waits for the held object.
    wait_until(&c, "the namespace's content to be deleted", || {
        ["deployments", "replicasets", "pods", "services", "secrets"]
            .iter()
            .all(|kind| {
                c.ok(&["get", kind, "-n", "doomed", "-o", "name"])
                    .trim()
                    .is_empty()
            })
    });
    let held = c.get_json(&["configmap", "held", "-n", "doomed"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let ns = get(&c, "namespace/doomed").expect("still there while an object is held");
    assert_eq!(ns["status"]["phase"], "Terminating");
    // Once the finalizer is gone, so is the namespace; another namespace was not touched.
    drop_finalizers(&c, "configmap/held", "doomed");
    wait_until(&c, "the namespace to go", || {
        get(&c, "namespace/doomed").is_none()
    });
    assert!(get(&c, "namespace/kept").is_some());
    assert_eq!(
        c.ok(&[
            "get",
            "configmap",
            "survivor",
            "-n",
            "kept",
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v"
    );
}
