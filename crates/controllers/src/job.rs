//! The Job controller, after upstream's `pkg/controller/job` (1.33 semantics).
//!
//! Each sync works from observed state: the Job and a live list of the pods it controls. A pure
//! [`plan`] decides the new status and which pods to create, delete or release, and
//! [`reconcile`] carries that out. Pods carry the `batch.kubernetes.io/job-tracking` finalizer
//! while they are uncounted: a finished pod is first recorded in
//! `status.uncountedTerminatedPods` (or, for Indexed jobs, `status.completedIndexes`), then its
//! finalizer goes, and the next sync moves it into `status.succeeded`/`status.failed`. So no
//! pod is counted twice or lost across a controller restart.
//!
//! A finishing Job first gets the interim `SuccessCriteriaMet` or `FailureTarget` condition;
//! `Complete` or `Failed` follows once no pod is uncounted or terminating. Finished Jobs with
//! `ttlSecondsAfterFinished` are deleted (foreground propagation) once it has passed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{applier, Action, Config};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::informer::{Change, Informers};
use crate::pods::{
    adopt, claim, controller_of, controller_owner_ref, is_conflict, is_not_found, is_pod_ready,
    label_selector_matches, release, Claim,
};
use crate::{ControllerError, RETRY_AFTER};

/// The label with the uid of the Job that controls a pod (set on templates by the API server).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The finalizer that keeps a Job's pod until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) carrying an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The annotation counting the earlier failures of a pod's index (backoffLimitPerIndex).
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
/// The annotation counting the earlier ignored failures of a pod's index.
pub const INDEX_IGNORED_FAILURE_COUNT_ANNOTATION: &str =
    "batch.kubernetes.io/job-index-ignored-failure-count";
/// The environment variable with the completion index, in every container of Indexed pods.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The first delay before a failed pod is replaced; it doubles with each further failure.
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay before a failed pod is replaced.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(6 * 60);

const COMPLETE: &str = "Complete";
const FAILED: &str = "Failed";
const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
const FAILURE_TARGET: &str = "FailureTarget";
const SUSPENDED: &str = "Suspended";

struct Context {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller until its watches end: a watch of Jobs, and the shared pods (a pod's
/// change triggers a sync of each Job among its owners, as kube-rs's `owns` does).
pub async fn run(client: Client, informers: &Informers) {
    let (jobs, job_writer) = reflector::store::<Job>();
    let context = Arc::new(Context {
        recorder: crate::events::recorder(&client, "job-controller"),
        client: client.clone(),
    });
    // The uids of deleted Jobs (`None`: the Jobs were listed afresh, a deletion may have
    // gone unseen), for the release of their pods' finalizers.
    let (deleted_tx, deleted_rx) = tokio::sync::mpsc::unbounded_channel();
    let job_triggers =
        watcher::watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
            .modify(crate::watch::strip_managed_fields)
            .default_backoff()
            .reflect(job_writer)
            .map_ok(move |event| {
                match &event {
                    Event::Delete(job) => {
                        let _ = deleted_tx.send(Some(job.metadata.uid.clone().unwrap_or_default()));
                    }
                    Event::InitDone => {
                        let _ = deleted_tx.send(None);
                    }
                    _ => {}
                }
                event
            })
            .touched_objects()
            .map_ok(|job: Job| ObjectRef::from_obj(&job));
    // Every pod, not only those with the generated label: Jobs with a manual selector too.
    let pod_triggers = informers
        .pods
        .subscribe()
        .flat_map(|change| {
            stream::iter(
                change
                    .object()
                    .map(|pod| job_owners(pod))
                    .unwrap_or_default(),
            )
        })
        .map(Ok::<_, watcher::Error>);
    let queue = stream::select(job_triggers.boxed(), pod_triggers.boxed());
    let orphans = release_orphans(
        client,
        jobs.clone(),
        informers.pods.store(),
        informers.pods.subscribe(),
        deleted_rx,
    );
    let controller = applier(
        |job, ctx| Box::pin(reconcile(job, ctx)),
        error_policy,
        context,
        jobs,
        queue,
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "job reconcile");
        }
    });
    tokio::join!(controller, orphans);
}

/// The Jobs among a pod's owners (every owner reference of kind Job, as kube-rs's
/// `trigger_owners` takes them).
fn job_owners(pod: &Pod) -> Vec<ObjectRef<Job>> {
    let namespace = pod.namespace().unwrap_or_default();
    pod.owner_references()
        .iter()
        .filter(|r| r.kind == "Job" && r.api_version == "batch/v1")
        .map(|r| ObjectRef::new(&r.name).within(&namespace))
        .collect()
}

fn error_policy(_job: Arc<Job>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::debug!(%error, "job sync failed; retrying");
    Action::requeue(RETRY_AFTER)
}

/// What one sync decided.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The status to write (when it differs from the current one).
    pub status: JobStatus,
    /// Pods to create: `Some(index)` for Indexed Jobs, `None` otherwise.
    pub create: Vec<Option<i32>>,
    /// Pods to delete after their finalizer is removed (they will not count as failed).
    pub delete_uncounted: Vec<String>,
    /// Pods to delete keeping the finalizer (they count as failed once gone).
    pub delete_counted: Vec<String>,
    /// Pods whose tracking finalizer goes once the status is written.
    pub release: Vec<String>,
    /// Events to record: (warning?, reason, message).
    pub events: Vec<(bool, String, String)>,
    /// When to sync again at the latest (back-off, deadline, TTL).
    pub requeue_after: Option<Duration>,
    /// The Job's TTL after finishing has passed: delete it.
    pub delete_job: bool,
}

/// A pod's phase (Pending while unset).
fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// The completion index of a pod (its annotation), if valid.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX_ANNOTATION)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|i| *i >= 0)
}

fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.annotations()
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// Whether only Failed pods are replaced (not terminating ones), as upstream's
/// `onlyReplaceFailedPods`.
fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.and_then(|s| s.pod_failure_policy.as_ref()).is_some()
}

