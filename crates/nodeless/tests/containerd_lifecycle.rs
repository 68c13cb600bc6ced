//! End-to-end: the pod lifecycle on the supervised containerd, as the kubelet runs it:
//! postStart and preStop hooks, graceful termination within the grace period (SIGKILL for a
//! container that ignores SIGTERM), `activeDeadlineSeconds`, termination messages (from the
//! file, and from the log with `FallbackToLogsOnError`), init containers in order, and
//! `runAsNonRoot` (a root or unverifiable user is a `CreateContainerConfigError`).

mod common;

use std::time::{Duration, Instant};

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);

/// A registry with `busybox` and a cluster that pulls `docker.io` through it.
fn cluster() -> (Registry, Cluster) {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let cluster = Cluster::start_containerd(Some(&registry.host()), &[]);
    (registry, cluster)
}

/// A busybox container running `script`, with `extra` fields merged in.
fn container(name: &str, script: &str, extra: Value) -> Value {
    let mut c = json!({
        "name": name,
        "image": "busybox",
        "command": ["sh", "-c", script],
        "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A pod of `containers`, with `spec` fields merged into its spec.
fn pod(name: &str, containers: Vec<Value>, spec: Value) -> String {
    let mut s = json!({"restartPolicy": "Never", "containers": containers});
    if let (Some(s), Some(e)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s}).to_string()
}

fn apply(c: &Cluster, manifest: &str) {
    c.ok_stdin(&["apply", "-f", "-"], manifest);
}

fn pod_json(c: &Cluster, name: &str) -> Value {
    c.get_json(&["pod", name])
}

fn phase(c: &Cluster, name: &str) -> String {
    pod_json(c, name)["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The events about one pod, as `kubectl get events` prints them.
fn events(c: &Cluster, name: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])
}

/// The CRI log of one attempt of one of the pod's containers, read from the agent's disk.
fn log_file(c: &Cluster, name: &str, uid: &str, container: &str) -> String {
    let path = c
        .dir
        .path()
        .join(format!("agent/logs/default_{name}_{uid}/{container}/0.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `kubectl logs` of a pod, empty while it cannot be read yet.
fn logs(c: &Cluster, name: &str) -> String {
    String::from_utf8_lossy(&c.kubectl(&["logs", name]).stdout).into_owned()
}

fn pod_gone(c: &Cluster, name: &str) -> bool {
    c.ok(&["get", "pods", "-o", "name"])
        .lines()
        .all(|l| l.trim() != format!("pod/{name}"))
}

#[test]
fn hooks_run_around_the_container_and_grace_periods_are_honoured() {
    let (_registry, c) = cluster();
    // postStart writes a file the container waits for.
    apply(
        &c,
        &pod(
            "poststart",
            vec![container(
                "main",
                "while [ ! -f /tmp/started ]; do sleep 0.1; done; echo saw $(cat /tmp/started); sleep 3600",
                json!({"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hook > /tmp/started"]}}}}),
            )],
            json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 1}),
        ),
    );
    // A failing postStart kills the container, which restarts per its policy.
    apply(
        &c,
        &pod(
            "badhook",
            vec![container(
                "main",
                "sleep 3600",
                json!({"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 7"]}}}}),
            )],
            json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 1}),
        ),
    );
    // preStop writes into the main process's output before SIGTERM reaches it.
    apply(
        &c,
        &pod(
            "prestop",
            vec![container(
                "main",
                "trap 'echo got TERM; sleep 3; exit 0' TERM; echo ready; while true; do sleep 0.2; done",
                json!({"lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop ran > /proc/1/fd/1"]}}}}),
            )],
            json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 20}),
        ),
    );
    // An httpGet preStop to the pod's own IP, on a named port, served by `nc`.
    apply(
        &c,
        &pod(
            "httphook",
            vec![container(
                "main",
                r"trap 'echo got TERM; sleep 3; exit 0' TERM; printf 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n' | nc -l -p 8080; echo served; while true; do sleep 0.2; done",
                json!({
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "lifecycle": {"preStop": {"httpGet": {"path": "/stopping", "port": "http"}}}
                }),
            )],
            json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 20}),
        ),
    );
    // Two containers that ignore SIGTERM.
    apply(
        &c,
        &pod(
            "stubborn",
            vec![
                container("one", "trap '' TERM; sleep 3600", json!({})),
                container("two", "trap '' TERM; sleep 3600", json!({})),
            ],
            json!({"restartPolicy": "Always"}),
        ),
    );
    eventually(
        &c,
        LIMIT,
        "the hooked pod to see its postStart's file",
        || logs(&c, "poststart").contains("saw hook").then_some(()),
    );
    assert_eq!(phase(&c, "poststart"), "Running");

    let restarted = eventually(
        &c,
        LIMIT,
        "the failing hook to restart its container",
        || {
            let s = pod_json(&c, "badhook")["status"]["containerStatuses"][0].clone();
            (s["restartCount"].as_i64().unwrap_or(0) >= 1).then_some(s)
        },
    );
    assert!(
        restarted["lastState"]["terminated"].is_object(),
        "{restarted}"
    );
    let told = eventually(&c, LIMIT, "the FailedPostStartHook event", || {
        let e = events(&c, "badhook");
        e.contains("FailedPostStartHook").then_some(e)
    });
    // As upstream, the event keeps the hook's output (which may hold secrets) to itself.
    assert!(told.contains("PostStartHook failed"), "{told}");
    assert!(!told.contains("exited with 7"), "{told}");
    assert!(told.contains("Killing"), "{told}");
    eventually(&c, LIMIT, "the BackOff event of the second failure", || {
        events(&c, "badhook")
            .contains("Back-off restarting failed container main in pod badhook_default(")
            .then_some(())
    });

    eventually(&c, LIMIT, "the preStop pod to run", || {
        (phase(&c, "prestop") == "Running" && phase(&c, "stubborn") == "Running").then_some(())
    });
    eventually(&c, LIMIT, "the httpGet hook pod to run", || {
        (phase(&c, "httphook") == "Running").then_some(())
    });
    let uid_of = |name: &str| {
        pod_json(&c, name)["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (uid, http_uid) = (uid_of("prestop"), uid_of("httphook"));
    c.ok(&["delete", "pod", "prestop", "httphook", "--wait=false"]);
    let served = eventually(&c, LIMIT, "the httpGet preStop hook, then SIGTERM", || {
        let log = log_file(&c, "httphook", &http_uid, "main");
        log.contains("got TERM").then_some(log)
    });
    // The hook's request reached the container before its TERM handler ran. (Whether `nc`
    // exits and the script prints "served" before the trap runs is a race inside the shell:
    // SIGTERM comes as soon as the hook has read the response, as upstream's.)
    assert!(
        served.find("GET /stopping HTTP/1.1").unwrap_or(usize::MAX)
            < served.find("got TERM").unwrap_or(0),
        "{served}"
    );
    let log = eventually(&c, LIMIT, "SIGTERM after the preStop hook", || {
        let log = log_file(&c, "prestop", &uid, "main");
        log.contains("got TERM").then_some(log)
    });
    let hook_at = log.find("prestop ran").unwrap_or(usize::MAX);
    let term_at = log.find("got TERM").unwrap_or(0);
    assert!(hook_at < term_at, "the hook runs before SIGTERM: {log}");
    let killing = events(&c, "prestop");
    assert!(killing.contains("Stopping container main"), "{killing}");
    eventually(&c, LIMIT, "the preStop pods to be gone", || {
        (pod_gone(&c, "prestop") && pod_gone(&c, "httphook")).then_some(())
    });

    let began = Instant::now();
    c.ok(&[
        "delete",
        "pod",
        "stubborn",
        "--grace-period=2",
        "--wait=false",
    ]);
    eventually(&c, LIMIT, "the stubborn pod to be killed", || {
        pod_gone(&c, "stubborn").then_some(())
    });
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "SIGTERM was ignored, so the grace period is waited: {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "killed at the end of the 2 s grace period, not 30 s: {took:?}"
    );
}

