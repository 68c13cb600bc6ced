//! The CRI side of the warm sandbox pool ([`crate::pool`]): making pool sandboxes in the
//! background, taking over those of an earlier run, giving one a pod's identity, and
//! removing them all when the agent stops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use nodeless_agent::runtime::{RuntimeError, Sandbox};
use tokio::sync::Notify;
use tonic::transport::Channel;

use super::{cri_error, ms, RuntimeOptions};
use crate::cgroups::PodCgroup;
use crate::cri::api;
use crate::cri::RuntimeServiceClient;
use crate::pool::{
    self, Assignment, Assignments, IdleSandbox, PauseProcess, PoolState, LABEL_POOL, POOL_HOSTNAME,
    POOL_NAMESPACE,
};

/// How long the pool waits after a failed creation before it tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// The pool and what drives it; cheap to clone (the refill task holds one).
#[derive(Clone)]
pub(super) struct PoolDriver {
    runtime: RuntimeServiceClient<Channel>,
    options: RuntimeOptions,
    state: Arc<Mutex<PoolState>>,
    wake: Arc<Notify>,
    /// Which pod each assigned pool sandbox serves (on disk).
    pub(super) assignments: Assignments,
}

impl PoolDriver {
    /// A pool of `options.sandbox_pool` sandboxes; nothing runs until [`Self::start`].
    pub(super) fn new(runtime: RuntimeServiceClient<Channel>, options: RuntimeOptions) -> Self {
        let assignments = Assignments::new(options.state_dir.join("sandbox-pool"));
        Self {
            runtime,
            state: Arc::new(Mutex::new(PoolState::new(options.sandbox_pool))),
            options,
            wake: Arc::new(Notify::new()),
            assignments,
        }
    }

    /// Takes over what an earlier run left (idle pool sandboxes are reused up to the depth,
    /// the rest removed; assignments of sandboxes that are gone are forgotten), then starts
    /// refilling in the background when the depth is not zero.
    pub(super) async fn start(&self) {
        self.reconcile().await;
        if self.options.sandbox_pool > 0 {
            tokio::spawn(self.clone().refill());
        }
    }

    async fn reconcile(&self) {
        let mut runtime = self.runtime.clone();
        let listed = match runtime
            // CRI selects on label values only: every sandbox, those with the label kept.
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await
        {
            Ok(response) => response.into_inner().items,
            Err(status) => {
                tracing::warn!(error = %status.message(), "listing the pool's sandboxes");
                return;
            }
        };
        let assigned = self.assignments.all();
        let present: std::collections::HashSet<&str> =
            listed.iter().map(|s| s.id.as_str()).collect();
        for (id, assignment) in &assigned {
            if !present.contains(id.as_str()) {
                // The sandbox went while the agent was down: only its traces are left.
                remove_cgroup(&self.options.cgroup_root, &assignment.pool_uid);
                let _ = self.assignments.release(id);
            }
        }
        for item in listed {
            let Some(pool_uid) = item.labels.get(LABEL_POOL).cloned() else {
                continue;
            };
            if assigned.contains_key(&item.id) {
                // A pod's: the agent adopts it or removes it with the pod.
                continue;
            }
            let ready = item.state == api::PodSandboxState::SandboxReady as i32;
            let reusable = match ready {
                true => self.is_empty_and_addressed(&item.id).await,
                false => None,
            };
            let given_back = match reusable {
                Some((ip, pause)) => {
                    // One an earlier run left before moving its shim out of the background.
                    if let Some(pause) = pause {
                        let _ = tokio::task::spawn_blocking(move || to_foreground(pause)).await;
                    }
                    let sandbox = IdleSandbox {
                        id: item.id.clone(),
                        ip,
                        pool_uid: pool_uid.clone(),
                        pause,
                    };
                    match self.state.lock() {
                        Ok(mut state) => state.add_found(sandbox),
                        Err(_) => Some(sandbox),
                    }
                }
                None => Some(IdleSandbox {
                    id: item.id.clone(),
                    ip: IpAddr::from([0, 0, 0, 0]),
                    pool_uid,
                    pause: None,
                }),
            };
            match given_back {
                Some(extra) => self.discard(&extra).await,
                None => tracing::info!(sandbox = %item.id, "reusing an idle pool sandbox"),
            }
        }
    }

