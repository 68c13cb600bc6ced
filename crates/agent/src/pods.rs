//! The pods bound to the node: one watch (`spec.nodeName=<node>`), one light worker per pod
//! (as the kubelet's pod workers) that drives the runtime and computes the pod's status, and
//! one status writer that coalesces and batches the status writes of all pods.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::runtime::{ContainerExit, Runtime, RuntimeError, Sandbox};
use crate::status::{
    pod_phase, pod_status, ConditionClock, ContainerPhase, ContainerRecord, PodFailure,
    StatusInput, Termination,
};

mod hook_tls;
mod lifecycle;
mod lost;
mod orphans;

use orphans::KnownPods;

/// A container that ran this long without crashing restarts at once again, its back-off
/// starting over (upstream: 10 minutes).
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// The least time a container is given between SIGTERM and SIGKILL, whatever a preStop hook
/// used of the grace period (upstream's `minimumGracePeriodInSeconds`).
const MINIMUM_GRACE: Duration = Duration::from_secs(2);
/// The grace period of a pod whose spec has none (the API server defaults it too).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// What the workers share.
pub(crate) struct Shared {
    pub client: Client,
    pub runtime: Arc<dyn Runtime>,
    pub config: AgentConfig,
    pub status: mpsc::UnboundedSender<StatusWrite>,
    pub events: crate::events::PodEvents,
    /// The Services, for the service environment variables.
    pub services: crate::inputs::ServiceCache,
}

/// One pod status to write.
#[derive(Debug)]
pub(crate) struct StatusWrite {
    namespace: String,
    name: String,
    status: Value,
    /// The pod's phase changed (it runs, or it ended): written at once, without waiting for
    /// the batch window that lets a status superseded at once go unwritten.
    urgent: bool,
}

enum PodUpdate {
    Changed(Arc<Pod>),
    Removed,
}

struct WorkerHandle {
    uid: String,
    updates: mpsc::UnboundedSender<PodUpdate>,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Whether the pod's status says it ended (Succeeded or Failed).
fn pod_finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| matches!(p, "Succeeded" | "Failed"))
}

/// Watches the node's pods and hands each to its worker, until the watch ends.
pub(crate) async fn run_pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut events = watcher::watcher(api, watcher::Config::default().fields(&selector))
        // The workers never read managedFields; not holding them halves a pod's size.
        .modify(|pod: &mut Pod| pod.metadata.managed_fields = None)
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut listed: Option<HashSet<String>> = None;
    let mut listed_uids: HashSet<String> = HashSet::new();
    let mut orphans_checked = false;
    let known = Arc::new(KnownPods::new());
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) | Ok(Event::Apply(pod)) => {
                let key = pod_key(&pod);
                if let Some(listed) = listed.as_mut() {
                    listed.insert(key.clone());
                    listed_uids.insert(pod_uid(&pod));
                }
                // A pod bound after the first list was bound after this process started:
                // no earlier run can have left a sandbox for it. Any pod of a (re)list may.
                let may_have_sandbox = !orphans_checked || listed.is_some();
                dispatch(
                    &shared,
                    &known,
                    &mut workers,
                    key,
                    Arc::new(pod),
                    may_have_sandbox,
                );
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.as_ref() {
                    if !orphans_checked {
                        orphans_checked = true;
                        // Inline, so that it cannot race a pod created after the list.
                        let removed =
                            crate::inputs::cleanup_except(&shared.config.state_dir, &listed_uids);
                        if !removed.is_empty() {
                            tracing::info!(pods = ?removed, "removed the volumes of deleted pods");
                        }
                        tokio::spawn(remove_orphans(shared.clone(), known.clone()));
                    }
                    let _ = listed;
                }
                // Pods deleted while the watch was down.
                if let Some(listed) = listed.take() {
                    workers.retain(|key, w| {
                        let keep = listed.contains(key);
                        if !keep {
                            known.gone(&w.uid);
                            let _ = w.updates.send(PodUpdate::Removed);
                        }
                        keep
                    });
                }
            }
            Ok(Event::Delete(pod)) => {
                let key = pod_key(&pod);
                known.gone(&pod_uid(&pod));
                if let Some(w) = workers.remove(&key) {
                    known.gone(&w.uid);
                    let _ = w.updates.send(PodUpdate::Removed);
                }
            }
            Err(error) => tracing::warn!(%error, "pod watch"),
        }
    }
}

/// Removes, once, after the first complete list of the node's pods, the sandboxes an
/// earlier run left that no worker of this run holds: those of pods deleted while the agent
/// was down, and those of pods that had finished before (stopped, kept for nothing: their
/// logs are the agent's files). Each sandbox is checked against the live pod store right
/// before it goes, so that a pod created after the list keeps its sandbox.
async fn remove_orphans(shared: Arc<Shared>, known: Arc<KnownPods>) {
    let sandboxes = match shared.runtime.list_sandboxes().await {
        Ok(sandboxes) => sandboxes,
        Err(error) => {
            tracing::warn!(%error, "listing sandboxes to remove those of deleted pods");
            known.finish();
            return;
        }
    };
    for (sandbox, uid) in sandboxes {
        if !known.sandbox_is_orphan(&uid) {
            continue;
        }
        tracing::info!(sandbox = %sandbox.id, pod_uid = %uid, "removing the sandbox of a deleted or finished pod");
        if let Err(error) = shared.runtime.stop_sandbox(&sandbox, Duration::ZERO).await {
            tracing::warn!(%error, sandbox = %sandbox.id, "stopping an orphaned sandbox");
        }
        if let Err(error) = shared.runtime.remove_sandbox(&sandbox).await {
            tracing::warn!(%error, sandbox = %sandbox.id, "removing an orphaned sandbox");
        }
    }
    known.finish();
}

