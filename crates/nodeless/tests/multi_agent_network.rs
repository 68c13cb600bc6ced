//! End-to-end: pods on two agents reach each other. Two network namespaces stand for two
//! machines on one L2 segment (a host bridge with a veth into each, on a private /24 that only
//! this test uses); `nodeless server` listens on the bridge's address and a
//! `nodeless agent --runtime containerd` runs in each namespace with its own containerd, pod
//! CIDR and bridge. The agents' route controllers route each other's pod CIDR via the other's
//! InternalIP (`--node-ip`, its veth address), so a pod on one node reaches a pod on the other
//! by its IP with its own source address (no NAT); a ClusterIP Service whose only endpoint is
//! on the other node answers, and the cluster DNS answers on each agent. When a Node goes, the
//! other agent's route to its CIDR goes. Nothing leaves the machine: the namespaces have no
//! default route and the image is imported, not pulled.
//!
//! The agents run under `nsenter --net=/run/netns/NS`, not `ip netns exec`: the latter mounts
//! a fresh /sys, which hides /sys/fs/cgroup from the agent's containerd.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);

/// Runs a command, panicking with its stderr when it fails; returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGTERMs a child and waits for it (SIGKILL after `grace`); true when it exited in time.
fn terminate(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// One agent's "machine": a network namespace with a veth to the host bridge.
struct Machine {
    netns: String,
    /// The address of its veth (the Node's InternalIP).
    address: String,
    pod_cidr: String,
    bridge: String,
    node: String,
    dir: tempfile::TempDir,
    agent: Option<Child>,
}

impl Machine {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// `ip -4 route show proto 78` in its namespace (the routes of nodeless's controller).
    fn pod_routes(&self) -> String {
        run(
            "ip",
            &["-n", &self.netns, "-4", "route", "show", "proto", "78"],
        )
    }

    /// Stops its agent (SIGTERM: the agent stops its sandboxes and containerd); if it does
    /// not exit in time, SIGKILLs it and its containerd by their pids.
    fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            if !terminate(&mut child, Duration::from_secs(30)) {
                let pid_file = self.dir.path().join("containerd/containerd.pid");
                if let Ok(pid) = std::fs::read_to_string(pid_file) {
                    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                }
            }
        }
    }
}

