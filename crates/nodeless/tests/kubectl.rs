//! End-to-end: the real kubectl (1.27 and 1.33) against the real `nodeless` binary, verb by
//! verb, as a new user would use them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectl_versions, Cluster};
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - name: A
          value: "1"
"#;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_discovery_and_health() {
    let c = Cluster::start();
    for kubectl in kubectl_versions() {
        let out = c.kubectl_with(&kubectl, &["version", "-o", "json"], None);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["serverVersion"]["major"], "1");

        let out = c.kubectl_with(&kubectl, &["api-resources"], None);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        for line in [
            "deployments   ",
            "deploy",
            "apps/v1",
            "statefulsets",
            "cronjobs",
            "poddisruptionbudgets",
            "leases",
            "endpointslices",
        ] {
            assert!(text.contains(line), "api-resources lacks {line}:\n{text}");
        }
        let out = c.kubectl_with(&kubectl, &["api-versions"], None);
        let text = stdout(&out);
        for gv in [
            "v1",
            "apps/v1",
            "batch/v1",
            "policy/v1",
            "storage.k8s.io/v1",
            "events.k8s.io/v1",
            "coordination.k8s.io/v1",
            "discovery.k8s.io/v1",
        ] {
            assert!(
                text.lines().any(|l| l == gv),
                "api-versions lacks {gv}:\n{text}"
            );
        }
    }
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(c.ok(&["get", "--raw", path]), "ok");
    }
    // `all` and short names resolve as upstream.
    c.ok(&["get", "all"]);
    c.ok(&["get", "deploy,sts,cj,ns,cm,svc,po"]);
    // The system namespaces exist.
    let ns = c.ok(&["get", "ns", "-o", "name"]);
    for n in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-public",
        "namespace/kube-node-lease",
    ] {
        assert!(ns.contains(n), "{ns}");
    }
}

