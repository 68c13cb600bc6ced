//! End-to-end: StatefulSets on the simulated runtime, through kubectl: OrderedReady creation in
//! ordinal order with one claim per pod, scale down from the highest ordinal keeping claims,
//! scale up reusing them, a rolling update from the highest ordinal down with a partition,
//! ControllerRevisions, a deleted pod coming back under its name, Parallel creation, and the
//! claim retention policy (`whenScaled` / `whenDeleted: Delete`) carried out by the garbage
//! collector.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(90);

/// A StatefulSet manifest with one claim template `www`; `extra_spec` lines go under `spec:`.
fn manifest(name: &str, replicas: i32, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}-svc
  replicas: {replicas}
{extra_spec}  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: main
        image: {image}
        resources:
          limits:
            cpu: 250m
            memory: 64Mi
        volumeMounts:
        - name: www
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"
    )
}

/// The set's pods by name.
fn pods(c: &Cluster, set: &str) -> BTreeMap<String, Value> {
    let list = c.get_json(&["pods", "-l", &format!("app={set}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                p.clone(),
            )
        })
        .collect()
}

/// The claims labelled with the set's selector, by name.
fn claims(c: &Cluster, set: &str) -> BTreeMap<String, Value> {
    let list = c.get_json(&["pvc", "-l", &format!("app={set}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                p.clone(),
            )
        })
        .collect()
}

fn ready_since(pod: &Value) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && ready_since(pod).is_some()
}