/// Whether a pod counts as failed (upstream's `isPodFailed`): Failed, or deleted before it
/// succeeded unless only Failed pods are replaced.
fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(job) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded"
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// When a finished pod finished: its last container's end, else its deletion, else `now`.
fn finish_time(pod: &Pod, now: Timestamp) -> Timestamp {
    let status = pod.status.as_ref();
    let from_containers = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    from_containers
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now)
}

/// The action of the first podFailurePolicy rule a failed pod matches, with the message
/// upstream writes for it.
pub fn match_pod_failure_policy(job: &Job, pod: &Pod) -> Option<(String, String)> {
    let policy = job.spec.as_ref()?.pod_failure_policy.as_ref()?;
    if phase(pod) != "Failed" {
        return None;
    }
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    for (index, rule) in policy.rules.iter().enumerate() {
        if let Some(message) = rule_matches(rule, pod) {
            let message = match message {
                RuleMatch::ExitCode(container, code) => format!(
                    "Container {container} for pod {namespace}/{name} failed with exit code {code} matching {} rule at index {index}",
                    rule.action
                ),
                RuleMatch::Condition(condition) => format!(
                    "Pod {namespace}/{name} has condition {condition} matching {} rule at index {index}",
                    rule.action
                ),
            };
            return Some((rule.action.clone(), message));
        }
    }
    None
}

enum RuleMatch {
    ExitCode(String, i32),
    Condition(String),
}

fn rule_matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<RuleMatch> {
    let status = pod.status.as_ref()?;
    if let Some(requirement) = &rule.on_exit_codes {
        let containers = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten());
        for container in containers {
            let Some(code) = container
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            if code == 0 {
                continue;
            }
            if requirement
                .container_name
                .as_ref()
                .is_some_and(|n| *n != container.name)
            {
                continue;
            }
            let listed = requirement.values.contains(&code);
            let operator_matches = match requirement.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if operator_matches {
                return Some(RuleMatch::ExitCode(container.name.clone(), code));
            }
        }
        return None;
    }
    for pattern in rule.on_pod_conditions.iter().flatten() {
        let found = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == pattern.type_ && c.status == pattern.status);
        if let Some(condition) = found {
            return Some(RuleMatch::Condition(condition.type_.clone()));
        }
    }
    None
}

/// Whether a failed pod counts against the back-off limits (a matching `Ignore` rule says no).
fn failure_counts(job: &Job, pod: &Pod) -> bool {
    !matches!(match_pod_failure_policy(job, pod), Some((action, _)) if action == "Ignore")
}

/// The delay before the next replacement after `failures` failures since the last success.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let mut delay = POD_FAILURE_BACKOFF;
    for _ in 1..failures {
        delay = delay.saturating_mul(2);
        if delay >= MAX_POD_FAILURE_BACKOFF {
            return MAX_POD_FAILURE_BACKOFF;
        }
    }
    delay.min(MAX_POD_FAILURE_BACKOFF)
}

/// How long replacements still wait, from the failures since the last success among `pods`.
fn backoff_remaining<'a>(
    job: &Job,
    pods: impl Iterator<Item = &'a Pod> + Clone,
    now: Timestamp,
) -> Duration {
    let last_success = pods
        .clone()
        .filter(|p| phase(p) == "Succeeded")
        .map(|p| finish_time(p, now))
        .max();
    let failures: Vec<Timestamp> = pods
        .filter(|p| is_pod_failed(p, job) && failure_counts(job, p))
        .map(|p| finish_time(p, now))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let Some(last_failure) = failures.iter().max() else {
        return Duration::ZERO;
    };
    let delay = backoff_delay(u32::try_from(failures.len()).unwrap_or(u32::MAX));
    let elapsed = now
        .duration_since(*last_failure)
        .try_into()
        .unwrap_or(Duration::ZERO);
    delay.saturating_sub(elapsed)
}

/// Parses an interval list such as `1,3-5` (upstream's completedIndexes format).
pub fn parse_indexes(text: &str, limit: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(low), Ok(high)) = (low.parse::<i32>(), high.parse::<i32>()) {
            out.extend((low.max(0)..=high.min(limit - 1)).filter(|i| *i >= 0));
        }
    }
    out
}

/// Formats indexes as an interval list (`0-2,5`).
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn find_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has finished (Complete or Failed is True).
pub fn is_finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        find_condition(s, COMPLETE).is_some() || find_condition(s, FAILED).is_some()
    })
}

/// Sets a condition's status, keeping the transition time when nothing changes (upstream's
/// `ensureJobConditionStatus`); returns whether it changed.
fn ensure_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status == status
            && existing.reason.as_deref() == Some(reason)
            && existing.message.as_deref() == Some(message)
        {
            return false;
        }
        if existing.status != status {
            existing.last_transition_time = Some(Time(now));
        }
        existing.status = status.into();
        existing.reason = Some(reason.into());
        existing.message = Some(message.into());
        existing.last_probe_time = Some(Time(now));
        return true;
    }
    if status == "False" {
        return false;
    }
    conditions.push(condition(type_, reason, message, now));
    true
}

