//! End-to-end: the agent survives its own crash. After `kill -9` of `nodeless up` and a restart
//! on the same data dir and pod network, the running containers are adopted (same ids, no
//! duplicates, no restarts); a pod deleted while the agent was down has its sandbox removed
//! after the restart; and once every pod is gone nothing of ours is left on the host: no
//! network namespace, no tmpfs under the data dir, no pod cgroup.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: kept}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    volumeMounts: [{name: mem, mountPath: /mem}]
  volumes: [{name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}]
---
apiVersion: v1
kind: Pod
metadata: {name: doomed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sleep, "3600"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
    volumeMounts: [{name: mem, mountPath: /mem}]
  volumes: [{name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}]
"#;

/// What the API says of a running pod: (uid, sandbox-independent container id, restarts).
fn running(c: &Cluster, name: &str) -> Option<(String, String, i64)> {
    let p: Value = c.get_json(&["pod", name]);
    let s = &p["status"]["containerStatuses"][0];
    if p["status"]["phase"] != "Running" || !s["state"]["running"].is_object() {
        return None;
    }
    Some((
        p["metadata"]["uid"].as_str()?.to_string(),
        s["containerID"].as_str()?.to_string(),
        s["restartCount"].as_i64()?,
    ))
}

fn ctr_containers(c: &Cluster) -> BTreeSet<String> {
    c.ctr(&["containers", "ls", "-q"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The network namespace paths of containerd's containers (the sandboxes').
fn netns_paths(c: &Cluster) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for id in ctr_containers(c) {
        let info: Value =
            serde_json::from_str(&c.ctr(&["containers", "info", &id])).unwrap_or_default();
        for ns in info["Spec"]["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if ns["type"] == "network" {
                // Containers join their sandbox's namespace through /proc/PID/ns/net.
                if let Some(path) = ns["path"].as_str().filter(|p| !p.starts_with("/proc/")) {
                    paths.insert(path.to_string());
                }
            }
        }
    }
    paths
}

/// Mount points under `dir` of the given filesystem type.
fn mounts_under(dir: &Path, fs_type: &str) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 2 && fields[1].starts_with(&prefix) && fields[2] == fs_type)
                .then(|| fields[1].to_string())
        })
        .collect()
}

/// Unmounts every tmpfs left under a folder when a test ends, failed or not, so that a leak
/// under test does not outlive the test's temp dir.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        for point in mounts_under(&self.0, "tmpfs") {
            let _ = std::process::Command::new("umount").arg(&point).status();
        }
    }
}

/// Starts a cluster pulling through `registry`, runs `kept` and `doomed`, and returns it with
/// both pods' (uid, container id) and the containers containerd holds.
fn cluster_with_two_pods(mirror: &str) -> (Cluster, [(String, String); 2], BTreeSet<String>) {
    let c = Cluster::start_containerd(Some(mirror), &[]);
    c.ok_stdin(&["apply", "-f", "-"], PODS);
    let (kept_uid, kept_id, _) = eventually(&c, LIMIT, "kept to run", || running(&c, "kept"));
    let (doomed_uid, doomed_id, _) =
        eventually(&c, LIMIT, "doomed to run", || running(&c, "doomed"));
    let containers = ctr_containers(&c);
    assert_eq!(
        containers.len(),
        4,
        "two sandboxes, two containers: {containers:?}"
    );
    // The emptyDirs in memory (containerd's sandboxes have a tmpfs /dev/shm of their own).
    assert_eq!(mounts_under(&c.dir.path().join("agent"), "tmpfs").len(), 2);
    (
        c,
        [(kept_uid, kept_id), (doomed_uid, doomed_id)],
        containers,
    )
}

fn registry() -> Registry {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    registry
}

