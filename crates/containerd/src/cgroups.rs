//! The pod-level cgroup: `<root>/pod<uid>` under each controller, holding the pod's
//! provisioned size (CRI puts no limits on a sandbox's parent, so the agent sets them, as the
//! kubelet does). Both layouts are handled: cgroup v1 (also "hybrid", v1 controllers with a v2
//! mount beside them) and the unified v2 hierarchy.
//!
//! Besides, the background cgroup ([`BackgroundCgroup`]): CPU at idle priority, for work done
//! ahead of need (the sandbox pool's shims), so that it never slows a pod's start or a client.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// The mount point of the cgroup file systems.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// The CFS period used for CPU quotas (100 ms, as the kubelet).
const CFS_PERIOD_US: u64 = 100_000;

/// What a pod may use in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// CPU in thousandths of a vCPU.
    pub millicpu: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// The pod's limits: its provisioned size (`nodeless.io/capacity-provisioned`) or, without
/// one, the sum of its app containers' limits (an init container's, if larger, as upstream's
/// effective limits).
pub fn pod_limits(pod: &Pod) -> PodLimits {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(nodeless_serverless::ANNOTATION))
        .and_then(|text| nodeless_serverless::Size::parse(text).ok());
    if let Some(size) = annotated {
        return PodLimits {
            millicpu: Some(size.millicpu),
            memory_bytes: Some(size.memory_bytes),
        };
    }
    let Some(spec) = pod.spec.as_ref() else {
        return PodLimits::default();
    };
    let limit = |c: &k8s_openapi::api::core::v1::Container, key: &str, bytes: bool| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(key))
            .and_then(|q| nodeless_api::quantity::Quantity::parse(&q.0).ok())
            .map(|q| if bytes { q.to_bytes() } else { q.to_millis() }.max(0) as u64)
    };
    let sum = |key: &str, bytes: bool| -> Option<u64> {
        let mut total = 0u64;
        for c in &spec.containers {
            total += limit(c, key, bytes)?;
        }
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .filter_map(|c| limit(c, key, bytes))
            .max()
            .unwrap_or(0);
        Some(total.max(init))
    };
    PodLimits {
        millicpu: sum("cpu", false),
        memory_bytes: sum("memory", true),
    }
}

/// One pod's cgroup.
#[derive(Clone, Debug)]
pub struct PodCgroup {
    relative: String,
}

fn is_unified() -> bool {
    Path::new(CGROUP_MOUNT).join("cgroup.controllers").exists()
}

impl PodCgroup {
    /// The cgroup path given to CRI as `cgroup_parent` (`/nodeless/pod<uid>`).
    pub fn path(root: &str, uid: &str) -> String {
        format!("{}/pod{}", root.trim_end_matches('/'), uid)
    }

    /// The cgroup of the pod with this uid.
    pub fn new(root: &str, uid: &str) -> Self {
        Self {
            relative: Self::path(root, uid).trim_start_matches('/').to_string(),
        }
    }

    fn dir(&self, controller: Option<&str>) -> PathBuf {
        let mut dir = PathBuf::from(CGROUP_MOUNT);
        if let Some(controller) = controller {
            dir.push(controller);
        }
        dir.join(&self.relative)
    }

    /// Creates the cgroup with the pod's limits (before its sandbox starts in it).
    pub fn create(&self, limits: PodLimits) -> std::io::Result<()> {
        if is_unified() {
            let dir = self.dir(None);
            std::fs::create_dir_all(&dir)?;
            if let Some(bytes) = limits.memory_bytes {
                std::fs::write(dir.join("memory.max"), bytes.to_string())?;
            }
            if let Some(millicpu) = limits.millicpu {
                let quota = millicpu * CFS_PERIOD_US / 1000;
                std::fs::write(dir.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
            }
            return Ok(());
        }
        if let Some(bytes) = limits.memory_bytes {
            let dir = self.dir(Some("memory"));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
        }
        if let Some(millicpu) = limits.millicpu {
            let dir = self.dir(Some("cpu"));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
            let quota = (millicpu * CFS_PERIOD_US / 1000).max(1000);
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            std::fs::write(
                dir.join("cpu.shares"),
                (millicpu * 1024 / 1000).max(2).to_string(),
            )?;
        }
        Ok(())
    }

    /// The memory limit the kernel holds for the pod (bytes), if any.
    pub fn memory_limit(&self) -> Option<u64> {
        let path = if is_unified() {
            self.dir(None).join("memory.max")
        } else {
            self.dir(Some("memory")).join("memory.limit_in_bytes")
        };
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Removes the cgroup under every controller (its containers are gone by then).
    pub fn remove(&self) -> std::io::Result<()> {
        if is_unified() {
            return remove_dir_if_present(&self.dir(None));
        }
        let entries = std::fs::read_dir(CGROUP_MOUNT)?;
        for entry in entries.flatten() {
            let controller = entry.file_name();
            let Some(controller) = controller.to_str() else {
                continue;
            };
            if controller == "unified" {
                continue;
            }
            remove_dir_if_present(&self.dir(Some(controller)))?;
        }
        Ok(())
    }
}

/// A cgroup of the CPU controller whose processes run only when nothing else wants the CPU
/// (`cpu.idle`; the lowest weight on kernels without it), so they are never starved either.
#[derive(Clone, Debug)]
pub struct BackgroundCgroup {
    relative: String,
}

impl BackgroundCgroup {
    /// The cgroup at `path` (absolute, such as `/nodeless-background`).
    pub fn new(path: &str) -> Self {
        Self {
            relative: path.trim_matches('/').to_string(),
        }
    }

    /// Its path, as containerd's `ShimCgroup` takes it.
    pub fn path(&self) -> String {
        format!("/{}", self.relative)
    }

    fn dir(&self) -> PathBuf {
        let base = if is_unified() {
            PathBuf::from(CGROUP_MOUNT)
        } else {
            Path::new(CGROUP_MOUNT).join("cpu")
        };
        base.join(&self.relative)
    }

    /// Creates it (again, if it is there) at idle priority.
    pub fn create(&self) -> std::io::Result<()> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir)?;
        if dir.join("cpu.idle").exists() {
            std::fs::write(dir.join("cpu.idle"), "1")
        } else if is_unified() {
            std::fs::write(dir.join("cpu.weight"), "1")
        } else {
            std::fs::write(dir.join("cpu.shares"), "2")
        }
    }

