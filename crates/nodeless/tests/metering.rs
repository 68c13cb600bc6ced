//! End-to-end: metering on the simulated runtime. A Job pod that runs for a known time is
//! metered as its provisioned size × that time, through `kubectl get --raw` of the usage
//! endpoint (by pod, workload and namespace), `nodeless usage` and `/metrics`; usage survives
//! a restart of the cluster, and a pod that runs across the restart is one interval. On
//! containerd, a real container that sleeps for a known time is metered likewise.

mod common;

use std::process::Command;
use std::time::Duration;

use common::registry::Registry;
use common::{eventually, Cluster};
use serde_json::Value;

const USAGE: &str = "/apis/metering.nodeless.io/v1/namespaces/default/usage";

/// The smallest size: what a pod with 250m / 64Mi limits is provisioned.
const VCPU: f64 = 0.25;
const GIB: f64 = 0.5;
/// How long the Job's container runs.
const RUN_SECONDS: f64 = 3.0;
/// Condition times have whole seconds (one second either end), plus start-up slack.
const SLACK_SECONDS: f64 = 1.5;

fn job(name: &str, run_seconds: f64) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  template:\n    metadata:\n      annotations:\n        sim.nodeless.io/run-seconds: \"{run_seconds}\"\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: work\n        image: busybox\n        resources:\n          limits:\n            cpu: 250m\n            memory: 64Mi\n"
    )
}

const SLEEPER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits:\n        cpu: 250m\n        memory: 64Mi\n";

fn items(report: &Value) -> Vec<Value> {
    report["items"].as_array().cloned().unwrap_or_default()
}

fn item<'a>(items: &'a [Value], name_prefix: &str) -> Option<&'a Value> {
    items.iter().find(|i| {
        i["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(name_prefix))
    })
}