    /// What a verbose CRI status says of a pool sandbox: whether it is ready, its IP and its
    /// pause process.
    async fn inspect(&self, id: &str) -> Result<Inspected, tonic::Status> {
        let response = self
            .runtime
            .clone()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await?
            .into_inner();
        // No status is not ready (SandboxReady is the enum's zero, a default's state).
        let ready = response
            .status
            .as_ref()
            .is_some_and(|s| s.state == api::PodSandboxState::SandboxReady as i32);
        Ok(Inspected {
            ready,
            ip: response
                .status
                .and_then(|s| s.network)
                .and_then(|n| n.ip.parse().ok()),
            pause: pool::pause_pid(&response.info).and_then(PauseProcess::current),
        })
    }

    /// The IP and pause of a pool sandbox that holds no container, or `None`.
    async fn is_empty_and_addressed(&self, id: &str) -> Option<(IpAddr, Option<PauseProcess>)> {
        let mut runtime = self.runtime.clone();
        let containers = runtime
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    pod_sandbox_id: id.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .ok()?
            .into_inner()
            .containers;
        if !containers.is_empty() {
            return None;
        }
        let inspected = self.inspect(id).await.ok()?;
        Some((inspected.ip?, inspected.pause))
    }

    /// Keeps the pool at its depth, one creation at a time, until it is closed.
    async fn refill(self) {
        loop {
            let wanted = self.state.lock().map(|s| s.wanted()).unwrap_or(0);
            if wanted == 0 {
                // A take (or nothing, once closed) wakes it; a permit is kept if it comes
                // before the wait.
                self.wake.notified().await;
                continue;
            }
            let delay = self
                .state
                .lock()
                .map(|mut s| s.refill_delay(Instant::now()))
                .unwrap_or_default();
            if !delay.is_zero() {
                // A pod that started its first container wakes it earlier.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.wake.notified() => {}
                }
                continue;
            }
            if let Ok(mut state) = self.state.lock() {
                state.begin_create();
            }
            let began = Instant::now();
            let created = match self.create_one().await {
                Ok(sandbox) => {
                    tracing::debug!(sandbox = %sandbox.id, took_ms = ms(began.elapsed()), "pool sandbox created");
                    Some(sandbox)
                }
                Err(error) => {
                    tracing::warn!(%error, "creating a pool sandbox");
                    None
                }
            };
            let failed = created.is_none();
            let given_back = match self.state.lock() {
                Ok(mut state) => state.end_create(created),
                Err(_) => created,
            };
            if let Some(extra) = given_back {
                self.discard(&extra).await;
                if let Ok(mut state) = self.state.lock() {
                    state.removed_extra();
                }
            }
            if failed {
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }

    fn sandbox_config(&self, pool_uid: &str) -> api::PodSandboxConfig {
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: pool_uid.to_string(),
                uid: pool_uid.to_string(),
                namespace: POOL_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: POOL_HOSTNAME.to_string(),
            labels: HashMap::from([(LABEL_POOL.to_string(), pool_uid.to_string())]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: PodCgroup::path(&self.options.cgroup_root, pool_uid),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Pod as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn create_one(&self) -> Result<IdleSandbox, RuntimeError> {
        let pool_uid = pool::new_pool_uid();
        let mut runtime = self.runtime.clone();
        let id = runtime
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(self.sandbox_config(&pool_uid)),
                runtime_handler: crate::supervisor::BACKGROUND_HANDLER.to_string(),
            })
            .await
            .map_err(|e| cri_error("creating a pool sandbox", e))?
            .into_inner()
            .pod_sandbox_id;
        let (ip, pause) = match self.inspect(&id).await {
            Ok(inspected) => (inspected.ip, inspected.pause),
            Err(_) => (None, None),
        };
        // Made: its shim joins containerd's cgroup here, where no pod waits for the move (a
        // cgroup migration waits for an RCU grace period, tens of milliseconds).
        if let Some(pause) = pause {
            let _ = tokio::task::spawn_blocking(move || to_foreground(pause)).await;
        }
        let sandbox = IdleSandbox {
            id,
            ip: ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            pool_uid,
            pause,
        };
        if ip.is_none() {
            self.discard(&sandbox).await;
            return Err(RuntimeError::Failed(format!(
                "pool sandbox {} has no IP",
                sandbox.id
            )));
        }
        Ok(sandbox)
    }

    /// An idle sandbox for `pod`, when the pool has one and the pod can use it: pods whose
    /// sandbox differs from a pool sandbox (sysctls, a shared process namespace) get their
    /// own.
    pub(super) fn take_for(&self, pod: &Pod) -> Option<IdleSandbox> {
        if !fits_pool(pod) {
            return None;
        }
        let taken = self.state.lock().ok()?.take();
        if taken.is_some() {
            self.wake.notify_one();
        }
        taken
    }

    /// The start of `pod` begins (it takes a sandbox or makes one): the refill waits until
    /// [`Self::pod_started`].
    pub(super) fn pod_starting(&self, pod: &Pod) {
        if let (Ok(mut state), Some(uid)) = (self.state.lock(), pod.metadata.uid.as_deref()) {
            state.pod_starting(uid, Instant::now());
        }
    }

    /// The pod with `uid` started its first container (or failed to, or went).
    pub(super) fn pod_started(&self, uid: &str) {
        let was_starting = self
            .state
            .lock()
            .map(|mut state| state.pod_started(uid))
            .unwrap_or(false);
        if was_starting {
            self.wake.notify_one();
        }
    }

    /// Gives the pool sandbox the pod's identity; on error the caller discards it.
    pub(super) async fn assign(
        &self,
        pod: &Pod,
        idle: &IdleSandbox,
        identity: &super::PodIdentity,
    ) -> Result<Sandbox, RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let began = Instant::now();
        // The pause the sandbox was made with still runs (the common case, no CRI call), or
        // CRI says which runs now.
        let pause = match idle.pause.filter(PauseProcess::is_alive) {
            Some(pause) => pause,
            None => {
                let inspected = self
                    .inspect(&idle.id)
                    .await
                    .map_err(|e| cri_error("reading a pool sandbox", e))?;
                inspected.pause.filter(|_| inspected.ready).ok_or_else(|| {
                    RuntimeError::Failed(format!("pool sandbox {} is not running", idle.id))
                })?
            }
        };
        // Its shim starts the pod's containers: out of the background (done when the
        // sandbox was made; only checked here).
        to_foreground(pause);
        let checked = began.elapsed();
        // Durable first: a restart must find the pod's sandbox, whatever happens next.
        self.assignments
            .assign(
                &idle.id,
                &Assignment {
                    pod_uid: uid.clone(),
                    pool_uid: idle.pool_uid.clone(),
                },
            )
            .map_err(|e| RuntimeError::Failed(format!("recording the pool assignment: {e}")))?;
        let recorded = began.elapsed();
        PodCgroup::new(&self.options.cgroup_root, &uid)
            .create(crate::cgroups::pod_limits(pod))
            .map_err(|e| RuntimeError::Failed(format!("pod cgroup: {e}")))?;
        let cgroup = began.elapsed();
        pool::set_hostname(pause, &identity.hostname)
            .await
            .map_err(|e| RuntimeError::Failed(format!("setting the pod's hostname: {e}")))?;
        let hostname = began.elapsed();
        identity
            .write(&self.options.state_dir, pod, idle.ip)
            .map_err(|e| RuntimeError::Failed(format!("writing the pod's /etc files: {e}")))?;
        tracing::debug!(
            sandbox = %idle.id,
            status_ms = ms(checked),
            record_ms = ms(recorded - checked),
            cgroup_ms = ms(cgroup - recorded),
            hostname_ms = ms(hostname - cgroup),
            files_ms = ms(began.elapsed() - hostname),
            "pool sandbox assigned"
        );
        Ok(Sandbox {
            id: idle.id.clone(),
            ip: idle.ip,
        })
    }