/// Decides one sync of an unfinished Job from its pods (those it controls).
pub fn plan(job: &Job, pods: &[Pod], now: Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut plan = Plan::default();
    let indexed = is_indexed(job);
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let per_index_limit = spec.backoff_limit_per_index.filter(|_| indexed);
    let suspended = is_suspended(job);
    let index_limit = completions.unwrap_or(0);

    // 1. Uncounted pods whose finalizer is gone move into the counters.
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let with_finalizer: BTreeSet<&str> = pods
        .iter()
        .filter(|p| has_finalizer(p))
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    let mut succeeded_count = status.succeeded.unwrap_or(0);
    let mut failed_count = status.failed.unwrap_or(0);
    let still = |list: &mut Option<Vec<String>>, counter: &mut i32| {
        let entries = list.take().unwrap_or_default();
        let (kept, gone): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|uid| with_finalizer.contains(uid.as_str()));
        *counter += i32::try_from(gone.len()).unwrap_or(i32::MAX);
        *list = Some(kept);
    };
    still(&mut uncounted.succeeded, &mut succeeded_count);
    still(&mut uncounted.failed, &mut failed_count);
    let in_uncounted = |uncounted: &UncountedTerminatedPods, uid: &str| {
        uncounted.succeeded.iter().flatten().any(|u| u == uid)
            || uncounted.failed.iter().flatten().any(|u| u == uid)
    };

    // 2. The finishing condition already reached in an earlier sync, if any.
    let mut target = find_condition(&old, SUCCESS_CRITERIA_MET)
        .or_else(|| find_condition(&old, FAILURE_TARGET))
        .cloned();

    // 3. Newly finished pods (still carrying the finalizer) are recorded.
    let mut completed: BTreeSet<i32> = if indexed {
        parse_indexes(old.completed_indexes.as_deref().unwrap_or(""), index_limit)
    } else {
        BTreeSet::new()
    };
    let job_failing = target.as_ref().is_some_and(|c| c.type_ == FAILURE_TARGET);
    let mut to_release = Vec::new();
    for pod in pods.iter().filter(|p| has_finalizer(p)) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if phase(pod) == "Succeeded" {
            to_release.push(pod.name_any());
            if in_uncounted(&uncounted, &uid) {
                continue;
            }
            if indexed {
                if let Some(i) = completion_index(pod).filter(|i| *i < index_limit) {
                    completed.insert(i);
                }
            } else {
                uncounted.succeeded.get_or_insert_with(Vec::new).push(uid);
            }
        } else if is_pod_failed(pod, job)
            || (job_failing && pod.metadata.deletion_timestamp.is_some())
        {
            to_release.push(pod.name_any());
            if in_uncounted(&uncounted, &uid) {
                continue;
            }
            let in_range = !indexed || completion_index(pod).is_some_and(|i| i < index_limit);
            if in_range && failure_counts(job, pod) {
                uncounted.failed.get_or_insert_with(Vec::new).push(uid);
            }
        }
    }
    let uncounted_failed = uncounted.failed.as_ref().map_or(0, Vec::len) as i32;
    let uncounted_succeeded = uncounted.succeeded.as_ref().map_or(0, Vec::len) as i32;
    let failed_total = failed_count + uncounted_failed;
    let succeeded_total = if indexed {
        completed.len() as i32
    } else {
        succeeded_count + uncounted_succeeded
    };

    // Per-index failures (backoffLimitPerIndex).
    let mut failed_indexes: BTreeSet<i32> = BTreeSet::new();
    if indexed {
        if let Some(limit) = per_index_limit {
            failed_indexes =
                parse_indexes(old.failed_indexes.as_deref().unwrap_or(""), index_limit);
            for pod in pods {
                let Some(i) = completion_index(pod).filter(|i| *i < index_limit) else {
                    continue;
                };
                let mut counted = annotation_count(pod, INDEX_FAILURE_COUNT_ANNOTATION);
                if is_pod_failed(pod, job) {
                    match match_pod_failure_policy(job, pod) {
                        Some((action, _)) if action == "Ignore" => {}
                        Some((action, _)) if action == "FailIndex" => {
                            counted += 1;
                            failed_indexes.insert(i);
                        }
                        _ => counted += 1,
                    }
                }
                if counted > limit {
                    failed_indexes.insert(i);
                }
            }
            failed_indexes.retain(|i| !completed.contains(i));
        }
    }

    let active_pods: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let terminating = pods.iter().filter(|p| is_terminating(p)).count() as i32;
    let mut active = active_pods.len() as i32;
    let mut ready = active_pods.iter().filter(|p| is_pod_ready(p)).count() as i32;

    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    // 4. Failure and success criteria, in upstream's order.
    if target.is_none() {
        let fail_job = pods
            .iter()
            .filter(|p| has_finalizer(p) || phase(p) == "Failed")
            .find_map(|p| match match_pod_failure_policy(job, p) {
                Some((action, message)) if action == "FailJob" => Some(message),
                _ => None,
            });
        if let Some(message) = fail_job {
            target = Some(condition(FAILURE_TARGET, "PodFailurePolicy", &message, now));
        }
    }
    if target.is_none() {
        let restarts: i32 = if spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
        {
            active_pods
                .iter()
                .filter_map(|p| p.status.as_ref())
                .flat_map(|s| {
                    s.container_statuses
                        .iter()
                        .flatten()
                        .chain(s.init_container_statuses.iter().flatten())
                })
                .map(|c| c.restart_count)
                .sum()
        } else {
            0
        };
        let past_on_failure = restarts > 0 && (backoff_limit == 0 || restarts >= backoff_limit);
        let deadline = spec
            .active_deadline_seconds
            .filter(|_| !suspended)
            .zip(status.start_time.as_ref());
        if failed_total > backoff_limit || past_on_failure {
            target = Some(condition(
                FAILURE_TARGET,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let Some((seconds, start)) = deadline {
            let elapsed = now.as_second() - start.0.as_second();
            if elapsed >= seconds {
                target = Some(condition(
                    FAILURE_TARGET,
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                plan.requeue_after = Some(Duration::from_secs((seconds - elapsed) as u64));
            }
        }
    }
    if target.is_none() && indexed && per_index_limit.is_some() {
        let failed = failed_indexes.len() as i32;
        if spec.max_failed_indexes.is_some_and(|max| failed > max) {
            target = Some(condition(
                FAILURE_TARGET,
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
                now,
            ));
        } else if failed > 0 && failed + succeeded_total >= index_limit {
            target = Some(condition(
                FAILURE_TARGET,
                "FailedIndexes",
                "Job has failed indexes",
                now,
            ));
        }
    }

    if target.is_none() && indexed {
        if let Some(message) = match_success_policy(job, index_limit, &completed) {
            target = Some(condition(
                SUCCESS_CRITERIA_MET,
                "SuccessPolicy",
                &message,
                now,
            ));
        }
    }

    // 5. Manage the pods.
    let mut released_names: BTreeSet<String> = BTreeSet::new();
    if target.is_some() {
        // A finishing Job keeps no active pods (their finalizers stay: they count as failed).
        for pod in &active_pods {
            plan.delete_counted.push(pod.name_any());
        }
        ready -= active_pods.iter().filter(|p| is_pod_ready(p)).count() as i32;
        active = 0;
    } else if job.metadata.deletion_timestamp.is_none() {
        if suspended {
            for pod in &active_pods {
                plan.delete_uncounted.push(pod.name_any());
                released_names.insert(pod.name_any());
            }
            ready = 0;
            active = 0;
        } else {
            let replaced_terminating = if only_replace_failed(job) {
                terminating
            } else {
                0
            };
            if indexed {
                manage_indexed(
                    job,
                    pods,
                    &active_pods,
                    &completed,
                    &failed_indexes,
                    parallelism,
                    replaced_terminating,
                    now,
                    &mut plan,
                );
            } else {
                let want = match completions {
                    None if succeeded_total > 0 => 0,
                    None => parallelism,
                    Some(c) => (c - succeeded_total).clamp(0, parallelism),
                };
                let diff = want - active - replaced_terminating;
                if active > want {
                    let excess = (active - want) as usize;
                    for pod in removal_order(&active_pods).into_iter().take(excess) {
                        plan.delete_uncounted.push(pod.name_any());
                    }
                } else if diff > 0 {
                    let wait = backoff_remaining(job, pods.iter(), now);
                    if wait > Duration::ZERO {
                        plan.requeue_after = min_duration(plan.requeue_after, wait);
                    } else {
                        plan.create.extend((0..diff).map(|_| None));
                    }
                }
            }
            for name in &plan.delete_uncounted {
                released_names.insert(name.clone());
            }
            let removed = active_pods
                .iter()
                .filter(|p| released_names.contains(&p.name_any()))
                .collect::<Vec<_>>();
            ready -= removed.iter().filter(|p| is_pod_ready(p)).count() as i32;
            active = active - removed.len() as i32 + plan.create.len() as i32;
        }
        // Complete once enough pods succeeded and none is active.
        let complete = match completions {
            None => succeeded_total > 0 && active == 0,
            Some(c) => succeeded_total >= c && active == 0,
        };
        if complete && plan.create.is_empty() {
            target = Some(condition(
                SUCCESS_CRITERIA_MET,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
        } else {
            let mut conditions = status.conditions.take().unwrap_or_default();
            if suspended {
                if ensure_condition(
                    &mut conditions,
                    SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                ) {
                    plan.events
                        .push((false, "Suspended".into(), "Job suspended".into()));
                }
            } else if ensure_condition(
                &mut conditions,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                plan.events
                    .push((false, "Resumed".into(), "Job resumed".into()));
                // The deadline counts from the resumption.
                status.start_time = Some(Time(now));
            }
            status.conditions = Some(conditions).filter(|c| !c.is_empty());
        }
    }

    // 6. Record the interim condition; the final one once nothing is uncounted or terminating.
    if let Some(target) = &target {
        let mut conditions = status.conditions.take().unwrap_or_default();
        if !conditions
            .iter()
            .any(|c| c.type_ == target.type_ && c.status == "True")
        {
            conditions.push(target.clone());
        }
        let nothing_uncounted = uncounted_failed == 0 && uncounted_succeeded == 0;
        let pending_terminations = terminating + plan.delete_counted.len() as i32;
        if nothing_uncounted && pending_terminations == 0 && to_release.is_empty() {
            let reason = target.reason.clone().unwrap_or_default();
            let message = target.message.clone().unwrap_or_default();
            if target.type_ == SUCCESS_CRITERIA_MET {
                conditions.push(condition(COMPLETE, &reason, &message, now));
                status.completion_time = Some(Time(now));
                plan.events
                    .push((false, "Completed".into(), "Job completed".into()));
            } else {
                conditions.push(condition(FAILED, &reason, &message, now));
                plan.events.push((true, reason, message));
            }
        }
        status.conditions = Some(conditions);
    }

    plan.release = to_release;
    status.active = Some(active);
    status.ready = Some(ready.max(0));
    status.terminating = Some(terminating + plan.delete_counted.len() as i32);
    status.succeeded = Some(if indexed {
        completed.len() as i32
    } else {
        succeeded_count
    });
    status.failed = Some(failed_count);
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed));
        if per_index_limit.is_some() {
            status.failed_indexes = Some(format_indexes(&failed_indexes));
        }
    }
    if uncounted.succeeded.as_ref().is_some_and(Vec::is_empty) {
        uncounted.succeeded = None;
    }
    if uncounted.failed.as_ref().is_some_and(Vec::is_empty) {
        uncounted.failed = None;
    }
    status.uncounted_terminated_pods = Some(uncounted);
    plan.status = status;
    plan
}

fn min_duration(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The first `successPolicy` rule the succeeded indexes meet, as upstream's message
/// (`Matched rules at index N`).
pub fn match_success_policy(
    job: &Job,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    let policy = job.spec.as_ref()?.success_policy.as_ref()?;
    if succeeded.is_empty() {
        return None;
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let required = parse_indexes(indexes, completions);
                if required.is_empty() {
                    continue;
                }
                let done = required.intersection(succeeded).count();
                match count {
                    Some(count) => done as i32 >= count,
                    None => done == required.len(),
                }
            }
            (None, Some(count)) => succeeded.len() as i32 >= count,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {index}"));
        }
    }
    None
}

/// Active pods in the order upstream deletes them: unscheduled, pending, not ready, newest first.
fn removal_order<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let mut sorted = pods.to_vec();
    sorted.sort_by_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let rank = match phase(p) {
            "Pending" => 0,
            "Unknown" => 1,
            _ => 2,
        };
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        (scheduled, rank, is_pod_ready(p), std::cmp::Reverse(created))
    });
    sorted
}

