//! End-to-end: Services and DNS with real pods: a Deployment behind a ClusterIP Service is
//! reached by name from another pod (resolved by the cluster DNS, traffic spread over the
//! replicas through the service proxy), the service environment variables are set, a
//! StatefulSet's pods resolve each other through their headless Service, and a LoadBalancer
//! Service is reached from the host.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};

const LIMIT: Duration = Duration::from_secs(120);

const APPS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
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
  name: web-lb
  namespace: shop
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 8080, targetPort: http}
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
"#;

const CLIENT: &str = r#"
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
"#;

fn exec(c: &Cluster, pod: &str, command: &[&str]) -> Option<String> {
    let mut args = vec!["exec", "-n", "shop", pod, "--"];
    args.extend_from_slice(command);
    let out = c.kubectl(&args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn services_are_reached_by_name_and_from_the_host() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let c = Cluster::start_containerd(Some(&registry.host()), &[]);
    c.ok_stdin(&["apply", "-f", "-"], APPS);
    c.ok(&[
        "rollout",
        "status",
        "-n",
        "shop",
        "deployment/web",
        "--timeout=120s",
    ]);
    c.ok_stdin(&["apply", "-f", "-"], CLIENT);
    c.ok(&[
        "wait",
        "-n",
        "shop",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=120s",
    ]);
    let cluster_ip = c.get_json(&["svc", "-n", "shop", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!cluster_ip.is_empty());

    // The service environment and the resolver configuration.
    let env = exec(&c, "client", &["env"]).expect("env");
    assert!(
        env.contains(&format!("WEB_SERVICE_HOST={cluster_ip}")),
        "{env}"
    );
    assert!(env.contains("WEB_SERVICE_PORT=80"), "{env}");
    let resolv = exec(&c, "client", &["cat", "/etc/resolv.conf"]).expect("resolv.conf");
    assert!(
        resolv.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:5"), "{resolv}");

    // The Service's name resolves to the ClusterIP (busybox's nslookup does not apply the
    // search path, so the name is written out; the search path is checked above).
    let answer = eventually(&c, LIMIT, "web.shop.svc.cluster.local to resolve", || {
        exec(&c, "client", &["nslookup", "web.shop.svc.cluster.local"])
            .filter(|out| out.contains(&cluster_ip))
    });
    assert!(answer.contains("web.shop.svc.cluster.local"), "{answer}");

    // Requests through the ClusterIP reach both replicas.
    let pods: HashSet<String> = c
        .ok(&["get", "pods", "-n", "shop", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
    let seen = eventually(&c, LIMIT, "both replicas to answer", || {
        let mut seen = HashSet::new();
        for _ in 0..12 {
            if let Some(body) = exec(
                &c,
                "client",
                &["wget", "-q", "-O", "-", &format!("http://{cluster_ip}/")],
            ) {
                seen.insert(body.trim().to_string());
            }
        }
        (seen.len() == 2).then_some(seen)
    });
    assert_eq!(seen, pods);

    // The StatefulSet's pods resolve each other through the headless Service.
    c.ok(&[
        "rollout",
        "status",
        "-n",
        "shop",
        "statefulset/ledger",
        "--timeout=120s",
    ]);
    let ledger_1_ip = c.get_json(&["pod", "-n", "shop", "ledger-1"])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let answer = eventually(&c, LIMIT, "ledger-1.ledger to resolve", || {
        exec(
            &c,
            "ledger-0",
            &["nslookup", "ledger-1.ledger.shop.svc.cluster.local"],
        )
        .filter(|out| out.contains(&ledger_1_ip))
    });
    assert!(
        answer.contains("ledger-1.ledger.shop.svc.cluster.local"),
        "{answer}"
    );
    let hostname = exec(&c, "ledger-0", &["hostname"]).unwrap_or_default();
    assert_eq!(hostname.trim(), "ledger-0");

    // The LoadBalancer Service gets an address on this machine that answers.
    let ingress = eventually(&c, LIMIT, "a LoadBalancer address", || {
        let svc = c.get_json(&["svc", "-n", "shop", "web-lb"]);
        svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    });
    let body = eventually(&c, LIMIT, "the LoadBalancer to answer", || {
        let mut stream = std::net::TcpStream::connect((ingress.as_str(), 8080)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.contains("200 OK").then_some(response)
    });
    assert!(pods.iter().any(|p| body.contains(p.as_str())), "{body}");
}
