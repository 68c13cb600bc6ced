//! [`ContainerdRuntime`]: the agent's [`Runtime`] over containerd's CRI (`runtime.v1`).
//!
//! A pod is one CRI sandbox (its network namespace on the node's bridge, its cgroup
//! `<cgroup root>/pod<uid>` holding the pod's provisioned size), and each container is a CRI
//! container in it with its own limits. CRI has no exit events in containerd 1.6, so one
//! poller lists the containers a few times a second and wakes whoever waits on one that
//! exited.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use nodeless_agent::runtime::{
    Adopted, AdoptedContainer, ContainerExit, ContainerInputs, ContainerState, ExecOutput,
    RegistryAuth, Runtime, RuntimeError, Sandbox, StartedContainer, StreamRequest,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::cgroups::PodCgroup;
use crate::cri::api;
use crate::cri::{ImageServiceClient, RuntimeServiceClient};
use crate::ContainerdError;

mod non_root;
mod warm;

/// The prefix of container ids in pod statuses (`containerd://<id>`).
pub const ID_PREFIX: &str = "containerd://";

/// Labels the kubelet puts on sandboxes and containers; we use the same names so that
/// `crictl` users find their way.
const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// Paths the kubelet masks in every container (upstream's defaults).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths the kubelet makes read-only in every container (upstream's defaults).
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The cluster's DNS server, for pods with `dnsPolicy: ClusterFirst`.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// The DNS server's address.
    pub server: IpAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// How the runtime lays out pods.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The agent's state dir (logs, `/etc/hosts` files): the same as the agent's.
    pub state_dir: PathBuf,
    /// The cgroup under which every pod gets `pod<uid>` (cgroupfs driver).
    pub cgroup_root: String,
    /// The cluster DNS, once there is one; without it `ClusterFirst` pods use the host's.
    pub cluster_dns: Option<ClusterDns>,
    /// The host's resolver configuration (`/etc/resolv.conf`), for `dnsPolicy: Default`.
    pub host_resolv_conf: PathBuf,
    /// How often exited containers are looked for.
    pub poll_interval: Duration,
    /// How many sandboxes are kept warm for pods to come ([`crate::pool`]); 0: none.
    pub sandbox_pool: usize,
}

impl RuntimeOptions {
    /// Defaults for an agent whose state is in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            cgroup_root: "/nodeless".to_string(),
            cluster_dns: None,
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            poll_interval: Duration::from_millis(100),
            sandbox_pool: 0,
        }
    }
}

type ExitSender = watch::Sender<Option<Result<ContainerExit, String>>>;

/// The agent's runtime over CRI.
pub struct ContainerdRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    version: String,
    options: RuntimeOptions,
    /// Waiters on containers, by CRI id.
    waiters: Arc<Mutex<HashMap<String, ExitSender>>>,
    /// The pod uid of each sandbox we created or adopted, by sandbox id.
    sandboxes: Mutex<HashMap<String, String>>,
    /// Sandboxes this process made or took from the pool, holding only containers it made
    /// and kept: a container start there has no leftover of an earlier try to look for.
    fresh: Mutex<HashSet<String>>,
    /// The warm sandbox pool (its depth may be 0: it still cleans up an earlier run's).
    pool: warm::PoolDriver,
}

/// Stops a sandbox (RemovePodSandbox refuses one that still runs) and removes it; one that
/// is already gone is not an error.
async fn stop_and_remove_sandbox(
    mut runtime: RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(), tonic::Status> {
    let _ = runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await;
    match runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(status),
    }
}

fn cri_error(context: &str, status: tonic::Status) -> RuntimeError {
    RuntimeError::Failed(format!("{context}: {}", status.message()))
}

fn cri_id(id: &str) -> &str {
    id.strip_prefix(ID_PREFIX).unwrap_or(id)
}

fn time_of(nanos: i64) -> SystemTime {
    if nanos <= 0 {
        return SystemTime::now();
    }
    UNIX_EPOCH + Duration::from_nanos(nanos as u64)
}