fn created(pod: &Value) -> String {
    pod["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn revision(pod: &Value) -> String {
    pod["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn names(map: &BTreeMap<String, Value>) -> Vec<String> {
    map.keys().cloned().collect()
}

/// Waits until the set has exactly `expected` pods, all Running and Ready, none terminating.
fn wait_ready(c: &Cluster, set: &str, expected: &[&str]) -> BTreeMap<String, Value> {
    eventually(c, LONG, &format!("{set} pods {expected:?} ready"), || {
        let now = pods(c, set);
        let all_ready = now
            .values()
            .all(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null());
        (names(&now) == expected && all_ready).then_some(now)
    })
}

fn status(c: &Cluster, set: &str) -> Value {
    c.get_json(&["statefulset", set])["status"].clone()
}

#[test]
fn ordered_ready_creates_scales_and_rolls_in_ordinal_order() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], &manifest("web", 3, "busybox:1", ""));

    // web-1 appears only once web-0 is Ready, web-2 only once web-1 is: never is a pod seen
    // while a lower ordinal is missing or not ready.
    let first = eventually(&c, LONG, "web-0..2 ready", || {
        let now = pods(&c, "web");
        for (i, name) in ["web-1", "web-2"].iter().enumerate() {
            if now.contains_key(*name) {
                let before = &now[&format!("web-{i}")];
                assert!(
                    is_ready(before),
                    "{name} exists while web-{i} is not ready: {before}"
                );
            }
        }
        (now.len() == 3 && now.values().all(is_ready)).then_some(now)
    });
    assert_eq!(names(&first), ["web-0", "web-1", "web-2"]);
    for i in 0..2 {
        let ready = ready_since(&first[&format!("web-{i}")]).unwrap();
        let next = created(&first[&format!("web-{}", i + 1)]);
        assert!(
            ready <= next,
            "web-{} created at {next} before web-{i} was ready at {ready}",
            i + 1
        );
    }

    // Identity: labels, hostname, subdomain, revision, claims.
    let set_status = eventually(&c, LONG, "status of 3 ready", || {
        let s = status(&c, "web");
        (s["readyReplicas"] == 3 && s["availableReplicas"] == 3).then_some(s)
    });
    assert_eq!(set_status["replicas"], 3);
    assert_eq!(set_status["currentReplicas"], 3);
    assert_eq!(set_status["updatedReplicas"], 3);
    assert_eq!(set_status["collisionCount"], 0);
    assert_eq!(set_status["currentRevision"], set_status["updateRevision"]);
    let first_revision = set_status["updateRevision"].as_str().unwrap().to_owned();
    assert!(first_revision.starts_with("web-"), "{first_revision}");
    for (i, (name, pod)) in first.iter().enumerate() {
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name.as_str());
        assert_eq!(labels["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(revision(pod), first_revision);
        assert_eq!(pod["spec"]["hostname"], name.as_str());
        assert_eq!(pod["spec"]["subdomain"], "web-svc");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("StatefulSet"), Some(true))
        );
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "www")
            .unwrap()
            .clone();
        assert_eq!(
            volume["persistentVolumeClaim"]["claimName"],
            format!("www-web-{i}")
        );
    }
    let revisions = c.get_json(&["controllerrevisions"]);
    let revisions = revisions["items"].as_array().unwrap();
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    assert_eq!(revisions[0]["metadata"]["name"], first_revision.as_str());
    assert_eq!(revisions[0]["revision"], 1);
    assert_eq!(
        revisions[0]["data"]["spec"]["template"]["$patch"],
        "replace"
    );
    assert_eq!(
        revisions[0]["metadata"]["ownerReferences"][0]["name"],
        "web"
    );

    let first_claims = claims(&c, "web");
    assert_eq!(
        names(&first_claims),
        ["www-web-0", "www-web-1", "www-web-2"]
    );
    for claim in first_claims.values() {
        // Retain (the default): the claims belong to nobody.
        assert!(claim["metadata"]["ownerReferences"].is_null(), "{claim}");
        assert_eq!(claim["metadata"]["labels"]["app"], "web");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    }

    // Scale down to 1: web-2 goes first, then web-1; the claims stay.
    c.ok(&["scale", "statefulset", "web", "--replicas=1"]);
    eventually(&c, LONG, "scale down to web-0", || {
        let now = pods(&c, "web");
        if now.contains_key("web-2") {
            let web1 = now
                .get("web-1")
                .expect("web-1 gone while web-2 is still there");
            assert!(
                web1["metadata"]["deletionTimestamp"].is_null(),
                "web-1 deleted while web-2 is still there"
            );
        }
        (names(&now) == ["web-0"]).then_some(())
    });
    assert_eq!(
        names(&claims(&c, "web")),
        ["www-web-0", "www-web-1", "www-web-2"]
    );
    eventually(&c, LONG, "status of 1", || {
        let s = status(&c, "web");
        (s["replicas"] == 1 && s["readyReplicas"] == 1).then_some(())
    });

    // Upstream's events on the set: pods and claims created, pods deleted.
    let events = eventually(&c, LONG, "events of web", || {
        let out = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ]);
        out.contains("delete Pod web-1 in StatefulSet web successful")
            .then_some(out)
    });
    for message in [
        "create Pod web-0 in StatefulSet web successful",
        "create Claim www-web-2 Pod web-2 in StatefulSet web success",
        "delete Pod web-2 in StatefulSet web successful",
    ] {
        assert!(events.contains(message), "no {message:?} in\n{events}");
    }

    // Scale back to 3: the same claims are used again.
    c.ok(&["scale", "statefulset", "web", "--replicas=3"]);
    let again = wait_ready(&c, "web", &["web-0", "web-1", "web-2"]);
    let reused = claims(&c, "web");
    for (name, claim) in &first_claims {
        assert_eq!(
            reused[name]["metadata"]["uid"], claim["metadata"]["uid"],
            "{name} recreated"
        );
    }
    assert_eq!(
        again["web-2"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "www-web-2"
    );

    // A new image with partition 2: only web-2 is replaced.
    c.ok(&[
        "patch",
        "statefulset",
        "web",
        "--type=merge",
        "-p",
        &json!({"spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "template": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}
        }})
        .to_string(),
    ]);
    let partial = eventually(&c, LONG, "web-2 updated", || {
        let s = status(&c, "web");
        let done = s["updatedReplicas"] == 1
            && s["readyReplicas"] == 3
            && s["updateRevision"] != first_revision.as_str();
        done.then_some(s)
    });
    let second_revision = partial["updateRevision"].as_str().unwrap().to_owned();
    assert_eq!(partial["currentRevision"], first_revision.as_str());
    assert_eq!(partial["currentReplicas"], 2);
    let now = wait_ready(&c, "web", &["web-0", "web-1", "web-2"]);
    assert_eq!(revision(&now["web-2"]), second_revision);
    assert_eq!(now["web-2"]["spec"]["containers"][0]["image"], "busybox:2");
    assert_eq!(revision(&now["web-1"]), first_revision);
    assert_eq!(revision(&now["web-0"]), first_revision);
    assert_eq!(now["web-0"]["spec"]["containers"][0]["image"], "busybox:1");

    // Partition 0: web-1 then web-0 follow, one at a time from the top.
    c.ok(&[
        "patch",
        "statefulset",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    eventually(&c, LONG, "rollout to web-0", || {
        let now = pods(&c, "web");
        // Never is web-0 replaced while web-1 is still at the old revision.
        if let (Some(w0), Some(w1)) = (now.get("web-0"), now.get("web-1")) {
            if revision(w0) == second_revision {
                assert_eq!(revision(w1), second_revision, "web-0 updated before web-1");
            }
        }
        let s = status(&c, "web");
        (s["currentRevision"] == second_revision.as_str()
            && s["updatedReplicas"] == 3
            && s["readyReplicas"] == 3)
            .then_some(())
    });
    let rolled = wait_ready(&c, "web", &["web-0", "web-1", "web-2"]);
    assert!(created(&rolled["web-1"]) >= created(&rolled["web-2"]));
    assert!(created(&rolled["web-0"]) >= created(&rolled["web-1"]));
    let revisions = c.get_json(&["controllerrevisions"]);
    let mut numbers: Vec<(i64, String)> = revisions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [(1, first_revision.clone()), (2, second_revision.clone())]
    );

    // A deleted pod comes back under its name, with its claim.
    let old_uid = rolled["web-1"]["metadata"]["uid"].clone();
    c.ok(&["delete", "pod", "web-1", "--wait=false"]);
    let back = eventually(&c, LONG, "web-1 recreated", || {
        let now = pods(&c, "web");
        now.get("web-1")
            .filter(|p| p["metadata"]["uid"] != old_uid && is_ready(p))
            .cloned()
    });
    assert_eq!(revision(&back), second_revision);
    assert_eq!(
        claims(&c, "web")["www-web-1"]["metadata"]["uid"],
        first_claims["www-web-1"]["metadata"]["uid"]
    );

    // kubectl's view agrees.
    let out = c.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(
        out.contains("complete") || out.contains("rolling update complete"),
        "{out}"
    );
}