    /// Whether it is there.
    pub fn exists(&self) -> bool {
        self.dir().exists()
    }

    /// Removes it once no process is left in it (one still there keeps it, not an error).
    pub fn remove(&self) -> std::io::Result<()> {
        match remove_dir_if_present(&self.dir()) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            other => other,
        }
    }
}

/// Whether process `pid` is in the CPU cgroup of this process (`false` when unknown).
pub fn shares_own_cpu_cgroup(pid: u32) -> bool {
    let unified = is_unified();
    let cpu_cgroup = |file: String| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| cpu_cgroup_of(&text, unified))
    };
    match (
        cpu_cgroup(format!("/proc/{pid}/cgroup")),
        cpu_cgroup("/proc/self/cgroup".into()),
    ) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// Moves process `pid`, all its threads, into the CPU cgroup of this process (where
/// containerd and the shims of pods' own sandboxes run).
pub fn move_to_own_cpu_cgroup(pid: u32) -> std::io::Result<()> {
    let unified = is_unified();
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let path = cpu_cgroup_of(&own, unified)
        .ok_or_else(|| std::io::Error::other("no CPU cgroup in /proc/self/cgroup"))?;
    let mut dir = PathBuf::from(CGROUP_MOUNT);
    if !unified {
        dir.push("cpu");
    }
    dir.push(path.trim_start_matches('/'));
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// The path of the CPU cgroup in a `/proc/<pid>/cgroup` text: v2's `0::<path>`, or v1's
/// line whose controllers include `cpu`.
fn cpu_cgroup_of(text: &str, unified: bool) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let found = if unified {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "cpu")
        };
        found.then(|| path.to_string())
    })
}

fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_cgroup_is_read_from_either_layout() {
        let v1 = "12:pids:/\n4:cpu,cpuacct:/system.slice/x.service\n1:name=systemd:/\n";
        assert_eq!(
            cpu_cgroup_of(v1, false).as_deref(),
            Some("/system.slice/x.service")
        );
        let hybrid = "5:cpuacct:/a\n4:cpu:/nodeless-background\n0::/user.slice\n";
        assert_eq!(
            cpu_cgroup_of(hybrid, false).as_deref(),
            Some("/nodeless-background")
        );
        assert_eq!(cpu_cgroup_of(hybrid, true).as_deref(), Some("/user.slice"));
        assert_eq!(cpu_cgroup_of("3:memory:/\n", false), None);
        assert_eq!(
            BackgroundCgroup::new("/nodeless-background/").path(),
            "/nodeless-background"
        );
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn provisioned_size_wins() {
        let p = pod(serde_json::json!({
            "metadata": {"annotations": {"nodeless.io/capacity-provisioned": "0.5vCPU 1GiB"}},
            "spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "100m"}}}]}
        }));
        assert_eq!(
            pod_limits(&p),
            PodLimits {
                millicpu: Some(500),
                memory_bytes: Some(1 << 30)
            }
        );
    }

    #[test]
    fn limits_are_summed_without_a_size() {
        let p = pod(serde_json::json!({
            "spec": {
                "initContainers": [{"name": "i", "resources": {"limits": {"memory": "1Gi"}}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}
                ]
            }
        }));
        assert_eq!(
            pod_limits(&p),
            PodLimits {
                millicpu: Some(1250),
                memory_bytes: Some(1 << 30)
            }
        );
        let unlimited = pod(serde_json::json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b", "resources": {"limits": {"cpu": "1"}}}]}
        }));
        assert_eq!(pod_limits(&unlimited), PodLimits::default());
    }

    #[test]
    fn paths_are_under_the_root() {
        assert_eq!(PodCgroup::path("/nodeless", "u1"), "/nodeless/podu1");
        assert_eq!(PodCgroup::path("/nodeless/", "u1"), "/nodeless/podu1");
        assert_eq!(
            PodCgroup::new("/nodeless", "u1").dir(Some("memory")),
            PathBuf::from("/sys/fs/cgroup/memory/nodeless/podu1")
        );
    }
}