impl ContainerdRuntime {
    /// A runtime over a connected CRI channel; asks containerd for its version.
    pub async fn new(channel: Channel, options: RuntimeOptions) -> Result<Self, ContainerdError> {
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let version = runtime
            .version(api::VersionRequest {
                version: "v1".to_string(),
            })
            .await?
            .into_inner();
        let waiters = Arc::new(Mutex::new(HashMap::new()));
        let pool = warm::PoolDriver::new(runtime.clone(), options.clone());
        pool.start().await;
        tokio::spawn(poll_exits(
            runtime.clone(),
            waiters.clone(),
            options.poll_interval,
        ));
        Ok(Self {
            runtime,
            images: ImageServiceClient::new(channel),
            version: format!("{}://{}", version.runtime_name, version.runtime_version),
            options,
            waiters,
            sandboxes: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashSet::new()),
            pool,
        })
    }

    /// What a pool sandbox is given of the pod (and what its containers mount).
    fn identity(&self, pod: &Pod) -> Result<PodIdentity, RuntimeError> {
        let dns = self.dns_config(pod)?;
        let resolv_conf = match crate::pool::resolv_conf(&dns.searches, &dns.servers, &dns.options)
        {
            Some(text) => text,
            // As containerd: nothing configured, the host's file.
            None => std::fs::read_to_string(&self.options.host_resolv_conf).unwrap_or_default(),
        };
        Ok(PodIdentity {
            hostname: pod_hostname(pod),
            resolv_conf,
        })
    }

    /// A pool sandbox with the pod's identity, if the pool has one for it.
    async fn sandbox_from_pool(&self, pod: &Pod) -> Option<Sandbox> {
        let idle = self.pool.take_for(pod)?;
        let began = Instant::now();
        let assigned = match self.identity(pod) {
            Ok(identity) => self.pool.assign(pod, &idle, &identity).await,
            Err(error) => Err(error),
        };
        match assigned {
            Ok(sandbox) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Ok(mut map) = self.sandboxes.lock() {
                    map.insert(sandbox.id.clone(), uid);
                }
                self.mark_fresh(&sandbox.id);
                tracing::debug!(
                    pod = %pod.metadata.name.as_deref().unwrap_or_default(),
                    sandbox = %sandbox.id,
                    took_ms = ms(began.elapsed()),
                    "sandbox taken from the pool"
                );
                Some(sandbox)
            }
            Err(error) => {
                tracing::warn!(
                    pod = %pod.metadata.name.as_deref().unwrap_or_default(),
                    sandbox = %idle.id,
                    %error,
                    "a pool sandbox could not take the pod; creating one"
                );
                self.pool.discard(&idle).await;
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let _ = PodCgroup::new(&self.options.cgroup_root, &uid).remove();
                None
            }
        }
    }

    fn sandbox_config(&self, pod: &Pod) -> Result<api::PodSandboxConfig, RuntimeError> {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let uid = meta.uid.clone().unwrap_or_default();
        let labels = HashMap::from([
            (LABEL_POD_NAME.to_string(), name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), namespace.clone()),
            (LABEL_POD_UID.to_string(), uid.clone()),
        ]);
        let security = spec.security_context.clone().unwrap_or_default();
        let sysctls = security
            .sysctls
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        Ok(api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name,
                uid: uid.clone(),
                namespace,
                attempt: 0,
            }),
            hostname: pod_hostname(pod),
            log_directory: nodeless_agent::logs::pod_log_dir(&self.options.state_dir, pod)
                .to_string_lossy()
                .into_owned(),
            dns_config: Some(self.dns_config(pod)?),
            port_mappings: Vec::new(),
            labels,
            annotations: meta
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: PodCgroup::path(&self.options.cgroup_root, &uid),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespaces(&spec)),
                    run_as_user: security.run_as_user.map(|value| api::Int64Value { value }),
                    run_as_group: security.run_as_group.map(|value| api::Int64Value { value }),
                    supplemental_groups: supplemental_groups(&spec),
                    ..Default::default()
                }),
                sysctls,
                ..Default::default()
            }),
            windows: None,
        })
    }

    /// The pod's resolver configuration, as the kubelet derives it from `dnsPolicy` and
    /// `dnsConfig`.
    fn dns_config(&self, pod: &Pod) -> Result<api::DnsConfig, RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let host = std::fs::read_to_string(&self.options.host_resolv_conf)
            .map(|text| parse_resolv_conf(&text))
            .unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut config = match (policy, &self.options.cluster_dns) {
            ("None", _) => api::DnsConfig::default(),
            ("ClusterFirst" | "ClusterFirstWithHostNet", Some(dns)) => api::DnsConfig {
                servers: vec![dns.server.to_string()],
                searches: [
                    format!("{namespace}.svc.{}", dns.domain),
                    format!("svc.{}", dns.domain),
                    dns.domain.clone(),
                ]
                .into_iter()
                .chain(host.searches.iter().cloned())
                .collect(),
                options: vec!["ndots:5".to_string()],
            },
            _ => host,
        };
        if let Some(extra) = &spec.dns_config {
            config
                .servers
                .extend(extra.nameservers.iter().flatten().cloned());
            config
                .searches
                .extend(extra.searches.iter().flatten().cloned());
            for option in extra.options.iter().flatten() {
                let Some(name) = option.name.clone() else {
                    continue;
                };
                let rendered = match &option.value {
                    Some(value) => format!("{name}:{value}"),
                    None => name.clone(),
                };
                let key = |o: &String| o.split(':').next().unwrap_or_default().to_string();
                config.options.retain(|o| key(o) != name);
                config.options.push(rendered);
            }
        }
        // As upstream: at most 32 search domains, duplicates dropped.
        let mut seen = std::collections::HashSet::new();
        config.searches.retain(|s| seen.insert(s.clone()));
        config.searches.truncate(32);
        Ok(config)
    }

    /// Refuses a container that `runAsNonRoot` forbids (upstream's `verifyRunAsNonRoot`),
    /// reading the image's user from CRI `ImageStatus` only when `runAsUser` does not decide.
    async fn verify_run_as_non_root(
        &self,
        pod: &Pod,
        container: &Container,
        image_id: &str,
    ) -> Result<(), RuntimeError> {
        let user = if non_root::needs_image_user(pod, container) {
            let image = self
                .images
                .clone()
                .image_status(api::ImageStatusRequest {
                    image: Some(api::ImageSpec {
                        image: image_id.to_string(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .map_err(|e| cri_error("image status", e))?
                .into_inner()
                .image;
            let (uid, username) = image
                .map(|i| (i.uid.map(|u| u.value), i.username))
                .unwrap_or_default();
            Some(non_root::ImageUser::from_status(uid, &username))
        } else {
            None
        };
        non_root::verify_run_as_non_root(pod, container, user.as_ref())
            .map_err(RuntimeError::CreateConfig)
    }

    /// Makes sure the container's image is present as its pull policy says; returns the
    /// image's id and how long a pull took.
    async fn ensure_image(
        &self,
        container: &Container,
        auth: &[RegistryAuth],
    ) -> Result<(String, Option<Duration>), RuntimeError> {
        let image = container.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err(RuntimeError::Failed("the container has no image".into()));
        }
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).to_string());
        let mut images = self.images.clone();
        let spec = api::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let present = if policy == "Always" {
            None
        } else {
            images
                .image_status(api::ImageStatusRequest {
                    image: Some(spec.clone()),
                    verbose: false,
                })
                .await
                .map_err(|e| cri_error("image status", e))?
                .into_inner()
                .image
                .map(|i| i.id)
        };
        if let Some(id) = present {
            return Ok((id, None));
        }
        if policy == "Never" {
            return Err(RuntimeError::ImageNeverPull(format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            )));
        }
        let started = Instant::now();
        let registry = registry_of(&image);
        let credentials: Vec<Option<api::AuthConfig>> = auth
            .iter()
            .filter(|a| a.registry == registry)
            .map(|a| {
                Some(api::AuthConfig {
                    username: a.username.clone(),
                    password: a.password.clone(),
                    // containerd compares the URL's host with the registry it pulls from.
                    server_address: format!("https://{}", a.registry),
                    ..Default::default()
                })
            })
            .chain(std::iter::once(None))
            .collect();
        let mut first_error: Option<String> = None;
        for credential in credentials {
            match images
                .pull_image(api::PullImageRequest {
                    image: Some(spec.clone()),
                    auth: credential,
                    sandbox_config: None,
                })
                .await
            {
                Ok(response) => {
                    return Ok((response.into_inner().image_ref, Some(started.elapsed())));
                }
                // The first error is the telling one (with credentials, when there were any).
                Err(status) => {
                    first_error.get_or_insert_with(|| status.message().to_string());
                }
            }
        }
        Err(RuntimeError::ImagePull(first_error.unwrap_or_default()))
    }

    fn container_config(
        &self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        image_id: &str,
        inputs: &ContainerInputs,
    ) -> api::ContainerConfig {
        let spec = pod.spec.clone().unwrap_or_default();
        let log_dir = nodeless_agent::logs::pod_log_dir(&self.options.state_dir, pod);
        let log_path = inputs
            .log_path
            .strip_prefix(&log_dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| {
                nodeless_agent::logs::container_log_relative(&container.name, attempt)
            });
        let mut mounts: Vec<api::Mount> = inputs
            .mounts
            .iter()
            .map(|m| api::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.read_only,
                ..Default::default()
            })
            .collect();
        if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            mounts.push(api::Mount {
                container_path: "/etc/hosts".to_string(),
                host_path: etc_hosts_path(&self.options.state_dir, pod)
                    .to_string_lossy()
                    .into_owned(),
                ..Default::default()
            });
        }
        // A pool sandbox's own files are another pod's (none): the pod's are mounted over
        // them (containerd leaves out its mount of a path the config mounts).
        // Read-only with a read-only root filesystem, as containerd mounts its own.
        let read_only_root = container
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false);
        for (container_path, host_path) in PodIdentity::files(&self.options.state_dir, pod) {
            if !mounts.iter().any(|m| m.container_path == container_path) && host_path.exists() {
                mounts.push(api::Mount {
                    container_path: container_path.to_string(),
                    host_path: host_path.to_string_lossy().into_owned(),
                    readonly: read_only_root,
                    ..Default::default()
                });
            }
        }
        let labels = HashMap::from([
            (LABEL_CONTAINER_NAME.to_string(), container.name.clone()),
            (
                LABEL_POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                LABEL_POD_NAMESPACE.to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (
                LABEL_POD_UID.to_string(),
                pod.metadata.uid.clone().unwrap_or_default(),
            ),
        ]);
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: container.name.clone(),
                attempt,
            }),
            image: Some(api::ImageSpec {
                image: image_id.to_string(),
                user_specified_image: container.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: inputs.command.clone(),
            args: inputs.args.clone(),
            working_dir: container.working_dir.clone().unwrap_or_default(),
            envs: inputs
                .env
                .iter()
                .map(|(key, value)| api::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts,
            labels,
            annotations: HashMap::from([(
                ANNOTATION_RESTART_COUNT.to_string(),
                attempt.to_string(),
            )]),
            log_path: log_path.to_string_lossy().into_owned(),
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            tty: container.tty.unwrap_or(false),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(container_resources(container)),
                security_context: Some(container_security(&spec, container)),
            }),
            ..Default::default()
        }
    }

    /// Records a sandbox as made (or taken from the pool) by this process.
    fn mark_fresh(&self, sandbox_id: &str) {
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.insert(sandbox_id.to_string());
        }
    }

    /// Whether the sandbox holds only containers this process made and kept.
    fn is_fresh(&self, sandbox_id: &str) -> bool {
        self.fresh
            .lock()
            .map(|fresh| fresh.contains(sandbox_id))
            .unwrap_or(false)
    }

    /// Removes a container whose start failed, so that the next try of the same attempt
    /// can take its name; when that fails too, the next start in the sandbox looks for it.
    async fn remove_failed_container(&self, sandbox_id: &str, container_id: &str) {
        let mut runtime = self.runtime.clone();
        let removed = runtime
            .remove_container(api::RemoveContainerRequest {
                container_id: container_id.to_string(),
            })
            .await;
        if let Err(status) = removed {
            tracing::debug!(container = %container_id, error = %status.message(), "removing a container that failed to start");
            self.unmark_fresh(sandbox_id);
        }
    }

    /// The next start in the sandbox looks for containers left by earlier tries.
    fn unmark_fresh(&self, sandbox_id: &str) {
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.remove(sandbox_id);
        }
    }

    async fn containers_of(&self, sandbox_id: &str) -> Result<Vec<api::Container>, RuntimeError> {
        let mut runtime = self.runtime.clone();
        Ok(runtime
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    pod_sandbox_id: sandbox_id.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| cri_error("listing containers", e))?
            .into_inner()
            .containers)
    }

    async fn exit_of(&self, id: &str) -> Result<Option<ContainerExit>, RuntimeError> {
        let mut runtime = self.runtime.clone();
        let status = match runtime
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
        {
            Ok(response) => response.into_inner().status,
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()))
            }
            Err(status) => return Err(cri_error("container status", status)),
        };
        let Some(status) = status else {
            return Err(RuntimeError::NotFound(id.to_string()));
        };
        Ok(exit_from_status(&status).map(|exit| with_kernel_oom(exit, id)))
    }

    /// Pulls the image if needed, then creates and starts one container in the sandbox.
    async fn create_and_start(
        &self,
        sandbox: &Sandbox,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        inputs: &ContainerInputs,
    ) -> Result<StartedContainer, RuntimeError> {
        let began = Instant::now();
        let (image_id, pulled_in) = self.ensure_image(container, &inputs.pull_auth).await?;
        self.verify_run_as_non_root(pod, container, &image_id)
            .await?;
        let imaged = began.elapsed();
        if let Some(parent) = inputs.log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RuntimeError::Failed(format!("log folder: {e}")))?;
        }
        let config = self.container_config(pod, container, attempt, &image_id, inputs);
        let sandbox_config = self.sandbox_config(pod)?;
        let mut runtime = self.runtime.clone();
        // A container of the same name and attempt left by an earlier try is removed first
        // (none in a sandbox of this process: its failed tries remove their container).
        let leftovers = if self.is_fresh(&sandbox.id) {
            Vec::new()
        } else {
            self.containers_of(&sandbox.id).await?
        };
        for old in leftovers {
            let same = old
                .metadata
                .as_ref()
                .is_some_and(|m| m.name == container.name && m.attempt == attempt);
            if same {
                let _ = runtime
                    .remove_container(api::RemoveContainerRequest {
                        container_id: old.id.clone(),
                    })
                    .await;
            }
        }
        let cleaned = began.elapsed();
        let id = runtime
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox.id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(|e| {
                // It may exist all the same (a deadline that passed as containerd made it):
                // the next try looks for it.
                self.unmark_fresh(&sandbox.id);
                cri_error("creating the container", e)
            })?
            .into_inner()
            .container_id;
        let created = began.elapsed();
        let started_and_status = async {
            runtime
                .start_container(api::StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(|e| cri_error("starting the container", e))?;
            let started = began.elapsed();
            let status = runtime
                .container_status(api::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|e| cri_error("container status", e))?
                .into_inner()
                .status
                .unwrap_or_default();
            Ok::<_, RuntimeError>((started, status))
        }
        .await;
        let (started, status) = match started_and_status {
            Ok(done) => done,
            Err(error) => {
                self.remove_failed_container(&sandbox.id, &id).await;
                return Err(error);
            }
        };
        tracing::debug!(
            pod = %pod.metadata.name.as_deref().unwrap_or_default(),
            container = %container.name,
            image_status_ms = ms(imaged),
            list_old_ms = ms(cleaned - imaged),
            create_ms = ms(created - cleaned),
            start_ms = ms(started - created),
            status_ms = ms(began.elapsed() - started),
            "container started"
        );
        Ok(StartedContainer {
            id: format!("{ID_PREFIX}{id}"),
            image_id: if status.image_ref.is_empty() {
                image_id
            } else {
                status.image_ref
            },
            started_at: time_of(status.started_at),
            pulled_in,
        })
    }
}

