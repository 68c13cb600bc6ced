//! End-to-end: the workload controllers driving real containers on the supervised containerd.
//! A Deployment becomes available, rolls to new containers and scales to none; a StatefulSet's
//! pod keeps its claim's data and its hostname across a re-creation; Jobs complete or exhaust
//! their back-off; a Job made from a CronJob runs to completion.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(120);

/// A registry with `busybox` and a containerd cluster that pulls `docker.io` through it.
fn cluster() -> (Registry, Cluster) {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let cluster = Cluster::start_containerd(Some(&registry.host()), &[]);
    (registry, cluster)
}

/// A busybox container running `script`, with small limits.
fn container(script: &str) -> Value {
    json!({
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", script],
        "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
    })
}

/// The pods matching `selector`, as JSON.
fn pods(c: &Cluster, selector: &str) -> Vec<Value> {
    c.get_json(&["pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The container ids (without the `containerd://` prefix) of running containers of `pods`.
fn running_container_ids(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|s| s["state"]["running"].is_object())
        .filter_map(|s| {
            s["containerID"]
                .as_str()
                .and_then(|id| id.strip_prefix("containerd://"))
                .map(str::to_string)
        })
        .collect()
}

/// Container ids containerd knows of.
fn ctr_containers(c: &Cluster) -> BTreeSet<String> {
    c.ctr(&["containers", "ls", "-q"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Container ids with a RUNNING task in containerd.
fn ctr_running_tasks(c: &Cluster) -> BTreeSet<String> {
    c.ctr(&["tasks", "ls"])
        .lines()
        .skip(1)
        .filter(|l| l.contains("RUNNING"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn a_deployment_rolls_to_new_containers_and_scales_to_none() {
    let (_registry, c) = cluster();
    let mut main = container("exec httpd -f -p 8080");
    main["env"] = json!([{"name": "VERSION", "value": "one"}]);
    main["ports"] = json!([{"containerPort": 8080}]);
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [main]}
            }
        }
    });
    c.ok_stdin(&["apply", "-f", "-"], &deployment.to_string());
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let available = c.get_json(&["deployment", "web"])["status"]["availableReplicas"].clone();
    assert_eq!(available, 2);
    let first = eventually(&c, LIMIT, "two running containers", || {
        let ids = running_container_ids(&pods(&c, "app=web"));
        (ids.len() == 2).then_some(ids)
    });
    let tasks = ctr_running_tasks(&c);
    assert!(
        first.is_subset(&tasks),
        "{first:?} not running in {tasks:?}"
    );
    // The container answers on its port at the pod's IP.
    let ip = pods(&c, "app=web")[0]["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eventually(&c, LIMIT, "httpd to answer on the pod IP", || {
        std::net::TcpStream::connect_timeout(
            &format!("{ip}:8080").parse().ok()?,
            Duration::from_secs(2),
        )
        .ok()
    });

    // A rolling update (a new env value) replaces both pods with new containers.
    c.ok(&["set", "env", "deployment/web", "VERSION=two"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let second = eventually(&c, LIMIT, "two new running containers", || {
        let current = pods(&c, "app=web");
        let ids = running_container_ids(&current);
        (current.len() == 2 && ids.len() == 2).then_some((ids, current))
    });
    assert!(first.is_disjoint(&second.0), "{first:?} {:?}", second.0);
    for p in &second.1 {
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["value"], "two", "{p}");
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let out = c.ok(&["exec", name, "--", "sh", "-c", "echo $VERSION"]);
        assert_eq!(out.trim(), "two", "{name}");
    }
    eventually(&c, LIMIT, "the old containers to be removed", || {
        let known = ctr_containers(&c);
        first.is_disjoint(&known).then_some(())
    });

    // Scaled to zero, containerd holds no container at all (sandboxes included).
    c.ok(&["scale", "deployment/web", "--replicas=0"]);
    eventually(&c, LIMIT, "the pods to be gone", || {
        pods(&c, "app=web").is_empty().then_some(())
    });
    eventually(&c, LIMIT, "containerd to hold no container", || {
        ctr_containers(&c).is_empty().then_some(())
    });
}

#[test]
fn a_stateful_pod_keeps_its_claim_data_and_hostname() {
    let (_registry, c) = cluster();
    let mut main = container(
        "hostname > /data/hostname-at-start; \
         if [ -f /data/first ]; then echo second-run > /data/second; \
         else echo first-run > /data/first; fi; exec sleep 3600",
    );
    main["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    let set = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [main]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}
                }
            }]
        }
    });
    c.ok_stdin(&["apply", "-f", "-"], &set.to_string());
    let uid = eventually(&c, LIMIT, "db-0 to run", || {
        let p = c.get_json(&["pods", "-l", "app=db"])["items"][0].clone();
        (p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true)
            .then(|| {
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    });
    let claim = c.get_json(&["pvc", "data-db-0"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    let first = c.ok(&[
        "exec",
        "db-0",
        "--",
        "cat",
        "/data/first",
        "/data/hostname-at-start",
    ]);
    assert_eq!(first, "first-run\ndb-0\n");
    c.ok(&["exec", "db-0", "--", "sh", "-c", "echo kept > /data/note"]);

    c.ok(&["delete", "pod", "db-0"]);
    eventually(&c, LIMIT, "a new db-0 to run", || {
        let p = c.get_json(&["pods", "-l", "app=db"])["items"][0].clone();
        (p["metadata"]["uid"] != uid.as_str()
            && p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"][0]["ready"] == true)
            .then_some(())
    });
    let again = c.ok(&[
        "exec",
        "db-0",
        "--",
        "cat",
        "/data/first",
        "/data/second",
        "/data/note",
    ]);
    assert_eq!(again, "first-run\nsecond-run\nkept\n");
    let hostname = c.ok(&["exec", "db-0", "--", "hostname"]);
    assert_eq!(hostname.trim(), "db-0");
}

/// A Job of `completions`/`parallelism` pods running `script` (never restarted).
fn job(name: &str, completions: u32, parallelism: u32, backoff: u32, script: &str) -> String {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimit": backoff,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container(script)]}}
        }
    })
    .to_string()
}

/// The status condition of `kind` of a Job, when it is True.
fn job_condition(c: &Cluster, name: &str, kind: &str) -> Option<Value> {
    let j = c.get_json(&["job", name]);
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|cond| cond["type"] == kind && cond["status"] == "True")
        .cloned()
}

