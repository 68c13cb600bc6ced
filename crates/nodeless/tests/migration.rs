//! End-to-end: `nodeless export` and `nodeless import` move a cluster between SQLite and a real
//! etcd (Debian's etcd-server, started on loopback by the test); kubectl sees the same objects.

mod common;

#[path = "../../store/tests/support/etcd_server.rs"]
mod etcd_server;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::Value;

/// Runs `nodeless ARGS`, feeding `stdin` if given.
fn nodeless(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nodeless");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn succeeds(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let out = nodeless(args, stdin);
    assert!(
        out.status.success(),
        "nodeless {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = nodeless(args, stdin);
    assert!(
        !out.status.success(),
        "nodeless {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn eventually<T>(c: &Cluster, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn uid(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// The pods of deployment `web` in `shop`, by name, once there are `replicas` running ones.
fn running_pods(c: &Cluster, replicas: usize) -> Vec<(String, String)> {
    eventually(c, "the deployment's pods running", || {
        let pods = c.get_json(&["pods", "-n", "shop", "-l", "app=web"]);
        let items = pods["items"].as_array()?;
        let running = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (items.len() == replicas && running == replicas).then(|| {
            let mut named: Vec<_> = items
                .iter()
                .map(|p| (p["metadata"]["name"].as_str().unwrap().to_owned(), uid(p)))
                .collect();
            named.sort();
            named
        })
    })
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: a\n        image: busybox\n";

#[test]
fn a_cluster_moves_from_sqlite_to_etcd_and_back() {
    // A cluster on SQLite with a few namespaces, configmaps and a deployment whose pods run.
    let c = Cluster::start();
    c.ok(&["create", "namespace", "shop"]);
    c.ok(&["create", "namespace", "billing"]);
    c.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "shop",
        "--from-literal=color=blue",
        "--from-literal=size=xl",
    ]);
    c.ok(&[
        "create",
        "configmap",
        "rates",
        "-n",
        "billing",
        "--from-literal=eur=1",
    ]);
    c.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    let pods_before = running_pods(&c, 2);
    let settings = c.get_json(&["cm", "settings", "-n", "shop"]);
    let rates = c.get_json(&["cm", "rates", "-n", "billing"]);
    let shop = c.get_json(&["ns", "shop"]);
    let deploy = c.get_json(&["deploy", "web", "-n", "shop"]);
    let data_dir = c.dir.path().to_path_buf();
    let data = path_str(&data_dir).to_owned();

    // Export and import refuse to share a SQLite file with a running server.
    let stderr = fails(&["export", "--data-dir", &data], None);
    assert!(stderr.contains("is running on"), "{stderr}");

    let dir = c.stop();
    let export_file = dir.path().join("cluster.jsonl");
    let exported = succeeds(
        &[
            "export",
            "--data-dir",
            &data,
            "--output",
            path_str(&export_file),
        ],
        None,
    );
    let summary = String::from_utf8_lossy(&exported.stderr);
    assert!(summary.contains("exported"), "{summary}");
    let text = std::fs::read_to_string(&export_file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let header = &lines[0];
    assert_eq!(header["format"], "nodeless-export");
    assert_eq!(header["version"], 1);
    assert_eq!(header["source"], "sqlite");
    assert!(header["revision"].as_i64().unwrap() > 0);
    assert_eq!(lines.last().unwrap()["end"], "nodeless-export");
    let settings_line = lines
        .iter()
        .find(|l| l["key"] == "/registry/core/configmaps/shop/settings")
        .expect("the configmap is exported");
    assert_eq!(
        settings_line["value"]["data"], settings["data"],
        "values are embedded as JSON"
    );
    assert_eq!(settings_line["value"]["metadata"]["uid"], uid(&settings));

    // Into a real etcd; then the cluster runs on it, from the same data dir (same PKI).
    let etcd = etcd_server::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let etcd_flags = ["--store", "etcd", "--etcd-endpoints", endpoint.as_str()];
    let mut import = vec![
        "import",
        "--input",
        path_str(&export_file),
        "--data-dir",
        &data,
    ];
    import.extend_from_slice(&etcd_flags);
    let imported = succeeds(&import, None);
    let report = String::from_utf8_lossy(&imported.stdout);
    let objects = lines.len() - 2;
    assert!(
        report.contains(&format!("imported {objects} of {objects} objects")),
        "{report}"
    );

    let c = Cluster::start_in(dir, &etcd_flags);
    let moved = c.get_json(&["cm", "settings", "-n", "shop"]);
    assert_eq!(uid(&moved), uid(&settings));
    assert_eq!(moved["data"], settings["data"]);
    assert_eq!(
        moved["metadata"]["creationTimestamp"],
        settings["metadata"]["creationTimestamp"]
    );
    assert_eq!(
        uid(&c.get_json(&["cm", "rates", "-n", "billing"])),
        uid(&rates)
    );
    assert_eq!(uid(&c.get_json(&["ns", "shop"])), uid(&shop));
    let moved_deploy = c.get_json(&["deploy", "web", "-n", "shop"]);
    assert_eq!(uid(&moved_deploy), uid(&deploy));
    assert_eq!(moved_deploy["spec"], deploy["spec"]);
    // The same pods keep running: the deployment does not replace them.
    assert_eq!(running_pods(&c, 2), pods_before);
    // The workload still works on etcd.
    c.ok(&["scale", "deployment", "web", "-n", "shop", "--replicas=3"]);
    running_pods(&c, 3);

    // A second import into the (now non-empty) etcd is refused; --force adds only what is missing.
    let stderr = fails(&import, None);
    assert!(stderr.contains("already holds"), "{stderr}");
    c.ok(&["delete", "configmap", "rates", "-n", "billing"]);
    let mut forced = import.clone();
    forced.push("--force");
    let report = String::from_utf8_lossy(&succeeds(&forced, None).stdout).into_owned();
    assert!(report.contains("imported 1 of"), "{report}");
    assert_eq!(
        uid(&c.get_json(&["cm", "rates", "-n", "billing"])),
        uid(&rates)
    );

    // The reverse direction, through a pipe: export from the running etcd cluster (a consistent
    // snapshot at one revision), import into a fresh SQLite data dir.
    c.ok(&[
        "create",
        "configmap",
        "made-on-etcd",
        "-n",
        "shop",
        "--from-literal=k=v",
    ]);
    let made_on_etcd = c.get_json(&["cm", "made-on-etcd", "-n", "shop"]);
    let mut export = vec!["export", "--data-dir", &data, "--output", "-"];
    export.extend_from_slice(&etcd_flags);
    let stream = succeeds(&export, None).stdout;
    assert!(String::from_utf8_lossy(&stream).contains("\"source\":\"etcd\""));
    let back = tempfile::tempdir().unwrap();
    let back_dir = path_str(back.path()).to_owned();
    succeeds(
        &["import", "--input", "-", "--data-dir", &back_dir],
        Some(&stream),
    );
    let on_sqlite = Cluster::start_in(back, &[]);
    let copy = on_sqlite.get_json(&["cm", "made-on-etcd", "-n", "shop"]);
    assert_eq!(uid(&copy), uid(&made_on_etcd));
    assert_eq!(copy["data"]["k"], "v");
    assert_eq!(
        uid(&on_sqlite.get_json(&["deploy", "web", "-n", "shop"])),
        uid(&deploy)
    );
    assert_eq!(
        on_sqlite.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    // Importing into the SQLite file of a running server is refused.
    let stderr = fails(
        &["import", "--input", "-", "--data-dir", &back_dir, "--force"],
        Some(&stream),
    );
    assert!(stderr.contains("is running on"), "{stderr}");
    drop(on_sqlite);
    drop(c);
    drop(etcd);
}

#[test]
fn a_truncated_export_is_refused_before_anything_is_written() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "partial"]);
    let dir = c.stop();
    let data = path_str(dir.path()).to_owned();
    let stream = succeeds(&["export", "--data-dir", &data], None).stdout;
    let text = String::from_utf8(stream).unwrap();
    let truncated: String = text
        .lines()
        .take(text.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let target = tempfile::tempdir().unwrap();
    let target_dir = path_str(target.path()).to_owned();
    let stderr = fails(
        &["import", "--data-dir", &target_dir],
        Some(truncated.as_bytes()),
    );
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(
        !target.path().join("state.db").exists(),
        "nothing was written"
    );
    let stderr = fails(&["export", "--data-dir", &target_dir], None);
    assert!(stderr.contains("no SQLite state"), "{stderr}");
}