/// Whether CRI failed a sandbox because host-local IPAM has no address left in the pod CIDR.
fn is_out_of_addresses(status: &tonic::Status) -> bool {
    status.message().contains("no IP addresses available")
}

/// The exit of a container whose CRI status says it exited.
fn exit_from_status(status: &api::ContainerStatus) -> Option<ContainerExit> {
    if status.state != api::ContainerState::ContainerExited as i32 {
        return None;
    }
    let reason = if status.reason.is_empty() {
        if status.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        status.reason.clone()
    };
    Some(ContainerExit {
        exit_code: status.exit_code,
        reason,
        finished_at: time_of(status.finished_at),
    })
}

/// `exit`, its reason `OOMKilled` when the kernel's log says the OOM killer killed a process
/// of the container (a memory cgroup named after its id). containerd reports `OOMKilled` only
/// when its shim saw the OOM event, which a process that runs out of memory at once beats
/// (the shim watches the cgroup only after the start); the kernel logs every kill before it
/// is delivered, as cAdvisor's OOM parser reads it for the kubelet.
fn with_kernel_oom(mut exit: ContainerExit, container_id: &str) -> ContainerExit {
    if exit.exit_code == 137 && exit.reason == "Error" && kernel_logged_oom_kill(container_id) {
        exit.reason = "OOMKilled".to_string();
    }
    exit
}