#[test]
fn running_containers_survive_a_crash_and_nothing_is_left_after_deletion() {
    let registry = registry();
    let mirror = registry.host();
    let (c, pods, containers) = cluster_with_two_pods(&mirror);
    let namespaces = netns_paths(&c);
    assert_eq!(namespaces.len(), 2, "{namespaces:?}");

    // kill -9 and restart on the same data dir and network: the same containers run on.
    let (dir, network) = c.kill_keeping_network();
    let c = Cluster::start_containerd_in(dir, network.unwrap(), Some(&mirror), &[]);
    for (name, (uid, id)) in ["kept", "doomed"].into_iter().zip(&pods) {
        let (now_uid, now_id, restarts) =
            eventually(&c, LIMIT, "the pod to be reported running", || {
                running(&c, name)
            });
        assert_eq!(&now_uid, uid);
        assert_eq!(&now_id, id, "{name} got a new container");
        assert_eq!(restarts, 0, "{name}");
    }
    // Give the agent a few sync rounds to do anything wrong.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        ctr_containers(&c),
        containers,
        "duplicate or lost containers"
    );
    for (name, (_, id)) in ["kept", "doomed"].into_iter().zip(&pods) {
        assert_eq!(running(&c, name).map(|r| r.1).as_ref(), Some(id), "{name}");
    }

    // Everything deleted: nothing of ours is left on the host.
    c.ok(&["delete", "pod", "kept", "doomed"]);
    eventually(&c, LIMIT, "no pods", || {
        c.ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    eventually(&c, LIMIT, "containerd to hold no container", || {
        ctr_containers(&c).is_empty().then_some(())
    });
    eventually(&c, LIMIT, "no tmpfs under the data dir", || {
        mounts_under(c.dir.path(), "tmpfs").is_empty().then_some(())
    });
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for path in &namespaces {
        assert!(!Path::new(path).exists(), "{path} left behind");
        let name = path.rsplit('/').next().unwrap_or_default();
        assert!(!listed.contains(name), "{name} still in ip netns list");
    }
    for (uid, _) in &pods {
        let cgroup = format!("/sys/fs/cgroup/memory/nodeless/pod{uid}");
        assert!(!Path::new(&cgroup).exists(), "{cgroup} left behind");
        let state = c.dir.path().join("agent/pods").join(uid);
        assert!(!state.exists(), "{} left behind", state.display());
    }
}

#[test]
fn a_pod_deleted_while_the_agent_was_down_is_cleaned_up_after_the_restart() {
    let registry = registry();
    let mirror = registry.host();
    let (c, [(_, kept_id), (doomed_uid, doomed_id)], _) = cluster_with_two_pods(&mirror);

    // Down; `doomed` is deleted by an API server without an agent; then the agent comes back
    // and must remove its sandbox, cgroup and volumes.
    let (dir, network) = c.kill_keeping_network();
    let server = Cluster::start_server_in(dir);
    server.ok(&["delete", "pod", "doomed", "--grace-period=0", "--force"]);
    let dir = server.stop();
    // containerd ran on without an agent: the deleted pod's container is still there.
    let doomed_container = doomed_id.trim_start_matches("containerd://").to_string();
    let c = Cluster::start_containerd_in(dir, network.unwrap(), Some(&mirror), &[]);
    let _unmount = UnmountOnDrop(c.dir.path().join("agent"));
    eventually(
        &c,
        LIMIT,
        "the deleted pod's containers to be removed",
        || {
            let now = ctr_containers(&c);
            (now.len() == 2 && !now.contains(&doomed_container)).then_some(())
        },
    );
    assert_eq!(running(&c, "kept").map(|r| r.1), Some(kept_id));
    let doomed_cgroup = format!("/sys/fs/cgroup/memory/nodeless/pod{doomed_uid}");
    eventually(&c, LIMIT, "the deleted pod's cgroup to go", || {
        (!Path::new(&doomed_cgroup).exists()).then_some(())
    });
    let agent_dir = c.dir.path().join("agent");
    eventually(&c, LIMIT, "the deleted pod's tmpfs to go", || {
        (mounts_under(&agent_dir, "tmpfs").len() == 1).then_some(())
    });
    let state = agent_dir.join("pods").join(&doomed_uid);
    eventually(&c, LIMIT, "the deleted pod's state to go", || {
        (!state.exists()).then_some(())
    });
}

const FINISHED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "echo finished-output"]
    resources: {limits: {cpu: 250m, memory: 64Mi}}
"#;

/// The containers (sandbox and app) containerd holds for one pod uid.
fn containers_of_pod(c: &Cluster, uid: &str) -> BTreeSet<String> {
    ctr_containers(c)
        .into_iter()
        .filter(|id| {
            let info: Value =
                serde_json::from_str(&c.ctr(&["containers", "info", id])).unwrap_or_default();
            info["Labels"]["io.kubernetes.pod.uid"] == uid
        })
        .collect()
}

