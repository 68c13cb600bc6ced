//! The simulated runtime: sandboxes and containers without processes, for tests and scale
//! benchmarks. Sandboxes get real, unique pod IPs from the node's CIDR; containers "run" for a
//! time and "exit" with a code that annotations of the pod choose, as kwok's stages do:
//!
//! | annotation | meaning |
//! |---|---|
//! | `sim.nodeless.io/run-seconds: "2"` | every container exits after 2 s (decimals allowed) |
//! | `sim.nodeless.io/exit-code: "1"` | every container exits with code 1 |
//! | `sim.nodeless.io/run-seconds.<container>` | the same for one container (wins) |
//! | `sim.nodeless.io/exit-code.<container>` | the same for one container (wins) |
//!
//! Without annotations, containers of `restartPolicy: Always` pods run until stopped, those of
//! `Never`/`OnFailure` pods exit with code 0 after [`SimulatedConfig::default_run_time`], and
//! init containers exit with code 0 at once. An exit code alone makes a container exit after the
//! default run time.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::SimulatedConfig;
use crate::ipam::PodIpAllocator;
use crate::runtime::{
    ContainerExit, ContainerInputs, ContainerState, Runtime, RuntimeError, Sandbox,
    StartedContainer,
};

/// The annotation prefix of the simulated runtime's knobs.
pub const ANNOTATION_PREFIX: &str = "sim.nodeless.io/";
/// Annotation: seconds a container runs before it exits.
pub const RUN_SECONDS_ANNOTATION: &str = "sim.nodeless.io/run-seconds";
/// Annotation: the exit code a container exits with.
pub const EXIT_CODE_ANNOTATION: &str = "sim.nodeless.io/exit-code";

/// A runtime whose containers are timers.
pub struct SimulatedRuntime {
    config: SimulatedConfig,
    addresses: Arc<PodIpAllocator>,
    sandboxes: Mutex<HashMap<String, SimSandbox>>,
    containers: Mutex<HashMap<String, SimContainer>>,
    counter: AtomicU64,
}

struct SimSandbox {
    ip: IpAddr,
    containers: Vec<String>,
}

struct SimContainer {
    /// When it exits by itself, and how.
    planned_exit: Option<(Instant, SystemTime, i32)>,
    /// Set when the container ends (stopped, or its planned exit observed).
    exit: watch::Sender<Option<ContainerExit>>,
}

impl SimContainer {
    /// Ends the container now, unless it ended already (its planned exit counts when due).
    fn stop(&self, now: SystemTime) {
        let already = match self.planned_exit {
            Some((at, finished_at, code)) if at <= Instant::now() => Some(ContainerExit {
                exit_code: code,
                reason: exit_reason(code),
                finished_at,
            }),
            _ => None,
        };
        // A simulated process handles SIGTERM and exits cleanly.
        self.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(already.clone().unwrap_or(ContainerExit {
                exit_code: 0,
                reason: exit_reason(0),
                finished_at: now,
            }));
            true
        });
    }
}

impl SimulatedRuntime {
    /// A runtime handing out pod IPs from `addresses`.
    pub fn new(config: SimulatedConfig, addresses: Arc<PodIpAllocator>) -> Self {
        Self {
            config,
            addresses,
            sandboxes: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// The allocator of pod IPs (to see how many are in use).
    pub fn addresses(&self) -> &PodIpAllocator {
        &self.addresses
    }

    /// How many sandboxes exist.
    pub fn sandbox_count(&self) -> usize {
        lock(&self.sandboxes).len()
    }

    /// How long a container runs and with which code it exits, per the pod's annotations and
    /// restart policy; `None`: it runs until stopped.
    pub fn plan(&self, pod: &Pod, container: &str) -> Option<(Duration, i32)> {
        let annotations = pod.metadata.annotations.as_ref();
        let knob = |key: &str| -> Option<&String> {
            let annotations = annotations?;
            annotations
                .get(&format!("{key}.{container}"))
                .or_else(|| annotations.get(key))
        };
        let run = knob(RUN_SECONDS_ANNOTATION)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let code = knob(EXIT_CODE_ANNOTATION).and_then(|v| v.trim().parse::<i32>().ok());
        let spec = pod.spec.as_ref();
        let is_init = spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.name == container));
        let policy = spec
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        let default_run = if is_init {
            Some(Duration::ZERO)
        } else if policy == "Always" && code.is_none() {
            None
        } else {
            Some(self.config.default_run_time)
        };
        run.or(default_run).map(|run| (run, code.unwrap_or(0)))
    }