#[allow(clippy::too_many_arguments)]
fn manage_indexed(
    job: &Job,
    pods: &[Pod],
    active_pods: &[&Pod],
    completed: &BTreeSet<i32>,
    failed_indexes: &BTreeSet<i32>,
    parallelism: i32,
    replaced_terminating: i32,
    now: Timestamp,
    plan: &mut Plan,
) {
    let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
    let per_index = job
        .spec
        .as_ref()
        .and_then(|s| s.backoff_limit_per_index)
        .is_some();
    // Keep one active pod per index still to run; delete duplicates and strays.
    let mut kept: BTreeMap<i32, &Pod> = BTreeMap::new();
    for pod in removal_order(active_pods).into_iter().rev() {
        match completion_index(pod) {
            Some(i)
                if i < completions
                    && !completed.contains(&i)
                    && !failed_indexes.contains(&i)
                    && !kept.contains_key(&i) =>
            {
                kept.insert(i, pod);
            }
            _ => plan.delete_uncounted.push(pod.name_any()),
        }
    }
    let mut active = kept.len() as i32;
    // Too many active pods (parallelism lowered): drop the highest indexes.
    while active > parallelism {
        if let Some((_, pod)) = kept.pop_last() {
            plan.delete_uncounted.push(pod.name_any());
        }
        active -= 1;
    }
    let terminating_indexes: BTreeSet<i32> = pods
        .iter()
        .filter(|p| is_terminating(p))
        .filter_map(completion_index)
        .collect();
    let mut room = parallelism - active - replaced_terminating;
    for i in 0..completions {
        if room <= 0 {
            break;
        }
        if completed.contains(&i) || failed_indexes.contains(&i) || kept.contains_key(&i) {
            continue;
        }
        if replaced_terminating > 0 && terminating_indexes.contains(&i) {
            continue;
        }
        let of_index: Vec<&Pod> = pods
            .iter()
            .filter(|p| completion_index(p) == Some(i))
            .collect();
        let wait = if per_index {
            backoff_remaining(job, of_index.iter().copied(), now)
        } else {
            backoff_remaining(job, pods.iter(), now)
        };
        if wait > Duration::ZERO {
            plan.requeue_after = min_duration(plan.requeue_after, wait);
            continue;
        }
        plan.create.push(Some(i));
        room -= 1;
    }
}

