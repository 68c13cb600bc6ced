//! The CronJob controller, after upstream's `pkg/controller/cronjob` (the v2 controller).
//!
//! Each sync reconciles `status.active` with the Jobs the CronJob controls, then asks
//! [`decide`] whether the most recent scheduled time (only the most recent: missed ones are
//! not caught up) should start a Job now, honouring `suspend`, `startingDeadlineSeconds` and
//! `concurrencyPolicy`. Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`,
//! so a restarted controller cannot start the same run twice. Finished Jobs beyond the history
//! limits are deleted, oldest first.

pub mod schedule;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::pods::{controller_of, controller_owner_ref, is_conflict, is_not_found};
use crate::{ControllerError, RETRY_AFTER};
use schedule::Schedule;

/// The annotation with the time a CronJob's Job was scheduled for (RFC 3339, in the
/// CronJob's time zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this raise a `TooManyMissedTimes` warning (as upstream).
pub const MISSED_TIMES_WARNING: u64 = 100;
/// The most schedule times walked when looking for the most recent one.
const MAX_SCHEDULE_STEPS: u64 = 2_000_000;

struct Context {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller until its watch ends.
pub async fn run(client: Client) {
    let cron_jobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: crate::events::recorder(&client, "cronjob-controller"),
        client,
    });
    Controller::new(cron_jobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cronjob reconcile");
            }
        })
        .await;
}

fn error_policy(_cj: Arc<CronJob>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::debug!(%error, "cronjob sync failed; retrying");
    Action::requeue(RETRY_AFTER)
}

/// The most recent scheduled time after `earliest` and at or before `now`, with how many
/// scheduled times that interval holds (upstream's `mostRecentScheduleTime`).
pub fn most_recent_schedule(
    schedule: &Schedule,
    zone: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, u64) {
    let mut at = earliest;
    let mut most_recent = None;
    let mut missed = 0;
    while missed < MAX_SCHEDULE_STEPS {
        match schedule.next_after(at, zone) {
            Some(next) if next <= now => {
                most_recent = Some(next);
                missed += 1;
                at = next;
            }
            _ => break,
        }
    }
    (most_recent, missed)
}

/// What a CronJob's sync knows for deciding.
#[derive(Debug, Clone)]
pub struct ScheduleState<'a> {
    /// When the CronJob was created.
    pub created: Timestamp,
    /// `status.lastScheduleTime`.
    pub last_schedule: Option<Timestamp>,
    /// `spec.startingDeadlineSeconds`.
    pub starting_deadline_seconds: Option<i64>,
    /// `spec.concurrencyPolicy` (Allow, Forbid, Replace).
    pub concurrency_policy: &'a str,
    /// How many Jobs are active.
    pub active: usize,
}

/// What a sync does about the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No scheduled time is due.
    Wait,
    /// The due time is past its starting deadline: it is skipped.
    TooLate(Timestamp),
    /// A Job is active and the policy is Forbid: the due time is skipped for now.
    Forbidden(Timestamp),
    /// Start a Job for the due time, deleting the active Jobs first when `replace`.
    Start {
        /// The scheduled time.
        scheduled: Timestamp,
        /// Whether the active Jobs go first (concurrencyPolicy Replace).
        replace: bool,
    },
}