fn dispatch(
    shared: &Arc<Shared>,
    known: &KnownPods,
    workers: &mut HashMap<String, WorkerHandle>,
    key: String,
    pod: Arc<Pod>,
    may_have_sandbox: bool,
) {
    let uid = pod_uid(&pod);
    let mut may_have_sandbox = may_have_sandbox;
    if let Some(w) = workers.get(&key) {
        if w.uid == uid && w.updates.send(PodUpdate::Changed(pod.clone())).is_ok() {
            return;
        }
        // A worker of this very pod ended: what it made may still be there.
        may_have_sandbox |= w.uid == uid;
        if w.uid != uid {
            // Same name, new pod: the old one is gone.
            known.gone(&w.uid);
            let _ = w.updates.send(PodUpdate::Removed);
        }
    }
    // Before the worker can make a sandbox, so that the orphan cleanup sees its uid.
    known.began(&uid, pod_finished(&pod));
    let (tx, rx) = mpsc::unbounded_channel();
    tracing::debug!(pod = %key, "pod worker started");
    workers.insert(key, WorkerHandle { uid, updates: tx });
    let worker = PodWorker::new(shared.clone(), pod, may_have_sandbox);
    tokio::spawn(worker.run(rx));
}

/// Which container of the pod: an init container or an app container, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Init(usize),
    App(usize),
}

type ExitFuture = BoxFuture<'static, (Slot, String, Result<ContainerExit, RuntimeError>)>;

struct PodWorker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    sandbox: Option<Sandbox>,
    init: Vec<ContainerRecord>,
    containers: Vec<ContainerRecord>,
    restart_at: HashMap<Slot, Instant>,
    backoff: HashMap<Slot, Duration>,
    /// Image pulls that failed: when the next pull may be tried, and the back-off after it.
    image_retry: HashMap<Slot, (Instant, Duration)>,
    retry_sandbox_at: Option<Instant>,
    /// Whether the runtime was asked for a sandbox to adopt.
    adoption_checked: bool,
    clock: ConditionClock,
    start_time: SystemTime,
    last_written: Option<Value>,
    /// The pod was finished before this worker saw it: nothing to run.
    finished_before: bool,
    /// The sandbox of a finished pod was stopped.
    stopped: bool,
    /// The agent failed the pod (its active deadline passed).
    failure: Option<PodFailure>,
    /// Containers killed because their postStart hook failed, with the hook's message: the
    /// waiting reason of their restart is `PostStartHookError`.
    post_start_failed: HashMap<Slot, String>,
    waits: FuturesUnordered<ExitFuture>,
    /// When this worker began, for the start timings logged at debug level.
    began: Instant,
}

