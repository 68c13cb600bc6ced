//! Where container logs live: one file per container attempt, in the CRI log format
//! (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`), laid out as the kubelet lays out
//! `/var/log/pods`: `<state dir>/logs/<namespace>_<pod>_<uid>/<container>/<attempt>.log`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// The folder of one pod's logs.
pub fn pod_log_dir(state_dir: &Path, pod: &Pod) -> PathBuf {
    let meta = &pod.metadata;
    state_dir.join("logs").join(format!(
        "{}_{}_{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    ))
}

/// The log file of one attempt (`restartCount`) of a container, relative to [`pod_log_dir`].
pub fn container_log_relative(container: &str, attempt: u32) -> PathBuf {
    Path::new(container).join(format!("{attempt}.log"))
}

/// The log file of one attempt of a container.
pub fn container_log_path(state_dir: &Path, pod: &Pod, container: &str, attempt: u32) -> PathBuf {
    pod_log_dir(state_dir, pod).join(container_log_relative(container, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    #[test]
    fn paths_follow_the_kubelet_layout() {
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("web-1".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        assert_eq!(
            container_log_path(Path::new("/s"), &pod, "app", 2),
            PathBuf::from("/s/logs/shop_web-1_u-1/app/2.log")
        );
    }
}