/// The failure counts of an index (counted, ignored), from its pods' annotations and failures.
fn index_failure_counts(job: &Job, pods: &[Pod], index: i32) -> (i32, i32) {
    let mut counts = (0, 0);
    for pod in pods.iter().filter(|p| completion_index(p) == Some(index)) {
        let mut counted = annotation_count(pod, INDEX_FAILURE_COUNT_ANNOTATION);
        let mut ignored = annotation_count(pod, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION);
        if is_pod_failed(pod, job) {
            if failure_counts(job, pod) {
                counted += 1;
            } else {
                ignored += 1;
            }
        }
        counts.0 = counts.0.max(counted);
        counts.1 = counts.1.max(ignored);
    }
    counts
}

/// A new pod of the Job: the template with the tracking finalizer, the controller reference
/// and, for Indexed Jobs, the completion index (annotation, label, env, hostname).
pub fn new_pod(job: &Job, index: Option<i32>, failure_counts: (i32, i32)) -> Pod {
    let name = job.name_any();
    let namespace = job.namespace().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let prefix = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod =
        crate::pods::pod_from_template(&template, &namespace, &prefix, controller_owner_ref(job));
    pod.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    if let Some(i) = index {
        let value = i.to_string();
        let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(COMPLETION_INDEX_ANNOTATION.into(), value.clone());
        if job
            .spec
            .as_ref()
            .and_then(|s| s.backoff_limit_per_index)
            .is_some()
        {
            annotations.insert(
                INDEX_FAILURE_COUNT_ANNOTATION.into(),
                failure_counts.0.to_string(),
            );
            if failure_counts.1 > 0 {
                annotations.insert(
                    INDEX_IGNORED_FAILURE_COUNT_ANNOTATION.into(),
                    failure_counts.1.to_string(),
                );
            }
        }
        pod.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX_ANNOTATION.into(), value);
        if let Some(spec) = pod.spec.as_mut() {
            if spec.hostname.as_deref().unwrap_or("").is_empty() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!(
                            "metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                        ),
                    }),
                    ..Default::default()
                }),
            };
            for container in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let vars = container.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
        }
    }
    pod
}

/// A label selector as a query string (`a=b,c in (d,e),!f`).
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.clone().unwrap_or_default().join(",");
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({values})", r.key),
            "NotIn" => format!("{} notin ({values})", r.key),
            "Exists" => r.key.clone(),
            _ => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

/// The pods a Job controls (matching its selector, with its controller reference); matching
/// orphans are adopted first, as upstream's `ControllerRefManager` does.
async fn owned_pods(api: &Api<Pod>, job: &Job) -> Result<Vec<Pod>, kube::Error> {
    let Some(selector) = job.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(Vec::new());
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let deleting = job.metadata.deletion_timestamp.is_some();
    let list = api
        .list(&ListParams::default().labels(&selector_query(selector)))
        .await?;
    let mut owned = Vec::new();
    for pod in list.items {
        let matches = label_selector_matches(Some(selector), pod.labels());
        match claim(&uid, deleting, matches, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => match adopt(api, &pod.metadata, &controller_owner_ref(job)).await {
                Ok(adopted) => owned.push(adopted),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            },
            Claim::Release => release(api, &pod.metadata, &uid).await?,
            Claim::Ignore => {}
        }
    }
    Ok(owned)
}

/// Removes the tracking finalizer from a pod (upstream's `removeTrackingFinalizerPatch`: a
/// strategic merge patch carrying the pod's uid); a pod already gone counts as done.
async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    if !has_finalizer(pod) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
            "uid": pod.metadata.uid,
        }
    });
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn record(ctx: &Context, job: &Job, warning: bool, reason: &str, note: String) {
    crate::events::record(&ctx.recorder, job, warning, reason, note).await;
}