#[test]
fn a_finished_pods_sandbox_is_removed_after_a_restart_and_its_logs_stay() {
    let registry = registry();
    let mirror = registry.host();
    let (c, [(kept_uid, kept_id), _], _) = cluster_with_two_pods(&mirror);
    c.ok_stdin(&["apply", "-f", "-"], FINISHED);
    eventually(&c, LIMIT, "done to succeed", || {
        let p: Value = c.get_json(&["pod", "done"]);
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    let done_uid = c.get_json(&["pod", "done"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    // Finished: the sandbox is stopped but kept, with its container.
    let held = containers_of_pod(&c, &done_uid);
    assert!(
        !held.is_empty(),
        "the finished pod's sandbox is already gone"
    );
    assert_eq!(c.ok(&["logs", "done"]).trim(), "finished-output");

    let (dir, network) = c.kill_keeping_network();
    let c = Cluster::start_containerd_in(dir, network.unwrap(), Some(&mirror), &[]);
    let _unmount = UnmountOnDrop(c.dir.path().join("agent"));
    eventually(
        &c,
        LIMIT,
        "the finished pod's sandbox to be removed",
        || containers_of_pod(&c, &done_uid).is_empty().then_some(()),
    );
    let cgroup = format!("/sys/fs/cgroup/memory/nodeless/pod{done_uid}");
    eventually(&c, LIMIT, "the finished pod's cgroup to go", || {
        (!Path::new(&cgroup).exists()).then_some(())
    });
    // The pod is still there, Succeeded, and its logs with it.
    let p: Value = c.get_json(&["pod", "done"]);
    assert_eq!(p["status"]["phase"], "Succeeded");
    assert_eq!(c.ok(&["logs", "done"]).trim(), "finished-output");
    // The running pods were not touched.
    assert_eq!(
        running(&c, "kept").map(|r| (r.0, r.1)),
        Some((kept_uid.clone(), kept_id))
    );
    assert!(!containers_of_pod(&c, &kept_uid).is_empty());
    c.ok(&["delete", "pod", "done"]);
    assert!(containers_of_pod(&c, &done_uid).is_empty());
}

/// The id of the sandbox containerd holds for one pod uid.
fn sandbox_of_pod(c: &Cluster, uid: &str) -> Option<String> {
    ctr_containers(c).into_iter().find(|id| {
        let info: Value =
            serde_json::from_str(&c.ctr(&["containers", "info", id])).unwrap_or_default();
        info["Labels"]["io.kubernetes.pod.uid"] == uid
            && info["Labels"]["io.cri-containerd.kind"] == "sandbox"
    })
}

#[test]
fn a_sandbox_that_died_while_the_agent_was_down_is_replaced_and_removed() {
    let registry = registry();
    let mirror = registry.host();
    let (c, [(kept_uid, kept_id), (doomed_uid, doomed_id)], _) = cluster_with_two_pods(&mirror);
    let stale = sandbox_of_pod(&c, &kept_uid).expect("kept's sandbox");
    let stale_containers = containers_of_pod(&c, &kept_uid);
    assert_eq!(stale_containers.len(), 2, "{stale_containers:?}");

    // The agent is down when kept's sandbox dies (its containerd lives on).
    let (dir, network) = c.kill_keeping_network();
    let ctr = |args: &[&str]| common::ctr_in(dir.path(), args);
    ctr(&["tasks", "kill", "--signal", "SIGKILL", &stale]);
    // Dead is STOPPED, or no task at all: containerd's CRI deletes a sandbox's task when its
    // pause exits, sometimes before the first listing.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let tasks = ctr(&["tasks", "ls"]);
        let running = tasks
            .lines()
            .any(|l| l.starts_with(stale.as_str()) && l.contains("RUNNING"));
        if !running {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox did not stop:\n{tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let c = Cluster::start_containerd_in(dir, network.unwrap(), Some(&mirror), &[]);
    let _unmount = UnmountOnDrop(c.dir.path().join("agent"));
    // kept runs again in a new sandbox, and the dead one is gone with its container.
    let (uid, id, restarts) = eventually(&c, LIMIT, "kept to run in a new sandbox", || {
        running(&c, "kept").filter(|(_, id, _)| *id != kept_id)
    });
    assert_eq!(uid, kept_uid);
    // As the kubelet's: a restart, and a last state that says the old run was not found.
    assert_eq!(restarts, 1);
    let last = &c.get_json(&["pod", "kept"])["status"]["containerStatuses"][0]["lastState"];
    assert_eq!(
        last["terminated"]["reason"], "ContainerStatusUnknown",
        "{last}"
    );
    assert_eq!(last["terminated"]["exitCode"], 137, "{last}");
    eventually(&c, LIMIT, "the dead sandbox to be removed", || {
        let now = containers_of_pod(&c, &kept_uid);
        (now.len() == 2 && now.is_disjoint(&stale_containers)).then_some(())
    });
    let sandbox = sandbox_of_pod(&c, &kept_uid).expect("kept's new sandbox");
    assert_ne!(sandbox, stale);
    let app: Vec<String> = containers_of_pod(&c, &kept_uid)
        .into_iter()
        .filter(|i| *i != sandbox)
        .collect();
    assert_eq!(app.len(), 1, "{app:?}");
    assert_eq!(
        id,
        format!("containerd://{}", app[0]),
        "the status names the new container"
    );
    // The other pod was not touched.
    assert_eq!(
        running(&c, "doomed").map(|r| (r.0, r.1)),
        Some((doomed_uid, doomed_id))
    );
    c.ok(&["delete", "pod", "kept", "doomed"]);
    eventually(&c, LIMIT, "containerd to hold no container", || {
        ctr_containers(&c).is_empty().then_some(())
    });
}