#[test]
fn parallel_pods_and_claim_retention() {
    let c = Cluster::start();
    // With the node cordoned no pod is scheduled, so none becomes Ready.
    let node = eventually(&c, LONG, "a node", || {
        let nodes = c.get_json(&["nodes"]);
        nodes["items"][0]["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
    });
    c.ok(&["cordon", &node]);
    c.ok_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "db",
            3,
            "busybox:1",
            "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy:\n    whenScaled: Delete\n    whenDeleted: Retain\n",
        ),
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &manifest("ordered", 3, "busybox:1", ""),
    );
    // Parallel: all three are created though none is Ready.
    let pending = eventually(&c, LONG, "three pending db pods", || {
        let now = pods(&c, "db");
        (now.len() == 3).then_some(now)
    });
    assert!(pending.values().all(|p| !is_ready(p)), "{pending:?}");
    // OrderedReady: only the first, which waits to be Ready.
    eventually(&c, LONG, "ordered status", || {
        let s = status(&c, "ordered");
        (s["observedGeneration"] == 1 && s["replicas"] == 1).then_some(())
    });
    assert_eq!(names(&pods(&c, "ordered")), ["ordered-0"]);
    c.ok(&["uncordon", &node]);
    wait_ready(&c, "db", &["db-0", "db-1", "db-2"]);
    wait_ready(&c, "ordered", &["ordered-0", "ordered-1", "ordered-2"]);
    let first_claims = eventually(&c, LONG, "three claims", || {
        let now = claims(&c, "db");
        (now.len() == 3).then_some(now)
    });
    for claim in first_claims.values() {
        // whenScaled only: pods in range leave their claims unowned.
        assert!(claim["metadata"]["ownerReferences"].is_null(), "{claim}");
    }

    // Scaling down hands the claims of db-1 and db-2 to their pods, and the garbage collector
    // removes them with the pods.
    c.ok(&["scale", "statefulset", "db", "--replicas=1"]);
    wait_ready(&c, "db", &["db-0"]);
    eventually(&c, LONG, "claims of scaled-down pods deleted", || {
        (names(&claims(&c, "db")) == ["www-db-0"]).then_some(())
    });

    // Scale up: new claims for the new pods; db-0 kept its own.
    c.ok(&["scale", "statefulset", "db", "--replicas=2"]);
    wait_ready(&c, "db", &["db-0", "db-1"]);
    let now = eventually(&c, LONG, "two claims", || {
        let now = claims(&c, "db");
        (names(&now) == ["www-db-0", "www-db-1"]).then_some(now)
    });
    assert_eq!(
        now["www-db-0"]["metadata"]["uid"],
        first_claims["www-db-0"]["metadata"]["uid"]
    );
    assert_ne!(
        now["www-db-1"]["metadata"]["uid"],
        first_claims["www-db-1"]["metadata"]["uid"]
    );

    // A deleted pod comes back under its name.
    let old_uid = pods(&c, "db")["db-0"]["metadata"]["uid"].clone();
    c.ok(&["delete", "pod", "db-0", "--wait=false"]);
    eventually(&c, LONG, "db-0 recreated", || {
        let now = pods(&c, "db");
        now.get("db-0")
            .filter(|p| p["metadata"]["uid"] != old_uid && is_ready(p))
            .map(|_| ())
    });

    // whenDeleted: Delete: the claims belong to the set and go with it.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "cache",
            2,
            "busybox:1",
            "  persistentVolumeClaimRetentionPolicy:\n    whenDeleted: Delete\n",
        ),
    );
    wait_ready(&c, "cache", &["cache-0", "cache-1"]);
    let set_uid = c.get_json(&["statefulset", "cache"])["metadata"]["uid"].clone();
    let owned = eventually(&c, LONG, "claims owned by the set", || {
        let now = claims(&c, "cache");
        let all_owned = now
            .values()
            .all(|cl| cl["metadata"]["ownerReferences"][0]["uid"] == set_uid);
        (now.len() == 2 && all_owned).then_some(now)
    });
    assert_eq!(names(&owned), ["www-cache-0", "www-cache-1"]);
    c.ok(&["delete", "statefulset", "cache", "--wait=false"]);
    eventually(&c, LONG, "claims deleted with the set", || {
        (claims(&c, "cache").is_empty() && pods(&c, "cache").is_empty()).then_some(())
    });
    // The db set's claims are untouched.
    assert_eq!(names(&claims(&c, "db")), ["www-db-0", "www-db-1"]);
}