/// Whether a sandbox of this size runs, per `/metrics`.
fn running_sandboxes(c: &Cluster) -> u64 {
    let text = c.ok(&["get", "--raw", "/metrics"]);
    text.lines()
        .filter(|l| l.starts_with("nodeless_running_sandboxes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn nodeless_usage(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeless"))
        .arg("usage")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run nodeless usage");
    assert!(
        out.status.success(),
        "nodeless usage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn job_usage_is_size_times_run_time_and_survives_a_restart() {
    let c = Cluster::start();
    c.ok_stdin(&["apply", "-f", "-"], SLEEPER);
    c.ok_stdin(&["apply", "-f", "-"], &job("crunch", RUN_SECONDS));
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/crunch",
        "--timeout=60s",
    ]);
    // The Job pod's interval is closed once only the sleeper's sandbox runs.
    eventually(
        &c,
        Duration::from_secs(30),
        "only the sleeper to run",
        || (running_sandboxes(&c) == 1).then_some(()),
    );

    let by_pod = c.raw(&format!("{USAGE}?by=pod"));
    assert_eq!(by_pod["apiVersion"], "metering.nodeless.io/v1");
    assert_eq!(by_pod["kind"], "UsageReport");
    assert_eq!(by_pod["prices"]["currency"], "USD");
    assert_eq!(by_pod["prices"]["vcpuHour"], 0.04048);
    assert_eq!(by_pod["prices"]["gibHour"], 0.004445);
    let pods = items(&by_pod);
    let crunch = item(&pods, "crunch-")
        .expect("the Job's pod is metered")
        .clone();
    let vcpu_seconds = crunch["vcpuSeconds"].as_f64().unwrap();
    let gib_seconds = crunch["gibSeconds"].as_f64().unwrap();
    assert!(
        (vcpu_seconds - VCPU * RUN_SECONDS).abs() <= VCPU * SLACK_SECONDS,
        "vCPU-seconds {vcpu_seconds}, expected {} ± {}",
        VCPU * RUN_SECONDS,
        VCPU * SLACK_SECONDS
    );
    assert!(
        (gib_seconds - GIB * RUN_SECONDS).abs() <= GIB * SLACK_SECONDS,
        "GiB-seconds {gib_seconds}"
    );
    assert!((gib_seconds / vcpu_seconds - GIB / VCPU).abs() < 1e-9);
    assert_eq!(crunch["kind"], "Pod");
    let cost = crunch["cost"].as_f64().unwrap();
    let expected_cost = vcpu_seconds / 3600.0 * 0.04048 + gib_seconds / 3600.0 * 0.004445;
    assert!((cost - expected_cost).abs() < 1e-12, "cost {cost}");
    assert!(item(&pods, "sleeper").is_some(), "{by_pod}");

    // By workload the Job's pod counts for the Job, the bare pod for itself.
    let by_workload = items(&c.raw(&format!("{USAGE}?by=workload")));
    let job_row = item(&by_workload, "crunch").expect("a row for the Job");
    assert_eq!(job_row["kind"], "Job");
    assert_eq!(job_row["vcpuSeconds"].as_f64().unwrap(), vcpu_seconds);
    assert_eq!(item(&by_workload, "sleeper").unwrap()["kind"], "Pod");
    let by_namespace = items(&c.raw("/apis/metering.nodeless.io/v1/usage?by=namespace"));
    assert_eq!(by_namespace.len(), 1, "{by_namespace:?}");
    assert_eq!(by_namespace[0]["name"], "default");

    // A window after the Job ran holds none of it; bad values are a 400 that says why.
    let later = c.raw(&format!(
        "{USAGE}?by=pod&start=2999-01-01T00:00:00Z&end=2999-01-02T00:00:00Z"
    ));
    assert!(items(&later).is_empty(), "{later}");
    let refused = c.fails(&["get", "--raw", &format!("{USAGE}?by=node")]);
    assert!(
        refused.contains("BadRequest") && refused.contains("by"),
        "{refused}"
    );
    let refused = c.fails(&["get", "--raw", &format!("{USAGE}?start=yesterday")]);
    assert!(refused.contains("RFC 3339"), "{refused}");

    // The command line prints the same through the endpoint.
    let table = nodeless_usage(&c, &["-n", "default", "--by", "workload"]);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAMESPACE",
        "NAME",
        "KIND",
        "VCPU-SECONDS",
        "GIB-SECONDS",
        "COST",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.contains("crunch"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("default") && row.contains("Job"), "{table}");
    assert!(row.contains(&format!("{vcpu_seconds:.2}")), "{table}");
    let since = nodeless_usage(&c, &["-A", "--by", "namespace", "--since", "1h"]);
    assert!(
        since
            .lines()
            .any(|l| l.contains("default") && l.contains("Namespace")),
        "{since}"
    );

    // /metrics has the counters per pod.
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains("# TYPE nodeless_pod_vcpu_seconds_total counter"),
        "{metrics}"
    );
    let crunch_pod = crunch["name"].as_str().unwrap();
    let counter = format!(
        "nodeless_pod_vcpu_seconds_total{{namespace=\"default\",pod=\"{crunch_pod}\",workload_kind=\"Job\",workload=\"crunch\"}} "
    );
    assert!(metrics.contains(&counter), "{metrics}");
    assert!(
        metrics.contains("nodeless_pod_gib_seconds_total{namespace=\"default\",pod=\"sleeper\"")
    );
    assert!(
        metrics.contains("nodeless_running_sandboxes{size=\"0.25vCPU 0.5GiB\"} 1"),
        "{metrics}"
    );
    let sleeper_before = item(&pods, "sleeper").unwrap()["vcpuSeconds"]
        .as_f64()
        .unwrap();

    // A restart keeps the usage: the finished Job's is unchanged, the sleeper's continues
    // in a new sandbox; the time the cluster was down (the built-in agent's sandboxes stop
    // with it) is not counted.
    let measured_at = std::time::Instant::now();
    let dir = c.stop();
    let down_for = Duration::from_secs(5);
    std::thread::sleep(down_for);
    let c = Cluster::start_in(dir, &[]);
    let (pods, sleeper_after) = eventually(
        &c,
        Duration::from_secs(30),
        "the sleeper's usage to grow",
        || {
            let pods = items(&c.raw(&format!("{USAGE}?by=pod")));
            let sleeper = item(&pods, "sleeper")?["vcpuSeconds"].as_f64()?;
            (sleeper > sleeper_before).then_some((pods, sleeper))
        },
    );
    let elapsed = measured_at.elapsed().as_secs_f64();
    let grown = sleeper_after - sleeper_before;
    assert!(
        grown <= VCPU * (elapsed - down_for.as_secs_f64() + SLACK_SECONDS),
        "the sleeper grew {grown} vCPU-seconds in {elapsed} s of which {down_for:?} down"
    );
    let crunch_after = item(&pods, "crunch-").expect("still metered after the restart");
    assert_eq!(crunch_after["vcpuSeconds"].as_f64().unwrap(), vcpu_seconds);
    assert_eq!(pods.len(), 2, "{pods:?}");

    // A deleted pod stops being metered.
    c.ok(&["delete", "pod", "sleeper", "--wait=true", "--timeout=60s"]);
    eventually(&c, Duration::from_secs(30), "no sandbox to run", || {
        (running_sandboxes(&c) == 0).then_some(())
    });
    let stopped = items(&c.raw(&format!("{USAGE}?by=pod")));
    let sleeper_total = item(&stopped, "sleeper").unwrap()["vcpuSeconds"]
        .as_f64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let still = items(&c.raw(&format!("{USAGE}?by=pod")));
    assert_eq!(
        item(&still, "sleeper").unwrap()["vcpuSeconds"]
            .as_f64()
            .unwrap(),
        sleeper_total
    );
}

#[test]
fn a_real_pod_is_metered_for_its_sandbox_lifetime() {
    let registry = Registry::start();
    registry.push_busybox("library/busybox", "latest");
    let c = Cluster::start_containerd(Some(&registry.host()), &[]);
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "timed"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main",
            "image": "busybox",
            "command": ["sleep", "3"],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}
        }]}
    });
    c.ok_stdin(&["apply", "-f", "-"], &manifest.to_string());
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/timed",
        "--timeout=90s",
    ]);
    eventually(
        &c,
        Duration::from_secs(30),
        "the sandbox interval to close",
        || (running_sandboxes(&c) == 0).then_some(()),
    );
    let pods = items(&c.raw(&format!("{USAGE}?by=pod")));
    let timed = item(&pods, "timed").expect("the pod is metered");
    let vcpu_seconds = timed["vcpuSeconds"].as_f64().unwrap();
    // The sandbox is up from before the image pull until the container's exit is seen: at
    // least the run time (less a second of rounding), at most a few seconds more.
    let seconds = vcpu_seconds / VCPU;
    assert!(
        (RUN_SECONDS - 1.0..=RUN_SECONDS + 6.0).contains(&seconds),
        "metered {seconds} s of sandbox for a 3 s container"
    );
    assert!((timed["gibSeconds"].as_f64().unwrap() - GIB * seconds).abs() < 1e-9);
}
