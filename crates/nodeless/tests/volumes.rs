//! End-to-end: volumes through kubectl. The default StorageClass `standard` exists at start;
//! a claim without a class gets it, and a PersistentVolume of the requested size is
//! provisioned and bound; deleting the claim deletes the volume (reclaim policy Delete) or
//! releases it (Retain); a StatefulSet's claims are bound; an operator's edits to the default
//! class survive a restart.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

fn claim_manifest(name: &str, class: Option<&str>, size: &str) -> String {
    let class_line = class
        .map(|c| format!("  storageClassName: {c}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
spec:
{class_line}  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: {size}
"
    )
}

/// The claim once it is Bound.
fn bound_claim(c: &Cluster, name: &str) -> Value {
    eventually(c, LONG, &format!("claim {name} bound"), || {
        let claim = c.get_json(&["pvc", name]);
        (claim["status"]["phase"] == "Bound").then_some(claim)
    })
}

/// Whether a PV of that name exists.
fn volume_exists(c: &Cluster, name: &str) -> bool {
    let out = c.kubectl(&["get", "pv", name, "-o", "name"]);
    out.status.success()
}

#[test]
fn default_class_binds_and_deletes() {
    let c = Cluster::start();
    let classes = eventually(&c, LONG, "the default class", || {
        let out = c.ok(&["get", "storageclass"]);
        out.contains("standard (default)").then_some(out)
    });
    assert!(classes.contains("nodeless.io/local"), "{classes}");
    assert!(classes.contains("Delete"), "{classes}");
    assert!(classes.contains("Immediate"), "{classes}");

    c.ok_stdin(&["apply", "-f", "-"], &claim_manifest("data", None, "3Gi"));
    let claim = bound_claim(&c, "data");
    assert_eq!(claim["spec"]["storageClassName"], "standard");
    let uid = claim["metadata"]["uid"].as_str().unwrap();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(claim["spec"]["volumeName"], pv_name.as_str());
    assert_eq!(claim["status"]["capacity"]["storage"], "3Gi");
    assert_eq!(claim["status"]["accessModes"][0], "ReadWriteOnce");
    let annotations = &claim["metadata"]["annotations"];
    assert_eq!(annotations["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(annotations["pv.kubernetes.io/bound-by-controller"], "yes");

    let pv = c.get_json(&["pv", &pv_name]);
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["capacity"]["storage"], "3Gi");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["storageClassName"], "standard");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["csi"]["driver"], "local.nodeless.io");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], pv_name.as_str());
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "default");
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid);
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "nodeless.io/local"
    );
    let table = c.ok(&["get", "pvc", "data"]);
    assert!(
        table.contains("Bound") && table.contains(&pv_name),
        "{table}"
    );

    // A claim that opts out of classes stays Pending.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &claim_manifest("no-class", Some("\"\""), "1Gi"),
    );

    c.ok(&["delete", "pvc", "data"]);
    eventually(&c, LONG, "the volume deleted", || {
        (!volume_exists(&c, &pv_name)).then_some(())
    });
    let no_class = c.get_json(&["pvc", "no-class"]);
    assert_eq!(no_class["status"]["phase"], "Pending");
    assert_eq!(no_class["spec"]["storageClassName"], "");
}

#[test]
fn retain_class_releases_the_volume() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: keep
provisioner: nodeless.io/local
reclaimPolicy: Retain
volumeBindingMode: Immediate
",
    );
    c.ok_stdin(
        &["apply", "-f", "-"],
        &claim_manifest("kept", Some("keep"), "512Mi"),
    );
    let claim = bound_claim(&c, "kept");
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_owned();
    let pv = c.get_json(&["pv", &pv_name]);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["capacity"]["storage"], "512Mi");
    assert_eq!(pv["spec"]["storageClassName"], "keep");

    c.ok(&["delete", "pvc", "kept"]);
    eventually(&c, LONG, "the volume released", || {
        let pv = c.get_json(&["pv", &pv_name]);
        (pv["status"]["phase"] == "Released").then_some(())
    });
    // Released stays released: no one deletes it.
    std::thread::sleep(Duration::from_secs(2));
    let pv = c.get_json(&["pv", &pv_name]);
    assert_eq!(pv["status"]["phase"], "Released");
}

#[test]
fn statefulset_claims_are_bound() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      containers:
      - name: main
        image: busybox
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
",
    );
    for name in ["www-db-0", "www-db-1"] {
        let claim = eventually(&c, LONG, &format!("claim {name} bound"), || {
            let out = c.kubectl(&["get", "pvc", name, "-o", "json"]);
            let claim: Value = serde_json::from_slice(&out.stdout).ok()?;
            (claim["status"]["phase"] == "Bound").then_some(claim)
        });
        assert_eq!(claim["spec"]["storageClassName"], "standard");
        let pv = c.get_json(&["pv", claim["spec"]["volumeName"].as_str().unwrap()]);
        assert_eq!(pv["status"]["phase"], "Bound");
        assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(pv["spec"]["claimRef"]["name"], name);
    }
}

#[test]
fn operator_edits_to_the_default_class_survive_a_restart() {
    let c = Cluster::start();
    eventually(&c, LONG, "the default class", || {
        c.kubectl(&["get", "storageclass", "standard"])
            .status
            .success()
            .then_some(())
    });
    c.ok(&[
        "annotate",
        "--overwrite",
        "storageclass",
        "standard",
        "storageclass.kubernetes.io/is-default-class=false",
    ]);
    let dir = c.stop();
    let c = Cluster::start_in(dir, &[]);
    c.ok_stdin(&["apply", "-f", "-"], &claim_manifest("later", None, "1Gi"));
    // Once a claim naming the class is bound, the controller has started (and has already
    // ensured the default class).
    c.ok_stdin(
        &["apply", "-f", "-"],
        &claim_manifest("named", Some("standard"), "1Gi"),
    );
    bound_claim(&c, "named");
    let class = c.get_json(&["storageclass", "standard"]);
    assert_eq!(
        class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "false"
    );
    // With no default class, a claim without one waits.
    let claim = c.get_json(&["pvc", "later"]);
    assert_eq!(claim["status"]["phase"], "Pending");
    assert!(claim["spec"]["storageClassName"].is_null());
}