/// When a finished Job is due for deletion by `ttlSecondsAfterFinished`.
pub fn ttl_expiry(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let status = job.status.as_ref()?;
    let finished = status
        .completion_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| {
            find_condition(status, FAILED)?
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
        })
        .or_else(|| {
            find_condition(status, COMPLETE)?
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
        })?;
    Timestamp::from_second(finished.as_second().saturating_add(i64::from(ttl))).ok()
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if job
        .spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_some_and(|m| m != "kubernetes.io/job-controller")
    {
        return Ok(Action::await_change());
    }
    // Work from the live object: the watch may lag behind our own writes.
    let job = match jobs.get(&name).await {
        Ok(job) => job,
        Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    };
    let pods = owned_pods(&pods_api, &job).await?;
    let now = Timestamp::now();

    if is_finished(&job) || job.metadata.deletion_timestamp.is_some() {
        for pod in pods.iter().filter(|p| has_finalizer(p)) {
            remove_finalizer(&pods_api, pod).await?;
        }
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let Some(expiry) = ttl_expiry(&job) else {
            return Ok(Action::await_change());
        };
        if now < expiry {
            let wait = expiry.duration_since(now).try_into().unwrap_or(RETRY_AFTER);
            return Ok(Action::requeue(wait));
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::foreground()
        };
        match jobs.delete(&name, &params).await {
            Ok(_) => tracing::info!(job = %name, %namespace, "deleted finished job after its TTL"),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }

    let plan = plan(&job, &pods, now);
    let by_name: BTreeMap<String, &Pod> = pods.iter().map(|p| (p.name_any(), p)).collect();
    let mut status = plan.status.clone();
    for name in &plan.delete_uncounted {
        if let Some(pod) = by_name.get(name) {
            remove_finalizer(&pods_api, pod).await?;
        }
        delete_pod(&pods_api, name).await?;
        record(
            &ctx,
            &job,
            false,
            "SuccessfulDelete",
            format!("Deleted pod: {name}"),
        )
        .await;
    }
    for name in &plan.delete_counted {
        delete_pod(&pods_api, name).await?;
        record(
            &ctx,
            &job,
            false,
            "SuccessfulDelete",
            format!("Deleted pod: {name}"),
        )
        .await;
    }
    // Create in batches of 1, 2, 4, ... as upstream's slowStartBatch: a quota or admission
    // failure stops after few attempts.
    let mut queue = plan.create.iter().copied();
    let (created, error) = crate::pods::slow_start_batch(plan.create.len(), 1, || {
        let index = queue.next().flatten();
        let counts = index.map_or((0, 0), |i| index_failure_counts(&job, &pods, i));
        let pod = new_pod(&job, index, counts);
        let (ctx, job, pods_api) = (&ctx, &job, &pods_api);
        async move {
            let created = pods_api.create(&PostParams::default(), &pod).await?;
            let note = format!("Created pod: {}", created.name_any());
            record(ctx, job, false, "SuccessfulCreate", note).await;
            Ok::<(), kube::Error>(())
        }
    })
    .await;
    let failed_creations = (plan.create.len() - created) as i32;
    if let Some(e) = error {
        tracing::warn!(job = %name, error = %e, "creating job pods");
        record(
            &ctx,
            &job,
            true,
            "FailedCreate",
            format!("Error creating: {e}"),
        )
        .await;
    }
    if failed_creations > 0 {
        status.active = status.active.map(|a| a - failed_creations);
    }
    if job.status.as_ref() != Some(&status) {
        let mut updated = job.clone();
        updated.status = Some(status);
        match jobs
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        }
        for (warning, reason, message) in &plan.events {
            record(&ctx, &job, *warning, reason, message.clone()).await;
        }
    }
    let to_release: Vec<&Pod> = plan
        .release
        .iter()
        .filter_map(|pod_name| by_name.get(pod_name).copied())
        .collect();
    for chunk in to_release.chunks(16) {
        let mut removals = Vec::with_capacity(chunk.len());
        for pod in chunk {
            removals.push(remove_finalizer(&pods_api, pod));
        }
        for result in futures::future::join_all(removals).await {
            result?;
        }
    }
    if failed_creations > 0 {
        return Ok(Action::requeue(RETRY_AFTER));
    }
    Ok(match plan.requeue_after {
        Some(wait) => Action::requeue(wait + Duration::from_millis(100)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// Removes the tracking finalizer from pods whose Job is gone (upstream's orphan handling),
/// looking at every added or updated pod with the `controller-uid` label, at the pods of
/// every Job whose deletion the Job watch reports, and at every tracked pod when the Jobs
/// have been listed afresh.
///
/// A pod whose Job the Job store holds (same uid) is left alone without asking the API; if
/// that Job is deleted after all, its deletion releases the pod. Otherwise the Job is read
/// live before the pod is released.
async fn release_orphans(
    client: Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    changes: impl Stream<Item = Change<Pod>>,
    mut deleted_jobs: tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) {
    let mut changes = std::pin::pin!(changes);
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { return };
                let (Event::Apply(pod) | Event::InitApply(pod)) = change.event else {
                    continue;
                };
                release_if_orphaned(&client, &jobs, &pod).await;
            }
            deleted = deleted_jobs.recv() => {
                let Some(deleted) = deleted else { return };
                let Some(uid) = deleted else {
                    for pod in pods.state() {
                        release_if_orphaned(&client, &jobs, &pod).await;
                    }
                    continue;
                };
                for pod in pods.state() {
                    if tracked_by_job(&pod).is_some_and(|owner| owner.uid == uid) {
                        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                        if let Err(e) = remove_finalizer(&api, &pod).await {
                            tracing::debug!(error = %e, "releasing a deleted job's pod");
                        }
                    }
                }
            }
        }
    }
}

/// The Job controlling a pod that still has the tracking finalizer and the `controller-uid`
/// label.
fn tracked_by_job(
    pod: &Pod,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    if !pod.labels().contains_key(CONTROLLER_UID_LABEL) || !has_finalizer(pod) {
        return None;
    }
    controller_of(&pod.metadata).filter(|r| r.kind == "Job")
}

