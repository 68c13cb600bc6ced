//! End-to-end: Service cluster IPs through kubectl on the simulated runtime: allocation from
//! the service CIDR (distinct, in range), an explicit clusterIP honoured and a duplicate
//! refused, headless and ExternalName Services, release on delete, immutability, the
//! `kubernetes` Service and its endpoints, allocations kept across a restart, and a small
//! `--service-cidr` running full.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use common::Cluster;

/// A ClusterIP Service manifest, with `extra` lines added to its spec.
fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n{extra}"
    )
}

fn cluster_ip(c: &Cluster, name: &str) -> String {
    let svc = c.get_json(&["svc", name]);
    svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether `ip` is in 10.96.0.0/12, neither the network nor the broadcast address.
fn in_default_range(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    let n = u32::from(ip);
    let net = u32::from(Ipv4Addr::new(10, 96, 0, 0));
    n > net && n < net + (1 << 20) - 1
}

/// The API server's port, from the kubeconfig.
fn api_port(c: &Cluster) -> u16 {
    let config = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let server = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    server.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn cluster_ips_are_allocated_kept_and_released() {
    let c = Cluster::start();

    // The kubernetes Service has the range's first address and points at the API server.
    let port = api_port(&c);
    let table = c.ok(&["get", "svc", "kubernetes"]);
    assert!(
        table.contains("10.96.0.1") && table.contains("443/TCP"),
        "{table}"
    );
    let kubernetes = c.get_json(&["svc", "kubernetes"]);
    assert_eq!(kubernetes["spec"]["ports"][0]["name"], "https");
    assert_eq!(kubernetes["spec"]["ports"][0]["targetPort"], port);
    let endpoints = c.ok(&["get", "endpoints", "kubernetes"]);
    assert!(
        endpoints.contains(&format!("127.0.0.1:{port}")),
        "{endpoints}"
    );
    let slice = c.get_json(&["endpointslices", "kubernetes", "-n", "default"]);
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "kube-apiserver"
    );

    // Three Services get three distinct addresses of the range, with upstream's fields.
    let mut seen = HashSet::new();
    for name in ["a", "b", "c"] {
        c.ok_stdin(&["apply", "-f", "-"], &service(name, ""));
        let svc = c.get_json(&["svc", name]);
        let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(in_default_range(&ip) && ip != "10.96.0.1", "{ip}");
        assert_eq!(svc["spec"]["clusterIPs"], serde_json::json!([ip]));
        assert_eq!(svc["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
        assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(svc["status"]["loadBalancer"], serde_json::json!({}));
        assert!(seen.insert(ip));
    }

    // An explicit address is honoured; a second Service may not have it.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &service("fixed", "  clusterIP: 10.96.10.10\n"),
    );
    assert_eq!(cluster_ip(&c, "fixed"), "10.96.10.10");
    let out = c.kubectl_with(
        &c.kubectl,
        &["apply", "-f", "-"],
        Some(&service("copy", "  clusterIP: 10.96.10.10\n")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.clusterIPs: Invalid value: [\"10.96.10.10\"]: failed to allocate IP 10.96.10.10: provided IP is already allocated"),
        "{err}"
    );
    let err = c.fails(&[
        "create",
        "service",
        "clusterip",
        "outside",
        "--tcp=80",
        "--clusterip=10.0.0.9",
    ]);
    assert!(
        err.contains(
            "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        ),
        "{err}"
    );
    let err = c.fails(&[
        "create",
        "service",
        "clusterip",
        "taken",
        "--tcp=80",
        "--clusterip=10.96.0.1",
    ]);
    assert!(err.contains("provided IP is already allocated"), "{err}");

    // The address may not change.
    let err = c.fails(&[
        "patch",
        "svc",
        "fixed",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.10.11","clusterIPs":["10.96.10.11"]}}"#,
    ]);
    assert!(err.contains("may not change once set"), "{err}");
    assert_eq!(cluster_ip(&c, "fixed"), "10.96.10.10");
    // A replace that leaves it out keeps it.
    c.ok_stdin(&["replace", "-f", "-"], &service("fixed", ""));
    assert_eq!(cluster_ip(&c, "fixed"), "10.96.10.10");
    // Server-side apply of a manifest without it, twice, keeps an allocated address.
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], &service("ssa", ""));
    let ssa_ip = cluster_ip(&c, "ssa");
    assert!(in_default_range(&ssa_ip), "{ssa_ip}");
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], &service("ssa", ""));
    assert_eq!(cluster_ip(&c, "ssa"), ssa_ip);
    // A server-side dry run shows an address without taking it.
    let dry = c.ok(&[
        "create",
        "service",
        "clusterip",
        "dry",
        "--tcp=80",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert!(
        in_default_range(dry["spec"]["clusterIP"].as_str().unwrap()),
        "{dry}"
    );
    c.fails(&["get", "svc", "dry"]);

    // Headless and ExternalName Services take no address.
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--clusterip=None",
    ]);
    let headless = c.get_json(&["svc", "headless"]);
    assert_eq!(headless["spec"]["clusterIPs"], serde_json::json!(["None"]));
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=db.example.com",
    ]);
    let ext = c.get_json(&["svc", "ext"]);
    assert!(ext["spec"].get("clusterIP").is_none(), "{ext}");

    // NodePort stays refused by the serverless rules.
    c.fails(&["create", "service", "nodeport", "np", "--tcp=80"]);

    // Delete releases: the address can be asked for again.
    c.ok(&["delete", "svc", "fixed"]);
    c.ok_stdin(
        &["apply", "-f", "-"],
        &service("fixed-again", "  clusterIP: 10.96.10.10\n"),
    );
    assert_eq!(cluster_ip(&c, "fixed-again"), "10.96.10.10");

    // Becoming an ExternalName gives the address back.
    let b_ip = cluster_ip(&c, "b");
    c.ok(&[
        "patch",
        "svc",
        "b",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"b.example.com","selector":null,"ports":null}}"#,
    ]);
    assert_eq!(cluster_ip(&c, "b"), "");
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "takes-b",
        "--tcp=80",
        &format!("--clusterip={b_ip}"),
    ]);

    // A restart keeps every address and allocates no duplicate.
    let before: Vec<(String, String)> = ["a", "c", "fixed-again", "takes-b", "kubernetes"]
        .iter()
        .map(|n| (n.to_string(), cluster_ip(&c, n)))
        .collect();
    let dir = c.stop();
    let c = Cluster::start_in(dir, &[]);
    for (name, ip) in &before {
        assert_eq!(&cluster_ip(&c, name), ip, "{name}");
    }
    let port = api_port(&c);
    let kubernetes = c.get_json(&["svc", "kubernetes"]);
    assert_eq!(kubernetes["spec"]["ports"][0]["targetPort"], port);
    let endpoints = c.ok(&["get", "endpoints", "kubernetes"]);
    assert!(
        endpoints.contains(&format!("127.0.0.1:{port}")),
        "{endpoints}"
    );
    let err = c.fails(&[
        "create",
        "service",
        "clusterip",
        "dup",
        "--tcp=80",
        "--clusterip=10.96.10.10",
    ]);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let mut all: HashSet<String> = before.into_iter().map(|(_, ip)| ip).collect();
    for i in 0..5 {
        let name = format!("after-{i}");
        c.ok(&["create", "service", "clusterip", &name, "--tcp=80"]);
        let ip = cluster_ip(&c, &name);
        assert!(in_default_range(&ip), "{ip}");
        assert!(all.insert(ip.clone()), "{ip} handed out twice");
    }
    let list = c.get_json(&["svc", "-A"]);
    let ips: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .filter(|ip| *ip != "None")
        .collect();
    let distinct: HashSet<&&str> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "{ips:?}");
}

