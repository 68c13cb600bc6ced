//! End-to-end: the warm sandbox pool (`--sandbox-pool`) on the real containerd. A pod that
//! takes a pool sandbox has its own identity (hostname = pod name in its UTS namespace and
//! `$HOSTNAME`, `/etc/hostname`, resolv.conf with its namespace's search domains, /etc/hosts
//! with its IP, the pod cgroup's limit); the pool refills; after `kill -9` and a restart the
//! pod is adopted (same container, no restart) and the idle pool sandboxes are reused, not
//! duplicated; a restart with `--sandbox-pool 0` removes the idle ones; and once the pod is
//! deleted and the cluster stopped, no network namespace or cgroup of the pool is left.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
"#;

/// The label of pool sandboxes (crates/containerd/src/pool.rs).
const LABEL_POOL: &str = "nodeless.io/sandbox-pool";

/// Each sandbox container of containerd: its id, its pool uid (pool sandboxes only) and its
/// network namespace path.
fn sandboxes(c: &Cluster) -> Vec<(String, Option<String>, Option<String>)> {
    let mut found = Vec::new();
    for id in c.ctr(&["containers", "ls", "-q"]).split_whitespace() {
        let info: Value =
            serde_json::from_str(&c.ctr(&["containers", "info", id])).unwrap_or_default();
        if info["Labels"]["io.cri-containerd.kind"] != "sandbox" {
            continue;
        }
        let pool = info["Labels"][LABEL_POOL].as_str().map(str::to_string);
        let netns = info["Spec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .map(str::to_string);
        found.push((id.to_string(), pool, netns));
    }
    found
}

fn container_count(c: &Cluster) -> usize {
    c.ctr(&["containers", "ls", "-q"])
        .split_whitespace()
        .count()
}

fn running(c: &Cluster) -> Option<(String, String, i64, String)> {
    let p: Value = c.get_json(&["-n", "shop", "pod", "web"]);
    let s = &p["status"]["containerStatuses"][0];
    if p["status"]["phase"] != "Running" || !s["state"]["running"].is_object() {
        return None;
    }
    Some((
        p["metadata"]["uid"].as_str()?.to_string(),
        s["containerID"].as_str()?.to_string(),
        s["restartCount"].as_i64()?,
        p["status"]["podIP"].as_str()?.to_string(),
    ))
}

fn exec(c: &Cluster, script: &str) -> String {
    c.ok(&["-n", "shop", "exec", "web", "--", "sh", "-c", script])
        .trim()
        .to_string()
}

/// The memory the pod was provisioned (`nodeless.io/capacity-provisioned`, `0.25vCPU 0.5GiB`).
fn provisioned_bytes(c: &Cluster) -> u64 {
    let p: Value = c.get_json(&["-n", "shop", "pod", "web"]);
    let size = p["metadata"]["annotations"]["nodeless.io/capacity-provisioned"]
        .as_str()
        .expect("a provisioned size")
        .to_string();
    let memory = size
        .split_whitespace()
        .find_map(|part| part.strip_suffix("GiB"))
        .and_then(|n| n.parse::<f64>().ok())
        .expect("GiB in the size");
    (memory * (1u64 << 30) as f64) as u64
}

/// The pool's assignment files (crates/containerd/src/pool.rs): sandbox id -> pod uid.
fn assignments(c: &Cluster) -> Vec<(String, String)> {
    let dir = c.dir.path().join("agent/sandbox-pool");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                v["podUID"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The CPU cgroup of process `pid`: v1's `cpu` line of `/proc/<pid>/cgroup`, or v2's.
fn cpu_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let path_of = |wanted: &dyn Fn(&str) -> bool| {
        text.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            wanted(controllers).then(|| path.to_string())
        })
    };
    path_of(&|c| c.split(',').any(|c| c == "cpu"))
        .or_else(|| path_of(&|c| c.is_empty()))
        .unwrap_or_default()
}