/// Whether the kernel's log (`/dev/kmsg`, what its ring buffer still holds) has an OOM kill
/// in a memory cgroup whose last component is `cgroup_leaf`.
fn kernel_logged_oom_kill(cgroup_leaf: &str) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut kmsg) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return false;
    };
    // One record per read; EPIPE: a record was overwritten meanwhile (read on); EAGAIN: done.
    let mut record = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => return false,
            Ok(n) => {
                if is_oom_kill_in(&String::from_utf8_lossy(&record[..n]), cgroup_leaf) {
                    return true;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => return false,
        }
    }
}

/// Whether a kernel log record is an OOM kill (`oom-kill:…,task_memcg=<path>,…`) in the
/// memory cgroup whose path ends in `/<cgroup_leaf>`.
fn is_oom_kill_in(record: &str, cgroup_leaf: &str) -> bool {
    let Some(at) = record.find("oom-kill:") else {
        return false;
    };
    record[at..]
        .split(',')
        .find_map(|field| field.strip_prefix("task_memcg="))
        .is_some_and(|path| path.rsplit('/').next() == Some(cgroup_leaf))
}

/// Wakes the waiters of containers that exited (or vanished).
async fn poll_exits(
    mut runtime: RuntimeServiceClient<Channel>,
    waiters: Arc<Mutex<HashMap<String, ExitSender>>>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let watched: Vec<String> = {
            let Ok(mut map) = waiters.lock() else { return };
            map.retain(|_, sender| sender.receiver_count() > 0);
            map.keys().cloned().collect()
        };
        if watched.is_empty() {
            continue;
        }
        let listed = match runtime
            .list_containers(api::ListContainersRequest { filter: None })
            .await
        {
            Ok(response) => response.into_inner().containers,
            Err(status) => {
                tracing::debug!(error = %status.message(), "listing containers for exits");
                continue;
            }
        };
        let states: HashMap<&str, i32> = listed.iter().map(|c| (c.id.as_str(), c.state)).collect();
        for id in watched {
            let outcome = match states.get(id.as_str()) {
                Some(state) if *state != api::ContainerState::ContainerExited as i32 => continue,
                None => Err(format!("container {id} is gone")),
                Some(_) => match runtime
                    .container_status(api::ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await
                {
                    Ok(response) => match response
                        .into_inner()
                        .status
                        .as_ref()
                        .and_then(exit_from_status)
                    {
                        Some(exit) => Ok(with_kernel_oom(exit, &id)),
                        None => continue,
                    },
                    Err(status) => Err(status.message().to_string()),
                },
            };
            if let Ok(mut map) = waiters.lock() {
                if let Some(sender) = map.remove(&id) {
                    let _ = sender.send(Some(outcome));
                }
            }
        }
    }
}