/// Upstream's scheduling decision for one sync; also returns how many times were missed and
/// when the next scheduled time after `now` is.
pub fn decide(
    schedule: &Schedule,
    zone: &TimeZone,
    state: &ScheduleState<'_>,
    now: Timestamp,
) -> (Decision, u64, Option<Timestamp>) {
    let mut earliest = state.last_schedule.unwrap_or(state.created);
    if let Some(deadline) = state.starting_deadline_seconds {
        if let Ok(window_start) = Timestamp::from_second(now.as_second().saturating_sub(deadline)) {
            if window_start > earliest {
                earliest = window_start;
            }
        }
    }
    let next = schedule.next_after(now, zone);
    let (most_recent, missed) = most_recent_schedule(schedule, zone, earliest, now);
    let Some(scheduled) = most_recent else {
        return (Decision::Wait, 0, next);
    };
    if let Some(deadline) = state.starting_deadline_seconds {
        if scheduled.as_second().saturating_add(deadline) < now.as_second() {
            return (Decision::TooLate(scheduled), missed, next);
        }
    }
    let decision = match state.concurrency_policy {
        "Forbid" if state.active > 0 => Decision::Forbidden(scheduled),
        "Replace" => Decision::Start {
            scheduled,
            replace: state.active > 0,
        },
        _ => Decision::Start {
            scheduled,
            replace: false,
        },
    };
    (decision, missed, next)
}

/// The name of the Job for a scheduled time (upstream's `getJobName`).
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// The Job a CronJob starts for `scheduled` (upstream's `getJobFromTemplate2`).
pub fn job_from_template(cron_job: &CronJob, scheduled: Timestamp, zone: Option<&TimeZone>) -> Job {
    let template = cron_job
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let stamp = match zone {
        Some(zone) => scheduled
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        None => scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cron_job.name_any(), scheduled)),
            namespace: cron_job.namespace(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_owner_ref(cron_job)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Whether a Job finished, and with which condition (Complete or Failed).
fn finished_condition(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The finished Jobs to delete beyond a history limit, oldest (by start time) first.
pub fn beyond_history_limit<'a>(finished: &[&'a Job], limit: Option<i32>) -> Vec<&'a Job> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if finished.len() <= keep {
        return Vec::new();
    }
    let mut sorted = finished.to_vec();
    sorted.sort_by_key(|j| {
        let start = j
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .or(j.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        (start.is_some(), start, j.name_any())
    });
    sorted.truncate(finished.len() - keep);
    sorted
}

async fn record(ctx: &Context, cron_job: &CronJob, warning: bool, reason: &str, note: String) {
    crate::events::record(&ctx.recorder, cron_job, warning, reason, note).await;
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn requeue_at(next: Option<Timestamp>, now: Timestamp) -> Action {
    match next {
        Some(next) => {
            let wait: Duration = next
                .duration_since(now)
                .try_into()
                .unwrap_or(Duration::ZERO);
            Action::requeue(wait + Duration::from_millis(100))
        }
        None => Action::await_change(),
    }
}

async fn reconcile(cron_job: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = cron_job.namespace().unwrap_or_default();
    let name = cron_job.name_any();
    let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let cron_job = match cron_jobs.get(&name).await {
        Ok(cj) => cj,
        Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    };
    let uid = cron_job.metadata.uid.clone().unwrap_or_default();
    let children: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let spec = cron_job.spec.clone().unwrap_or_default();
    let old_status = cron_job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let mut active = status.active.take().unwrap_or_default();

    // Reconcile the active list with the Jobs that exist.
    for job in &children {
        let job_uid = job.metadata.uid.as_deref();
        let listed = active.iter().any(|r| r.uid.as_deref() == job_uid);
        match finished_condition(job) {
            None if !listed => {
                record(
                    &ctx,
                    &cron_job,
                    false,
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        job.name_any()
                    ),
                )
                .await;
                active.push(job_reference(job));
            }
            Some(condition) if listed => {
                active.retain(|r| r.uid.as_deref() != job_uid);
                record(
                    &ctx,
                    &cron_job,
                    false,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, condition: {condition}",
                        job.name_any()
                    ),
                )
                .await;
            }
            _ => {}
        }
        if finished_condition(job) == Some("Complete") {
            if let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone()) {
                if status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
        }
    }
    let child_uids: BTreeSet<&str> = children
        .iter()
        .filter_map(|j| j.metadata.uid.as_deref())
        .collect();
    let mut kept = Vec::new();
    for reference in active {
        if reference
            .uid
            .as_deref()
            .is_some_and(|u| child_uids.contains(u))
        {
            kept.push(reference);
            continue;
        }
        // Not in the list: keep it unless the Job is really gone.
        let job_name = reference.name.clone().unwrap_or_default();
        match jobs_api.get_opt(&job_name).await? {
            Some(job) if job.metadata.uid == reference.uid => kept.push(reference),
            _ => {}
        }
    }
    let mut active = kept;

    let mut action = Action::await_change();
    let mut created = None;
    if cron_job.metadata.deletion_timestamp.is_none() {
        action = schedule_step(
            &ctx,
            &cron_job,
            &jobs_api,
            &mut active,
            &mut status,
            &mut created,
        )
        .await?;
    }

    // History limits.
    let finished: Vec<&Job> = children
        .iter()
        .filter(|j| finished_condition(j).is_some())
        .collect();
    let succeeded: Vec<&Job> = finished
        .iter()
        .copied()
        .filter(|j| finished_condition(j) == Some("Complete"))
        .collect();
    let failed: Vec<&Job> = finished
        .iter()
        .copied()
        .filter(|j| finished_condition(j) == Some("Failed"))
        .collect();
    let mut removed = Vec::new();
    removed.extend(beyond_history_limit(
        &succeeded,
        spec.successful_jobs_history_limit,
    ));
    removed.extend(beyond_history_limit(
        &failed,
        spec.failed_jobs_history_limit,
    ));
    for job in removed {
        delete_job(&jobs_api, &job.name_any()).await?;
        record(
            &ctx,
            &cron_job,
            false,
            "SuccessfulDelete",
            format!("Deleted job {}", job.name_any()),
        )
        .await;
    }

    status.active = Some(active).filter(|a| !a.is_empty());
    if status != old_status {
        let mut updated = cron_job.clone();
        updated.status = Some(status);
        match cron_jobs
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(action)
}

