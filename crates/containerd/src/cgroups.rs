//! The pod-level cgroup: `<root>/pod<uid>` under each controller, holding the pod's
//! provisioned size (CRI puts no limits on a sandbox's parent, so the agent sets them, as the
//! kubelet does). Both layouts are handled: cgroup v1 (also "hybrid", v1 controllers with a v2
//! mount beside them) and the unified v2 hierarchy.

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