#[test]
fn a_small_service_cidr_runs_full() {
    let c = Cluster::start_with(&["--service-cidr", "10.200.0.0/29"]);
    assert_eq!(cluster_ip(&c, "kubernetes"), "10.200.0.1");
    // .2 to .6 are left for Services.
    let mut seen = HashSet::new();
    for i in 0..5 {
        let name = format!("s{i}");
        c.ok(&["create", "service", "clusterip", &name, "--tcp=80"]);
        let ip = cluster_ip(&c, &name);
        assert!(
            ip.starts_with("10.200.0.") && ip != "10.200.0.1" && ip != "10.200.0.7",
            "{ip}"
        );
        assert!(seen.insert(ip));
    }
    let err = c.fails(&["create", "service", "clusterip", "one-too-many", "--tcp=80"]);
    assert!(
        err.contains("failed to allocate a serviceIP: range is full"),
        "{err}"
    );
    // Deleting one frees its address for the next.
    let freed = cluster_ip(&c, "s2");
    c.ok(&["delete", "svc", "s2"]);
    c.ok(&["create", "service", "clusterip", "next", "--tcp=80"]);
    assert_eq!(cluster_ip(&c, "next"), freed);
}

#[path = "../../store/tests/support/etcd_server.rs"]
mod etcd_server;

/// One `nodeless server` on etcd, driven with kubectl.
struct EtcdServer {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts a server on `etcd` with `--service-cidr cidr` (the servers of one etcd share
    /// the cluster's CA through the store).
    fn start(etcd: &str, cidr: &str) -> EtcdServer {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("nodeless.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_nodeless"))
            .args(["server", "--store", "etcd", "--etcd-endpoints", etcd])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--service-cidr", cidr])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = EtcdServer { child, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !server
            .kubectl(&["get", "--raw", "/readyz"])
            .status
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "server not ready:\n{}",
                std::fs::read_to_string(server.dir.path().join("nodeless.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(common::kubectl_versions().pop().unwrap())
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_servers_on_one_etcd_never_hand_out_an_address_twice() {
    if etcd_server::etcd_binary().is_none() {
        eprintln!("skipped: no etcd binary");
        return;
    }
    let etcd = etcd_server::EtcdServer::start();
    let first = EtcdServer::start(&etcd.endpoint(), "10.201.0.0/28");
    let second = EtcdServer::start(&etcd.endpoint(), "10.201.0.0/28");
    let servers = [&first, &second];
    // A /28 has 14 usable addresses; the first is the kubernetes Service's: 13 for 20 Services
    // created at once, half through each server.
    let results: Vec<(String, bool, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = servers[i % 2];
                scope.spawn(move || {
                    let name = format!("s{i}");
                    let out =
                        server.kubectl(&["create", "service", "clusterip", &name, "--tcp=80"]);
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    (name, out.status.success(), stderr)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&String> = results.iter().filter(|r| r.1).map(|r| &r.0).collect();
    for (_, ok, stderr) in &results {
        assert!(*ok || stderr.contains("range is full"), "{stderr}");
    }
    assert_eq!(created.len(), 13, "{results:?}");
    let out = second.kubectl(&["get", "svc", "-A", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ips: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .collect();
    assert_eq!(ips.len(), 14, "{ips:?}");
    let distinct: HashSet<&&str> = ips.iter().collect();
    assert_eq!(distinct.len(), 14, "{ips:?}");
    assert!(ips.contains(&"10.201.0.1"));
}
