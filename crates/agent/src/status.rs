//! A pod's status as the agent writes it: container states, the phase (upstream's
//! `getPhase`), and the PodReadyToStartContainers, Initialized, ContainersReady, Ready and
//! PodScheduled conditions with their transition times.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

/// A container's state, as the status shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerPhase {
    /// Not running: never started yet, or waiting for a restart.
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`…
        reason: String,
        /// A message for humans (may be empty).
        message: String,
    },
    /// Running since `started_at`.
    Running {
        /// When it started.
        started_at: SystemTime,
    },
    /// Ended.
    Terminated(Termination),
}

/// How one run of a container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    /// The exit code.
    pub exit_code: i32,
    /// `Completed`, `Error`…
    pub reason: String,
    /// When that run started.
    pub started_at: SystemTime,
    /// When it ended.
    pub finished_at: SystemTime,
    /// The runtime's container id of that run.
    pub container_id: String,
    /// The termination message (from `terminationMessagePath`, or the log's tail with
    /// `FallbackToLogsOnError`); empty when there is none.
    pub message: String,
}

/// What the agent knows of one container of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    /// The container's name.
    pub name: String,
    /// Its image, as the spec says.
    pub image: String,
    /// The resolved image (empty until it started once).
    pub image_id: String,
    /// The current run's container id (empty until it started once).
    pub container_id: String,
    /// How many times it was restarted.
    pub restart_count: u32,
    /// Its current state.
    pub phase: ContainerPhase,
    /// How its previous run ended.
    pub last_termination: Option<Termination>,
}

impl ContainerRecord {
    /// A container not started yet, waiting for `reason`.
    pub fn waiting(name: &str, image: &str, reason: &str) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: String::new(),
            restart_count: 0,
            phase: ContainerPhase::Waiting {
                reason: reason.to_string(),
                message: String::new(),
            },
            last_termination: None,
        }
    }

    /// Whether it runs (there are no probes: running is ready).
    pub fn is_running(&self) -> bool {
        matches!(self.phase, ContainerPhase::Running { .. })
    }

    /// Whether it ended with exit code 0.
    pub fn succeeded(&self) -> bool {
        matches!(&self.phase, ContainerPhase::Terminated(t) if t.exit_code == 0)
    }

    fn to_json(&self) -> Value {
        let running = self.is_running();
        let mut status = json!({
            "name": self.name,
            "state": phase_json(&self.phase),
            "lastState": self.last_termination.as_ref().map(|t| json!({"terminated": termination_json(t)})).unwrap_or(json!({})),
            "ready": running,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image_id,
            "started": running,
        });
        if !self.container_id.is_empty() {
            status["containerID"] = json!(self.container_id);
        }
        status
    }
}

fn phase_json(phase: &ContainerPhase) -> Value {
    match phase {
        ContainerPhase::Waiting { reason, message } => {
            let mut w = Map::new();
            w.insert("reason".into(), json!(reason));
            if !message.is_empty() {
                w.insert("message".into(), json!(message));
            }
            json!({ "waiting": w })
        }
        ContainerPhase::Running { started_at } => {
            json!({"running": {"startedAt": format_time(*started_at)}})
        }
        ContainerPhase::Terminated(t) => json!({ "terminated": termination_json(t) }),
    }
}

fn termination_json(t: &Termination) -> Value {
    let mut terminated = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": format_time(t.started_at),
        "finishedAt": format_time(t.finished_at),
        "containerID": t.container_id,
    });
    if !t.message.is_empty() {
        terminated["message"] = json!(t.message);
    }
    terminated
}

/// A time as the API's `Time`: RFC 3339 in UTC with whole seconds.
pub fn format_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A time as the API's `MicroTime`: RFC 3339 in UTC with six fractional digits.
pub fn format_micro_time(t: SystemTime) -> String {
    let whole = format_time(t);
    let micros = time::OffsetDateTime::from(t).microsecond();
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

/// The pod phase from its containers, as upstream's kubelet computes it.
pub fn pod_phase(
    restart_policy: &str,
    init: &[ContainerRecord],
    containers: &[ContainerRecord],
) -> &'static str {
    let init_failed = init
        .iter()
        .any(|c| matches!(&c.phase, ContainerPhase::Terminated(t) if t.exit_code != 0));
    if init_failed && restart_policy == "Never" {
        return "Failed";
    }
    if !init.iter().all(ContainerRecord::succeeded) {
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.phase {
            ContainerPhase::Running { .. } => running += 1,
            ContainerPhase::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            ContainerPhase::Waiting { .. } if c.last_termination.is_some() => stopped += 1,
            ContainerPhase::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// The conditions' statuses and when each last changed.
#[derive(Debug, Default)]
pub struct ConditionClock {
    since: HashMap<&'static str, (bool, String)>,
}

impl ConditionClock {
    /// A clock that starts from the conditions a pod already has (an agent restart keeps
    /// their transition times).
    pub fn from_existing(conditions: Option<&Value>) -> Self {
        let mut clock = Self::default();
        for c in conditions.and_then(Value::as_array).into_iter().flatten() {
            let kind = match c.get("type").and_then(Value::as_str) {
                Some(k) => CONDITIONS.iter().find(|x| **x == k).copied(),
                None => None,
            };
            let (Some(kind), Some(status), Some(at)) = (
                kind,
                c.get("status").and_then(Value::as_str),
                c.get("lastTransitionTime").and_then(Value::as_str),
            ) else {
                continue;
            };
            clock.since.insert(kind, (status == "True", at.to_string()));
        }
        clock
    }

    /// A condition's JSON, keeping its transition time while its status is unchanged.
    pub fn condition(
        &mut self,
        kind: &'static str,
        ok: bool,
        reason: &str,
        message: &str,
        now: SystemTime,
    ) -> Value {
        let entry = self
            .since
            .entry(kind)
            .or_insert_with(|| (ok, format_time(now)));
        if entry.0 != ok {
            *entry = (ok, format_time(now));
        }
        let mut c = json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        if !message.is_empty() {
            c["message"] = json!(message);
        }
        c
    }
}

const CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// Everything that goes into one status write.
pub struct StatusInput<'a> {
    /// The pod's restartPolicy.
    pub restart_policy: &'a str,
    /// Whether the sandbox exists (and runs).
    pub sandbox_ready: bool,
    /// The node's IP.
    pub host_ip: &'a str,
    /// The pod's IP, once it has one.
    pub pod_ip: Option<&'a str>,
    /// When the agent accepted the pod.
    pub start_time: SystemTime,
    /// The init containers.
    pub init: &'a [ContainerRecord],
    /// The app containers.
    pub containers: &'a [ContainerRecord],
    /// Why the agent failed the pod whatever its containers did (`DeadlineExceeded`), with
    /// the message for `status.reason` and `status.message`.
    pub failure: Option<&'a PodFailure>,
}

/// A pod the agent failed itself: the phase is `Failed` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    /// `status.reason` (`DeadlineExceeded`).
    pub reason: String,
    /// `status.message`.
    pub message: String,
}

impl PodFailure {
    /// The pod ran longer than its `activeDeadlineSeconds` (upstream's reason and message).
    pub fn deadline_exceeded() -> Self {
        Self {
            reason: "DeadlineExceeded".to_string(),
            message: "Pod was active on the node longer than the specified deadline".to_string(),
        }
    }
}

/// The `status` the agent writes for a pod.
pub fn pod_status(input: &StatusInput<'_>, clock: &mut ConditionClock, now: SystemTime) -> Value {
    let phase = match input.failure {
        Some(_) => "Failed",
        None => pod_phase(input.restart_policy, input.init, input.containers),
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let not_initialized: Vec<&str> = input
        .init
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = input
        .containers
        .iter()
        .filter(|c| !c.is_running())
        .map(|c| c.name.as_str())
        .collect();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let initialized = if not_initialized.is_empty() {
        clock.condition("Initialized", true, "", "", now)
    } else {
        clock.condition(
            "Initialized",
            false,
            "ContainersNotInitialized",
            &format!(
                "containers with incomplete status: {}",
                list(&not_initialized)
            ),
            now,
        )
    };
    let (ready_reason, ready_message) = if terminal {
        ("PodCompleted".to_string(), String::new())
    } else if unready.is_empty() {
        (String::new(), String::new())
    } else {
        (
            "ContainersNotReady".to_string(),
            format!("containers with unready status: {}", list(&unready)),
        )
    };
    let all_ready = !terminal && unready.is_empty();
    let containers_ready = clock.condition(
        "ContainersReady",
        all_ready,
        &ready_reason,
        &ready_message,
        now,
    );
    let ready = clock.condition("Ready", all_ready, &ready_reason, &ready_message, now);
    let sandbox = clock.condition(
        "PodReadyToStartContainers",
        input.sandbox_ready && !terminal,
        "",
        "",
        now,
    );
    let scheduled = clock.condition("PodScheduled", true, "", "", now);
    let mut status = json!({
        "phase": phase,
        "conditions": [sandbox, initialized, ready, containers_ready, scheduled],
        "hostIP": input.host_ip,
        "hostIPs": [{"ip": input.host_ip}],
        "startTime": format_time(input.start_time),
        "containerStatuses": input.containers.iter().map(ContainerRecord::to_json).collect::<Vec<_>>(),
    });
    if !input.init.is_empty() {
        status["initContainerStatuses"] = json!(input
            .init
            .iter()
            .map(ContainerRecord::to_json)
            .collect::<Vec<_>>());
    }
    if let Some(failure) = input.failure {
        status["reason"] = json!(failure.reason);
        status["message"] = json!(failure.message);
    }
    if let Some(ip) = input.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn running(name: &str) -> ContainerRecord {
        let mut c = ContainerRecord::waiting(name, "img", "ContainerCreating");
        c.phase = ContainerPhase::Running { started_at: at(10) };
        c.container_id = "simulated://x".into();
        c
    }

    fn exited(name: &str, code: i32) -> ContainerRecord {
        let mut c = running(name);
        c.phase = ContainerPhase::Terminated(Termination {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: at(10),
            finished_at: at(12),
            container_id: "simulated://x".into(),
            message: String::new(),
        });
        c
    }

    fn backing_off(name: &str) -> ContainerRecord {
        let mut c = exited(name, 1);
        let ContainerPhase::Terminated(t) = c.phase.clone() else {
            unreachable!()
        };
        c.last_termination = Some(t);
        c.phase = ContainerPhase::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
        };
        c.restart_count = 1;
        c
    }

    #[test]
    fn phases_follow_upstream_get_phase() {
        let creating = [ContainerRecord::waiting("a", "img", "ContainerCreating")];
        assert_eq!(pod_phase("Always", &[], &creating), "Pending");
        assert_eq!(pod_phase("Always", &[], &[running("a")]), "Running");
        assert_eq!(pod_phase("Never", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            pod_phase("Never", &[], &[exited("a", 0), exited("b", 2)]),
            "Failed"
        );
        assert_eq!(pod_phase("OnFailure", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(pod_phase("OnFailure", &[], &[backing_off("a")]), "Running");
        assert_eq!(pod_phase("Always", &[], &[exited("a", 0)]), "Running");
        assert_eq!(pod_phase("Never", &[exited("i", 1)], &creating), "Failed");
        assert_eq!(
            pod_phase("OnFailure", &[exited("i", 1)], &creating),
            "Pending"
        );
        assert_eq!(
            pod_phase("Never", &[exited("i", 0)], &[running("a")]),
            "Running"
        );
    }

    #[test]
    fn times_are_formatted_as_the_api_wants() {
        let t = UNIX_EPOCH + Duration::from_micros(1_704_164_645_123_456);
        assert_eq!(format_time(t), "2024-01-02T03:04:05Z");
        assert_eq!(format_micro_time(t), "2024-01-02T03:04:05.123456Z");
    }

    #[test]
    fn running_pod_status_is_complete() {
        let mut clock = ConditionClock::default();
        let containers = [running("app")];
        let input = StatusInput {
            restart_policy: "Always",
            sandbox_ready: true,
            host_ip: "127.0.0.1",
            pod_ip: Some("10.244.0.2"),
            start_time: at(5),
            init: &[],
            containers: &containers,
            failure: None,
        };
        let s = pod_status(&input, &mut clock, at(11));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.244.0.2");
        assert_eq!(s["podIPs"][0]["ip"], "10.244.0.2");
        assert_eq!(s["hostIP"], "127.0.0.1");
        assert_eq!(s["startTime"], "1970-01-01T00:00:05Z");
        let cond = |t: &str| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone()
        };
        for t in CONDITIONS {
            assert_eq!(cond(t)["status"], "True", "{t}");
        }
        let c = &s["containerStatuses"][0];
        assert_eq!(c["ready"], true);
        assert_eq!(c["started"], true);
        assert_eq!(c["state"]["running"]["startedAt"], "1970-01-01T00:00:10Z");
        assert_eq!(c["containerID"], "simulated://x");
        assert!(s.get("initContainerStatuses").is_none());
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let mut clock = ConditionClock::default();
        let a = clock.condition("Ready", false, "", "", at(1));
        let b = clock.condition("Ready", false, "", "", at(2));
        assert_eq!(a["lastTransitionTime"], b["lastTransitionTime"]);
        let c = clock.condition("Ready", true, "", "", at(3));
        assert_eq!(c["lastTransitionTime"], "1970-01-01T00:00:03Z");
        let existing = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]);
        let mut clock = ConditionClock::from_existing(Some(&existing));
        assert_eq!(
            clock.condition("Ready", true, "", "", at(9))["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn completed_pod_is_not_ready_with_pod_completed() {
        let mut clock = ConditionClock::default();
        let containers = [exited("app", 0)];
        let input = StatusInput {
            restart_policy: "Never",
            sandbox_ready: true,
            host_ip: "127.0.0.1",
            pod_ip: Some("10.244.0.2"),
            start_time: at(5),
            init: &[],
            containers: &containers,
            failure: None,
        };
        let s = pod_status(&input, &mut clock, at(13));
        assert_eq!(s["phase"], "Succeeded");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "PodCompleted");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }

    #[test]
    fn unready_containers_are_named() {
        let mut clock = ConditionClock::default();
        let containers = [
            running("a"),
            ContainerRecord::waiting("b", "img", "ContainerCreating"),
        ];
        let input = StatusInput {
            restart_policy: "Always",
            sandbox_ready: true,
            host_ip: "127.0.0.1",
            pod_ip: None,
            start_time: at(5),
            init: &[],
            containers: &containers,
            failure: None,
        };
        let s = pod_status(&input, &mut clock, at(6));
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ContainersReady")
            .unwrap();
        assert_eq!(ready["message"], "containers with unready status: [b]");
        assert_eq!(
            s["containerStatuses"][1]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        assert!(s.get("podIP").is_none());
    }

    #[test]
    fn a_failed_pod_carries_its_reason_and_termination_messages() {
        let mut clock = ConditionClock::default();
        let mut app = exited("app", 137);
        if let ContainerPhase::Terminated(t) = &mut app.phase {
            t.message = "bye".into();
        }
        let containers = [app, running("side")];
        let failure = PodFailure::deadline_exceeded();
        let input = StatusInput {
            restart_policy: "Always",
            sandbox_ready: true,
            host_ip: "127.0.0.1",
            pod_ip: Some("10.244.0.2"),
            start_time: at(5),
            init: &[],
            containers: &containers,
            failure: Some(&failure),
        };
        let s = pod_status(&input, &mut clock, at(20));
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["reason"], "DeadlineExceeded");
        assert_eq!(
            s["message"],
            "Pod was active on the node longer than the specified deadline"
        );
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["message"],
            "bye"
        );
        let without = StatusInput {
            failure: None,
            ..input
        };
        let s = pod_status(&without, &mut clock, at(21));
        assert_eq!(s["phase"], "Running");
        assert!(s.get("reason").is_none());
        assert!(s["containerStatuses"][1]["state"]["running"].is_object());
    }
}
