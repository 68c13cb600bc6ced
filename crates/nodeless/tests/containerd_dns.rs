//! End-to-end: names resolve from real pods the way they do in upstream pods, through glibc's
//! resolver (`getent`, GNU `wget` in the test image), the pod's resolv.conf (search path,
//! `ndots:5`) and the cluster DNS: a Service by its short name in its namespace, as
//! `web.shop` from another namespace, a StatefulSet pod as `ledger-1.ledger`, and a name
//! outside the cluster forwarded to an upstream that never answers fails in bounded time.

mod common;

use std::time::{Duration, Instant};

use common::registry::{ImageConfig, Registry};
use common::{eventually, Cluster};

const LIMIT: Duration = Duration::from_secs(120);

const APPS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Namespace
metadata:
  name: other
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - {name: http, containerPort: 8080}
        resources:
          limits: {cpu: 250m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: ledger
  namespace: shop
spec:
  clusterIP: None
  selector: {app: ledger}
  ports:
  - {name: tcp, port: 9000}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ledger
  namespace: shop
spec:
  serviceName: ledger
  replicas: 2
  selector:
    matchLabels: {app: ledger}
  template:
    metadata:
      labels: {app: ledger}
    spec:
      containers:
      - name: main
        image: busybox
        command: ["sleep", "3600"]
        resources:
          limits: {cpu: 250m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: shop
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    resources:
      limits: {cpu: 250m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: other
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    resources:
      limits: {cpu: 250m, memory: 64Mi}
"#;

/// `kubectl exec` in `namespace/pod`: stdout when the command succeeded.
fn exec(c: &Cluster, namespace: &str, pod: &str, command: &[&str]) -> Option<String> {
    let mut args = vec!["exec", "-n", namespace, pod, "--"];
    args.extend_from_slice(command);
    let out = c.kubectl(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The address `getent hosts NAME` prints first, if the name resolves.
fn getent(c: &Cluster, namespace: &str, pod: &str, name: &str) -> Option<String> {
    let out = exec(c, namespace, pod, &["getent", "hosts", name])?;
    out.split_whitespace().next().map(str::to_string)
}

/// The body of `GET url` with GNU wget (which resolves through glibc), if it succeeded.
fn wget(c: &Cluster, namespace: &str, pod: &str, url: &str) -> Option<String> {
    exec(
        c,
        namespace,
        pod,
        &["wget", "-q", "-O", "-", "--timeout=5", "--tries=1", url],
    )
    .map(|body| body.trim().to_string())
}

#[test]
fn short_names_resolve_through_the_search_path() {
    // Names outside the cluster go to an upstream that never answers (nothing leaves the
    // machine); the socket is held for the whole test so that no one else takes the port.
    let silent_upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = silent_upstream.local_addr().unwrap().to_string();
    let registry = Registry::start();
    registry.push_busybox_with(
        "library/busybox",
        "latest",
        ImageConfig::busybox().with_resolver(),
    );
    let c = Cluster::start_containerd(Some(&registry.host()), &["--dns-upstream", &upstream]);
    c.ok_stdin(&["apply", "-f", "-"], APPS);
    for (namespace, what) in [("shop", "deployment/web"), ("shop", "statefulset/ledger")] {
        c.ok(&["rollout", "status", "-n", namespace, what, "--timeout=120s"]);
    }
    for namespace in ["shop", "other"] {
        c.ok(&[
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            "pod/client",
            "--timeout=120s",
        ]);
    }
    let cluster_ip = c.get_json(&["svc", "-n", "shop", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!cluster_ip.is_empty());
    let web_pod = c
        .ok(&["get", "pods", "-n", "shop", "-l", "app=web", "-o", "name"])
        .trim()
        .trim_start_matches("pod/")
        .to_string();

    // In the Service's namespace, its short name (search path `shop.svc.cluster.local`).
    let address = eventually(&c, LIMIT, "`web` to resolve in shop", || {
        getent(&c, "shop", "client", "web").filter(|a| *a == cluster_ip)
    });
    assert_eq!(address, cluster_ip);
    let body = eventually(&c, LIMIT, "http://web to answer", || {
        wget(&c, "shop", "client", "http://web/")
    });
    assert_eq!(body, web_pod);
    assert_eq!(
        wget(&c, "shop", "client", "http://web.shop/").as_deref(),
        Some(web_pod.as_str())
    );

    // From another namespace: `web.shop` (search path `svc.cluster.local`), not `web`.
    assert_eq!(
        getent(&c, "other", "client", "web.shop").as_deref(),
        Some(cluster_ip.as_str())
    );
    assert_eq!(
        wget(&c, "other", "client", "http://web.shop/").as_deref(),
        Some(web_pod.as_str())
    );
    assert_eq!(
        getent(&c, "other", "client", "web.shop.svc").as_deref(),
        Some(cluster_ip.as_str())
    );
    assert_eq!(getent(&c, "other", "client", "web"), None);

    // A StatefulSet's pods find each other as `<pod>.<service>`.
    let ledger_1_ip = c.get_json(&["pod", "-n", "shop", "ledger-1"])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let address = eventually(&c, LIMIT, "ledger-1.ledger to resolve", || {
        getent(&c, "shop", "ledger-0", "ledger-1.ledger").filter(|a| *a == ledger_1_ip)
    });
    assert_eq!(address, ledger_1_ip);
    // The headless Service's own name has one address per pod.
    let all = exec(&c, "shop", "ledger-0", &["getent", "ahostsv4", "ledger"]).unwrap_or_default();
    assert!(all.contains(&ledger_1_ip), "{all}");

    // A name outside the cluster is forwarded; the upstream never answers, so the lookup
    // fails (SERVFAIL after the forwarder's timeout), in bounded time, without hanging.
    let started = Instant::now();
    assert_eq!(
        getent(&c, "shop", "client", "nothing.example.invalid"),
        None
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "the lookup took {took:?}");
    let started = Instant::now();
    assert_eq!(
        wget(&c, "shop", "client", "http://nothing.example.invalid/"),
        None
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "wget took {took:?}");
    drop(silent_upstream);
}