#[test]
fn deadlines_termination_messages_and_init_containers() {
    let (_registry, c) = cluster();
    apply(
        &c,
        &pod(
            "deadline",
            vec![container("main", "sleep 3600", json!({}))],
            json!({"restartPolicy": "Always", "activeDeadlineSeconds": 3, "terminationGracePeriodSeconds": 1}),
        ),
    );
    apply(
        &c,
        &pod(
            "message",
            vec![container(
                "main",
                "printf 'all done' > /dev/termination-log",
                json!({}),
            )],
            json!({}),
        ),
    );
    apply(
        &c,
        &pod(
            "fallback",
            vec![container(
                "main",
                "echo line1; echo boom >&2; exit 2",
                json!({"terminationMessagePolicy": "FallbackToLogsOnError"}),
            )],
            json!({}),
        ),
    );
    apply(
        &c,
        &pod(
            "custom",
            vec![container(
                "main",
                "echo ignored; echo from custom path > /tmp/why; exit 1",
                json!({"terminationMessagePath": "/tmp/why", "terminationMessagePolicy": "FallbackToLogsOnError"}),
            )],
            json!({}),
        ),
    );
    apply(
        &c,
        &pod(
            "init",
            vec![container(
                "app",
                "cat /work/order",
                json!({"volumeMounts": [{"name": "work", "mountPath": "/work"}]}),
            )],
            json!({
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [
                    container("first", "sleep 1; echo one > /work/order", json!({"volumeMounts": [{"name": "work", "mountPath": "/work"}]})),
                    container("second", "echo two >> /work/order", json!({"volumeMounts": [{"name": "work", "mountPath": "/work"}]})),
                ]
            }),
        ),
    );

    let failed = eventually(&c, LIMIT, "the deadline to fail the pod", || {
        let p = pod_json(&c, "deadline");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(failed["status"]["reason"], "DeadlineExceeded", "{failed}");
    assert_eq!(
        failed["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    eventually(&c, LIMIT, "the DeadlineExceeded event", || {
        events(&c, "deadline")
            .contains("DeadlineExceeded")
            .then_some(())
    });
    let killed = eventually(&c, LIMIT, "the deadline pod's container to end", || {
        let t = pod_json(&c, "deadline")["status"]["containerStatuses"][0]["state"]["terminated"]
            .clone();
        t.is_object().then_some(t)
    });
    assert_ne!(killed["exitCode"], 0, "{killed}");
    assert_eq!(phase(&c, "deadline"), "Failed");

    let terminated = |name: &str| {
        eventually(&c, LIMIT, &format!("{name} to end"), || {
            let p = pod_json(&c, name);
            let t = p["status"]["containerStatuses"][0]["state"]["terminated"].clone();
            t.is_object().then_some(t)
        })
    };
    let message = terminated("message");
    assert_eq!(message["message"], "all done", "{message}");
    assert_eq!(message["exitCode"], 0);
    let fallback = terminated("fallback");
    // The log's last lines, stdout's and stderr's: containerd copies the two streams
    // separately, so their order in the log (and the message) is not fixed.
    let mut lines: Vec<&str> = fallback["message"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, ["boom", "line1"], "{fallback}");
    assert!(
        fallback["message"]
            .as_str()
            .is_some_and(|m| m.ends_with('\n')),
        "{fallback}"
    );
    let custom = terminated("custom");
    assert_eq!(custom["message"], "from custom path\n", "{custom}");

    eventually(&c, LIMIT, "the init pod to succeed", || {
        (phase(&c, "init") == "Succeeded").then_some(())
    });
    assert_eq!(c.ok(&["logs", "init", "-c", "app"]), "one\ntwo\n");
    let p = pod_json(&c, "init");
    let inits = p["status"]["initContainerStatuses"].as_array().cloned();
    let inits = inits.unwrap_or_default();
    assert_eq!(inits.len(), 2, "{p}");
    for s in &inits {
        assert_eq!(s["state"]["terminated"]["reason"], "Completed", "{p}");
    }
    let first_done = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap_or_default();
    let second_began = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap_or_default();
    assert!(second_began >= first_done, "{p}");
}

/// The waiting state of a pod's first container, once it is waiting for `reason`.
fn waiting_for(c: &Cluster, name: &str, reason: &str) -> Value {
    eventually(c, LIMIT, &format!("{name} to wait for {reason}"), || {
        let p = pod_json(c, name);
        let waiting = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (waiting["reason"] == reason).then_some(p)
    })
}

#[test]
fn run_as_non_root_refuses_root_and_unverifiable_users() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    registry.push_busybox_with(
        "library/named",
        "latest",
        common::registry::ImageConfig {
            user: Some("nobody".into()),
            ..common::registry::ImageConfig::busybox()
        },
    );
    registry.push_busybox_with(
        "library/numeric",
        "latest",
        common::registry::ImageConfig {
            user: Some("1000:1000".into()),
            ..common::registry::ImageConfig::busybox()
        },
    );
    let c = Cluster::start_containerd(Some(&registry.host()), &[]);
    let non_root = json!({"securityContext": {"runAsNonRoot": true}});
    let print_uid = "id -u";
    // The image runs as root (no User): refused, pod-level runAsNonRoot.
    apply(
        &c,
        &pod(
            "root-image",
            vec![container("main", print_uid, json!({}))],
            non_root.clone(),
        ),
    );
    // A user name cannot be checked: refused, container-level runAsNonRoot.
    apply(
        &c,
        &pod(
            "named-user",
            vec![container(
                "main",
                print_uid,
                json!({"image": "named", "securityContext": {"runAsNonRoot": true}}),
            )],
            json!({}),
        ),
    );
    // runAsUser 0 breaks the policy whatever the image.
    apply(
        &c,
        &pod(
            "uid-zero",
            vec![container(
                "main",
                print_uid,
                json!({"image": "numeric", "securityContext": {"runAsUser": 0}}),
            )],
            non_root.clone(),
        ),
    );
    // Allowed: a numeric non-root image user, a runAsUser, the container's own runAsNonRoot: false.
    apply(
        &c,
        &pod(
            "numeric-user",
            vec![container("main", print_uid, json!({"image": "numeric"}))],
            non_root.clone(),
        ),
    );
    apply(
        &c,
        &pod(
            "run-as-user",
            vec![container(
                "main",
                print_uid,
                json!({"securityContext": {"runAsUser": 1234}}),
            )],
            non_root.clone(),
        ),
    );
    apply(
        &c,
        &pod(
            "container-allows-root",
            vec![container(
                "main",
                print_uid,
                json!({"securityContext": {"runAsNonRoot": false}}),
            )],
            non_root,
        ),
    );

    for (name, message) in [
        ("root-image", "container has runAsNonRoot and image will run as root (pod: \"root-image_default({uid})\", container: main)"),
        ("named-user", "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"named-user_default({uid})\", container: main)"),
        ("uid-zero", "container's runAsUser breaks non-root policy (pod: \"uid-zero_default({uid})\", container: main)"),
    ] {
        let p = waiting_for(&c, name, "CreateContainerConfigError");
        let uid = p["metadata"]["uid"].as_str().unwrap();
        let expected = message.replace("{uid}", uid);
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["waiting"]["message"], expected,
            "{name}"
        );
        assert_eq!(p["status"]["phase"], "Pending", "{name}");
        let events = events(&c, name);
        assert!(events.contains(&format!("Error: {expected}")), "{name}: {events}");
    }
    for (name, uid) in [
        ("numeric-user", "1000"),
        ("run-as-user", "1234"),
        ("container-allows-root", "0"),
    ] {
        eventually(&c, LIMIT, &format!("{name} to succeed"), || {
            (phase(&c, name) == "Succeeded").then_some(())
        });
        assert_eq!(logs(&c, name).trim(), uid, "{name}");
    }
}

#[test]
fn a_failed_post_start_hook_kills_a_container_that_does_not_restart() {
    let (_registry, c) = cluster();
    apply(
        &c,
        &pod(
            "badhook-never",
            vec![container(
                "main",
                "sleep 3600",
                json!({"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 7"]}}}}),
            )],
            json!({"terminationGracePeriodSeconds": 1}),
        ),
    );
    let p = eventually(&c, LIMIT, "the pod to fail", || {
        let p = pod_json(&c, "badhook-never");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let status = &p["status"]["containerStatuses"][0];
    let terminated = &status["state"]["terminated"];
    assert!(terminated.is_object(), "{status}");
    // sleep as PID 1 ignores SIGTERM: SIGKILLed after the grace period.
    assert_eq!(terminated["exitCode"], 137, "{status}");
    assert_eq!(terminated["reason"], "Error", "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    let told = eventually(&c, LIMIT, "the hook's events", || {
        let e = events(&c, "badhook-never");
        (e.contains("FailedPostStartHook") && e.contains("Killing")).then_some(e)
    });
    assert!(told.contains("PostStartHook failed"), "{told}");
    assert!(!told.contains("nope"), "{told}");
}