#[async_trait]
impl Runtime for ContainerdRuntime {
    fn version(&self) -> String {
        self.version.clone()
    }

    async fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, RuntimeError> {
        // Until the pod's first container started, the pool's refill waits.
        self.pool.pod_starting(pod);
        if let Some(sandbox) = self.sandbox_from_pool(pod).await {
            return Ok(sandbox);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let began = Instant::now();
        let config = self.sandbox_config(pod)?;
        let cgroup = PodCgroup::new(&self.options.cgroup_root, &uid);
        cgroup
            .create(crate::cgroups::pod_limits(pod))
            .map_err(|e| RuntimeError::Failed(format!("pod cgroup: {e}")))?;
        let prepared = began.elapsed();
        let mut runtime = self.runtime.clone();
        let run = |config: api::PodSandboxConfig| {
            let mut runtime = self.runtime.clone();
            async move {
                runtime
                    .run_pod_sandbox(api::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map(|response| response.into_inner().pod_sandbox_id)
            }
        };
        let id = match run(config.clone()).await {
            // Idle pool sandboxes hold pod IPs: on a full pod CIDR one gives its address up
            // for a pod that needs a sandbox of its own.
            Err(status) if is_out_of_addresses(&status) && self.pool.give_up_idle().await => {
                tracing::info!(
                    pod = %pod.metadata.name.as_deref().unwrap_or_default(),
                    "the pod CIDR is full: an idle pool sandbox gave its address up"
                );
                run(config).await
            }
            other => other,
        };
        let id = match id {
            Ok(id) => id,
            Err(status) => {
                self.pool.pod_started(&uid);
                return Err(cri_error("creating the pod sandbox", status));
            }
        };
        let ran = began.elapsed();
        let status = runtime
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| cri_error("reading the pod sandbox", e))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::Failed("the sandbox has no status".into()))?;
        let ip = status
            .network
            .as_ref()
            .and_then(|n| n.ip.parse::<IpAddr>().ok())
            .ok_or_else(|| RuntimeError::Failed(format!("sandbox {id} has no IP")))?;
        write_etc_hosts(&self.options.state_dir, pod, ip)
            .map_err(|e| RuntimeError::Failed(format!("writing /etc/hosts: {e}")))?;
        if let Ok(mut map) = self.sandboxes.lock() {
            map.insert(id.clone(), uid);
        }
        self.mark_fresh(&id);
        tracing::debug!(
            pod = %pod.metadata.name.as_deref().unwrap_or_default(),
            cgroup_ms = ms(prepared),
            run_pod_sandbox_ms = ms(ran - prepared),
            status_ms = ms(began.elapsed() - ran),
            "sandbox created"
        );
        Ok(Sandbox { id, ip })
    }

    async fn start_container(
        &self,
        sandbox: &Sandbox,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        inputs: &ContainerInputs,
    ) -> Result<StartedContainer, RuntimeError> {
        let result = self
            .create_and_start(sandbox, pod, container, attempt, inputs)
            .await;
        self.pool
            .pod_started(pod.metadata.uid.as_deref().unwrap_or_default());
        result
    }

    async fn container_state(&self, container_id: &str) -> Result<ContainerState, RuntimeError> {
        Ok(match self.exit_of(cri_id(container_id)).await? {
            Some(exit) => ContainerState::Exited(exit),
            None => ContainerState::Running,
        })
    }