/// The parent of process `pid` (`/proc/<pid>/stat`, field 4).
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or_default();
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Pool sandboxes are made with the background runtime handler, whose shims start in the
/// idle CPU cgroup (`ShimCgroup` in their runc options), and once made, each shim is moved to
/// containerd's CPU cgroup: none of the shims of `c` is left in the background.
fn assert_pool_made_in_the_background(c: &Cluster) {
    let nodeless_cgroup = cpu_cgroup(c.pid());
    let tasks = c.ctr(&["tasks", "ls"]);
    for (id, pool, _) in sandboxes(c) {
        let info: Value = serde_json::from_str(&c.ctr(&["containers", "info", &id])).unwrap();
        if pool.is_some() {
            let options = info["Runtime"]["Options"]["value"]
                .as_str()
                .unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(options)
                .unwrap_or_default();
            let decoded = String::from_utf8_lossy(&decoded);
            assert!(
                decoded.contains("/nodeless-background"),
                "pool sandbox {id} not made with the background handler: {info}"
            );
        }
        let pause: u32 = tasks
            .lines()
            .find(|line| line.starts_with(&id))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no task of sandbox {id} in\n{tasks}"));
        let shim = parent_of(pause);
        assert_eq!(
            cpu_cgroup(shim),
            nodeless_cgroup,
            "the shim {shim} of sandbox {id} (pool: {pool:?}) is not in containerd's CPU cgroup"
        );
    }
}

fn pool_cgroup(pool_uid: &str) -> String {
    format!("/sys/fs/cgroup/memory/nodeless/pod{pool_uid}")
}

