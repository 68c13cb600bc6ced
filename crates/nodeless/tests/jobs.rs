//! End-to-end: Jobs and CronJobs on the simulated runtime, through kubectl: completions and
//! parallelism with `kubectl wait`, Indexed completion, back-off to BackoffLimitExceeded,
//! suspend and resume, ttlSecondsAfterFinished, and a CronJob that starts Jobs on its schedule,
//! keeps its history limits and serves `kubectl create job --from=cronjob/...`.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

/// A Job manifest; `extra_spec` lines are indented under `spec:`, `annotations` go on the pods.
fn job_manifest(name: &str, extra_spec: &str, pod_annotations: &[(&str, &str)]) -> String {
    let annotations: String = pod_annotations
        .iter()
        .map(|(k, v)| format!("        {k}: \"{v}\"\n"))
        .collect();
    let metadata = if annotations.is_empty() {
        String::new()
    } else {
        format!("    metadata:\n      annotations:\n{annotations}")
    };
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  template:\n{metadata}    spec:\n      restartPolicy: Never\n      containers:\n      - name: work\n        image: busybox\n        resources:\n          limits:\n            cpu: 250m\n            memory: 64Mi\n"
    )
}

fn job_status(c: &Cluster, name: &str) -> Value {
    c.get_json(&["job", name])["status"].clone()
}

fn condition_reasons(status: &Value) -> Vec<String> {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .map(|c| {
            format!(
                "{}:{}",
                c["type"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn job_pods(c: &Cluster, job: &str) -> Vec<Value> {
    let list = c.get_json(&["pods", "-l", &format!("batch.kubernetes.io/job-name={job}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn jobs_run_to_completion() {
    let c = Cluster::start();
    // NonIndexed: 3 completions, 2 at a time.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job_manifest(
            "three",
            "  completions: 3\n  parallelism: 2\n",
            &[("sim.nodeless.io/run-seconds", "1")],
        ),
    );
    // Indexed: every index runs once and knows its index.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job_manifest(
            "indexed",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
            &[("sim.nodeless.io/run-seconds", "1")],
        ),
    );
    // Never more than parallelism pods active at once.
    let active = job_pods(&c, "three")
        .iter()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .count();
    assert!(active <= 2, "{active} active pods for parallelism 2");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "--timeout=120s",
    ]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=120s",
    ]);

    let status = job_status(&c, "three");
    assert_eq!(status["succeeded"], 3, "{status}");
    assert_eq!(status["active"].as_i64().unwrap_or(0), 0, "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    assert!(status["startTime"].is_string(), "{status}");
    let reasons = condition_reasons(&status);
    assert_eq!(
        reasons,
        [
            "SuccessCriteriaMet:CompletionsReached",
            "Complete:CompletionsReached"
        ]
    );
    let pods = job_pods(&c, "three");
    assert_eq!(pods.len(), 3, "one pod per completion");
    for pod in &pods {
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["job-name"], "three");
        assert!(labels["batch.kubernetes.io/controller-uid"].is_string());
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        // Counted pods lose the tracking finalizer.
        let finalizers = pod["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(finalizers.is_empty(), "{finalizers:?}");
    }

    let status = job_status(&c, "indexed");
    assert_eq!(status["completedIndexes"], "0-2", "{status}");
    let mut indexes: Vec<String> = job_pods(&c, "indexed")
        .iter()
        .map(|p| {
            let meta = &p["metadata"];
            let index = meta["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_eq!(
                meta["labels"]["batch.kubernetes.io/job-completion-index"],
                index.as_str()
            );
            assert_eq!(p["spec"]["hostname"], format!("indexed-{index}").as_str());
            let env = &p["spec"]["containers"][0]["env"][0];
            assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
            index
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[test]
fn job_failures_suspend_and_ttl() {
    let c = Cluster::start();
    // Every pod fails: the first replacement waits the 10 s back-off, the second failure
    // exceeds backoffLimit 1.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job_manifest(
            "failing",
            "  backoffLimit: 1\n",
            &[
                ("sim.nodeless.io/exit-code", "3"),
                ("sim.nodeless.io/run-seconds", "0.5"),
            ],
        ),
    );
    // Created suspended: no pods until resumed.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job_manifest(
            "paused",
            "  suspend: true\n  completions: 2\n  parallelism: 2\n",
            &[("sim.nodeless.io/run-seconds", "1")],
        ),
    );
    // Finished jobs with a TTL go away.
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job_manifest(
            "short-lived",
            "  ttlSecondsAfterFinished: 2\n",
            &[("sim.nodeless.io/run-seconds", "0.5")],
        ),
    );

    let suspended = eventually(
        &c,
        Duration::from_secs(30),
        "the Suspended condition",
        || {
            let status = job_status(&c, "paused");
            condition_reasons(&status)
                .contains(&"Suspended:JobSuspended".to_string())
                .then_some(status)
        },
    );
    assert!(suspended["startTime"].is_null(), "{suspended}");
    assert!(job_pods(&c, "paused").is_empty());
    c.ok(&[
        "patch",
        "job/paused",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/paused",
        "--timeout=120s",
    ]);
    let status = job_status(&c, "paused");
    let resumed = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .unwrap();
    assert_eq!(resumed["status"], "False");
    assert_eq!(resumed["reason"], "JobResumed");

    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=120s",
    ]);
    let status = job_status(&c, "failing");
    assert_eq!(status["failed"], 2, "{status}");
    assert_eq!(
        condition_reasons(&status),
        [
            "FailureTarget:BackoffLimitExceeded",
            "Failed:BackoffLimitExceeded"
        ]
    );
    assert_eq!(job_pods(&c, "failing").len(), 2);

    eventually(&c, Duration::from_secs(60), "the TTL deletion", || {
        let out = c.kubectl(&["get", "job", "short-lived"]);
        (!out.status.success()).then_some(())
    });
    // Its pods go with it (foreground deletion).
    eventually(
        &c,
        Duration::from_secs(60),
        "the TTL'd job's pods to go",
        || job_pods(&c, "short-lived").is_empty().then_some(()),
    );
}