/// Decides and acts on the schedule; returns when to sync again.
async fn schedule_step(
    ctx: &Context,
    cron_job: &CronJob,
    jobs_api: &Api<Job>,
    active: &mut Vec<ObjectReference>,
    status: &mut CronJobStatus,
    created: &mut Option<String>,
) -> Result<Action, ControllerError> {
    let spec = cron_job.spec.clone().unwrap_or_default();
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            record(
                ctx,
                cron_job,
                true,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let zone = match schedule::resolve_zone(spec.time_zone.as_deref(), &schedule) {
        Ok(z) => z,
        Err(e) => {
            record(ctx, cron_job, true, "UnknownTimeZone", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    if spec.suspend == Some(true) {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let created_at = cron_job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let state = ScheduleState {
        created: created_at,
        last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
        starting_deadline_seconds: spec.starting_deadline_seconds,
        concurrency_policy: spec.concurrency_policy.as_deref().unwrap_or("Allow"),
        active: active.len(),
    };
    let (decision, missed, next) = decide(&schedule, &zone, &state, now);
    if missed > MISSED_TIMES_WARNING {
        record(ctx, cron_job, true, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into()).await;
    }
    let (scheduled, replace) = match decision {
        Decision::Wait => return Ok(requeue_at(next, now)),
        Decision::TooLate(scheduled) => {
            record(
                ctx,
                cron_job,
                true,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", scheduled),
            )
            .await;
            return Ok(requeue_at(next, now));
        }
        Decision::Forbidden(_) => {
            record(ctx, cron_job, false, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into()).await;
            return Ok(requeue_at(next, now));
        }
        Decision::Start { scheduled, replace } => (scheduled, replace),
    };
    let name = job_name(&cron_job.name_any(), scheduled);
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
    {
        return Ok(requeue_at(next, now));
    }
    if replace {
        for reference in active.drain(..) {
            let job_name = reference.name.unwrap_or_default();
            delete_job(jobs_api, &job_name).await?;
            record(
                ctx,
                cron_job,
                false,
                "SuccessfulDelete",
                format!("Deleted job {job_name}"),
            )
            .await;
        }
    }
    let zone_for_stamp = spec.time_zone.as_ref().map(|_| &zone);
    let job = job_from_template(cron_job, scheduled, zone_for_stamp);
    match jobs_api.create(&PostParams::default(), &job).await {
        Ok(job) => {
            record(
                ctx,
                cron_job,
                false,
                "SuccessfulCreate",
                format!("Created job {}", job.name_any()),
            )
            .await;
            active.push(job_reference(&job));
            *created = Some(job.name_any());
        }
        Err(e) if is_conflict(&e) => {
            // Already started (by an earlier sync whose status write was lost): if it is ours,
            // the time counts as scheduled.
            let existing = jobs_api.get_opt(&name).await?;
            let ours = existing
                .as_ref()
                .and_then(|j| controller_of(&j.metadata))
                .is_some_and(|r| Some(&r.uid) == cron_job.metadata.uid.as_ref());
            if !ours {
                return Err(e.into());
            }
        }
        Err(e) => {
            record(
                ctx,
                cron_job,
                true,
                "FailedCreate",
                format!("Error creating job: {e}"),
            )
            .await;
            return Err(e.into());
        }
    }
    status.last_schedule_time = Some(Time(scheduled));
    Ok(requeue_at(next, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn state(policy: &str, active: usize) -> ScheduleState<'_> {
        ScheduleState {
            created: ts("2024-01-01T00:00:30Z"),
            last_schedule: None,
            starting_deadline_seconds: None,
            concurrency_policy: policy,
            active,
        }
    }

    #[test]
    fn waits_until_the_first_time() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let (d, missed, next) = decide(
            &s,
            &TimeZone::UTC,
            &state("Allow", 0),
            ts("2024-01-01T00:03:00Z"),
        );
        assert_eq!((d, missed), (Decision::Wait, 0));
        assert_eq!(next, Some(ts("2024-01-01T00:05:00Z")));
    }

    #[test]
    fn only_the_most_recent_missed_time_starts() {
        let s = Schedule::parse("* * * * *").unwrap();
        let mut st = state("Allow", 0);
        st.last_schedule = Some(ts("2024-01-01T00:10:00Z"));
        let (d, missed, next) = decide(&s, &TimeZone::UTC, &st, ts("2024-01-01T00:15:30Z"));
        assert_eq!(
            d,
            Decision::Start {
                scheduled: ts("2024-01-01T00:15:00Z"),
                replace: false
            }
        );
        assert_eq!(missed, 5);
        assert_eq!(next, Some(ts("2024-01-01T00:16:00Z")));
        // After a long outage more than 100 times were missed.
        let (_, missed, _) = decide(&s, &TimeZone::UTC, &st, ts("2024-01-01T03:00:00Z"));
        assert!(missed > MISSED_TIMES_WARNING);
    }

    #[test]
    fn starting_deadline_skips_late_times_and_bounds_the_search() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let mut st = state("Allow", 0);
        st.starting_deadline_seconds = Some(60);
        let (d, _, _) = decide(&s, &TimeZone::UTC, &st, ts("2024-01-01T01:00:30Z"));
        assert_eq!(
            d,
            Decision::Start {
                scheduled: ts("2024-01-01T01:00:00Z"),
                replace: false
            }
        );
        // Two minutes late: the window holds no scheduled time.
        let (d, missed, _) = decide(&s, &TimeZone::UTC, &st, ts("2024-01-01T01:02:00Z"));
        assert_eq!((d, missed), (Decision::Wait, 0));
        // A wider window finds the time again.
        st.starting_deadline_seconds = Some(200);
        let (d, _, _) = decide(&s, &TimeZone::UTC, &st, ts("2024-01-01T01:03:00Z"));
        assert_eq!(
            d,
            Decision::Start {
                scheduled: ts("2024-01-01T01:00:00Z"),
                replace: false
            }
        );
        let mut late = st.clone();
        late.starting_deadline_seconds = Some(100);
        late.created = ts("2024-01-01T00:59:00Z");
        let (d, _, _) = decide(&s, &TimeZone::UTC, &late, ts("2024-01-01T01:01:39Z"));
        assert_eq!(
            d,
            Decision::Start {
                scheduled: ts("2024-01-01T01:00:00Z"),
                replace: false
            }
        );
    }

    #[test]
    fn concurrency_policies() {
        let s = Schedule::parse("* * * * *").unwrap();
        let now = ts("2024-01-01T00:02:10Z");
        let scheduled = ts("2024-01-01T00:02:00Z");
        let (d, _, _) = decide(&s, &TimeZone::UTC, &state("Forbid", 1), now);
        assert_eq!(d, Decision::Forbidden(scheduled));
        let (d, _, _) = decide(&s, &TimeZone::UTC, &state("Forbid", 0), now);
        assert_eq!(
            d,
            Decision::Start {
                scheduled,
                replace: false
            }
        );
        let (d, _, _) = decide(&s, &TimeZone::UTC, &state("Replace", 2), now);
        assert_eq!(
            d,
            Decision::Start {
                scheduled,
                replace: true
            }
        );
        let (d, _, _) = decide(&s, &TimeZone::UTC, &state("Allow", 3), now);
        assert_eq!(
            d,
            Decision::Start {
                scheduled,
                replace: false
            }
        );
    }

    #[test]
    fn decisions_follow_the_time_zone() {
        let s = Schedule::parse("0 9 * * *").unwrap();
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let mut st = state("Allow", 0);
        st.created = ts("2024-06-01T00:00:00Z");
        let (d, _, next) = decide(&s, &zone, &st, ts("2024-06-01T07:30:00Z"));
        assert_eq!(
            d,
            Decision::Start {
                scheduled: ts("2024-06-01T07:00:00Z"),
                replace: false
            }
        );
        assert_eq!(next, Some(ts("2024-06-02T07:00:00Z")));
    }

    #[test]
    fn job_names_and_annotation() {
        let cj: CronJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default", "uid": "cj-uid"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}
        }))
        .unwrap();
        let scheduled = ts("2024-01-01T00:02:00Z");
        assert_eq!(
            job_name("hello", scheduled),
            format!("hello-{}", 1704067320 / 60)
        );
        let job = job_from_template(&cj, scheduled, None);
        assert_eq!(job.metadata.name.as_deref(), Some("hello-28401122"));
        assert_eq!(
            job.annotations()[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2024-01-01T00:02:00Z"
        );
        assert_eq!(job.labels()["app"], "hello");
        let owner = controller_of(&job.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("CronJob", "cj-uid")
        );
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let job = job_from_template(&cj, scheduled, Some(&tokyo));
        assert_eq!(
            job.annotations()[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2024-01-01T09:02:00+09:00"
        );
    }

    #[test]
    fn history_limits_delete_the_oldest() {
        let job = |name: &str, start: &str| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name}, "status": {"startTime": start}
            }))
            .unwrap()
        };
        let jobs = [
            job("c", "2024-01-01T00:03:00Z"),
            job("a", "2024-01-01T00:01:00Z"),
            job("b", "2024-01-01T00:02:00Z"),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        let names = |v: Vec<&Job>| v.into_iter().map(|j| j.name_any()).collect::<Vec<_>>();
        assert_eq!(names(beyond_history_limit(&refs, Some(1))), ["a", "b"]);
        assert_eq!(names(beyond_history_limit(&refs, Some(0))), ["a", "b", "c"]);
        assert!(beyond_history_limit(&refs, Some(3)).is_empty());
        assert!(beyond_history_limit(&refs, None).is_empty());
    }
}
