//! Containers lost while the agent was down: the pod's status says they ran, but the runtime
//! has no live sandbox for the pod any more (it died, or the machine rebooted). As the
//! kubelet does when a sandbox changes, the containers start again in a new sandbox with
//! their restart counts going on, and their last state says the old run could not be found;
//! a `restartPolicy: Never` pod whose containers had run is not started again and fails.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::status::{ContainerPhase, ContainerRecord, Termination};

/// Upstream's reason and message for a container whose run the runtime cannot find.
const UNKNOWN_REASON: &str = "ContainerStatusUnknown";
const UNKNOWN_MESSAGE: &str = "The container could not be located when the pod was terminated";

/// Seeds the records of a pod that found no sandbox to adopt from what its status says of
/// earlier runs; records of containers that never ran are left as they are.
pub(super) fn recover(
    pod: &Pod,
    restart_policy: &str,
    init: &mut [ContainerRecord],
    containers: &mut [ContainerRecord],
    now: SystemTime,
) {
    let status = pod.status.as_ref();
    let init_statuses = status.and_then(|s| s.init_container_statuses.as_deref());
    let app_statuses = status.and_then(|s| s.container_statuses.as_deref());
    for record in init.iter_mut() {
        recover_one(record, init_statuses, restart_policy, true, now);
    }
    for record in containers.iter_mut() {
        recover_one(record, app_statuses, restart_policy, false, now);
    }
}

fn recover_one(
    record: &mut ContainerRecord,
    statuses: Option<&[ContainerStatus]>,
    restart_policy: &str,
    is_init: bool,
    now: SystemTime,
) {
    let Some(status) = statuses
        .into_iter()
        .flatten()
        .find(|s| s.name == record.name)
    else {
        return;
    };
    let Some(id) = status.container_id.clone().filter(|id| !id.is_empty()) else {
        return;
    };
    let state = status.state.as_ref();
    let ended = state
        .and_then(|s| s.terminated.as_ref())
        .map(|t| Termination {
            exit_code: t.exit_code,
            reason: t.reason.clone().unwrap_or_default(),
            started_at: t.started_at.as_ref().map_or(now, |at| at.0.into()),
            finished_at: t.finished_at.as_ref().map_or(now, |at| at.0.into()),
            container_id: id.clone(),
            message: t.message.clone().unwrap_or_default(),
        });
    let lost = || Termination {
        exit_code: 137,
        reason: UNKNOWN_REASON.to_string(),
        started_at: state
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map_or(now, |at| at.0.into()),
        finished_at: now,
        container_id: id.clone(),
        message: UNKNOWN_MESSAGE.to_string(),
    };
    record.restart_count = u32::try_from(status.restart_count).unwrap_or(0);
    record.container_id = id.clone();
    record.image_id = status.image_id.clone();
    let completed = ended.as_ref().is_some_and(|t| t.exit_code == 0);
    let runs_again = match restart_policy {
        "Never" => false,
        // An app container that completed stays completed; init containers run again in a
        // new sandbox, as upstream's.
        "OnFailure" => is_init || !completed,
        _ => true,
    };
    let termination = ended.unwrap_or_else(lost);
    if runs_again {
        record.last_termination = Some(termination);
    } else {
        record.phase = ContainerPhase::Terminated(termination);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": statuses},
        }))
        .unwrap()
    }

    fn records(names: &[&str]) -> Vec<ContainerRecord> {
        names
            .iter()
            .map(|n| ContainerRecord::waiting(n, "busybox", "ContainerCreating"))
            .collect()
    }

    fn statuses() -> serde_json::Value {
        serde_json::json!([
            {"name": "ran", "image": "busybox", "imageID": "sha256:1", "ready": true,
             "restartCount": 2, "containerID": "containerd://a",
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
            {"name": "done", "image": "busybox", "imageID": "sha256:1", "ready": false,
             "restartCount": 0, "containerID": "containerd://b",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "new", "image": "busybox", "imageID": "", "ready": false,
             "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}},
        ])
    }

    #[test]
    fn a_lost_container_restarts_with_its_count_going_on() {
        let pod = pod(statuses());
        let mut apps = records(&["ran", "done", "new"]);
        recover(&pod, "Always", &mut [], &mut apps, SystemTime::now());
        let ran = &apps[0];
        assert!(matches!(ran.phase, ContainerPhase::Waiting { .. }));
        assert_eq!(ran.restart_count, 2);
        assert_eq!(
            ran.container_id, "containerd://a",
            "the next start is attempt 3"
        );
        let last = ran.last_termination.as_ref().unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_str()),
            (137, UNKNOWN_REASON)
        );
        assert_eq!(
            apps[1].last_termination.as_ref().unwrap().reason,
            "Completed"
        );
        assert_eq!(apps[2], records(&["new"])[0], "never ran: untouched");
    }

    #[test]
    fn on_failure_keeps_completed_containers_and_never_restarts_nothing() {
        let pod = pod(statuses());
        let mut apps = records(&["ran", "done", "new"]);
        recover(&pod, "OnFailure", &mut [], &mut apps, SystemTime::now());
        assert!(matches!(apps[0].phase, ContainerPhase::Waiting { .. }));
        assert!(matches!(&apps[1].phase, ContainerPhase::Terminated(t) if t.reason == "Completed"));

        let mut apps = records(&["ran", "done", "new"]);
        recover(&pod, "Never", &mut [], &mut apps, SystemTime::now());
        assert!(
            matches!(&apps[0].phase, ContainerPhase::Terminated(t) if t.exit_code == 137 && t.reason == UNKNOWN_REASON && t.message == UNKNOWN_MESSAGE)
        );
        assert!(matches!(&apps[1].phase, ContainerPhase::Terminated(t) if t.exit_code == 0));
        assert!(matches!(apps[2].phase, ContainerPhase::Waiting { .. }));
    }
}