#[test]
fn anonymous_requests_are_unauthorized() {
    let c = Cluster::start();
    let server = c.raw_kubeconfig_server();
    let ca = c.dir.path().join("pki/ca.crt");
    let anon = c.dir.path().join("anon.kubeconfig");
    std::fs::write(
        &anon,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: not-a-known-token\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n", ca.display()),
    )
    .unwrap();
    let out = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&anon)
        .args(["get", "pods"])
        .env("HOME", c.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Unauthorized") || stderr(&out).contains("provide credentials"),
        "{}",
        stderr(&out)
    );
    // Health needs no credentials.
    let out = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&anon)
        .args(["get", "--raw", "/readyz"])
        .env("HOME", c.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

trait ServerUrl {
    fn raw_kubeconfig_server(&self) -> String;
}

impl ServerUrl for Cluster {
    fn raw_kubeconfig_server(&self) -> String {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string()
    }
}

#[test]
fn configmap_verbs_with_both_kubectl_versions() {
    let c = Cluster::start();
    for (i, kubectl) in kubectl_versions().iter().enumerate() {
        let name = format!("settings-{i}");
        let run = |args: &[&str]| {
            let out = c.kubectl_with(kubectl, args, None);
            assert!(
                out.status.success(),
                "{kubectl:?} {args:?}: {}",
                stderr(&out)
            );
            stdout(&out)
        };
        run(&[
            "create",
            "configmap",
            &name,
            "--from-literal=color=blue",
            "--from-literal=size=L",
        ]);
        let obj: Value = serde_json::from_str(&run(&["get", "cm", &name, "-o", "json"])).unwrap();
        assert_eq!(obj["data"]["color"], "blue");
        assert!(obj["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36));
        assert!(obj["metadata"]["creationTimestamp"].as_str().is_some());
        let rv1: u64 = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();

        assert!(run(&["get", "cm", &name, "-o", "yaml"]).contains("color: blue"));
        assert_eq!(
            run(&["get", "cm", &name, "-o", "jsonpath={.data.size}"]),
            "L"
        );
        let table = run(&["get", "cm", &name]);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("DATA") && table.contains("AGE"), "{table}");

        run(&["label", "cm", &name, "tier=backend"]);
        run(&["annotate", "cm", &name, "owner=team-a"]);
        run(&[
            "patch",
            "cm",
            &name,
            "--type=merge",
            "-p",
            r#"{"data":{"color":"red"}}"#,
        ]);
        run(&[
            "patch",
            "cm",
            &name,
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/shape","value":"round"}]"#,
        ]);
        run(&["patch", "cm", &name, "-p", r#"{"data":{"size":null}}"#]);
        let obj: Value = serde_json::from_str(&run(&["get", "cm", &name, "-o", "json"])).unwrap();
        assert_eq!(obj["metadata"]["labels"]["tier"], "backend");
        assert_eq!(obj["metadata"]["annotations"]["owner"], "team-a");
        assert_eq!(obj["data"]["color"], "red");
        assert_eq!(obj["data"]["shape"], "round");
        assert!(obj["data"].get("size").is_none(), "{obj}");
        let rv2: u64 = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv2 > rv1);

        // Selectors.
        let listed = run(&["get", "cm", "-l", "tier=backend", "-o", "name"]);
        assert_eq!(listed.trim(), format!("configmap/{name}"));
        assert_eq!(
            run(&[
                "get",
                "cm",
                "-l",
                "tier notin (backend)",
                "-o",
                "name",
                "--field-selector",
                &format!("metadata.name={name}")
            ])
            .trim(),
            ""
        );
        run(&["label", "cm", &name, "tier-"]);

        // replace with a stale resourceVersion conflicts; with the current one it works.
        let mut stale = obj.clone();
        stale["metadata"]["resourceVersion"] = Value::String(rv1.to_string());
        stale["data"]["color"] = "green".into();
        let out = c.kubectl_with(kubectl, &["replace", "-f", "-"], Some(&stale.to_string()));
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("the object has been modified"),
            "{}",
            stderr(&out)
        );
        let fresh: Value = serde_json::from_str(&run(&["get", "cm", &name, "-o", "json"])).unwrap();
        let mut next = fresh.clone();
        next["data"]["color"] = "green".into();
        let out = c.kubectl_with(kubectl, &["replace", "-f", "-"], Some(&next.to_string()));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            run(&["get", "cm", &name, "-o", "jsonpath={.data.color}"]),
            "green"
        );

        run(&["delete", "cm", &name]);
        let out = c.kubectl_with(kubectl, &["get", "cm", &name], None);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("NotFound") || stderr(&out).contains("not found"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn apply_client_side_then_server_side() {
    let c = Cluster::start();
    for kubectl in kubectl_versions() {
        let ns = format!(
            "apply-{}",
            kubectl.extension().and_then(|e| e.to_str()).unwrap_or("x")
        );
        c.ok(&["create", "namespace", &ns]);
        let out = c.kubectl_with(&kubectl, &["apply", "-n", &ns, "-f", "-"], Some(DEPLOYMENT));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("deployment.apps/web created"),
            "{}",
            stdout(&out)
        );
        let d = c.get_json(&["deploy", "web", "-n", &ns]);
        // Upstream defaults are filled in.
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(d["metadata"]["generation"], 1);
        assert!(
            d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string()
        );

        // A second apply with a changed image and a new env var is a strategic merge patch.
        let changed = DEPLOYMENT.replace("nginx:1.25", "nginx:1.26").replace(
            "value: \"1\"",
            "value: \"1\"\n        - name: B\n          value: \"2\"",
        );
        let out = c.kubectl_with(&kubectl, &["diff", "-n", &ns, "-f", "-"], Some(&changed));
        assert_eq!(
            out.status.code(),
            Some(1),
            "diff should report changes: {}",
            stderr(&out)
        );
        assert!(stdout(&out).contains("nginx:1.26"), "{}", stdout(&out));
        let out = c.kubectl_with(&kubectl, &["apply", "-n", &ns, "-f", "-"], Some(&changed));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("configured"), "{}", stdout(&out));
        let d = c.get_json(&["deploy", "web", "-n", &ns]);
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "nginx:1.26");
        assert_eq!(container["env"].as_array().unwrap().len(), 2);
        assert_eq!(d["metadata"]["generation"], 2);
        let out = c.kubectl_with(&kubectl, &["apply", "-n", &ns, "-f", "-"], Some(&changed));
        assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));

        // Server-side apply by another manager takes over a field with --force-conflicts.
        let ssa = changed.replace("replicas: 2", "replicas: 4");
        let out = c.kubectl_with(
            &kubectl,
            &[
                "apply",
                "--server-side",
                "--field-manager=ci",
                "-n",
                &ns,
                "-f",
                "-",
            ],
            Some(&ssa),
        );
        assert!(!out.status.success(), "conflict expected");
        assert!(stderr(&out).contains("conflict"), "{}", stderr(&out));
        let out = c.kubectl_with(
            &kubectl,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=ci",
                "-n",
                &ns,
                "-f",
                "-",
            ],
            Some(&ssa),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let d = c.get_json(&["deploy", "web", "-n", &ns, "--show-managed-fields"]);
        assert_eq!(d["spec"]["replicas"], 4);
        let managers: Vec<&str> = d["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(managers.contains(&"ci"), "{managers:?}");
    }
}