    async fn wait_container(&self, container_id: &str) -> Result<ContainerExit, RuntimeError> {
        let id = cri_id(container_id).to_string();
        let mut receiver = {
            let mut map = self
                .waiters
                .lock()
                .map_err(|_| RuntimeError::Failed("waiters poisoned".into()))?;
            match map.get(&id) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    map.insert(id.clone(), sender);
                    receiver
                }
            }
        };
        loop {
            if let Some(outcome) = receiver.borrow_and_update().clone() {
                return outcome.map_err(RuntimeError::NotFound);
            }
            if receiver.changed().await.is_err() {
                return Err(RuntimeError::Failed("the runtime stopped".into()));
            }
        }
    }

    async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let mut runtime = self.runtime.clone();
        match runtime
            .stop_container(api::StopContainerRequest {
                container_id: cri_id(container_id).to_string(),
                timeout: grace_seconds(grace),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(cri_error("stopping the container", status)),
        }
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let mut runtime = self.runtime.clone();
        let request = api::ExecSyncRequest {
            container_id: cri_id(container_id).to_string(),
            cmd: command.to_vec(),
            timeout: grace_seconds(timeout),
        };
        let call = runtime.exec_sync(request);
        let response = if timeout.is_zero() {
            call.await
        } else {
            // containerd ends the command at its timeout; this only guards a stuck call.
            match tokio::time::timeout(timeout + Duration::from_secs(5), call).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(RuntimeError::Failed(format!(
                        "command timed out after {}s",
                        timeout.as_secs()
                    )))
                }
            }
        };
        let response = match response {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(RuntimeError::NotFound(container_id.to_string()))
            }
            Err(status) => return Err(cri_error("exec", status)),
        };
        Ok(ExecOutput {
            exit_code: response.exit_code,
            stdout: response.stdout,
            stderr: response.stderr,
        })
    }

    async fn stop_sandbox(&self, sandbox: &Sandbox, grace: Duration) -> Result<(), RuntimeError> {
        let containers = self.containers_of(&sandbox.id).await.unwrap_or_default();
        let timeout = grace_seconds(grace);
        let stops = containers
            .into_iter()
            .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
            .map(|c| {
                let mut runtime = self.runtime.clone();
                async move {
                    if let Err(status) = runtime
                        .stop_container(api::StopContainerRequest {
                            container_id: c.id.clone(),
                            timeout,
                        })
                        .await
                    {
                        tracing::warn!(container = %c.id, error = %status.message(), "stopping a container");
                    }
                }
            });
        futures::future::join_all(stops).await;
        let mut runtime = self.runtime.clone();
        match runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(cri_error("stopping the sandbox", status)),
        }
    }

    async fn remove_sandbox(&self, sandbox: &Sandbox) -> Result<(), RuntimeError> {
        stop_and_remove_sandbox(self.runtime.clone(), &sandbox.id)
            .await
            .map_err(|status| cri_error("removing the sandbox", status))?;
        let uid = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|mut map| map.remove(&sandbox.id));
        self.unmark_fresh(&sandbox.id);
        if let Some(uid) = uid {
            self.pool.pod_started(&uid);
            if let Err(error) = PodCgroup::new(&self.options.cgroup_root, &uid).remove() {
                tracing::warn!(%error, pod_uid = %uid, "removing the pod cgroup");
            }
        }
        self.pool.forget(&sandbox.id);
        Ok(())
    }

    async fn adopt(&self, pod: &Pod) -> Result<Option<Adopted>, RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut runtime = self.runtime.clone();
        let own = runtime
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: HashMap::from([(LABEL_POD_UID.to_string(), uid.clone())]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| cri_error("listing sandboxes", e))?
            .into_inner()
            .items;
        let newest = own
            .iter()
            .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at)
            .map(|s| s.id.clone());
        // A pool sandbox serving the pod has the pool's labels: the assignment names it.
        let pooled = match self.pool.assignments.sandbox_of(&uid) {
            Some(id) => match self.identity(pod) {
                Ok(identity) => self.pool.reassert(pod, &id, &identity).await,
                Err(_) => None,
            },
            None => None,
        };
        let chosen = pooled.or(newest);
        // A pod has one sandbox: the others of its uid (stopped ones left by a crash between
        // the pod's end and its status write, or a second one from a crash during a create)
        // would never be removed otherwise, as the kubelet's sandbox GC removes them.
        for stale in own.iter().filter(|s| Some(&s.id) != chosen.as_ref()) {
            tracing::info!(pod_uid = %uid, sandbox = %stale.id, "removing a stale sandbox of the pod");
            if let Err(status) = stop_and_remove_sandbox(runtime.clone(), &stale.id).await {
                tracing::warn!(sandbox = %stale.id, error = %status.message(), "removing a stale sandbox");
            }
        }
        let Some(found_id) = chosen else {
            return Ok(None);
        };
        let status = runtime
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: found_id.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| cri_error("reading the pod sandbox", e))?
            .into_inner()
            .status;
        let Some(ip) = status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .and_then(|n| n.ip.parse::<IpAddr>().ok())
        else {
            return Ok(None);
        };
        let mut newest: HashMap<String, api::Container> = HashMap::new();
        for container in self.containers_of(&found_id).await? {
            let Some(meta) = container.metadata.clone() else {
                continue;
            };
            let newer = newest.get(&meta.name).is_none_or(|c| {
                c.metadata
                    .as_ref()
                    .is_some_and(|m| m.attempt < meta.attempt)
            });
            if newer {
                newest.insert(meta.name, container);
            }
        }
        let mut containers = Vec::new();
        for (name, container) in newest {
            let status = runtime
                .container_status(api::ContainerStatusRequest {
                    container_id: container.id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|e| cri_error("container status", e))?
                .into_inner()
                .status
                .unwrap_or_default();
            containers.push(AdoptedContainer {
                name,
                attempt: container.metadata.map(|m| m.attempt).unwrap_or(0),
                started: StartedContainer {
                    id: format!("{ID_PREFIX}{}", container.id),
                    image_id: status.image_ref.clone(),
                    started_at: time_of(status.started_at),
                    pulled_in: None,
                },
            });
        }
        if let Ok(mut map) = self.sandboxes.lock() {
            map.insert(found_id.clone(), uid);
        }
        Ok(Some(Adopted {
            sandbox: Sandbox { id: found_id, ip },
            containers,
        }))
    }

    async fn drain_pool(&self) {
        self.pool.drain().await;
    }

    async fn list_sandboxes(&self) -> Result<Vec<(Sandbox, String)>, RuntimeError> {
        let mut runtime = self.runtime.clone();
        let items = runtime
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|e| cri_error("listing sandboxes", e))?
            .into_inner()
            .items;
        let assigned = self.pool.assignments.all();
        let mut sandboxes = Vec::new();
        for item in items {
            let uid = if item.labels.contains_key(crate::pool::LABEL_POOL) {
                // An idle pool sandbox is the pool's, not a pod's.
                match assigned.get(&item.id) {
                    Some(assignment) => assignment.pod_uid.clone(),
                    None => continue,
                }
            } else {
                item.labels.get(LABEL_POD_UID).cloned().unwrap_or_default()
            };
            if let Ok(mut map) = self.sandboxes.lock() {
                map.entry(item.id.clone()).or_insert_with(|| uid.clone());
            }
            // The address is not needed to stop and remove a sandbox.
            let ip = IpAddr::from([0, 0, 0, 0]);
            sandboxes.push((Sandbox { id: item.id, ip }, uid));
        }
        Ok(sandboxes)
    }

    async fn exec(
        &self,
        container_id: &str,
        request: &StreamRequest,
    ) -> Result<String, RuntimeError> {
        let mut runtime = self.runtime.clone();
        Ok(runtime
            .exec(api::ExecRequest {
                container_id: cri_id(container_id).to_string(),
                cmd: request.command.clone(),
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr && !request.tty,
            })
            .await
            .map_err(|e| cri_error("exec", e))?
            .into_inner()
            .url)
    }

    async fn attach(
        &self,
        container_id: &str,
        request: &StreamRequest,
    ) -> Result<String, RuntimeError> {
        let mut runtime = self.runtime.clone();
        Ok(runtime
            .attach(api::AttachRequest {
                container_id: cri_id(container_id).to_string(),
                stdin: request.stdin,
                tty: request.tty,
                stdout: request.stdout,
                stderr: request.stderr && !request.tty,
            })
            .await
            .map_err(|e| cri_error("attach", e))?
            .into_inner()
            .url)
    }

    async fn port_forward(&self, sandbox: &Sandbox, ports: &[u16]) -> Result<String, RuntimeError> {
        let mut runtime = self.runtime.clone();
        Ok(runtime
            .port_forward(api::PortForwardRequest {
                pod_sandbox_id: sandbox.id.clone(),
                port: ports.iter().map(|p| i32::from(*p)).collect(),
            })
            .await
            .map_err(|e| cri_error("port-forward", e))?
            .into_inner()
            .url)
    }
}