    /// The pool sandbox assigned to `pod`, found by a restarted agent: when it is still
    /// ready, its identity is given again (an earlier run may have stopped half-way through
    /// the assignment; every step is idempotent) and its id returned.
    pub(super) async fn reassert(
        &self,
        pod: &Pod,
        sandbox_id: &str,
        identity: &super::PodIdentity,
    ) -> Option<String> {
        let inspected = self.inspect(sandbox_id).await.ok()?;
        if !inspected.ready {
            return None;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let reasserted = async {
            let pause = inspected.pause.ok_or("no pause pid")?;
            let ip = inspected.ip.ok_or("no IP")?;
            to_foreground(pause);
            PodCgroup::new(&self.options.cgroup_root, &uid)
                .create(crate::cgroups::pod_limits(pod))
                .map_err(|_| "pod cgroup")?;
            pool::set_hostname(pause, &identity.hostname)
                .await
                .map_err(|_| "hostname")?;
            identity
                .write(&self.options.state_dir, pod, ip)
                .map_err(|_| "/etc files")?;
            Ok::<(), &str>(())
        };
        if let Err(step) = reasserted.await {
            tracing::warn!(sandbox = %sandbox_id, %step, "giving an adopted pool sandbox its pod's identity again");
        }
        Some(sandbox_id.to_string())
    }

    /// Removes one idle sandbox, so that its pod IP is free for a pod that needs a sandbox of
    /// its own; whether there was one. The refill makes it again once no pod is starting.
    pub(super) async fn give_up_idle(&self) -> bool {
        let Some(idle) = self.state.lock().ok().and_then(|mut state| state.take()) else {
            return false;
        };
        self.discard(&idle).await;
        true
    }

    /// Removes a pool sandbox (stopped first), its pause's cgroup and its assignment.
    pub(super) async fn discard(&self, sandbox: &IdleSandbox) {
        if let Err(status) = super::stop_and_remove_sandbox(self.runtime.clone(), &sandbox.id).await
        {
            tracing::warn!(sandbox = %sandbox.id, error = %status.message(), "removing a pool sandbox");
            return;
        }
        remove_cgroup(&self.options.cgroup_root, &sandbox.pool_uid);
        if let Err(error) = self.assignments.release(&sandbox.id) {
            tracing::warn!(sandbox = %sandbox.id, %error, "forgetting a pool assignment");
        }
    }

    /// Once a removed sandbox was a pool sandbox: its pause's cgroup and its assignment go.
    pub(super) fn forget(&self, sandbox_id: &str) {
        if let Some(assignment) = self.assignments.get(sandbox_id) {
            remove_cgroup(&self.options.cgroup_root, &assignment.pool_uid);
            if let Err(error) = self.assignments.release(sandbox_id) {
                tracing::warn!(sandbox = %sandbox_id, %error, "forgetting a pool assignment");
            }
        }
    }

    /// Stops refilling and removes every idle sandbox (waiting for one being made).
    pub(super) async fn drain(&self) {
        let idle = self.state.lock().map(|mut s| s.close()).unwrap_or_default();
        for sandbox in &idle {
            self.discard(sandbox).await;
        }
        // A creation under way ends by giving its sandbox back to be removed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state.lock().map(|s| s.creating() > 0).unwrap_or(false)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether a pod's sandbox can be a pool sandbox: everything the pool cannot give a
/// sandbox after its creation (sysctls, the pod-wide PID namespace) rules it out.
/// A pool sandbox as a verbose CRI status shows it.
struct Inspected {
    ready: bool,
    ip: Option<IpAddr>,
    pause: Option<PauseProcess>,
}

/// Moves the shim of a pool sandbox (its pause's parent), made in the background runtime
/// handler's idle CPU cgroup, to containerd's, unless it is there: it will start a pod's
/// containers, at full priority. A failure costs speed, not correctness: it is logged.
fn to_foreground(pause: PauseProcess) {
    let Some(shim) = pause.parent().filter(|pid| *pid > 1) else {
        return;
    };
    let is_shim = std::fs::read_to_string(format!("/proc/{shim}/comm"))
        .is_ok_and(|comm| comm.starts_with("containerd-shim"));
    if !is_shim || crate::cgroups::shares_own_cpu_cgroup(shim) {
        return;
    }
    if let Err(error) = crate::cgroups::move_to_own_cpu_cgroup(shim) {
        tracing::warn!(%error, shim, "moving a pool sandbox's shim out of the background cgroup");
    }
}

pub(super) fn fits_pool(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .is_some_and(|s| !s.is_empty());
    !sysctls
        && !spec.share_process_namespace.unwrap_or(false)
        && !spec.host_network.unwrap_or(false)
        && !spec.host_pid.unwrap_or(false)
        && !spec.host_ipc.unwrap_or(false)
}

fn remove_cgroup(root: &str, pool_uid: &str) {
    if let Err(error) = PodCgroup::new(root, pool_uid).remove() {
        tracing::warn!(%error, %pool_uid, "removing a pool sandbox's cgroup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_whose_sandbox_differs_get_their_own() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
                .unwrap()
        };
        assert!(fits_pool(&pod(serde_json::json!({"containers": []}))));
        assert!(fits_pool(&pod(serde_json::json!({
            "containers": [], "securityContext": {"runAsUser": 1000, "sysctls": []}
        }))));
        assert!(!fits_pool(&pod(serde_json::json!({
            "containers": [],
            "securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"}]}
        }))));
        assert!(!fits_pool(&pod(serde_json::json!({
            "containers": [], "shareProcessNamespace": true
        }))));
        assert!(!fits_pool(&Pod::default()));
    }
}
