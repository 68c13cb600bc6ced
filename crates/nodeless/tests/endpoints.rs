//! End-to-end: the EndpointSlice and Endpoints controllers on the simulated runtime, through
//! kubectl: a Deployment behind a Service with a named targetPort (one slice, the resolved
//! port, ready endpoints; scale down; a deleted pod terminating then gone), a headless
//! StatefulSet service (hostnames), a Service without selector with a hand-made EndpointSlice
//! (left alone), `publishNotReadyAddresses`, and `kubectl get endpointslices` /
//! `kubectl describe svc`.

mod common;

use std::time::Duration;

use common::{eventually, kubectl_versions, Cluster};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

/// The managed slices of a Service.
fn slices(c: &Cluster, service: &str) -> Vec<Value> {
    let list = c.get_json(&[
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Every endpoint of the Service's slices.
fn endpoints_of(c: &Cluster, service: &str) -> Vec<Value> {
    slices(c, service)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn ready_count(endpoints: &[Value]) -> usize {
    endpoints
        .iter()
        .filter(|e| e["conditions"]["ready"] == json!(true))
        .count()
}

fn apply(c: &Cluster, manifest: &str) {
    c.ok_stdin(&["apply", "-f", "-"], manifest);
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: main
        image: nginx
        ports:
        - name: http
          containerPort: 8080
        resources:
          limits:
            cpu: 250m
            memory: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    team: frontend
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
";

#[test]
fn deployment_behind_a_service() {
    let c = Cluster::start();
    apply(&c, WEB);

    // One slice with three ready endpoints and the resolved port.
    let slice = eventually(&c, LONG, "3 ready endpoints", || {
        // One list: the slice, its endpoints and its ports from the same snapshot.
        let s = slices(&c, "web");
        let endpoints = s
            .first()
            .and_then(|slice| slice["endpoints"].as_array().cloned())
            .unwrap_or_default();
        (s.len() == 1 && ready_count(&endpoints) == 3).then(|| s[0].clone())
    });
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["team"], "frontend");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("Service"), Some(true))
    );
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    for e in slice["endpoints"].as_array().unwrap() {
        assert_eq!(e["targetRef"]["kind"], "Pod", "{e}");
        assert!(e["nodeName"].is_string(), "{e}");
        assert_eq!(e["conditions"]["serving"], true, "{e}");
        assert_eq!(e["conditions"]["terminating"], false, "{e}");
    }
    assert!(
        slice["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string()
    );

    // The Endpoints of the same name.
    let ep = eventually(&c, LONG, "endpoints with 3 addresses", || {
        let ep = c.get_json(&["endpoints", "web"]);
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(3)).then_some(ep)
    });
    assert_eq!(
        ep["subsets"][0]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string()
    );

    // kubectl shows them.
    let table = c.ok(&["get", "endpointslices"]);
    assert!(table.contains("IPv4") && table.contains("8080"), "{table}");
    // kubectl 1.27 reads the Endpoints, 1.33 the EndpointSlices.
    for kubectl in kubectl_versions() {
        let out = c.kubectl_with(&kubectl, &["describe", "svc", "web"], None);
        let described = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = described
            .lines()
            .find(|l| l.starts_with("Endpoints:"))
            .unwrap_or_default()
            .to_owned();
        assert!(line.contains(":8080"), "{kubectl:?}: {described}");
    }

    // No write when nothing changed: the slice keeps its resourceVersion.
    let version = slices(&c, "web")[0]["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(slices(&c, "web")[0]["metadata"]["resourceVersion"], version);

    // Scale down: two endpoints.
    c.ok(&["scale", "deployment", "web", "--replicas=2"]);
    eventually(&c, LONG, "2 endpoints", || {
        let e = endpoints_of(&c, "web");
        (e.len() == 2 && ready_count(&e) == 2).then_some(())
    });

    // A deleted pod (held by a finalizer) is terminating: serving, not ready; then gone.
    let victim = endpoints_of(&c, "web")[0]["targetRef"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok(&[
        "patch",
        "pod",
        &victim,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    c.ok(&["delete", "pod", &victim, "--wait=false"]);
    let terminating = eventually(&c, LONG, "terminating endpoint", || {
        endpoints_of(&c, "web")
            .into_iter()
            .find(|e| e["targetRef"]["name"] == victim.as_str())
            .filter(|e| e["conditions"]["terminating"] == true)
    });
    assert_eq!(terminating["conditions"]["ready"], false, "{terminating}");
    let ep = c.get_json(&["endpoints", "web"]);
    assert!(
        !ep.to_string().contains(&format!("\"name\":\"{victim}\"")),
        "{ep}"
    );
    c.ok(&[
        "patch",
        "pod",
        &victim,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually(&c, LONG, "victim gone, replacement ready", || {
        let e = endpoints_of(&c, "web");
        let gone = e.iter().all(|e| e["targetRef"]["name"] != victim.as_str());
        (gone && e.len() == 2 && ready_count(&e) == 2).then_some(())
    });

    // The Service loses its selector: its slices go, its Endpoints stay the user's.
    c.ok(&[
        "patch",
        "svc",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/selector"}]"#,
    ]);
    eventually(&c, LONG, "slices deleted", || {
        slices(&c, "web").is_empty().then_some(())
    });

    // The Service is deleted: its Endpoints go too.
    c.ok(&["delete", "svc", "web"]);
    eventually(&c, LONG, "endpoints deleted", || {
        let out = c.kubectl(&["get", "endpoints", "web"]);
        (!out.status.success()).then_some(())
    });
}

#[test]
fn headless_statefulset_service_has_hostnames() {
    let c = Cluster::start();
    apply(
        &c,
        "apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: db
  ports:
  - name: sql
    port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
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
        image: postgres
        resources:
          limits:
            cpu: 250m
            memory: 64Mi
",
    );
    let endpoints = eventually(&c, LONG, "2 ready endpoints", || {
        let e = endpoints_of(&c, "db");
        (e.len() == 2 && ready_count(&e) == 2).then_some(e)
    });
    let mut hostnames: Vec<_> = endpoints
        .iter()
        .map(|e| e["hostname"].as_str().unwrap_or_default().to_owned())
        .collect();
    hostnames.sort();
    assert_eq!(hostnames, vec!["db-0", "db-1"]);
    let slice = &slices(&c, "db")[0];
    assert_eq!(
        slice["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    assert_eq!(slice["ports"][0]["port"], 5432);
    let ep = c.get_json(&["endpoints", "db"]);
    let mut ep_hosts: Vec<_> = ep["subsets"][0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["hostname"].as_str().unwrap_or_default().to_owned())
        .collect();
    ep_hosts.sort();
    assert_eq!(ep_hosts, vec!["db-0", "db-1"]);
}

#[test]
fn selectorless_service_and_hand_made_slice_are_left_alone() {
    let c = Cluster::start();
    apply(
        &c,
        "apiVersion: v1
kind: Service
metadata:
  name: external
spec:
  ports:
  - name: http
    port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: external-1
  labels:
    kubernetes.io/service-name: external
addressType: IPv4
ports:
- name: http
  port: 8000
endpoints:
- addresses: [192.0.2.10]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: external
subsets:
- addresses:
  - ip: 192.0.2.10
  ports:
  - name: http
    port: 8000
",
    );
    let before = c.get_json(&["endpointslice", "external-1"]);
    let endpoints_before = c.get_json(&["endpoints", "external"]);
    // Give the controllers time to (wrongly) act, and poke the Service.
    c.ok(&["label", "svc", "external", "touched=yes"]);
    std::thread::sleep(Duration::from_secs(3));
    let after = c.get_json(&["endpointslice", "external-1"]);
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(after["endpoints"][0]["addresses"], json!(["192.0.2.10"]));
    assert_eq!(slices(&c, "external").len(), 1);
    let endpoints_after = c.get_json(&["endpoints", "external"]);
    assert_eq!(
        endpoints_before["metadata"]["resourceVersion"],
        endpoints_after["metadata"]["resourceVersion"]
    );
}

#[test]
fn not_ready_pods_and_publish_not_ready_addresses() {
    let c = Cluster::start();
    // Pods bound to a node no agent runs: their status is the test's to set.
    apply(
        &c,
        "apiVersion: v1
kind: Pod
metadata:
  name: ghost
  labels:
    app: ghost
spec:
  nodeName: no-such-node
  containers:
  - name: main
    image: nginx
    ports:
    - name: http
      containerPort: 8080
    resources:
      limits:
        cpu: 250m
        memory: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: ghost
spec:
  selector:
    app: ghost
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: ghost-all
spec:
  publishNotReadyAddresses: true
  selector:
    app: ghost
  ports:
  - port: 80
    targetPort: 8080
",
    );
    // Without an IP the pod has no endpoint: both services show a placeholder slice.
    eventually(&c, LONG, "placeholder slice", || {
        let s = slices(&c, "ghost");
        (s.len() == 1 && s[0]["endpoints"].as_array().is_none_or(Vec::is_empty)).then_some(())
    });
    let set_status = |ready: &str| {
        let patch = json!({"status": {"phase": "Running", "podIP": "10.99.0.7",
            "podIPs": [{"ip": "10.99.0.7"}],
            "conditions": [{"type": "Ready", "status": ready}]}});
        c.ok(&[
            "patch",
            "pod",
            "ghost",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    };
    set_status("True");
    eventually(&c, LONG, "ready endpoint", || {
        (ready_count(&endpoints_of(&c, "ghost")) == 1).then_some(())
    });

    // Not ready: it leaves the ready endpoints within a second, and moves to notReadyAddresses.
    set_status("False");
    let start = std::time::Instant::now();
    eventually(&c, LONG, "not ready endpoint", || {
        let e = endpoints_of(&c, "ghost");
        (e.len() == 1 && ready_count(&e) == 0).then_some(())
    });
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    eventually(&c, LONG, "notReadyAddresses", || {
        let ep = c.get_json(&["endpoints", "ghost"]);
        (ep["subsets"][0]["notReadyAddresses"][0]["ip"] == "10.99.0.7"
            && ep["subsets"][0]["addresses"].is_null())
        .then_some(())
    });

    // publishNotReadyAddresses: ready anyway, in both kinds.
    let e = eventually(&c, LONG, "published endpoint", || {
        let e = endpoints_of(&c, "ghost-all");
        (e.len() == 1).then(|| e[0].clone())
    });
    assert_eq!(e["conditions"]["ready"], true, "{e}");
    assert_eq!(e["conditions"]["serving"], false, "{e}");
    let ep = c.get_json(&["endpoints", "ghost-all"]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.99.0.7", "{ep}");
}