/// Milliseconds, for the timings logged at debug level.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A grace period or timeout in CRI's whole seconds, rounded up (a part of a second still
/// gives the process that part rather than nothing).
fn grace_seconds(grace: Duration) -> i64 {
    let whole = grace
        .as_secs()
        .saturating_add(u64::from(grace.subsec_nanos() > 0));
    i64::try_from(whole).unwrap_or(i64::MAX)
}

/// The pod's host name: `spec.hostname` or its name (at most 63 characters, as upstream).
fn pod_hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut hostname: String = name.chars().take(63).collect();
    while hostname.ends_with(['-', '.']) {
        hostname.pop();
    }
    hostname
}

/// Where the pod's `/etc/hosts` is kept.
fn etc_hosts_path(state_dir: &Path, pod: &Pod) -> PathBuf {
    state_dir
        .join("pods")
        .join(pod.metadata.uid.as_deref().unwrap_or_default())
        .join("etc-hosts")
}

/// What a pool sandbox is given of its pod on assignment, beyond its cgroup: the hostname of
/// its UTS namespace and the files its containers mount at `/etc/hostname` and
/// `/etc/resolv.conf` (besides `/etc/hosts`, which every pod has of its own).
struct PodIdentity {
    hostname: String,
    resolv_conf: String,
}

impl PodIdentity {
    /// The identity files of a pod (container path, host path).
    fn files(state_dir: &Path, pod: &Pod) -> [(&'static str, PathBuf); 2] {
        let dir = etc_hosts_path(state_dir, pod)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        [
            ("/etc/hostname", dir.join("etc-hostname")),
            ("/etc/resolv.conf", dir.join("etc-resolv.conf")),
        ]
    }

    /// Writes the pod's `/etc/hosts` (with `ip`), `/etc/hostname` and `/etc/resolv.conf`.
    fn write(&self, state_dir: &Path, pod: &Pod, ip: IpAddr) -> std::io::Result<()> {
        write_etc_hosts(state_dir, pod, ip)?;
        let [(_, hostname), (_, resolv_conf)] = Self::files(state_dir, pod);
        std::fs::write(hostname, format!("{}\n", self.hostname))?;
        std::fs::write(resolv_conf, &self.resolv_conf)
    }
}

/// The kubelet's managed hosts file: localhost entries, the pod's own name (with its
/// `subdomain` FQDN), then `hostAliases`.
fn etc_hosts(pod: &Pod, ip: IpAddr, cluster_domain: &str) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let hostname = pod_hostname(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        Some(subdomain) => text.push_str(&format!(
            "{ip}\t{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}\t{hostname}\n"
        )),
        None => text.push_str(&format!("{ip}\t{hostname}\n")),
    }
    for alias in spec.host_aliases.iter().flatten() {
        let names = alias.hostnames.clone().unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        text.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{}\n",
            alias.ip,
            names.join("\t")
        ));
    }
    text
}

fn write_etc_hosts(state_dir: &Path, pod: &Pod, ip: IpAddr) -> std::io::Result<()> {
    let path = etc_hosts_path(state_dir, pod);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, etc_hosts(pod, ip, "cluster.local"))
}

/// `/etc/resolv.conf` read into CRI's DNS configuration.
fn parse_resolv_conf(text: &str) -> api::DnsConfig {
    let mut config = api::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => config.servers.extend(words.next().map(str::to_string)),
            Some("search" | "domain") => config.searches = words.map(str::to_string).collect(),
            Some("options") => config.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    config
}

