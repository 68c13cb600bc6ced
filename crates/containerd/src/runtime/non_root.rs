//! `securityContext.runAsNonRoot`: a container that would run as uid 0 (its `runAsUser`, or
//! else its image's user) is refused before it is created, as upstream's
//! `verifyRunAsNonRoot`; the pod shows `CreateContainerConfigError` with the message.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The user an image runs as, from CRI `ImageStatus`: a numeric uid, or else a user name.
/// An image that names neither runs as root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ImageUser {
    /// A numeric user (`1000` or `1000:1000` in the image config).
    Uid(i64),
    /// A user name the runtime did not resolve (`nobody`).
    Name(String),
}

impl ImageUser {
    /// The user of CRI's image status (`uid` over `username`; neither: root).
    pub(super) fn from_status(uid: Option<i64>, username: &str) -> Self {
        match uid {
            Some(uid) => Self::Uid(uid),
            None if !username.is_empty() => Self::Name(username.to_string()),
            None => Self::Uid(0),
        }
    }
}

/// How upstream names a pod in its messages (`format.Pod`): `<name>_<namespace>(<uid>)`.
fn pod_desc(pod: &Pod) -> String {
    let meta = &pod.metadata;
    format!(
        "{}_{}({})",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default()
    )
}

/// Whether the container's effective security context (the container's over the pod's)
/// asks for `runAsNonRoot`, and its effective `runAsUser`.
pub(super) fn effective_non_root(pod: &Pod, container: &Container) -> (bool, Option<i64>) {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let own = container.security_context.as_ref();
    let non_root = own
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let run_as_user = own
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    (non_root, run_as_user)
}

/// Whether the image's user must be known to decide (`runAsNonRoot` without `runAsUser`).
pub(super) fn needs_image_user(pod: &Pod, container: &Container) -> bool {
    matches!(effective_non_root(pod, container), (true, None))
}

/// Upstream's `verifyRunAsNonRoot`: `Err` with upstream's message when the container would
/// run as root (or as a user that cannot be checked) under `runAsNonRoot`. `image_user` is
/// only read when the container has no `runAsUser`.
pub(super) fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user: Option<&ImageUser>,
) -> Result<(), String> {
    let (non_root, run_as_user) = effective_non_root(pod, container);
    if !non_root {
        return Ok(());
    }
    let pod_name = pod_desc(pod);
    let name = &container.name;
    if let Some(uid) = run_as_user {
        if uid == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_name:?}, container: {name})"
            ));
        }
        return Ok(());
    }
    match image_user {
        Some(ImageUser::Name(user)) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod_name:?}, container: {name})"
        )),
        Some(ImageUser::Uid(0)) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod_name:?}, container: {name})"
        )),
        Some(ImageUser::Uid(uid)) if *uid < 0 || *uid > i64::from(i32::MAX) => Err(format!(
            "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({})): must be between 0 and {}, inclusive (pod: {pod_name:?}, container: {name})",
            i32::MAX,
            i32::MAX
        )),
        Some(ImageUser::Uid(_)) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(pod_sc: serde_json::Value, container_sc: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "securityContext": pod_sc,
                "containers": [{"name": "app", "image": "busybox", "securityContext": container_sc}],
            },
        }))
        .unwrap();
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, container)
    }

    #[test]
    fn an_image_running_as_root_is_refused_with_upstreams_message() {
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
        );
        assert!(needs_image_user(&p, &c));
        let root = ImageUser::from_status(None, "");
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&root)),
            Err(r#"container has runAsNonRoot and image will run as root (pod: "p_ns(u1)", container: app)"#.to_string())
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&ImageUser::from_status(Some(0), ""))),
            Err(r#"container has runAsNonRoot and image will run as root (pod: "p_ns(u1)", container: app)"#.to_string())
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&ImageUser::Uid(1000))),
            Ok(())
        );
    }

    #[test]
    fn a_named_image_user_cannot_be_verified() {
        let (p, c) = pod(
            serde_json::json!({}),
            serde_json::json!({"runAsNonRoot": true}),
        );
        let user = ImageUser::from_status(None, "nobody");
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&user)),
            Err(r#"container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: "p_ns(u1)", container: app)"#.to_string())
        );
    }

    #[test]
    fn run_as_user_decides_without_the_image() {
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}),
            serde_json::json!({}),
        );
        assert!(!needs_image_user(&p, &c));
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&ImageUser::Uid(0))),
            Ok(())
        );
        // The container's runAsUser wins over the pod's.
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}),
            serde_json::json!({"runAsUser": 0}),
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, None),
            Err(
                r#"container's runAsUser breaks non-root policy (pod: "p_ns(u1)", container: app)"#
                    .to_string()
            )
        );
    }

    #[test]
    fn the_containers_run_as_non_root_wins_over_the_pods() {
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsNonRoot": false}),
        );
        assert!(!needs_image_user(&p, &c));
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&ImageUser::Uid(0))),
            Ok(())
        );
        let (p, c) = pod(
            serde_json::json!({"runAsNonRoot": false}),
            serde_json::json!({"runAsNonRoot": true}),
        );
        assert!(verify_run_as_non_root(&p, &c, Some(&ImageUser::Uid(0))).is_err());
        let (p, c) = pod(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(&ImageUser::Uid(0))),
            Ok(())
        );
    }
}