impl PodWorker {
    /// A worker for `pod`; `may_have_sandbox` says whether an earlier run (or worker) may
    /// have left it a sandbox to adopt.
    fn new(shared: Arc<Shared>, pod: Arc<Pod>, may_have_sandbox: bool) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let app_reason = if has_init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let record = |c: &Container, reason: &str| {
            ContainerRecord::waiting(&c.name, c.image.as_deref().unwrap_or_default(), reason)
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| record(c, "PodInitializing"))
            .collect();
        let containers = spec
            .containers
            .iter()
            .map(|c| record(c, app_reason))
            .collect();
        let status = pod.status.as_ref();
        let finished_before = pod_finished(&pod);
        let start_time = status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| SystemTime::from(t.0))
            .unwrap_or_else(SystemTime::now);
        let existing =
            serde_json::to_value(status.and_then(|s| s.conditions.as_ref())).unwrap_or(Value::Null);
        Self {
            shared,
            pod,
            sandbox: None,
            init,
            containers,
            restart_at: HashMap::new(),
            backoff: HashMap::new(),
            image_retry: HashMap::new(),
            retry_sandbox_at: None,
            adoption_checked: !may_have_sandbox,
            clock: ConditionClock::from_existing(Some(&existing)),
            start_time,
            last_written: None,
            finished_before,
            stopped: false,
            failure: None,
            post_start_failed: HashMap::new(),
            waits: FuturesUnordered::new(),
            began: Instant::now(),
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_string())
    }

    fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    async fn run(mut self, mut updates: mpsc::UnboundedReceiver<PodUpdate>) {
        let mut refresh = tokio::time::interval(self.shared.config.volume_refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            if self.deleting() {
                self.terminate().await;
                return;
            }
            if !self.finished_before {
                // What changed goes out before anything slow (a pull, a stop) is started,
                // unless a restart is due now: then the restarted container's status follows.
                let now = Instant::now();
                if !self.restart_at.values().any(|at| *at <= now) {
                    self.publish();
                }
                self.advance().await;
                self.publish();
            }
            let wake = self.next_wake();
            tokio::select! {
                update = updates.recv() => match update {
                    Some(PodUpdate::Changed(pod)) => self.pod = pod,
                    Some(PodUpdate::Removed) | None => {
                        self.remove_sandbox().await;
                        return;
                    }
                },
                Some((slot, id, result)) = self.waits.next(), if !self.waits.is_empty() => {
                    self.on_exit(slot, &id, result).await;
                }
                _ = sleep_until_opt(wake), if wake.is_some() => {}
                _ = refresh.tick() => self.refresh_volumes().await,
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let running = !self.finished_before && !matches!(self.phase(), "Succeeded" | "Failed");
        let deadline = if running {
            self.active_deadline()
        } else {
            None
        };
        self.restart_at
            .values()
            .copied()
            .chain(self.retry_sandbox_at)
            .chain(deadline)
            .min()
    }

    fn phase(&self) -> &'static str {
        if self.failure.is_some() {
            return "Failed";
        }
        pod_phase(&self.restart_policy(), &self.init, &self.containers)
    }

    /// When the pod's `activeDeadlineSeconds`, counted from its start time, is over.
    fn active_deadline(&self) -> Option<Instant> {
        let seconds = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let deadline = deadline_after(self.start_time, seconds, SystemTime::now());
        Some(Instant::now() + deadline)
    }

    /// The pod's own grace period (`terminationGracePeriodSeconds`).
    fn spec_grace(&self) -> Duration {
        spec_grace(&self.pod)
    }

    /// What stopping containers and running hooks need of this worker.
    fn handle(&self) -> PodHandle {
        PodHandle {
            shared: self.shared.clone(),
            pod: self.pod.clone(),
            pod_ip: self.sandbox.as_ref().map(|s| s.ip),
        }
    }

    fn pod_name(&self) -> String {
        self.handle().pod_name()
    }

    /// The running containers: their slot, runtime id and spec.
    fn running_containers(&self) -> Vec<(Slot, String, Container)> {
        let init = self
            .init
            .iter()
            .enumerate()
            .map(|(i, r)| (Slot::Init(i), r));
        let apps = self
            .containers
            .iter()
            .enumerate()
            .map(|(i, r)| (Slot::App(i), r));
        init.chain(apps)
            .filter(|(_, r)| r.is_running())
            .filter_map(|(slot, r)| Some((slot, r.container_id.clone(), self.spec_of(slot)?)))
            .collect()
    }

    /// The pod ran past its `activeDeadlineSeconds`: it is Failed (`DeadlineExceeded`) and
    /// its containers are stopped, as upstream's active deadline handler has it.
    async fn fail_on_deadline(&mut self) {
        let failure = PodFailure::deadline_exceeded();
        tracing::info!(pod = %pod_key(&self.pod), "the pod's active deadline passed");
        self.shared.events.record(
            &self.pod,
            false,
            "DeadlineExceeded",
            failure.message.clone(),
        );
        self.failure = Some(failure);
        self.restart_at.clear();
        self.publish();
        let running = self.running_containers();
        self.handle().kill_all(&running, self.spec_grace()).await;
    }

    /// Starts whatever should run now: the sandbox, the next init container, the app
    /// containers, restarts whose back-off is over.
    async fn advance(&mut self) {
        let deadline_passed = self
            .active_deadline()
            .is_some_and(|at| at <= Instant::now());
        if deadline_passed && !matches!(self.phase(), "Succeeded" | "Failed") {
            self.fail_on_deadline().await;
        }
        if matches!(self.phase(), "Succeeded" | "Failed") {
            if !self.stopped {
                self.stopped = true;
                if let Some(sandbox) = &self.sandbox {
                    if let Err(error) = self
                        .shared
                        .runtime
                        .stop_sandbox(sandbox, Duration::ZERO)
                        .await
                    {
                        tracing::warn!(pod = %pod_key(&self.pod), %error, "stopping a finished pod");
                    }
                }
            }
            return;
        }
        let now = Instant::now();
        if self.sandbox.is_none() && !self.adoption_checked {
            self.adoption_checked = true;
            let began = Instant::now();
            self.adopt().await;
            tracing::debug!(pod = %pod_key(&self.pod), at_ms = self.since_began(), took_ms = ms(began.elapsed()), "adoption checked");
        }
        if self.sandbox.is_none() {
            if self.retry_sandbox_at.is_some_and(|at| at > now) {
                return;
            }
            self.publish();
            let began = Instant::now();
            match self.shared.runtime.create_sandbox(&self.pod).await {
                Ok(sandbox) => {
                    tracing::debug!(pod = %pod_key(&self.pod), at_ms = self.since_began(), took_ms = ms(began.elapsed()), "sandbox ready");
                    self.retry_sandbox_at = None;
                    self.sandbox = Some(sandbox);
                }
                Err(error) => {
                    tracing::warn!(pod = %pod_key(&self.pod), %error, "creating the sandbox");
                    self.retry_sandbox_at = Some(now + Duration::from_secs(2));
                    return;
                }
            }
        }
        for i in 0..self.init.len() {
            match &self.init[i].phase {
                ContainerPhase::Terminated(t) if t.exit_code == 0 => continue,
                ContainerPhase::Waiting { .. } if self.due(Slot::Init(i), now) => {
                    self.start(Slot::Init(i)).await;
                    return;
                }
                _ => return,
            }
        }
        for i in 0..self.containers.len() {
            if matches!(self.containers[i].phase, ContainerPhase::Waiting { .. })
                && self.due(Slot::App(i), now)
            {
                self.start(Slot::App(i)).await;
            }
        }
    }

    /// Takes over the sandbox and containers that an earlier run of the agent left running
    /// for this pod, so that an agent restart neither duplicates nor loses them.
    async fn adopt(&mut self) {
        let adopted = match self.shared.runtime.adopt(&self.pod).await {
            Ok(Some(adopted)) => adopted,
            Ok(None) if self.shared.runtime.runs_processes() => {
                // Real containers that the status says ran are gone with their sandbox.
                let policy = self.restart_policy();
                lost::recover(
                    &self.pod,
                    &policy,
                    &mut self.init,
                    &mut self.containers,
                    SystemTime::now(),
                );
                return;
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(pod = %pod_key(&self.pod), %error, "looking for a sandbox to adopt");
                return;
            }
        };
        tracing::info!(pod = %pod_key(&self.pod), sandbox = %adopted.sandbox.id, "adopted a running sandbox");
        self.sandbox = Some(adopted.sandbox);
        for container in adopted.containers {
            let slot = match self.init.iter().position(|r| r.name == container.name) {
                Some(i) => Slot::Init(i),
                None => match self
                    .containers
                    .iter()
                    .position(|r| r.name == container.name)
                {
                    Some(i) => Slot::App(i),
                    None => continue,
                },
            };
            let Some(record) = self.record(slot) else {
                continue;
            };
            record.restart_count = container.attempt;
            record.container_id = container.started.id.clone();
            record.image_id = container.started.image_id.clone();
            record.phase = ContainerPhase::Running {
                started_at: container.started.started_at,
            };
            // An exited container's wait returns at once and goes through the restart policy.
            let runtime = self.shared.runtime.clone();
            let id = container.started.id;
            self.waits.push(
                async move {
                    let result = runtime.wait_container(&id).await;
                    (slot, id, result)
                }
                .boxed(),
            );
        }
    }

    fn due(&self, slot: Slot, now: Instant) -> bool {
        self.restart_at.get(&slot).is_none_or(|at| *at <= now)
    }

    fn record_ref(&self, slot: Slot) -> Option<&ContainerRecord> {
        match slot {
            Slot::Init(i) => self.init.get(i),
            Slot::App(i) => self.containers.get(i),
        }
    }

    fn record(&mut self, slot: Slot) -> Option<&mut ContainerRecord> {
        match slot {
            Slot::Init(i) => self.init.get_mut(i),
            Slot::App(i) => self.containers.get_mut(i),
        }
    }

    fn spec_of(&self, slot: Slot) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        match slot {
            Slot::Init(i) => spec.init_containers.as_ref()?.get(i).cloned(),
            Slot::App(i) => spec.containers.get(i).cloned(),
        }
    }

    async fn start(&mut self, slot: Slot) {
        let (Some(sandbox), Some(spec)) = (self.sandbox.clone(), self.spec_of(slot)) else {
            return;
        };
        self.restart_at.remove(&slot);
        let image = spec.image.clone().unwrap_or_default();
        if let Some((retry_at, _)) = self.image_retry.get(&slot).copied() {
            if retry_at > Instant::now() {
                // Still backing off a failed pull: ImagePullBackOff until the next try.
                let message = format!("Back-off pulling image \"{image}\"");
                let newly = self.record(slot).is_some_and(|r| {
                    !matches!(&r.phase, ContainerPhase::Waiting { reason, .. } if reason == "ImagePullBackOff")
                });
                if newly {
                    self.shared
                        .events
                        .record(&self.pod, false, "BackOff", message.clone());
                }
                if let Some(record) = self.record(slot) {
                    record.phase = ContainerPhase::Waiting {
                        reason: "ImagePullBackOff".to_string(),
                        message,
                    };
                }
                self.restart_at.insert(slot, retry_at);
                return;
            }
        }
        let Some(attempt) = self.record(slot).map(|r| {
            if r.container_id.is_empty() {
                r.restart_count
            } else {
                r.restart_count + 1
            }
        }) else {
            return;
        };
        let inputs_began = Instant::now();
        let mut inputs = match crate::inputs::prepare(
            &self.shared.client,
            Some(&self.shared.services),
            &self.shared.config.state_dir,
            &self.pod,
            sandbox.ip,
            &spec,
            attempt,
        )
        .await
        {
            Ok(inputs) => inputs,
            Err(error) => {
                self.shared
                    .events
                    .record(&self.pod, true, "Failed", format!("Error: {error}"));
                if let Some(record) = self.record(slot) {
                    record.phase = ContainerPhase::Waiting {
                        reason: "CreateContainerConfigError".to_string(),
                        message: error.to_string(),
                    };
                }
                self.restart_at
                    .insert(slot, Instant::now() + Duration::from_secs(2));
                return;
            }
        };
        if self.shared.runtime.runs_processes() {
            match lifecycle::prepare_message_file(
                &self.shared.config.state_dir,
                &self.pod,
                &spec,
                attempt,
            ) {
                Ok(Some(mount))
                    if !inputs
                        .mounts
                        .iter()
                        .any(|m| m.container_path == mount.container_path) =>
                {
                    inputs.mounts.push(mount)
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(pod = %pod_key(&self.pod), container = %spec.name, %error, "preparing the termination message file")
                }
            }
        }
        let container_began = Instant::now();
        let result = self
            .shared
            .runtime
            .start_container(&sandbox, &self.pod, &spec, attempt, &inputs)
            .await;
        tracing::debug!(
            pod = %pod_key(&self.pod),
            container = %spec.name,
            at_ms = self.since_began(),
            inputs_ms = ms(container_began - inputs_began),
            start_ms = ms(container_began.elapsed()),
            "container start returned"
        );
        let runtime = self.shared.runtime.clone();
        if self.record(slot).is_none() {
            return;
        }
        match result {
            Ok(started) => {
                self.image_retry.remove(&slot);
                let events = &self.shared.events;
                let pulled = match started.pulled_in {
                    None => format!("Container image \"{image}\" already present on machine"),
                    Some(took) => {
                        events.record(
                            &self.pod,
                            false,
                            "Pulling",
                            format!("Pulling image \"{image}\""),
                        );
                        format!(
                            "Successfully pulled image \"{image}\" in {:.3}s",
                            took.as_secs_f64()
                        )
                    }
                };
                events.record(&self.pod, false, "Pulled", pulled);
                events.record(
                    &self.pod,
                    false,
                    "Created",
                    format!("Created container: {}", spec.name),
                );
                events.record(
                    &self.pod,
                    false,
                    "Started",
                    format!("Started container {}", spec.name),
                );
                let Some(record) = self.record(slot) else {
                    return;
                };
                record.restart_count = attempt;
                record.container_id = started.id.clone();
                record.image_id = started.image_id;
                record.phase = ContainerPhase::Running {
                    started_at: started.started_at,
                };
                let id = started.id;
                let waited = id.clone();
                self.waits.push(
                    async move {
                        let result = runtime.wait_container(&waited).await;
                        (slot, waited, result)
                    }
                    .boxed(),
                );
                if let Some(message) = self.handle().post_start(&spec, &id).await {
                    self.post_start_failed.insert(slot, message);
                }
            }
            Err(error) => self.on_start_error(slot, &image, error),
        }
    }

    /// A container could not start: its waiting reason and when it is tried again
    /// (`ErrImagePull` then `ImagePullBackOff` with upstream's back-off for pulls).
    fn on_start_error(&mut self, slot: Slot, image: &str, error: RuntimeError) {
        let now = Instant::now();
        let events = &self.shared.events;
        let (reason, retry_in) = match &error {
            RuntimeError::ImagePull(message) => {
                events.record(
                    &self.pod,
                    true,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {message}"),
                );
                events.record(&self.pod, true, "Failed", "Error: ErrImagePull".to_string());
                let backoff = self
                    .image_retry
                    .get(&slot)
                    .map(|(_, next)| *next)
                    .unwrap_or(self.shared.config.restart_backoff_initial);
                let next = (backoff * 2).min(self.shared.config.restart_backoff_max);
                self.image_retry.insert(slot, (now + backoff, next));
                // ErrImagePull shows for a moment, then ImagePullBackOff until the retry.
                ("ErrImagePull", Duration::from_secs(1).min(backoff))
            }
            RuntimeError::ImageNeverPull(message) => {
                events.record(&self.pod, true, "ErrImageNeverPull", message.clone());
                ("ErrImageNeverPull", Duration::from_secs(5))
            }
            RuntimeError::CreateConfig(_) => {
                events.record(&self.pod, true, "Failed", format!("Error: {error}"));
                ("CreateContainerConfigError", Duration::from_secs(2))
            }
            _ => {
                events.record(&self.pod, true, "Failed", format!("Error: {error}"));
                ("CreateContainerError", Duration::from_secs(2))
            }
        };
        let Some(record) = self.record(slot) else {
            return;
        };
        record.phase = ContainerPhase::Waiting {
            reason: reason.to_string(),
            message: error.to_string(),
        };
        self.restart_at.insert(slot, now + retry_in);
    }

    /// A container ended: record it and decide, per the restart policy, whether and when it
    /// runs again (upstream's back-off: the first restart at once, then doubling).
    async fn on_exit(&mut self, slot: Slot, id: &str, result: Result<ContainerExit, RuntimeError>) {
        let exit = match result {
            Ok(exit) => exit,
            Err(error) => {
                tracing::debug!(%error, "container wait ended");
                return;
            }
        };
        let policy = self.restart_policy();
        let restart = match (slot, policy.as_str()) {
            _ if self.failure.is_some() => false,
            (_, "Never") => false,
            (Slot::Init(_), _) | (_, "OnFailure") => exit.exit_code != 0,
            _ => true,
        };
        let (initial, max) = (
            self.shared.config.restart_backoff_initial,
            self.shared.config.restart_backoff_max,
        );
        let pod_name = self.pod_name();
        let files = match (self.spec_of(slot), self.record_ref(slot)) {
            (Some(spec), Some(record)) if record.container_id == id => {
                let state_dir = &self.shared.config.state_dir;
                let attempt = record.restart_count;
                let message_file =
                    lifecycle::message_file(state_dir, &pod_uid(&self.pod), &spec.name, attempt);
                let log_file =
                    crate::logs::container_log_path(state_dir, &self.pod, &spec.name, attempt);
                Some((spec, message_file, log_file))
            }
            _ => None,
        };
        let message = match files {
            Some((spec, message_file, log_file)) => {
                lifecycle::termination_message(&spec, &message_file, &log_file, exit.exit_code)
                    .await
            }
            None => String::new(),
        };
        let current = self.backoff.get(&slot).copied();
        let hook_failure = self.post_start_failed.remove(&slot);
        let Some(record) = self.record(slot) else {
            return;
        };
        if record.container_id != id {
            return;
        }
        let started_at = match record.phase {
            ContainerPhase::Running { started_at } => started_at,
            _ => exit.finished_at,
        };
        let termination = Termination {
            exit_code: exit.exit_code,
            reason: exit.reason,
            started_at,
            finished_at: exit.finished_at,
            container_id: id.to_string(),
            message,
        };
        if !restart {
            record.phase = ContainerPhase::Terminated(termination);
            return;
        }
        let ran_for = exit
            .finished_at
            .duration_since(started_at)
            .unwrap_or_default();
        let (backoff, next) = restart_backoff(current, ran_for, initial, max);
        record.last_termination = Some(termination);
        let (reason, message) = restart_waiting(hook_failure, backoff, &record.name, &pod_name);
        record.phase = ContainerPhase::Waiting { reason, message };
        let name = record.name.clone();
        self.restart_at.insert(slot, Instant::now() + backoff);
        self.backoff.insert(slot, next);
        if !backoff.is_zero() {
            self.shared.events.record(
                &self.pod,
                true,
                "BackOff",
                format!("Back-off restarting failed container {name} in pod {pod_name}"),
            );
        }
    }

    /// Queues the pod's status if it changed since the last write.
    fn publish(&mut self) {
        let host_ip = self.shared.config.node_ip.to_string();
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip.to_string());
        let policy = self.restart_policy();
        let input = StatusInput {
            restart_policy: &policy,
            sandbox_ready: self.sandbox.is_some(),
            host_ip: &host_ip,
            pod_ip: pod_ip.as_deref(),
            start_time: self.start_time,
            init: &self.init,
            containers: &self.containers,
            failure: self.failure.as_ref(),
        };
        let status = pod_status(&input, &mut self.clock, SystemTime::now());
        if self.last_written.as_ref() == Some(&status) {
            return;
        }
        let urgent = self
            .last_written
            .as_ref()
            .is_some_and(|last| last["phase"] != status["phase"]);
        self.last_written = Some(status.clone());
        tracing::debug!(pod = %pod_key(&self.pod), at_ms = self.since_began(), phase = %status["phase"], "status queued");
        let _ = self.shared.status.send(StatusWrite {
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            name: self.pod.metadata.name.clone().unwrap_or_default(),
            status,
            urgent,
        });
    }

    /// Milliseconds since this worker began (start timings at debug level).
    fn since_began(&self) -> f64 {
        ms(self.began.elapsed())
    }

    /// Removes the sandbox and what the pod had on disk (volumes; not its claims' data).
    async fn remove_sandbox(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            if let Err(error) = self.shared.runtime.remove_sandbox(&sandbox).await {
                tracing::warn!(pod = %pod_key(&self.pod), %error, "removing the sandbox");
            }
        }
        if let Err(error) =
            crate::inputs::cleanup(&self.shared.config.state_dir, &pod_uid(&self.pod))
        {
            tracing::warn!(pod = %pod_key(&self.pod), %error, "removing the pod's volumes");
        }
    }

    /// Whether the pod has volumes whose content follows API objects.
    fn has_projected_volumes(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|volumes| {
                volumes.iter().any(|v| {
                    v.config_map.is_some()
                        || v.secret.is_some()
                        || v.downward_api.is_some()
                        || v.projected.is_some()
                })
            })
    }

    /// Brings mounted configMaps, secrets and downward API files up to date.
    async fn refresh_volumes(&mut self) {
        if self.sandbox.is_none() || !self.has_projected_volumes() {
            return;
        }
        if let Err(error) = crate::inputs::refresh(
            &self.shared.client,
            &self.shared.config.state_dir,
            &self.pod,
        )
        .await
        {
            tracing::debug!(pod = %pod_key(&self.pod), %error, "refreshing volumes");
        }
    }

    /// The pod is being deleted: stop it, remove its sandbox, then delete it for good
    /// (grace period 0, on its uid), as the kubelet does.
    async fn terminate(&mut self) {
        let grace = match self.pod.metadata.deletion_grace_period_seconds {
            Some(seconds) => Duration::from_secs(seconds.max(0) as u64),
            None => self.spec_grace(),
        };
        // Each container gets its preStop hook and SIGTERM at once; what the runtime could
        // not stop one by one is stopped with the sandbox.
        let running = self.running_containers();
        let stopped = self.handle().kill_all(&running, grace).await;
        let sandbox_grace = if stopped { Duration::ZERO } else { grace };
        if let Some(sandbox) = &self.sandbox {
            if let Err(error) = self
                .shared
                .runtime
                .stop_sandbox(sandbox, sandbox_grace)
                .await
            {
                tracing::warn!(pod = %pod_key(&self.pod), %error, "stopping the pod");
            }
        }
        self.remove_sandbox().await;
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(pod_uid(&self.pod)),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..5u32 {
            match api.delete(&name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(error) => {
                    tracing::warn!(pod = %pod_key(&self.pod), %error, attempt, "deleting the pod");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
    }
}

/// What stopping containers and running hooks need of a pod worker; it is shared by the
/// containers stopped at once.
struct PodHandle {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    pod_ip: Option<std::net::IpAddr>,
}

impl PodHandle {
    /// `name_namespace(uid)`, as upstream's `format.Pod` names a pod in messages.
    fn pod_name(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod_uid(&self.pod)
        )
    }

    /// Stops one container as the kubelet's `killContainer` does: the `Killing` event, the
    /// preStop hook within `grace`, then SIGTERM with what is left of it (at least
    /// [`MINIMUM_GRACE`]) and SIGKILL at its end. Returns whether the runtime stopped it.
    async fn kill_container(
        &self,
        container_id: &str,
        spec: &Container,
        grace: Duration,
        note: String,
    ) -> bool {
        let runtime = &self.shared.runtime;
        let pod_ip = self.pod_ip;
        self.shared.events.record(&self.pod, false, "Killing", note);
        let mut remaining = grace;
        let pre_stop = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        if let (Some(hook), Some(pod_ip)) = (pre_stop, pod_ip) {
            if !grace.is_zero() && runtime.runs_processes() {
                let began = Instant::now();
                let pod_name = self.pod_name();
                let target = lifecycle::HookTarget {
                    container: spec,
                    container_id,
                    pod_ip,
                    pod_name: &pod_name,
                };
                let run = lifecycle::run_hook(runtime.as_ref(), hook, &target, grace);
                match tokio::time::timeout(grace, run).await {
                    Ok(Ok(())) => {}
                    Ok(Err(message)) => {
                        self.shared
                            .events
                            .record(&self.pod, true, "FailedPreStopHook", message)
                    }
                    Err(_) => tracing::info!(
                        pod = %pod_key(&self.pod),
                        container = %spec.name,
                        "the preStop hook did not end within the grace period"
                    ),
                }
                remaining = grace.saturating_sub(began.elapsed());
            }
        }
        match runtime
            .stop_container(container_id, remaining.max(MINIMUM_GRACE))
            .await
        {
            Ok(()) => true,
            Err(RuntimeError::Unsupported(_)) => false,
            Err(error) => {
                tracing::warn!(pod = %pod_key(&self.pod), container = %spec.name, %error, "stopping a container");
                false
            }
        }
    }

    /// Stops every running container at once, each with `grace`; returns whether the
    /// runtime stopped them all.
    async fn kill_all(&self, running: &[(Slot, String, Container)], grace: Duration) -> bool {
        let kills = running.iter().map(|(_, id, spec)| {
            self.kill_container(id, spec, grace, format!("Stopping container {}", spec.name))
        });
        futures::future::join_all(kills)
            .await
            .into_iter()
            .all(|stopped| stopped)
    }

    /// Runs the container's postStart hook right after it started; a hook that fails kills
    /// the container (`FailedPostStartHook`), which then restarts as its policy says. Returns
    /// the hook's failure message, which upstream keeps out of the event (it may hold secrets)
    /// and shows as the container's `PostStartHookError` waiting message.
    async fn post_start(&self, spec: &Container, container_id: &str) -> Option<String> {
        let hook = spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())?;
        let pod_ip = self
            .pod_ip
            .filter(|_| self.shared.runtime.runs_processes())?;
        let pod_name = self.pod_name();
        let target = lifecycle::HookTarget {
            container: spec,
            container_id,
            pod_ip,
            pod_name: &pod_name,
        };
        let message =
            lifecycle::run_hook(self.shared.runtime.as_ref(), hook, &target, Duration::ZERO)
                .await
                .err()?;
        tracing::info!(pod = %pod_key(&self.pod), container = %spec.name, %message, "the postStart hook failed");
        self.shared.events.record(
            &self.pod,
            true,
            "FailedPostStartHook",
            "PostStartHook failed".to_string(),
        );
        self.kill_container(
            container_id,
            spec,
            spec_grace(&self.pod),
            "FailedPostStartHook".to_string(),
        )
        .await;
        Some(message)
    }
}