/// The host side: the bridge, both machines, the server. Dropping it stops the processes by
/// pid and deletes the namespaces and the bridge, whether the test passed or not.
struct Lab {
    bridge: String,
    server: Option<Child>,
    server_dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    machines: Vec<Machine>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for machine in &mut self.machines {
            machine.stop_agent();
        }
        if let Some(mut server) = self.server.take() {
            terminate(&mut server, Duration::from_secs(20));
        }
        for machine in &self.machines {
            let _ = Command::new("ip")
                .args(["netns", "delete", &machine.netns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Lab {
    /// The bridge, two namespaces with their veths, and the server on the bridge's address.
    fn start() -> Self {
        let id = std::process::id() % 100_000;
        // A /24 of 172.16.0.0/12 per test process, and pod/service ranges beside it; none of
        // them is routed on the host.
        let n = id % 250;
        let link_net = format!("172.30.{n}");
        let bridge = format!("nlmb{id}");
        let mut lab = Lab {
            bridge: bridge.clone(),
            server: None,
            server_dir: tempfile::tempdir().unwrap(),
            kubeconfig: PathBuf::new(),
            machines: Vec::new(),
        };
        let existing = run("ip", &["-4", "addr"]) + &run("ip", &["-4", "route"]);
        assert!(
            !existing.contains(&format!("{link_net}.")),
            "{link_net}.0/24 is in use on this machine:\n{existing}"
        );
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run(
            "ip",
            &["addr", "add", &format!("{link_net}.1/24"), "dev", &bridge],
        );
        run("ip", &["link", "set", &bridge, "up"]);
        for (index, letter) in ["a", "b"].iter().enumerate() {
            let netns = format!("nlm{id}{letter}");
            let host_end = format!("nlmh{id}{letter}");
            let ns_end = format!("nlmn{id}{letter}");
            let address = format!("{link_net}.{}", index + 2);
            lab.machines.push(Machine {
                netns: netns.clone(),
                address: address.clone(),
                pod_cidr: format!("172.{}.{n}.0/24", 28 + index),
                bridge: format!("nlmp{id}{letter}"),
                node: format!("nlm-{letter}-{id}"),
                dir: tempfile::tempdir().unwrap(),
                agent: None,
            });
            run("ip", &["netns", "add", &netns]);
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end, "netns",
                    &netns,
                ],
            );
            run("ip", &["link", "set", &host_end, "master", &bridge, "up"]);
            let in_ns = |args: &[&str]| {
                let mut full = vec!["-n", netns.as_str()];
                full.extend_from_slice(args);
                run("ip", &full);
            };
            in_ns(&["link", "set", "lo", "up"]);
            in_ns(&["addr", "add", &format!("{address}/24"), "dev", &ns_end]);
            in_ns(&["link", "set", &ns_end, "up"]);
        }
        let log = std::fs::File::create(lab.server_dir.path().join("nodeless.log")).unwrap();
        lab.server = Some(
            Command::new(env!("CARGO_BIN_EXE_nodeless"))
                .args(["server", "--data-dir"])
                .arg(lab.server_dir.path())
                .args(["--listen", &format!("{link_net}.1:0")])
                .args(["--service-cidr", &lab.service_cidr()])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start nodeless server"),
        );
        lab.kubeconfig = lab.server_dir.path().join("kubeconfig");
        lab.wait(Duration::from_secs(60), "the server is ready", || {
            (lab.kubeconfig.exists() && lab.kubectl(&["get", "--raw", "/readyz"]).status.success())
                .then_some(())
        });
        lab
    }

    fn service_cidr(&self) -> String {
        format!("172.27.{}.0/24", std::process::id() % 100_000 % 250)
    }

    fn logs(&self) -> String {
        let mut text = format!(
            "server log:\n{}",
            std::fs::read_to_string(self.server_dir.path().join("nodeless.log"))
                .unwrap_or_default()
        );
        for machine in &self.machines {
            text += &format!("\nagent {} log:\n{}", machine.node, machine.log());
        }
        text
    }

    /// Polls `check` every 250 ms until it returns `Some`, or panics with the logs.
    fn wait<T>(&self, limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let kubectl = common::kubectl_versions().pop().unwrap();
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", self.server_dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn get_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&full, None)).unwrap()
    }

    /// Starts machine `index`'s agent in its namespace with a new bootstrap token, and imports
    /// busybox into its containerd once that is up.
    /// What an agent needs to join: the server's URL, a new bootstrap token, the CA file.
    fn join(&self) -> (String, String, PathBuf) {
        let token = run(
            env!("CARGO_BIN_EXE_nodeless"),
            &[
                "token",
                "create",
                "--data-dir",
                self.server_dir.path().to_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
        let server = std::fs::read_to_string(&self.kubeconfig)
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
            .unwrap();
        (server, token, self.server_dir.path().join("pki/ca.crt"))
    }

    fn start_agent(&mut self, index: usize) {
        let (server, token, ca) = self.join();
        let service_cidr = self.service_cidr();
        let machine = &mut self.machines[index];
        let log = std::fs::File::create(machine.dir.path().join("agent.log")).unwrap();
        let netns_path = format!("--net=/run/netns/{}", machine.netns);
        let child = Command::new("nsenter")
            .arg(&netns_path)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_nodeless"))
            .args(["agent", "--server", &server, "--token", &token, "--ca-cert"])
            .arg(&ca)
            .args(["--node-name", &machine.node, "--node-ip", &machine.address])
            .arg("--data-dir")
            .arg(machine.dir.path())
            .args(["--runtime", "containerd"])
            .args(["--pod-cidr", &machine.pod_cidr])
            .args(["--bridge-name", &machine.bridge])
            .args(["--service-cidr", &service_cidr])
            // Names outside the cluster go nowhere: a loopback port nothing answers on.
            .args(["--dns-upstream", "127.0.0.1:9"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nodeless agent under nsenter");
        machine.agent = Some(child);
        let socket = machine.dir.path().join("containerd/containerd.sock");
        let archive = common::registry::busybox_archive();
        self.wait(
            LIMIT,
            "busybox is imported into the agent's containerd",
            || {
                if !socket.exists() {
                    return None;
                }
                let out = Command::new("ctr")
                    .arg("--address")
                    .arg(&socket)
                    .args(["--namespace", "k8s.io", "images", "import"])
                    .arg(archive)
                    .output()
                    .ok()?;
                out.status.success().then_some(())
            },
        );
    }

    fn wait_node_ready(&self, node: &str) {
        self.wait(LIMIT, &format!("node {node} is Ready"), || {
            let out = self.kubectl(&["get", "node", node, "-o", "json"]);
            let obj: Value = serde_json::from_slice(&out.stdout).ok()?;
            obj["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        });
    }

    /// The body of `GET http://ADDRESS:PORT/PATH` from a pod, through busybox's `nc` (its
    /// static `wget` crashes loading NSS); `None` when nothing answered.
    fn http_get(&self, pod: &str, address: &str, port: u16, path: &str) -> Option<String> {
        let script = format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {port}");
        let response = self.exec(pod, &["sh", "-c", &script])?;
        if !response.starts_with("HTTP/1.") {
            return None;
        }
        // The head ends at the first empty line (CRLF, or LF from a CGI's own headers).
        let mut lines = response.split('\n');
        lines
            .by_ref()
            .find(|line| line.trim_end_matches('\r').is_empty())?;
        Some(lines.collect::<Vec<_>>().join("\n"))
    }

    /// Runs a command in a pod; its stdout, or `None` when it failed.
    fn exec(&self, pod: &str, command: &[&str]) -> Option<String> {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        let out = self.kubectl(&args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A busybox httpd on port 8080 pinned to `node`: `/` answers `hello from NODE`, and the CGI
/// `/cgi-bin/who` answers `remote=ADDRESS` with the client's address as the server saw it.
fn web_pod(name: &str, node: &str) -> String {
    let script = format!(
        "mkdir -p /www/cgi-bin\n\
         echo 'hello from {node}' > /www/index.html\n\
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho remote=$REMOTE_ADDR\\n' \
         > /www/cgi-bin/who\n\
         chmod +x /www/cgi-bin/who\n\
         exec httpd -f -p 8080 -h /www\n"
    );
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{
                "name": "web",
                "image": "busybox",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
            }]
        }
    })
    .to_string()
}

/// A ClusterIP Service on port 80 for the pod `app`.
fn service(name: &str, app: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"port": 80, "targetPort": 8080}]
        }
    })
    .to_string()
}

fn pod_ip(lab: &Lab, pod: &str) -> String {
    lab.wait(LIMIT, &format!("pod {pod} runs"), || {
        let obj = lab.get_json(&["pod", pod]);
        (obj["status"]["phase"] == "Running")
            .then(|| obj["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    })
}

fn assert_in(cidr: &str, ip: &str) {
    let prefix = cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "{ip} is not in {cidr}");
}

#[test]
fn pods_on_two_agents_in_their_own_namespaces_reach_each_other() {
    let mut lab = Lab::start();
    // Routes agent A did not make, which it must leave alone: one of another program's
    // (proto static) and one carrying nodeless's tag but not in A's record (as another
    // cluster's agent in the same namespace would make).
    let n = std::process::id() % 100_000 % 250;
    let foreign = [
        format!("172.25.{n}.0/24 via 172.30.{n}.9 proto static"),
        format!("172.26.{n}.0/24 via 172.30.{n}.9 proto 78"),
    ];
    for route in &foreign {
        let mut args = vec!["-n", lab.machines[0].netns.as_str(), "route", "add"];
        args.extend(route.split(' '));
        run("ip", &args);
    }
    lab.start_agent(0);
    lab.start_agent(1);
    let (node_a, node_b) = (lab.machines[0].node.clone(), lab.machines[1].node.clone());
    lab.wait_node_ready(&node_a);
    lab.wait_node_ready(&node_b);

    // Each agent routes the other's pod CIDR via the other's veth address, tagged proto 78.
    for (this, other) in [(0, 1), (1, 0)] {
        let expected = format!(
            "{} via {}",
            lab.machines[other].pod_cidr, lab.machines[other].address
        );
        lab.wait(LIMIT, &format!("the route {expected}"), || {
            lab.machines[this]
                .pod_routes()
                .contains(&expected)
                .then_some(())
        });
    }

    lab.ok(&["apply", "-f", "-"], Some(&web_pod("web-a", &node_a)));
    lab.ok(&["apply", "-f", "-"], Some(&web_pod("web-b", &node_b)));
    let ip_a = pod_ip(&lab, "web-a");
    let ip_b = pod_ip(&lab, "web-b");
    assert_in(&lab.machines[0].pod_cidr, &ip_a);
    assert_in(&lab.machines[1].pod_cidr, &ip_b);

    // Pod to pod across the agents, both ways, and the server sees the client's pod IP.
    for (client, client_ip, server_ip, server_node) in [
        ("web-a", &ip_a, &ip_b, &node_b),
        ("web-b", &ip_b, &ip_a, &node_a),
    ] {
        let page = lab.wait(LIMIT, &format!("{client} reaches {server_ip}"), || {
            lab.http_get(client, server_ip, 8080, "/")
        });
        assert_eq!(page.trim(), format!("hello from {server_node}"));
        let who = lab
            .http_get(client, server_ip, 8080, "/cgi-bin/who")
            .unwrap_or_else(|| panic!("the CGI on {server_ip} answers; {}", lab.logs()));
        // busybox httpd prints IPv4 peers as IPv4-mapped IPv6 (`[::ffff:A.B.C.D]`).
        let remote = who.trim().trim_start_matches("remote=");
        let remote = remote.trim_start_matches("[::ffff:").trim_end_matches(']');
        assert_eq!(
            remote,
            client_ip.as_str(),
            "no NAT between pod CIDRs: {who}"
        );
    }

    // A ClusterIP whose only endpoint is on the other node, by IP and by name.
    lab.ok(&["apply", "-f", "-"], Some(&service("svc-b", "web-b")));
    let cluster_ip = lab.get_json(&["service", "svc-b"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let page = lab.wait(LIMIT, "web-a reaches svc-b's ClusterIP", || {
        lab.http_get("web-a", &cluster_ip, 80, "/")
    });
    assert_eq!(page.trim(), format!("hello from {node_b}"));
    // The service proxy is a userspace proxy (as kube-proxy's userspace mode): the endpoint
    // sees the connection from the client's node, not from the client pod.
    let who = lab
        .http_get("web-a", &cluster_ip, 80, "/cgi-bin/who")
        .unwrap_or_else(|| panic!("the CGI answers through svc-b; {}", lab.logs()));
    assert!(
        who.contains(&lab.machines[0].address),
        "through the ClusterIP, from node A's address: {who}"
    );
    // busybox's nslookup has its own resolver (its wget would load NSS, which static busybox
    // cannot): the cluster DNS on agent A answers for the Service.
    let answer = lab.wait(LIMIT, "the cluster DNS on agent A answers", || {
        lab.exec("web-a", &["nslookup", "svc-b.default.svc.cluster.local"])
            .filter(|out| out.contains(&cluster_ip))
    });
    assert!(answer.contains(&cluster_ip), "{answer}");

    // An agent given another --service-cidr than the server's is refused, with the reason.
    let (server, token, ca) = lab.join();
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.machines[0].netns))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nodeless"))
        .args(["agent", "--server", &server, "--token", &token, "--ca-cert"])
        .arg(&ca)
        .args(["--node-name", "nlm-wrong-cidr", "--runtime", "simulated"])
        .args(["--node-ip", &lab.machines[0].address, "--data-dir"])
        .arg(dir.path())
        .args(["--service-cidr", "10.99.0.0/24"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("is not the cluster's"),
        "{stderr}"
    );
    assert!(!lab
        .kubectl(&["get", "node", "nlm-wrong-cidr"])
        .status
        .success());

    // Node B's address changes: A's route follows (B's agent writes its own address back
    // with its next status, within a minute, and the route follows again).
    let moved = format!("{} via 172.30.{n}.7", lab.machines[1].pod_cidr);
    lab.ok(
        &[
            "patch",
            "node",
            &node_b,
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({"status": {"addresses": [
                {"type": "InternalIP", "address": format!("172.30.{n}.7")},
                {"type": "Hostname", "address": node_b}
            ]}})
            .to_string(),
        ],
        None,
    );
    lab.wait(
        LIMIT,
        "agent A's route follows node B's new address",
        || lab.machines[0].pod_routes().contains(&moved).then_some(()),
    );

    // Agent B goes, and its Node with it: A's route to B's pod CIDR goes; A's pods stay.
    lab.machines[1].stop_agent();
    lab.ok(&["delete", "node", &node_b], None);
    let gone = format!("{} via", lab.machines[1].pod_cidr);
    lab.wait(LIMIT, "agent A's route to B's pod CIDR goes", || {
        (!lab.machines[0].pod_routes().contains(&gone)).then_some(())
    });
    assert!(lab.exec("web-a", &["true"]).is_some(), "{}", lab.logs());
    assert_eq!(
        run(
            "ip",
            &[
                "-n",
                &lab.machines[0].netns,
                "-4",
                "route",
                "show",
                "exact",
                &lab.machines[1].pod_cidr
            ]
        )
        .trim(),
        "",
        "no route at all to B's CIDR is left in A"
    );
    let left = run("ip", &["-n", &lab.machines[0].netns, "-4", "route"]);
    for route in &foreign {
        let destination = route.split(' ').next().unwrap();
        assert!(
            left.lines().any(|l| l.starts_with(destination)),
            "agent A left {route} alone:\n{left}"
        );
    }
}