#[test]
fn cronjob_starts_jobs_and_keeps_history() {
    let c = Cluster::start();
    let manifest = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: tick\nspec:\n  schedule: \"*/1 * * * *\"\n  timeZone: Etc/UTC\n  successfulJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          annotations:\n            sim.nodeless.io/run-seconds: \"0.5\"\n        spec:\n          restartPolicy: Never\n          containers:\n          - name: work\n            image: busybox\n            resources:\n              limits:\n                cpu: 250m\n                memory: 64Mi\n";
    c.ok_stdin(&["apply", "-f", "-"], manifest);
    // Manual runs (client-side in kubectl) are Jobs the CronJob owns.
    c.ok(&["create", "job", "--from=cronjob/tick", "manual-1"]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual-1",
        "--timeout=60s",
    ]);
    c.ok(&["create", "job", "--from=cronjob/tick", "manual-2"]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual-2",
        "--timeout=60s",
    ]);
    // History limit 1: the older manual run goes.
    eventually(
        &c,
        Duration::from_secs(30),
        "manual-1 to be deleted",
        || (!c.kubectl(&["get", "job", "manual-1"]).status.success()).then_some(()),
    );

    // A scheduled run within the next minute (poll generously).
    let scheduled = eventually(&c, Duration::from_secs(130), "a scheduled job", || {
        let list = c.get_json(&["jobs"]);
        list["items"].as_array()?.iter().find_map(|j| {
            let name = j["metadata"]["name"].as_str()?;
            let minutes: i64 = name.strip_prefix("tick-")?.parse().ok()?;
            Some((
                name.to_string(),
                minutes,
                j["metadata"]["annotations"].clone(),
            ))
        })
    });
    let (name, minutes, annotations) = scheduled;
    let stamp = annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stamp_seconds = stamp
        .parse::<k8s_openapi::jiff::Timestamp>()
        .expect("RFC 3339 scheduled time")
        .as_second();
    assert_eq!(stamp_seconds, minutes * 60, "{stamp}");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    let status = eventually(&c, Duration::from_secs(30), "lastSuccessfulTime", || {
        let status = c.get_json(&["cronjob", "tick"])["status"].clone();
        (status["lastSuccessfulTime"].is_string() && status["active"].is_null()).then_some(status)
    });
    assert!(status["lastScheduleTime"].is_string(), "{status}");
    // Only the newest successful job is kept: the manual run goes.
    eventually(
        &c,
        Duration::from_secs(30),
        "history trimmed to one job",
        || {
            let list = c.get_json(&["jobs"]);
            let complete = list["items"]
                .as_array()?
                .iter()
                .filter(|j| {
                    condition_reasons(&j["status"])
                        .iter()
                        .any(|r| r.starts_with("Complete:"))
                })
                .count();
            let manual_gone = !c.kubectl(&["get", "job", "manual-2"]).status.success();
            (complete <= 1 && manual_gone).then_some(())
        },
    );
}

#[test]
fn a_deleted_jobs_running_pods_lose_the_tracking_finalizer_and_go() {
    let c = Cluster::start();
    c.ok_stdin(
        &["apply", "-f", "-"],
        &job_manifest(
            "long",
            "  completions: 3\n  parallelism: 3\n",
            &[("sim.nodeless.io/run-seconds", "300")],
        ),
    );
    eventually(&c, Duration::from_secs(30), "three running pods", || {
        let pods = job_pods(&c, "long");
        (pods.len() == 3 && pods.iter().all(|p| p["status"]["phase"] == "Running")).then_some(())
    });
    // The pods still carry the tracking finalizer: only the orphan release lets them go.
    assert!(job_pods(&c, "long")
        .iter()
        .all(|p| p["metadata"]["finalizers"]
            .to_string()
            .contains("job-tracking")));
    c.ok(&[
        "delete",
        "job",
        "long",
        "--cascade=background",
        "--wait=false",
    ]);
    eventually(&c, Duration::from_secs(60), "the pods to be gone", || {
        job_pods(&c, "long").is_empty().then_some(())
    });
}