/// Upstream's default pull policy: `Always` for `:latest` or untagged images, else
/// `IfNotPresent` (the API server defaults it; this covers objects that skipped that).
fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        _ if image.contains('@') => "IfNotPresent",
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// The registry host of an image reference, as credentials name it (`docker.io` for short
/// names).
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            if first == "index.docker.io" || first == "registry-1.docker.io" {
                "docker.io".to_string()
            } else {
                first.to_string()
            }
        }
        _ => "docker.io".to_string(),
    }
}

/// The namespaces of a pod's sandbox and containers: network and IPC per pod, PID per
/// container unless `shareProcessNamespace`.
fn pod_namespaces(spec: &PodSpec) -> api::NamespaceOption {
    let pid = if spec.share_process_namespace.unwrap_or(false) {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn supplemental_groups(spec: &PodSpec) -> Vec<i64> {
    let security = spec.security_context.clone().unwrap_or_default();
    let mut groups: Vec<i64> = security.supplemental_groups.unwrap_or_default();
    if let Some(fs_group) = security.fs_group {
        if !groups.contains(&fs_group) {
            groups.push(fs_group);
        }
    }
    groups
}

/// A container's own cgroup limits from its resources, as the kubelet computes them.
fn container_resources(container: &Container) -> api::LinuxContainerResources {
    let resources = container.resources.clone().unwrap_or_default();
    let quantity = |map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                    key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .and_then(|q| nodeless_api::quantity::Quantity::parse(&q.0).ok())
    };
    let cpu_limit = quantity(&resources.limits, "cpu").map(|q| q.to_millis().max(0) as i64);
    let cpu_request = quantity(&resources.requests, "cpu")
        .map(|q| q.to_millis().max(0) as i64)
        .or(cpu_limit);
    let memory_limit = quantity(&resources.limits, "memory").map(|q| q.to_bytes().max(0) as i64);
    let period = 100_000;
    api::LinuxContainerResources {
        cpu_period: if cpu_limit.is_some() { period } else { 0 },
        cpu_quota: cpu_limit
            .map(|m| (m * period / 1000).max(1000))
            .unwrap_or(0),
        cpu_shares: cpu_request.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2),
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        ..Default::default()
    }
}

/// A container's security context, the container's settings over the pod's.
fn container_security(spec: &PodSpec, container: &Container) -> api::LinuxContainerSecurityContext {
    let pod = spec.security_context.clone().unwrap_or_default();
    let own = container.security_context.clone().unwrap_or_default();
    let capabilities = own.capabilities.clone().unwrap_or_default();
    api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: capabilities.add.unwrap_or_default(),
            drop_capabilities: capabilities.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: false,
        namespace_options: Some(pod_namespaces(spec)),
        run_as_user: own
            .run_as_user
            .or(pod.run_as_user)
            .map(|value| api::Int64Value { value }),
        run_as_group: own
            .run_as_group
            .or(pod.run_as_group)
            .map(|value| api::Int64Value { value }),
        readonly_rootfs: own.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(spec),
        no_new_privs: own.allow_privilege_escalation == Some(false),
        masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
        readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_found_in_the_kernel_log_by_cgroup() {
        let record = "6,1234,7998083081,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cfc1,mems_allowed=0,oom_memcg=/nodeless/podu/cfc1,task_memcg=/nodeless/podu/cfc1,task=dd,pid=25186,uid=0";
        assert!(is_oom_kill_in(record, "cfc1"));
        assert!(!is_oom_kill_in(record, "cfc"), "the whole last component");
        assert!(!is_oom_kill_in(record, "podu"));
        assert!(!is_oom_kill_in(
            "6,1,2,-;Memory cgroup out of memory: Killed process 25186 (dd)",
            "cfc1"
        ));
    }
    use k8s_openapi::api::core::v1::HostAlias;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("127.0.0.1:5000/busybox:v1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn registries_are_named_as_credentials_name_them() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/org/app"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("index.docker.io/library/busybox"), "docker.io");
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_aliases() {
        let mut p = pod("ledger-0");
        let spec = p.spec.as_mut().unwrap();
        spec.subdomain = Some("ledger".into());
        spec.host_aliases = Some(vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: Some(vec!["db".into(), "db.local".into()]),
        }]);
        let text = etc_hosts(&p, "10.244.0.7".parse().unwrap(), "cluster.local");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.244.0.7\tledger-0.ledger.shop.svc.cluster.local\tledger-0\n"));
        assert!(text.contains("10.1.2.3\tdb\tdb.local\n"));
        let plain = etc_hosts(&pod("web"), "10.244.0.8".parse().unwrap(), "cluster.local");
        assert!(plain.contains("10.244.0.8\tweb\n"));
    }

    #[test]
    fn resolv_conf_is_read() {
        let c = parse_resolv_conf(
            "# x\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch a.b c\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.servers, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(c.searches, ["a.b", "c"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn container_limits_become_cgroup_values() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}
        }))
        .unwrap();
        let r = container_resources(&container);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        let none =
            container_resources(&serde_json::from_value(serde_json::json!({"name": "a"})).unwrap());
        assert_eq!(
            (none.cpu_quota, none.cpu_shares, none.memory_limit_in_bytes),
            (0, 2, 0)
        );
    }

    #[test]
    fn grace_periods_round_up_to_whole_seconds() {
        assert_eq!(grace_seconds(Duration::ZERO), 0);
        assert_eq!(grace_seconds(Duration::from_secs(2)), 2);
        assert_eq!(grace_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(grace_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn hostname_is_truncated_as_upstream() {
        let long = "a".repeat(62) + "-b";
        assert_eq!(pod_hostname(&pod(&long)), "a".repeat(62));
    }
}