#[test]
fn update_strategies_start_ordinal_and_failed_pods() {
    let c = Cluster::start();
    // Ordinals from 10, Parallel; rolling updates two at a time, pods available 4 s after Ready.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "app",
            4,
            "busybox:1",
            "  podManagementPolicy: Parallel\n  ordinals:\n    start: 10\n  minReadySeconds: 4\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 2\n",
        ),
    );
    let all = wait_ready(&c, "app", &["app-10", "app-11", "app-12", "app-13"]);
    assert_eq!(
        all["app-10"]["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "10"
    );
    assert_eq!(
        names(&claims(&c, "app")),
        ["www-app-10", "www-app-11", "www-app-12", "www-app-13"]
    );
    let initial = eventually(&c, LONG, "4 available", || {
        let s = status(&c, "app");
        (s["availableReplicas"] == 4).then(|| s["updateRevision"].as_str().unwrap().to_owned())
    });
    c.ok(&["set", "image", "statefulset/app", "main=busybox:2"]);
    // Two pods are replaced at once (never more), from the top: app-13 and app-12 first.
    let mut saw_two_unavailable = false;
    eventually(&c, LONG, "app rolled out", || {
        let s = status(&c, "app");
        let available = s["availableReplicas"].as_i64().unwrap_or(0);
        assert!(
            available >= 2 || s["observedGeneration"] != 2,
            "more than 2 unavailable: {s}"
        );
        if available == 2 {
            saw_two_unavailable = true;
        }
        (s["observedGeneration"] == 2
            && s["updateRevision"] != initial.as_str()
            && s["currentRevision"] == s["updateRevision"]
            && s["updatedReplicas"] == 4
            && s["availableReplicas"] == 4)
            .then_some(())
    });
    assert!(saw_two_unavailable, "never saw two pods replaced at once");

    // A failed pod is deleted and recreated under its name.
    let failed_uid = pods(&c, "app")["app-11"]["metadata"]["uid"].clone();
    c.ok(&[
        "patch",
        "pod",
        "app-11",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    eventually(&c, LONG, "failed app-11 replaced", || {
        pods(&c, "app")
            .get("app-11")
            .filter(|p| p["metadata"]["uid"] != failed_uid && is_ready(p))
            .map(|_| ())
    });

    // OnDelete: a new template changes no pod until one is deleted.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &manifest(
            "ondel",
            2,
            "busybox:1",
            "  updateStrategy:\n    type: OnDelete\n",
        ),
    );
    let before = wait_ready(&c, "ondel", &["ondel-0", "ondel-1"]);
    let old_revision = revision(&before["ondel-0"]);
    c.ok(&["set", "image", "statefulset/ondel", "main=busybox:2"]);
    let new_revision = eventually(&c, LONG, "new update revision", || {
        let s = status(&c, "ondel");
        (s["observedGeneration"] == 2 && s["updateRevision"] != old_revision.as_str())
            .then(|| s["updateRevision"].as_str().unwrap().to_owned())
    });
    let same = wait_ready(&c, "ondel", &["ondel-0", "ondel-1"]);
    for pod in same.values() {
        assert_eq!(revision(pod), old_revision);
        assert_eq!(
            pod["metadata"]["uid"],
            before[pod["metadata"]["name"].as_str().unwrap()]["metadata"]["uid"]
        );
    }
    c.ok(&["delete", "pod", "ondel-1", "--wait=false"]);
    let after = eventually(&c, LONG, "ondel-1 recreated at the new revision", || {
        let now = pods(&c, "ondel");
        let updated = now
            .get("ondel-1")
            .is_some_and(|p| revision(p) == new_revision && is_ready(p));
        (updated && now.len() == 2).then_some(now)
    });
    assert_eq!(revision(&after["ondel-0"]), old_revision);
    assert_eq!(
        after["ondel-1"]["spec"]["containers"][0]["image"],
        "busybox:2"
    );
    let s = eventually(&c, LONG, "OnDelete status", || {
        let s = status(&c, "ondel");
        (s["updatedReplicas"] == 1 && s["readyReplicas"] == 2).then_some(s)
    });
    assert_eq!(s["currentRevision"], old_revision.as_str());
    assert_eq!(s["currentReplicas"], 1);
}