#[test]
fn scale_table_columns_and_dry_run() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    c.ok(&["scale", "deployment", "web", "--replicas=3"]);
    assert_eq!(
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let scale = c.raw("/apis/apps/v1/namespaces/default/deployments/web/scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    let table = c.ok(&["get", "deployments"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    let wide = c.ok(&["get", "deployments", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("CONTAINERS"),
        "{wide}"
    );
    assert!(wide.contains("nginx:1.25"), "{wide}");

    let out = c.ok(&[
        "create",
        "configmap",
        "ghost",
        "--from-literal=a=b",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let ghost: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ghost["data"]["a"], "b");
    c.fails(&["get", "cm", "ghost"]);

    // A pod shows upstream's columns.
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\nspec:\n  containers:\n  - name: main\n    image: busybox\n",
    );
    c.ok(&["wait", "--for=condition=Ready", "pod/solo", "--timeout=60s"]);
    let pods = c.ok(&["get", "pods"]);
    let header: Vec<&str> = pods.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    let solo = pods
        .lines()
        .find(|l| l.starts_with("solo "))
        .expect("a row for solo");
    let cells: Vec<&str> = solo.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["1/1", "Running", "0"], "{pods}");
    let wide = c.ok(&["get", "pod", "solo", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("NODE"), "{wide}");
    let pod = c.get_json(&["pod", "solo"]);
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["status"]["phase"], "Running");
    c.ok(&["describe", "pod", "solo"]);
    c.ok(&["describe", "deployment", "web"]);
}

#[test]
fn watch_streams_events() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "first", "--from-literal=a=1"]);
    let mut child = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args([
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ])
        .env("HOME", c.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if line.trim() == want {
                    return;
                }
                seen.push(line);
            }
        }
        panic!("no {want:?} event; saw {seen:?}");
    };
    wait_for("ADDED first");
    c.ok(&["create", "configmap", "second", "--from-literal=a=1"]);
    wait_for("ADDED second");
    c.ok(&["label", "cm", "second", "x=y"]);
    wait_for("MODIFIED second");
    c.ok(&["delete", "cm", "second"]);
    wait_for("DELETED second");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn chunked_lists_return_everything_once() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "many"]);
    for i in 0..23 {
        c.ok(&[
            "create",
            "configmap",
            &format!("cm-{i:02}"),
            "-n",
            "many",
            "--from-literal=i=1",
        ]);
    }
    // Every namespace also has the root CA publisher's kube-root-ca.crt (listed last).
    common::eventually(&c, Duration::from_secs(30), "kube-root-ca.crt", || {
        c.kubectl(&["get", "cm", "-n", "many", "kube-root-ca.crt"])
            .status
            .success()
            .then_some(())
    });
    let names = c.ok(&["get", "cm", "-n", "many", "--chunk-size=5", "-o", "name"]);
    let mut listed: Vec<&str> = names.lines().collect();
    assert_eq!(listed.len(), 24, "{names}");
    listed.dedup();
    assert_eq!(listed.len(), 24);

    let page = c.raw("/api/v1/namespaces/many/configmaps?limit=10");
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(page["metadata"]["remainingItemCount"], 14);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let page2 = c.raw(&format!(
        "/api/v1/namespaces/many/configmaps?limit=10&continue={token}"
    ));
    assert_eq!(page2["items"][0]["metadata"]["name"], "cm-10");
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page["metadata"]["resourceVersion"]
    );
    let err = c.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/many/configmaps?limit=10&continue=garbage",
    ]);
    assert!(err.contains("continue"), "{err}");
}