#[test]
fn jobs_and_cron_jobs_run_real_containers() {
    let (_registry, c) = cluster();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job("work", 3, 2, 6, "echo done by $(hostname)"),
    );
    c.ok_stdin(&["apply", "-f", "-"], &job("broken", 1, 1, 1, "exit 7"));
    c.ok_stdin(
        &["apply", "-f", "-"],
        &json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [container("echo cron ran")]
                }}}}
            }
        })
        .to_string(),
    );
    c.ok(&["create", "job", "manual", "--from=cronjob/nightly"]);

    eventually(&c, LIMIT, "the job to complete", || {
        job_condition(&c, "work", "Complete")
    });
    let work = c.get_json(&["job", "work"]);
    assert_eq!(work["status"]["succeeded"], 3, "{work}");
    let done = pods(&c, "job-name=work");
    assert!(done.len() >= 3, "{done:?}");
    for p in done.iter().filter(|p| p["status"]["phase"] == "Succeeded") {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["exitCode"], 0, "{p}");
        let log = c.ok(&["logs", name]);
        assert_eq!(log.trim(), format!("done by {name}"));
    }

    let failed = eventually(&c, LIMIT, "the broken job to fail", || {
        job_condition(&c, "broken", "Failed")
    });
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{failed}");
    let broken = pods(&c, "job-name=broken");
    assert_eq!(broken.len(), 2, "backoffLimit 1 means two attempts");
    for p in &broken {
        let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["exitCode"], 7, "{p}");
    }

    eventually(&c, LIMIT, "the job from the cron job to complete", || {
        job_condition(&c, "manual", "Complete")
    });
    let manual = c.get_json(&["job", "manual"]);
    assert_eq!(
        manual["metadata"]["ownerReferences"][0]["name"], "nightly",
        "{manual}"
    );
    let log = c.ok(&["logs", "job/manual"]);
    assert_eq!(log.trim(), "cron ran");
    // Finished pods release their containers' tasks.
    eventually(&c, LIMIT, "no running task", || {
        ctr_running_tasks(&c).is_empty().then_some(())
    });
}