/// The pod's own grace period (`terminationGracePeriodSeconds`).
fn spec_grace(pod: &Pod) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    Duration::from_secs(seconds.max(0) as u64)
}

/// How long until `seconds` after `start` (zero once it passed).
fn deadline_after(start: SystemTime, seconds: i64, now: SystemTime) -> Duration {
    let end = start + Duration::from_secs(seconds.max(0) as u64);
    end.duration_since(now).unwrap_or_default()
}

/// The waiting state of a container that restarts after `backoff`: as upstream's reason
/// cache has it, `PostStartHookError` with the hook's message right after its postStart hook
/// failed (until the next start, which is at once on the first failure), else
/// `CrashLoopBackOff` for the back-off.
fn restart_waiting(
    hook_failure: Option<String>,
    backoff: Duration,
    container: &str,
    pod_name: &str,
) -> (String, String) {
    match hook_failure {
        Some(message) if backoff.is_zero() => ("PostStartHookError".to_string(), message),
        _ => (
            "CrashLoopBackOff".to_string(),
            format!(
                "back-off {}s restarting failed container={container} pod={pod_name}",
                backoff.as_secs()
            ),
        ),
    }
}

/// Upstream's restart back-off: the delay before this restart and the one after it. The
/// first restart is at once, then `initial` doubling up to `max`; a container that ran for
/// [`BACKOFF_RESET_AFTER`] starts over.
fn restart_backoff(
    current: Option<Duration>,
    ran_for: Duration,
    initial: Duration,
    max: Duration,
) -> (Duration, Duration) {
    let delay = match current {
        Some(delay) if ran_for < BACKOFF_RESET_AFTER => delay,
        _ => Duration::ZERO,
    };
    let next = if delay.is_zero() {
        initial
    } else {
        (delay * 2).min(max)
    };
    (delay, next)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds, for the start timings logged at debug level.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// How long a new status waits before it is written, so that a status superseded at once
/// (ContainerCreating followed by Running) costs no write: long enough for the start of a
/// container whose image is cached (50-130 ms on containerd here), whose ContainerCreating
/// write would otherwise land in the middle of it, competing for the CPU.
const STATUS_BATCH_WINDOW: Duration = Duration::from_millis(150);

type StatusKey = (String, String);

/// The statuses waiting to be written: one per pod (the latest), in the order they came.
#[derive(Default)]
struct StatusQueue {
    pending: HashMap<StatusKey, StatusWrite>,
    order: VecDeque<(Instant, StatusKey)>,
    in_flight: HashSet<StatusKey>,
}

impl StatusQueue {
    /// Queues a pod's status, replacing the one still waiting for the same pod; it becomes
    /// due at `due`.
    /// A status already waiting keeps its place unless the new one is due sooner.
    fn offer(&mut self, write: StatusWrite, due: Instant) {
        let key = (write.namespace.clone(), write.name.clone());
        let queued = self.pending.insert(key.clone(), write).is_some();
        if self.in_flight.contains(&key) {
            // It follows the write in flight (`done`).
            return;
        }
        let sooner = !queued
            || self
                .order
                .iter()
                .filter(|(_, k)| *k == key)
                .all(|(at, _)| *at > due);
        if sooner {
            self.insert_ordered(due, key);
        }
    }

    /// Keeps `order` sorted by due time (an entry whose status was written is skipped).
    fn insert_ordered(&mut self, due: Instant, key: StatusKey) {
        let at = self.order.partition_point(|(at, _)| *at <= due);
        self.order.insert(at, (due, key));
    }

    /// The next status due at `now`, marked in flight.
    fn next_due(&mut self, now: Instant) -> Option<(StatusKey, StatusWrite)> {
        loop {
            let (due, _) = self.order.front()?;
            if *due > now {
                return None;
            }
            let (_, key) = self.order.pop_front()?;
            // One write per pod at a time: a second, started while an older status is still
            // in flight, could land first and be overwritten by it. `done` queues the newer
            // status once the write in flight ends.
            if self.in_flight.contains(&key) {
                continue;
            }
            if let Some(write) = self.pending.remove(&key) {
                self.in_flight.insert(key.clone());
                return Some((key, write));
            }
        }
    }

    /// A write ended; `retry` is given back when it failed. A newer status of the same pod
    /// is due at once.
    fn done(&mut self, key: StatusKey, retry: Option<StatusWrite>, now: Instant) {
        self.in_flight.remove(&key);
        if let Some(write) = retry {
            self.pending.entry(key.clone()).or_insert(write);
        }
        if self.pending.contains_key(&key) {
            self.insert_ordered(now, key);
        }
    }

    /// When the first waiting status becomes due.
    fn next_deadline(&self) -> Option<Instant> {
        self.order.front().map(|(due, _)| *due)
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Writes pod statuses through `pods/status`, at most `concurrency` at once; a pod whose
/// status changes again while a write is queued gets only its latest status written.
pub(crate) async fn write_statuses(
    client: Client,
    mut incoming: mpsc::UnboundedReceiver<StatusWrite>,
    concurrency: usize,
) {
    let concurrency = concurrency.max(1);
    let mut queue = StatusQueue::default();
    let mut writes = FuturesUnordered::new();
    let mut open = true;
    loop {
        let now = Instant::now();
        while writes.len() < concurrency {
            let Some((key, write)) = queue.next_due(now) else {
                break;
            };
            writes.push(write_one(client.clone(), key, write));
        }
        if !open && writes.is_empty() && queue.is_empty() {
            return;
        }
        let deadline = if writes.len() < concurrency {
            queue.next_deadline()
        } else {
            None
        };
        tokio::select! {
            next = incoming.recv(), if open => match next {
                Some(write) => {
                    let due = if write.urgent {
                        Instant::now()
                    } else {
                        Instant::now() + STATUS_BATCH_WINDOW
                    };
                    queue.offer(write, due)
                }
                None => open = false,
            },
            Some((key, retry)) = writes.next(), if !writes.is_empty() => {
                queue.done(key, retry, Instant::now());
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() => {}
        }
    }
}

/// Writes one status; gives it back (after a pause) when it should be retried.
async fn write_one(
    client: Client,
    key: StatusKey,
    write: StatusWrite,
) -> (StatusKey, Option<StatusWrite>) {
    let api: Api<Pod> = Api::namespaced(client, &write.namespace);
    let body = json!({ "status": write.status });
    let began = Instant::now();
    match api
        .patch_status(&write.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => {
            tracing::debug!(pod = %format!("{}/{}", key.0, key.1), phase = %write.status["phase"], took_ms = ms(began.elapsed()), "status written");
            (key, None)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => (key, None),
        Err(error) => {
            tracing::warn!(pod = %format!("{}/{}", key.0, key.1), %error, "writing pod status");
            tokio::time::sleep(Duration::from_secs(1)).await;
            (key, Some(write))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, phase: &str) -> StatusWrite {
        StatusWrite {
            namespace: "default".into(),
            name: name.into(),
            status: json!({ "phase": phase }),
            urgent: false,
        }
    }

    #[test]
    fn a_pod_never_has_two_status_writes_in_flight() {
        let mut q = StatusQueue::default();
        let t0 = Instant::now();
        // Pending waits for its window; Running is due at once and overtakes it, which
        // leaves Pending's (now stale) place in the order.
        q.offer(write("a", "Pending"), t0 + STATUS_BATCH_WINDOW);
        q.offer(write("a", "Running"), t0);
        let (key, running) = q.next_due(t0).unwrap();
        assert_eq!(running.status["phase"], json!("Running"));
        // The container ends while Running is still being written.
        q.offer(write("a", "Succeeded"), t0);
        // The stale place comes due: Succeeded must not start beside Running (it could land
        // first and be overwritten by the older status).
        assert!(q.next_due(t0 + STATUS_BATCH_WINDOW).is_none());
        q.done(key, None, t0 + STATUS_BATCH_WINDOW);
        let (_, succeeded) = q.next_due(t0 + STATUS_BATCH_WINDOW).unwrap();
        assert_eq!(succeeded.status["phase"], json!("Succeeded"));
        assert!(q.next_due(t0 + STATUS_BATCH_WINDOW * 2).is_none());
    }

    #[test]
    fn a_status_due_sooner_overtakes_the_batch_window() {
        let mut q = StatusQueue::default();
        let t0 = Instant::now();
        q.offer(write("a", "Pending"), t0 + STATUS_BATCH_WINDOW);
        q.offer(write("b", "Pending"), t0 + STATUS_BATCH_WINDOW);
        // `b` runs: its status is due now, ahead of `a`, and replaces its Pending.
        q.offer(write("b", "Running"), t0);
        let (key, w) = q.next_due(t0).unwrap();
        assert_eq!(
            (key.1.as_str(), &w.status["phase"]),
            ("b", &json!("Running"))
        );
        assert!(q.next_due(t0).is_none(), "a waits for its window");
        let later = t0 + STATUS_BATCH_WINDOW;
        assert_eq!(q.next_due(later).unwrap().0 .1, "a");
        // b's first place in the order is spent: nothing is written twice.
        assert!(q.next_due(later).is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn a_failed_post_start_hook_shows_until_the_back_off_begins() {
        let hook = Some("Exec lifecycle hook ([false]) ... exited with 1: ".to_string());
        assert_eq!(
            restart_waiting(hook.clone(), Duration::ZERO, "app", "p_ns(u)"),
            (
                "PostStartHookError".to_string(),
                "Exec lifecycle hook ([false]) ... exited with 1: ".to_string()
            )
        );
        assert_eq!(
            restart_waiting(hook, Duration::from_secs(10), "app", "p_ns(u)"),
            (
                "CrashLoopBackOff".to_string(),
                "back-off 10s restarting failed container=app pod=p_ns(u)".to_string()
            )
        );
        assert_eq!(
            restart_waiting(None, Duration::ZERO, "app", "p_ns(u)").0,
            "CrashLoopBackOff"
        );
    }

    #[test]
    fn restart_backoff_doubles_to_five_minutes_and_resets_after_ten() {
        let (initial, max) = (Duration::from_secs(10), Duration::from_secs(300));
        let quick = Duration::from_secs(1);
        let mut delays = Vec::new();
        let mut current = None;
        for _ in 0..8 {
            let (delay, next) = restart_backoff(current, quick, initial, max);
            delays.push(delay.as_secs());
            current = Some(next);
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        let long_run = Duration::from_secs(600);
        assert_eq!(
            restart_backoff(current, long_run, initial, max),
            (Duration::ZERO, initial),
            "ten minutes without a crash start the back-off over"
        );
        assert_eq!(
            restart_backoff(current, long_run - quick, initial, max).0,
            max
        );
    }

    #[test]
    fn the_active_deadline_counts_from_the_start_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(deadline_after(start, 30, at(1000)), Duration::from_secs(30));
        assert_eq!(deadline_after(start, 30, at(1020)), Duration::from_secs(10));
        assert_eq!(deadline_after(start, 30, at(1030)), Duration::ZERO);
        assert_eq!(deadline_after(start, 30, at(5000)), Duration::ZERO);
        assert_eq!(deadline_after(start, -5, at(1000)), Duration::ZERO);
    }

    #[test]
    fn a_superseded_status_is_never_written() {
        let mut q = StatusQueue::default();
        let t0 = Instant::now();
        q.offer(write("a", "Pending"), t0 + STATUS_BATCH_WINDOW);
        q.offer(write("b", "Pending"), t0 + STATUS_BATCH_WINDOW);
        assert!(q.next_due(t0).is_none(), "nothing is due inside the window");
        q.offer(write("a", "Running"), t0 + STATUS_BATCH_WINDOW * 2);
        let later = t0 + STATUS_BATCH_WINDOW;
        let (key, w) = q.next_due(later).unwrap();
        assert_eq!(key.1, "a");
        assert_eq!(w.status["phase"], "Running");
        assert_eq!(q.next_due(later).unwrap().0 .1, "b");
        assert!(q.next_due(later).is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn changes_during_a_write_follow_it_and_failures_are_retried() {
        let mut q = StatusQueue::default();
        let t0 = Instant::now();
        q.offer(write("a", "Pending"), t0);
        let (key, _) = q.next_due(t0).unwrap();
        q.offer(write("a", "Running"), t0);
        assert!(q.next_due(t0).is_none(), "one write per pod at a time");
        q.done(key, None, t0);
        let (key, w) = q.next_due(t0).unwrap();
        assert_eq!(w.status["phase"], "Running");
        q.done(key, Some(w), t0);
        let (_, retried) = q.next_due(t0).unwrap();
        assert_eq!(retried.status["phase"], "Running");
        assert_eq!(q.next_deadline(), None);
    }
}