/// Releases a tracked pod whose Job is gone (not in the store, and not found live).
async fn release_if_orphaned(client: &Client, jobs: &Store<Job>, pod: &Pod) {
    let Some(owner) = tracked_by_job(pod) else {
        return;
    };
    let namespace = pod.namespace().unwrap_or_default();
    let known = jobs
        .get(&ObjectRef::new(&owner.name).within(&namespace))
        .is_some_and(|job| job.metadata.uid.as_deref() == Some(owner.uid.as_str()));
    if known {
        return;
    }
    let api_jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let gone = match api_jobs.get_opt(&owner.name).await {
        Ok(None) => true,
        Ok(Some(job)) => job.metadata.uid.as_deref() != Some(owner.uid.as_str()),
        Err(_) => false,
    };
    if gone {
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        if let Err(e) = remove_finalizer(&api, pod).await {
            tracing::debug!(error = %e, "releasing an orphaned job pod");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn job(spec: Value) -> Job {
        let mut spec = spec;
        let defaults = json!({
            "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": false,
            "selector": {"matchLabels": {CONTROLLER_UID_LABEL: "job-uid"}},
            "template": {"metadata": {"labels": {CONTROLLER_UID_LABEL: "job-uid"}},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
        });
        for (k, v) in defaults.as_object().unwrap() {
            spec.as_object_mut()
                .unwrap()
                .entry(k.clone())
                .or_insert(v.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "uid": "job-uid"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str, finalizer: bool, index: Option<i32>) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(i) = index {
            annotations.insert(COMPLETION_INDEX_ANNOTATION.into(), json!(i.to_string()));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "annotations": annotations,
                         "finalizers": if finalizer { vec![TRACKING_FINALIZER] } else { vec![] },
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job-uid", "controller": true}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn failed_pod(name: &str, code: i32, finished: Timestamp) -> Pod {
        let mut p = pod(name, "Failed", true, None);
        p.status = Some(serde_json::from_value(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "finishedAt": finished.to_string()}}}],
        })).unwrap());
        p
    }

    fn types(status: &JobStatus) -> Vec<String> {
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| format!("{}:{}", c.type_, c.reason.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn starts_parallelism_pods_up_to_remaining_completions() {
        let j = job(json!({"completions": 3, "parallelism": 2}));
        let now = Timestamp::now();
        let p = plan(&j, &[], now);
        assert_eq!(p.create, vec![None, None]);
        assert_eq!(p.status.active, Some(2));
        assert_eq!(p.status.start_time, Some(Time(now)));
        // Two succeeded (still tracked): recorded as uncounted, released, one more pod.
        let pods = [
            pod("a", "Succeeded", true, None),
            pod("b", "Succeeded", true, None),
        ];
        let p = plan(&j, &pods, now);
        assert_eq!(p.create, vec![None]);
        assert_eq!(p.release, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(p.status.succeeded, Some(0));
        assert_eq!(
            p.status
                .uncounted_terminated_pods
                .as_ref()
                .unwrap()
                .succeeded
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert!(types(&p.status).is_empty());
    }

    #[test]
    fn counted_pods_finish_the_job_with_interim_condition_first() {
        let mut j = job(json!({"completions": 2}));
        j.status = Some(JobStatus {
            succeeded: Some(1),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["uid-b".into()]),
                failed: None,
            }),
            ..Default::default()
        });
        // b's finalizer is gone: it moves into the counter and the job completes.
        let pods = [
            pod("a", "Succeeded", false, None),
            pod("b", "Succeeded", false, None),
        ];
        let p = plan(&j, &pods, Timestamp::now());
        assert!(p.create.is_empty());
        assert_eq!(p.status.succeeded, Some(2));
        assert_eq!(
            types(&p.status),
            [
                "SuccessCriteriaMet:CompletionsReached",
                "Complete:CompletionsReached"
            ]
        );
        assert!(p.status.completion_time.is_some());
        assert_eq!(
            p.status.uncounted_terminated_pods,
            Some(UncountedTerminatedPods::default())
        );
        // While b is still tracked, only the counts move; completion waits.
        let pods = [
            pod("a", "Succeeded", false, None),
            pod("b", "Succeeded", true, None),
        ];
        let p = plan(&j, &pods, Timestamp::now());
        assert_eq!(p.status.succeeded, Some(1));
        assert_eq!(types(&p.status), ["SuccessCriteriaMet:CompletionsReached"]);
    }

    #[test]
    fn failures_back_off_exponentially() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(4), Duration::from_secs(80));
        assert_eq!(backoff_delay(6), Duration::from_secs(320));
        assert_eq!(backoff_delay(7), MAX_POD_FAILURE_BACKOFF);
        assert_eq!(backoff_delay(60), MAX_POD_FAILURE_BACKOFF);
        let j = job(json!({"completions": 1, "backoffLimit": 3}));
        let now = Timestamp::now();
        let just_failed = [failed_pod("a", 1, now)];
        let p = plan(&j, &just_failed, now);
        assert!(p.create.is_empty());
        let wait = p.requeue_after.unwrap();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        let earlier = Timestamp::from_second(now.as_second() - 11).unwrap();
        let p = plan(&j, &[failed_pod("a", 1, earlier)], now);
        assert_eq!(p.create, vec![None]);
        // A second failure doubles the wait.
        let p = plan(
            &j,
            &[failed_pod("a", 1, earlier), failed_pod("b", 1, earlier)],
            now,
        );
        assert!(p.create.is_empty());
        assert!(p.requeue_after.unwrap() > Duration::from_secs(8));
    }

    #[test]
    fn backoff_limit_fails_the_job_after_pods_are_counted() {
        let j = job(json!({"completions": 1, "backoffLimit": 1}));
        let now = Timestamp::now();
        let pods = [
            failed_pod("a", 1, now),
            failed_pod("b", 1, now),
            pod("c", "Running", true, None),
        ];
        let p = plan(&j, &pods, now);
        assert_eq!(types(&p.status), ["FailureTarget:BackoffLimitExceeded"]);
        assert_eq!(p.delete_counted, vec!["c".to_string()]);
        assert!(p.create.is_empty());
        // Next sync: all counted and gone: Failed follows.
        let mut j2 = j.clone();
        let mut status = p.status.clone();
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        status.failed = Some(3);
        j2.status = Some(status);
        let mut gone = [failed_pod("a", 1, now), failed_pod("b", 1, now)];
        for p in &mut gone {
            p.metadata.finalizers = None;
        }
        let p = plan(&j2, &gone, now);
        assert_eq!(
            types(&p.status),
            [
                "FailureTarget:BackoffLimitExceeded",
                "Failed:BackoffLimitExceeded"
            ]
        );
        assert_eq!(p.events[0].1, "BackoffLimitExceeded");
    }

    #[test]
    fn pod_failure_policy_actions() {
        let j = job(
            json!({"completions": 1, "backoffLimit": 0, "podReplacementPolicy": "Failed", "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
                {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
            ]}}),
        );
        let now = Timestamp::now();
        let p = plan(&j, &[failed_pod("a", 3, now)], now);
        assert!(types(&p.status).is_empty(), "ignored failures do not count");
        assert_eq!(p.create, vec![None]);
        let p = plan(&j, &[failed_pod("a", 42, now)], now);
        assert_eq!(types(&p.status), ["FailureTarget:PodFailurePolicy"]);
        let message = p.status.conditions.unwrap()[0].message.clone().unwrap();
        assert_eq!(message, "Container c for pod default/a failed with exit code 42 matching FailJob rule at index 1");
        let p = plan(&j, &[failed_pod("a", 7, now)], now);
        assert_eq!(types(&p.status), ["FailureTarget:BackoffLimitExceeded"]);
    }

    #[test]
    fn active_deadline() {
        let mut j = job(json!({"completions": 1, "activeDeadlineSeconds": 30}));
        let now = Timestamp::now();
        j.status = Some(JobStatus {
            start_time: Some(Time(Timestamp::from_second(now.as_second() - 10).unwrap())),
            ..Default::default()
        });
        let p = plan(&j, &[pod("a", "Running", true, None)], now);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
        j.status.as_mut().unwrap().start_time =
            Some(Time(Timestamp::from_second(now.as_second() - 31).unwrap()));
        let p = plan(&j, &[pod("a", "Running", true, None)], now);
        assert_eq!(types(&p.status), ["FailureTarget:DeadlineExceeded"]);
        assert_eq!(p.delete_counted, vec!["a".to_string()]);
    }

    #[test]
    fn indexed_jobs_run_each_index_once() {
        let j = job(json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"}));
        let now = Timestamp::now();
        assert_eq!(plan(&j, &[], now).create, vec![Some(0), Some(1)]);
        let pods = [
            pod("a", "Succeeded", true, Some(0)),
            pod("b", "Running", true, Some(1)),
            pod("c", "Running", true, Some(1)),
        ];
        let p = plan(&j, &pods, now);
        assert_eq!(p.delete_uncounted.len(), 1, "duplicate index");
        assert_eq!(p.create, vec![Some(2)]);
        assert_eq!(p.status.completed_indexes.as_deref(), Some("0"));
        assert_eq!(p.status.succeeded, Some(1));
        let created = new_pod(&j, Some(2), (0, 0));
        assert_eq!(created.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(created.annotations()[COMPLETION_INDEX_ANNOTATION], "2");
        assert_eq!(created.labels()[COMPLETION_INDEX_ANNOTATION], "2");
        assert_eq!(created.finalizers(), [TRACKING_FINALIZER]);
        let spec = created.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(controller_of(&created.metadata).unwrap().uid, "job-uid");
    }

    #[test]
    fn backoff_limit_per_index_marks_failed_indexes() {
        let j = job(
            json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed",
                           "backoffLimitPerIndex": 0, "backoffLimit": 2147483647}),
        );
        let now = Timestamp::now();
        let mut failed = failed_pod("a", 1, now);
        failed.metadata.annotations = Some(BTreeMap::from([(
            COMPLETION_INDEX_ANNOTATION.into(),
            "1".into(),
        )]));
        let pods = [pod("s", "Succeeded", true, Some(0)), failed];
        let p = plan(&j, &pods, now);
        assert_eq!(p.status.failed_indexes.as_deref(), Some("1"));
        assert!(p.create.is_empty());
        assert_eq!(types(&p.status), ["FailureTarget:FailedIndexes"]);
    }

    #[test]
    fn suspend_deletes_active_pods_uncounted() {
        let mut j = job(json!({"completions": 2, "parallelism": 2, "suspend": true}));
        let now = Timestamp::now();
        let pods = [pod("a", "Running", true, None)];
        let p = plan(&j, &pods, now);
        assert_eq!(p.delete_uncounted, vec!["a".to_string()]);
        assert_eq!(p.status.active, Some(0));
        assert_eq!(types(&p.status), ["Suspended:JobSuspended"]);
        assert!(p.status.start_time.is_none());
        j.status = Some(p.status);
        j.spec.as_mut().unwrap().suspend = Some(false);
        let p = plan(&j, &[], now);
        assert_eq!(p.create.len(), 2);
        let suspended = &p.status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (suspended.status.as_str(), suspended.reason.as_deref()),
            ("False", Some("JobResumed"))
        );
        assert_eq!(p.events[0].1, "Resumed");
    }

    #[test]
    fn success_policy_finishes_indexed_jobs_early() {
        let j = job(
            json!({"completions": 4, "parallelism": 4, "completionMode": "Indexed",
            "successPolicy": {"rules": [{"succeededIndexes": "0,2-3", "succeededCount": 2}, {"succeededCount": 1}]}}),
        );
        let one = BTreeSet::from([1]);
        assert_eq!(
            match_success_policy(&j, 4, &one).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(
            match_success_policy(&j, 4, &BTreeSet::from([0, 3])).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(match_success_policy(&j, 4, &BTreeSet::new()), None);
        let now = Timestamp::now();
        let pods = [
            pod("a", "Succeeded", false, Some(1)),
            pod("b", "Running", true, Some(0)),
        ];
        let mut j = j;
        j.status = Some(JobStatus {
            completed_indexes: Some("1".into()),
            ..Default::default()
        });
        let p = plan(&j, &pods, now);
        assert_eq!(types(&p.status), ["SuccessCriteriaMet:SuccessPolicy"]);
        assert_eq!(p.delete_counted, vec!["b".to_string()]);
    }

    #[test]
    fn index_lists_round_trip() {
        let set = parse_indexes("0-2,5,7-8", 8);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7]);
        assert_eq!(format_indexes(&set), "0-2,5,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn ttl_counts_from_completion() {
        let mut j = job(json!({"ttlSecondsAfterFinished": 5}));
        let done = Timestamp::from_second(1_000).unwrap();
        j.status = Some(JobStatus {
            completion_time: Some(Time(done)),
            ..Default::default()
        });
        assert_eq!(ttl_expiry(&j), Some(Timestamp::from_second(1_005).unwrap()));
    }
}