#[test]
fn invalid_objects_are_refused_with_field_errors() {
    let c = Cluster::start();
    let err = c.fails(&["create", "configmap", "Bad_Name"]);
    assert!(
        err.contains("Invalid value") && err.contains("RFC 1123"),
        "{err}"
    );

    let typo = DEPLOYMENT.replace("replicas: 2", "replicas: 2\n  replicaz: 3");
    let out = c.kubectl_with(&c.kubectl, &["apply", "-f", "-"], Some(&typo));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("replicaz"), "{}", stderr(&out));

    let mismatch = DEPLOYMENT.replace(
        "matchLabels:\n      app: web",
        "matchLabels:\n      app: other",
    );
    let out = c.kubectl_with(&c.kubectl, &["apply", "-f", "-"], Some(&mismatch));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("selector") && stderr(&out).contains("does not match"),
        "{}",
        stderr(&out)
    );

    let err = c.fails(&["get", "--raw", "/api/v1/namespaces/default/widgets"]);
    assert!(
        err.contains("NotFound") || err.contains("not find"),
        "{err}"
    );
    let err = c.fails(&["get", "pods", "--selector", "a in (b"]);
    assert!(
        err.contains("BadRequest") || err.contains("unable to parse"),
        "{err}"
    );
    let err = c.fails(&["get", "pods", "--field-selector", "spec.bogus=x"]);
    assert!(err.contains("field label not supported"), "{err}");
    let err = c.fails(&["create", "configmap", "x", "-n", "no-such-namespace"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn explain_uses_the_served_schema() {
    let c = Cluster::start();
    for kubectl in kubectl_versions() {
        let out = c.kubectl_with(&kubectl, &["explain", "deployment.spec.strategy"], None);
        assert!(out.status.success(), "{kubectl:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("rollingUpdate"), "{}", stdout(&out));
        let out = c.kubectl_with(&kubectl, &["explain", "pods.spec.containers.image"], None);
        assert!(out.status.success(), "{kubectl:?}: {}", stderr(&out));
    }
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata:\n  a: b\n",
    );
    c.ok(&["delete", "cm", "held", "--wait=false"]);
    let obj = c.get_json(&["cm", "held"]);
    assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
    c.ok(&[
        "patch",
        "cm",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let err = c.fails(&["get", "cm", "held"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn edit_with_an_editor() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "editable", "--from-literal=mode=old"]);
    let out = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["edit", "cm", "editable"])
        .env("HOME", c.dir.path())
        .env("KUBE_EDITOR", "sed -i s/mode:\\ old/mode:\\ new/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        c.ok(&["get", "cm", "editable", "-o", "jsonpath={.data.mode}"]),
        "new"
    );
}

#[test]
fn state_survives_a_restart() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "keep"]);
    c.ok(&[
        "create",
        "configmap",
        "kept",
        "-n",
        "keep",
        "--from-literal=a=b",
    ]);
    let before = c.get_json(&["cm", "kept", "-n", "keep"]);
    let mut c = c;
    let status = c.terminate().expect("nodeless exits on SIGTERM");
    assert!(
        status.success(),
        "SIGTERM is a clean shutdown: {status:?}\n{}",
        c.log()
    );
    let dir = c.stop();
    let c = Cluster::start_in(dir, &[]);
    let after = c.get_json(&["cm", "kept", "-n", "keep"]);
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    c.ok(&["create", "configmap", "later", "-n", "keep"]);
    let later = c.get_json(&["cm", "later", "-n", "keep"]);
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&later) > rv(&after));
}

#[test]
fn events_of_both_apis_are_one_resource() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: pulled.1\nregarding:\n  kind: Pod\n  name: web-1\n  namespace: default\nreason: Pulled\nnote: Image pulled\ntype: Normal\naction: Pull\nreportingController: nodeless/agent\nreportingInstance: node-1\neventTime: \"2026-01-01T00:00:00.000000Z\"\n",
    );
    let core = c.get_json(&["events.v1.", "pulled.1"]);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "Image pulled");
    assert_eq!(core["involvedObject"]["name"], "web-1");
    let listed = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web-1",
        "-o",
        "name",
    ]);
    assert!(listed.contains("pulled.1"), "{listed}");
    let new = c.get_json(&["events.v1.events.k8s.io", "pulled.1"]);
    assert_eq!(new["note"], "Image pulled");
    assert_eq!(new["regarding"]["kind"], "Pod");
}