#[test]
fn pods_take_pool_sandboxes_with_their_own_identity_across_restarts_and_nothing_leaks() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let mirror = registry.host();
    let pool = ["--sandbox-pool", "2"];
    let c = Cluster::start_containerd(Some(&mirror), &pool);
    eventually(&c, LIMIT, "the pool to fill", || {
        (sandboxes(&c).iter().filter(|s| s.1.is_some()).count() == 2).then_some(())
    });
    let idle_before: BTreeSet<String> = sandboxes(&c).into_iter().map(|s| s.0).collect();
    c.ok(&["create", "namespace", "shop"]);
    c.ok_stdin(&["apply", "-f", "-"], POD);
    let (uid, container_id, _, ip) = eventually(&c, LIMIT, "web to run", || running(&c));

    // The pod's sandbox is one the pool had ready, assigned to the pod on disk.
    let assigned = assignments(&c);
    assert_eq!(assigned.len(), 1, "{assigned:?}");
    assert_eq!(assigned[0].1, uid);
    assert!(
        idle_before.contains(&assigned[0].0),
        "{assigned:?} not from {idle_before:?}"
    );
    let pod_sandbox = assigned[0].0.clone();

    // Its identity is the pod's.
    assert_eq!(exec(&c, "hostname"), "web");
    assert_eq!(exec(&c, "cat /etc/hostname"), "web");
    assert_eq!(exec(&c, "echo $HOSTNAME"), "web");
    let resolv = exec(&c, "cat /etc/resolv.conf");
    assert!(
        resolv.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let hosts = exec(&c, "cat /etc/hosts");
    assert!(hosts.contains(&format!("{ip}\tweb")), "{hosts}");
    let addresses = exec(&c, "ip -4 addr show eth0");
    assert!(addresses.contains(&format!("inet {ip}/")), "{addresses}");
    let cgroup = format!("/sys/fs/cgroup/memory/nodeless/pod{uid}/memory.limit_in_bytes");
    let limit: u64 = std::fs::read_to_string(&cgroup)
        .unwrap_or_else(|e| panic!("{cgroup}: {e}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(limit, provisioned_bytes(&c));

    // The pool refills behind the pod: two idle sandboxes again, besides the pod's.
    eventually(&c, LIMIT, "the pool to refill", || {
        let all = sandboxes(&c);
        (all.len() == 3 && all.iter().any(|s| s.0 == pod_sandbox)).then_some(())
    });
    let mut seen = sandboxes(&c);
    assert_pool_made_in_the_background(&c);

    // kill -9 and restart: the pod is adopted, the idle sandboxes reused.
    let (dir, network) = c.kill_keeping_network();
    let c = Cluster::start_containerd_in(dir, network.unwrap(), Some(&mirror), &pool);
    let (now_uid, now_id, restarts, now_ip) =
        eventually(&c, LIMIT, "web to be reported running", || running(&c));
    assert_eq!(
        (now_uid, now_id, restarts, now_ip),
        (uid.clone(), container_id, 0, ip)
    );
    std::thread::sleep(Duration::from_secs(5));
    let after: BTreeSet<String> = sandboxes(&c).into_iter().map(|s| s.0).collect();
    let before: BTreeSet<String> = seen.iter().map(|s| s.0.clone()).collect();
    assert_eq!(after, before, "the restart duplicated or lost sandboxes");
    assert_eq!(
        container_count(&c),
        4,
        "three sandboxes and the pod's container"
    );
    assert_eq!(exec(&c, "hostname"), "web");

    // The pod goes: its sandbox, assignment and cgroups with it; the pool stays.
    c.ok(&["-n", "shop", "delete", "pod", "web"]);
    eventually(&c, LIMIT, "the pod's sandbox to go", || {
        let all = sandboxes(&c);
        (all.len() == 2 && all.iter().all(|s| s.0 != pod_sandbox)).then_some(())
    });
    eventually(&c, LIMIT, "the assignment to go", || {
        assignments(&c).is_empty().then_some(())
    });
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/nodeless/pod{uid}")).exists());
    seen.extend(sandboxes(&c));

    // Restarted without a pool: the idle sandboxes are removed.
    let (dir, network) = c.kill_keeping_network();
    let c = Cluster::start_containerd_in(
        dir,
        network.unwrap(),
        Some(&mirror),
        &["--sandbox-pool", "0"],
    );
    eventually(&c, LIMIT, "the idle sandboxes to be removed", || {
        (container_count(&c) == 0).then_some(())
    });
    // And with one again, stopped with SIGTERM: the pool's sandboxes go with the cluster.
    let (dir, network) = c.stop_keeping_network();
    let c = Cluster::start_containerd_in(dir, network.unwrap(), Some(&mirror), &pool);
    eventually(&c, LIMIT, "the pool to fill again", || {
        (sandboxes(&c).len() == 2).then_some(())
    });
    seen.extend(sandboxes(&c));
    let dir = c.stop();
    for (id, pool_uid, netns) in &seen {
        if let Some(netns) = netns {
            assert!(!Path::new(netns).exists(), "{netns} of {id} left behind");
        }
        if let Some(pool_uid) = pool_uid {
            let cgroup = pool_cgroup(pool_uid);
            assert!(!Path::new(&cgroup).exists(), "{cgroup} left behind");
        }
    }
    let left = std::fs::read_dir(dir.path().join("agent/sandbox-pool"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "assignments left behind");
}

/// A Deployment of pods that cannot use a pool sandbox (a shared process namespace).
const SHARED_PID_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: shared, namespace: shop}
spec:
  replicas: 5
  selector: {matchLabels: {app: shared}}
  template:
    metadata: {labels: {app: shared}}
    spec:
      terminationGracePeriodSeconds: 0
      shareProcessNamespace: true
      containers:
      - name: main
        image: busybox
        command: [sleep, "3600"]
        resources: {limits: {cpu: 250m, memory: 64Mi}}
"#;

/// The pod IPs of the running pods of `app=shared`.
fn shared_pod_ips(c: &Cluster) -> Vec<String> {
    let list: Value = c.get_json(&["-n", "shop", "pods", "-l", "app=shared"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn on_a_full_pod_cidr_idle_pool_sandboxes_give_their_addresses_up() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let mirror = registry.host();
    // A /29 has five pod addresses (the node's pod capacity): the two idle pool sandboxes
    // hold two of them, so the last two of five pods that need sandboxes of their own get
    // theirs only if idle pool sandboxes give their addresses up.
    let mut network = common::TestNetwork::next();
    network.subnet = network.subnet.replace("/24", "/29");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start_containerd_in(dir, network, Some(&mirror), &["--sandbox-pool", "2"]);
    eventually(&c, LIMIT, "the pool to fill", || {
        (sandboxes(&c).iter().filter(|s| s.1.is_some()).count() == 2).then_some(())
    });
    c.ok(&["create", "namespace", "shop"]);
    c.ok_stdin(&["apply", "-f", "-"], SHARED_PID_DEPLOYMENT);
    let ips = eventually(&c, LIMIT, "five pods to run", || {
        let ips = shared_pod_ips(&c);
        (ips.len() == 5).then_some(ips)
    });
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        distinct.len(),
        5,
        "every pod has an address of its own: {ips:?}"
    );
    let all = sandboxes(&c);
    assert_eq!(
        all.iter().filter(|s| s.1.is_some()).count(),
        0,
        "the pool gave every address up: {all:?}"
    );

    // Once the pods go, the pool fills again.
    c.ok(&["-n", "shop", "scale", "deploy/shared", "--replicas=0"]);
    eventually(&c, LIMIT, "the pool to refill", || {
        let all = sandboxes(&c);
        (all.len() == 2 && all.iter().all(|s| s.1.is_some())).then_some(())
    });
    c.stop();
}
