//! End-to-end: a rolling update of a Deployment behind a ClusterIP Service, with a client pod
//! sending a request through the Service every 50 ms the whole time, loses no request: new
//! pods join the endpoints when they are ready, old ones stop getting new connections as soon
//! as they are terminating (the proxy tries another endpoint when one refuses), while a
//! preStop sleep keeps them serving for a second before SIGTERM stops them at once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};

const LIMIT: Duration = Duration::from_secs(180);

/// The web Deployment at `version` (a template annotation, so that changing it rolls out).
fn web(version: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{version: "{version}"}}
    spec:
      terminationGracePeriodSeconds: 3
      containers:
      - name: httpd
        image: busybox
        # The server stops at SIGTERM at once; the preStop sleep (upstream's pattern) keeps it
        # serving while its terminating endpoint leaves the proxy.
        command: ["sh", "-c", "mkdir -p /www; hostname > /www/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
        lifecycle:
          preStop:
            sleep: {{seconds: 1}}
        ports:
        - {{name: http, containerPort: 8080}}
        resources:
          limits: {{cpu: 250m, memory: 64Mi}}
"#
    )
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
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
"#;

/// A client that requests `http://IP/` every 50 ms and logs `ok <pod>` or `fail` for each
/// (`timeout`, not wget's `-T`: this static busybox's wget crashes with `-T`).
fn client(cluster_ip: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: shop
spec:
  containers:
  - name: main
    image: busybox
    command:
    - sh
    - -c
    - |
      while true; do
        if body=$(timeout 5 wget -q -O - http://{cluster_ip}/ 2>/dev/null); then echo "ok $body"; else echo fail; fi
        sleep 0.05
      done
    resources:
      limits: {{cpu: 250m, memory: 64Mi}}
"#
    )
}

/// The web pods' names.
fn web_pods(c: &Cluster) -> HashSet<String> {
    c.ok(&["get", "pods", "-n", "shop", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect()
}

/// The client's log lines: (successes by answering pod, failures).
fn outcomes(c: &Cluster) -> (Vec<String>, usize) {
    let log = c.ok(&["logs", "-n", "shop", "client"]);
    let mut answered = Vec::new();
    let mut failures = 0;
    for line in log.lines() {
        if let Some(pod) = line.strip_prefix("ok ") {
            answered.push(pod.trim().to_string());
        } else if line.trim() == "fail" {
            failures += 1;
        }
    }
    (answered, failures)
}

#[test]
fn a_rolling_update_loses_no_request() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let c = Cluster::start_containerd(Some(&registry.host()), &[]);
    c.ok_stdin(&["apply", "-f", "-"], SERVICE);
    c.ok_stdin(&["apply", "-f", "-"], &web("1"));
    c.ok(&[
        "rollout",
        "status",
        "-n",
        "shop",
        "deployment/web",
        "--timeout=120s",
    ]);
    let old_pods = web_pods(&c);
    assert_eq!(old_pods.len(), 3);
    let cluster_ip = c.get_json(&["svc", "-n", "shop", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    c.ok_stdin(&["apply", "-f", "-"], &client(&cluster_ip));
    c.ok(&[
        "wait",
        "-n",
        "shop",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=120s",
    ]);
    // The client reaches every old pod before the rollout starts.
    eventually(&c, LIMIT, "every old pod to answer", || {
        let (answered, _) = outcomes(&c);
        let seen: HashSet<String> = answered.into_iter().collect();
        old_pods.is_subset(&seen).then_some(())
    });

    // Two rollouts: every pod of each generation answers, and then is replaced.
    let mut generations = vec![old_pods.clone()];
    for version in ["2", "3"] {
        let previous = generations.last().cloned().unwrap_or_default();
        c.ok_stdin(&["apply", "-f", "-"], &web(version));
        c.ok(&[
            "rollout",
            "status",
            "-n",
            "shop",
            "deployment/web",
            "--timeout=150s",
        ]);
        let new_pods = eventually(&c, LIMIT, "the previous pods to be gone", || {
            let pods = web_pods(&c);
            (pods.len() == 3 && pods.is_disjoint(&previous)).then_some(pods)
        });
        eventually(&c, LIMIT, "every new pod to answer", || {
            let (answered, _) = outcomes(&c);
            let seen: HashSet<String> = answered.into_iter().collect();
            new_pods.is_subset(&seen).then_some(())
        });
        generations.push(new_pods);
    }
    let (answered, failures) = outcomes(&c);
    let log = c.ok(&["logs", "-n", "shop", "client"]);
    eprintln!(
        "rollout: {} requests answered, {failures} failed",
        answered.len()
    );
    assert_eq!(failures, 0, "failed requests during the rollout:\n{log}");
    assert!(answered.len() > 50, "too few requests:\n{log}");
    let seen: HashSet<String> = answered.into_iter().collect();
    for generation in &generations {
        assert!(
            generation.is_subset(&seen),
            "{generation:?} not all in {seen:?}"
        );
    }
}