    fn fake_id(&self, parts: &[&str]) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        hex64(parts, n)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 64 hex digits derived from `parts` and `salt`, shaped like a sha256 digest.
fn hex64(parts: &[&str], salt: u64) -> String {
    let mut out = String::with_capacity(64);
    for round in 0u64..4 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        round.hash(&mut h);
        salt.hash(&mut h);
        parts.hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The CRI log file of one simulated container attempt: a line when it starts, one when it
/// exits, so that `kubectl logs` has something to show without containers.
#[derive(Clone)]
struct SimLog {
    path: std::path::PathBuf,
}

impl SimLog {
    /// Prepares the log file (its folder is created); `None` without a log path.
    fn open(path: &std::path::Path) -> Option<Self> {
        if path.as_os_str().is_empty() {
            return None;
        }
        if let Some(dir) = path.parent() {
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::warn!(%error, path = %dir.display(), "creating the container log folder");
                return None;
            }
        }
        Some(Self {
            path: path.to_path_buf(),
        })
    }

    /// Appends one full stdout line logged at `at`.
    fn write(&self, at: SystemTime, text: &str) {
        use std::io::Write;
        let line = format!("{} stdout F {text}\n", cri_time(at));
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(error) = result {
            tracing::warn!(%error, path = %self.path.display(), "writing a simulated log line");
        }
    }

    /// Waits for the container to end (its planned exit or a stop) and logs its exit code.
    async fn write_exit(
        self,
        name: String,
        planned: Option<(Instant, SystemTime, i32)>,
        mut stopped: watch::Receiver<Option<ContainerExit>>,
    ) {
        let planned_exit = async {
            match planned {
                Some((at, finished_at, code)) => {
                    tokio::time::sleep_until(at).await;
                    (finished_at, code)
                }
                None => std::future::pending().await,
            }
        };
        let (at, code) = tokio::select! {
            ended = planned_exit => ended,
            stop = stopped.wait_for(Option::is_some) => match stop {
                Ok(exit) => exit
                    .as_ref()
                    .map(|e| (e.finished_at, e.exit_code))
                    .unwrap_or((SystemTime::now(), 0)),
                // The container was removed without a stop.
                Err(_) => return,
            },
        };
        self.write(
            at,
            &format!("simulated container {name} exited with code {code}"),
        );
    }
}

/// A time as CRI log lines carry it (RFC 3339 with nanoseconds, UTC).
fn cri_time(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

fn exit_reason(code: i32) -> String {
    if code == 0 { "Completed" } else { "Error" }.to_string()
}

#[async_trait]
impl Runtime for SimulatedRuntime {
    fn version(&self) -> String {
        format!("simulated://{}", env!("CARGO_PKG_VERSION"))
    }

    async fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, RuntimeError> {
        if !self.config.sandbox_create_delay.is_zero() {
            tokio::time::sleep(self.config.sandbox_create_delay).await;
        }
        let former = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .filter(|ip| self.addresses.reserve(*ip));
        let ip = match former {
            Some(ip) => ip,
            None => self
                .addresses
                .allocate()
                .ok_or_else(|| RuntimeError::NoAddress(self.addresses.cidr().to_string()))?,
        };
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let id = self.fake_id(&["sandbox", uid]);
        lock(&self.sandboxes).insert(
            id.clone(),
            SimSandbox {
                ip: IpAddr::V4(ip),
                containers: Vec::new(),
            },
        );
        Ok(Sandbox {
            id,
            ip: IpAddr::V4(ip),
        })
    }

    async fn start_container(
        &self,
        sandbox: &Sandbox,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        inputs: &ContainerInputs,
    ) -> Result<StartedContainer, RuntimeError> {
        let image = container.image.as_deref().unwrap_or_default();
        let id = format!(
            "simulated://{}",
            self.fake_id(&[&sandbox.id, &container.name, &attempt.to_string()])
        );
        let started_at = SystemTime::now();
        let planned_exit = self
            .plan(pod, &container.name)
            .map(|(run, code)| (Instant::now() + run, started_at + run, code));
        {
            let mut sandboxes = lock(&self.sandboxes);
            let sim = sandboxes
                .get_mut(&sandbox.id)
                .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {}", sandbox.id)))?;
            sim.containers.push(id.clone());
        }
        let (exit, _) = watch::channel(None);
        let log = SimLog::open(&inputs.log_path);
        if let Some(log) = &log {
            log.write(
                started_at,
                &format!(
                    "simulated container {} started (attempt {attempt})",
                    container.name
                ),
            );
            tokio::spawn(log.clone().write_exit(
                container.name.clone(),
                planned_exit,
                exit.subscribe(),
            ));
        }
        lock(&self.containers).insert(id.clone(), SimContainer { planned_exit, exit });
        Ok(StartedContainer {
            id,
            image_id: format!("simulated://sha256:{}", hex64(&[image], 0)),
            started_at,
            pulled_in: None,
        })
    }

    async fn container_state(&self, container_id: &str) -> Result<ContainerState, RuntimeError> {
        let containers = lock(&self.containers);
        let c = containers
            .get(container_id)
            .ok_or_else(|| RuntimeError::NotFound(container_id.to_string()))?;
        if let Some(exit) = c.exit.borrow().clone() {
            return Ok(ContainerState::Exited(exit));
        }
        match c.planned_exit {
            Some((at, finished_at, code)) if at <= Instant::now() => {
                Ok(ContainerState::Exited(ContainerExit {
                    exit_code: code,
                    reason: exit_reason(code),
                    finished_at,
                }))
            }
            _ => Ok(ContainerState::Running),
        }
    }

    async fn wait_container(&self, container_id: &str) -> Result<ContainerExit, RuntimeError> {
        let (planned, mut stopped) = {
            let containers = lock(&self.containers);
            let c = containers
                .get(container_id)
                .ok_or_else(|| RuntimeError::NotFound(container_id.to_string()))?;
            (c.planned_exit, c.exit.subscribe())
        };
        let planned_sleep = async {
            match planned {
                Some((at, finished_at, code)) => {
                    tokio::time::sleep_until(at).await;
                    ContainerExit {
                        exit_code: code,
                        reason: exit_reason(code),
                        finished_at,
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = planned_sleep => Ok(exit),
            stopped = stopped.wait_for(Option::is_some) => match stopped {
                Ok(exit) => Ok(exit.clone().unwrap_or_else(|| ContainerExit {
                    exit_code: 0,
                    reason: exit_reason(0),
                    finished_at: SystemTime::now(),
                })),
                Err(_) => Err(RuntimeError::NotFound(container_id.to_string())),
            },
        }
    }

    async fn stop_sandbox(&self, sandbox: &Sandbox, _grace: Duration) -> Result<(), RuntimeError> {
        let ids = match lock(&self.sandboxes).get(&sandbox.id) {
            Some(s) => s.containers.clone(),
            None => return Ok(()),
        };
        let containers = lock(&self.containers);
        let now = SystemTime::now();
        for id in ids {
            if let Some(c) = containers.get(&id) {
                c.stop(now);
            }
        }
        Ok(())
    }

    async fn stop_container(
        &self,
        container_id: &str,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        if let Some(c) = lock(&self.containers).get(container_id) {
            c.stop(SystemTime::now());
        }
        Ok(())
    }

    fn runs_processes(&self) -> bool {
        false
    }

    async fn remove_sandbox(&self, sandbox: &Sandbox) -> Result<(), RuntimeError> {
        self.stop_sandbox(sandbox, Duration::ZERO).await?;
        let Some(removed) = lock(&self.sandboxes).remove(&sandbox.id) else {
            return Ok(());
        };
        {
            let mut containers = lock(&self.containers);
            for id in &removed.containers {
                containers.remove(id);
            }
        }
        if let IpAddr::V4(ip) = removed.ip {
            self.addresses.release(ip);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(policy: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "annotations": annotations},
            "spec": {
                "restartPolicy": policy,
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "nginx"}],
            },
        }))
        .unwrap()
    }

    fn runtime() -> SimulatedRuntime {
        SimulatedRuntime::new(
            SimulatedConfig::default(),
            Arc::new(PodIpAllocator::new("10.0.0.0/29".parse().unwrap())),
        )
    }

    #[test]
    fn plans_follow_policy_and_annotations() {
        let rt = runtime();
        let always = pod("Always", json!({}));
        assert_eq!(rt.plan(&always, "app"), None);
        assert_eq!(rt.plan(&always, "init"), Some((Duration::ZERO, 0)));
        let never = pod("Never", json!({}));
        assert_eq!(rt.plan(&never, "app"), Some((Duration::from_secs(1), 0)));
        let knobs = pod(
            "Always",
            json!({"sim.nodeless.io/run-seconds": "2.5", "sim.nodeless.io/exit-code.side": "3"}),
        );
        assert_eq!(
            rt.plan(&knobs, "app"),
            Some((Duration::from_millis(2500), 0))
        );
        assert_eq!(
            rt.plan(&knobs, "side"),
            Some((Duration::from_millis(2500), 3))
        );
        let code_only = pod("Always", json!({"sim.nodeless.io/exit-code": "1"}));
        assert_eq!(
            rt.plan(&code_only, "app"),
            Some((Duration::from_secs(1), 1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn containers_exit_as_planned_and_sandboxes_release_ips() {
        let rt = runtime();
        let p = pod("Never", json!({"sim.nodeless.io/exit-code.app": "2"}));
        let sb = rt.create_sandbox(&p).await.unwrap();
        assert_eq!(rt.addresses().in_use(), 1);
        let app = &p.spec.as_ref().unwrap().containers[0];
        let started = rt
            .start_container(&sb, &p, app, 0, &ContainerInputs::default())
            .await
            .unwrap();
        assert!(started.id.starts_with("simulated://"));
        assert_eq!(started.id.len(), "simulated://".len() + 64);
        assert!(started.image_id.starts_with("simulated://sha256:"));
        assert_eq!(
            rt.container_state(&started.id).await.unwrap(),
            ContainerState::Running
        );
        let exit = rt.wait_container(&started.id).await.unwrap();
        assert_eq!(exit.exit_code, 2);
        assert_eq!(exit.reason, "Error");
        assert!(matches!(
            rt.container_state(&started.id).await.unwrap(),
            ContainerState::Exited(_)
        ));
        rt.remove_sandbox(&sb).await.unwrap();
        assert_eq!(rt.addresses().in_use(), 0);
        assert_eq!(rt.sandbox_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_running_containers() {
        let rt = Arc::new(runtime());
        let p = pod("Always", json!({}));
        let sb = rt.create_sandbox(&p).await.unwrap();
        let app = p.spec.as_ref().unwrap().containers[0].clone();
        let started = rt
            .start_container(&sb, &p, &app, 0, &ContainerInputs::default())
            .await
            .unwrap();
        let waiter = {
            let rt = rt.clone();
            let id = started.id.clone();
            tokio::spawn(async move { rt.wait_container(&id).await })
        };
        tokio::task::yield_now().await;
        rt.stop_sandbox(&sb, Duration::from_secs(30)).await.unwrap();
        let exit = waiter.await.unwrap().unwrap();
        assert_eq!(exit.exit_code, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_container_stops_alone_and_hooks_are_not_run() {
        let rt = Arc::new(runtime());
        assert!(!rt.runs_processes());
        let p = pod("Always", json!({}));
        let sb = rt.create_sandbox(&p).await.unwrap();
        let app = p.spec.as_ref().unwrap().containers[0].clone();
        let started = rt
            .start_container(&sb, &p, &app, 0, &ContainerInputs::default())
            .await
            .unwrap();
        assert_eq!(
            rt.container_state(&started.id).await.unwrap(),
            ContainerState::Running
        );
        rt.stop_container(&started.id, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(matches!(
            rt.container_state(&started.id).await.unwrap(),
            ContainerState::Exited(ContainerExit { exit_code: 0, .. })
        ));
        assert!(rt.stop_container("no-such", Duration::ZERO).await.is_ok());
        assert!(matches!(
            rt.exec_sync(&started.id, &["true".to_string()], Duration::ZERO)
                .await,
            Err(RuntimeError::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn each_attempt_logs_its_start_and_exit_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let p = pod(
            "Never",
            json!({"sim.nodeless.io/exit-code": "3", "sim.nodeless.io/run-seconds": "0.05"}),
        );
        let sb = rt.create_sandbox(&p).await.unwrap();
        let app = &p.spec.as_ref().unwrap().containers[0];
        let log_path = dir.path().join("app/1.log");
        let inputs = ContainerInputs {
            log_path: log_path.clone(),
            ..ContainerInputs::default()
        };
        let started = rt.start_container(&sb, &p, app, 1, &inputs).await.unwrap();
        rt.wait_container(&started.id).await.unwrap();
        let mut text = String::new();
        for _ in 0..50 {
            text = std::fs::read_to_string(&log_path).unwrap();
            if text.lines().count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" stdout F simulated container app started (attempt 1)"));
        assert!(lines[1].ends_with(" stdout F simulated container app exited with code 3"));
        let time = lines[0].split(' ').next().unwrap();
        assert_eq!(time.len(), "2024-01-01T00:00:00.000000000Z".len());
        assert!(
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn former_ip_is_kept_and_exhaustion_is_an_error() {
        let rt = runtime();
        let mut p = pod("Always", json!({}));
        p.status = Some(serde_json::from_value(json!({"podIP": "10.0.0.5"})).unwrap());
        let sb = rt.create_sandbox(&p).await.unwrap();
        assert_eq!(sb.ip.to_string(), "10.0.0.5");
        let fresh = pod("Always", json!({}));
        for _ in 0..4 {
            rt.create_sandbox(&fresh).await.unwrap();
        }
        assert!(matches!(
            rt.create_sandbox(&fresh).await,
            Err(RuntimeError::NoAddress(_))
        ));
    }
}
