//! `apps/v1`: Deployment, ReplicaSet, StatefulSet, DaemonSet.

use serde_json::Value;

use super::core::{validate_pod_template, validate_pvc_spec, validate_template_restart_always};
use super::{
    immutable, int_or_percent, is_zero_int_or_percent, nonnegative, obj_at, objects_at, one_of,
    validate_workload_selector, Object,
};
use crate::error::{FieldError, FieldPath};

/// The message upstream gives for a forbidden StatefulSet spec update.
pub const STATEFUL_SET_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

pub(super) fn validate(kind: &str, obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    if !matches!(
        kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
    ) {
        // ControllerRevision has no spec.
        return;
    }
    let Some(spec) = obj_at(obj, "spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    let old_spec = old.and_then(|o| obj_at(o, "spec"));
    match kind {
        "Deployment" => validate_deployment(spec, &path, errs),
        "ReplicaSet" => validate_replica_set(spec, &path, errs),
        "StatefulSet" => validate_stateful_set(spec, old_spec, &path, errs),
        "DaemonSet" => validate_daemon_set(spec, &path, errs),
        _ => return,
    }
    if let Some(old_spec) = old_spec {
        // apps/v1 selectors never change.
        immutable(spec, old_spec, "selector", &path, errs);
    }
}

/// Selector, template and the template's restart policy, shared by every apps kind.
fn validate_selector_and_template(
    spec: &Object,
    path: &FieldPath,
    kind_word: &str,
    errs: &mut Vec<FieldError>,
) {
    let template = spec.get("template").filter(|t| !t.is_null());
    let labels = template
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"));
    let empty_labels = Value::Object(Object::new());
    validate_workload_selector(
        spec,
        path,
        &format!("empty selector is invalid for {kind_word}"),
        template.map(|_| labels.unwrap_or(&empty_labels)),
        errs,
    );
    match template {
        None => errs.push(FieldError::required(path.child("template"), "")),
        Some(template) => {
            validate_pod_template(template, &path.child("template"), errs);
            validate_template_restart_always(template, &path.child("template"), errs);
        }
    }
}

fn validate_rolling_update(rolling: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    let surge = rolling.get("maxSurge");
    let unavailable = rolling.get("maxUnavailable");
    if let Some(surge) = surge {
        int_or_percent(surge, &path.child("maxSurge"), false, errs);
    }
    if let Some(unavailable) = unavailable {
        int_or_percent(unavailable, &path.child("maxUnavailable"), true, errs);
    }
    if is_zero_int_or_percent(unavailable) && (surge.is_none() || is_zero_int_or_percent(surge)) {
        errs.push(FieldError::invalid(
            path.child("maxUnavailable"),
            unavailable.cloned().unwrap_or_default(),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn validate_deployment(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    nonnegative(spec, "replicas", path, errs);
    validate_selector_and_template(spec, path, "deployment", errs);
    if let Some(strategy) = obj_at(spec, "strategy") {
        let strategy_path = path.child("strategy");
        one_of(
            strategy,
            "type",
            &["Recreate", "RollingUpdate"],
            true,
            &strategy_path,
            errs,
        );
        let rolling = obj_at(strategy, "rollingUpdate");
        match strategy.get("type").and_then(Value::as_str) {
            Some("Recreate") if rolling.is_some() => errs.push(FieldError::forbidden(
                strategy_path.child("rollingUpdate"),
                "may not be specified when strategy `type` is 'Recreate'",
            )),
            Some("RollingUpdate") => {
                if let Some(rolling) = rolling {
                    validate_rolling_update(rolling, &strategy_path.child("rollingUpdate"), errs);
                }
            }
            _ => {}
        }
    }
    nonnegative(spec, "minReadySeconds", path, errs);
    nonnegative(spec, "revisionHistoryLimit", path, errs);
    nonnegative(spec, "progressDeadlineSeconds", path, errs);
    let deadline = spec.get("progressDeadlineSeconds").and_then(Value::as_i64);
    let min_ready = spec
        .get("minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(deadline) = deadline {
        if deadline >= 0 && deadline <= min_ready {
            errs.push(FieldError::invalid(
                path.child("progressDeadlineSeconds"),
                deadline.into(),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn validate_replica_set(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    nonnegative(spec, "replicas", path, errs);
    nonnegative(spec, "minReadySeconds", path, errs);
    // Upstream's ReplicaSet validation reuses the Deployment wording.
    validate_selector_and_template(spec, path, "deployment", errs);
}

fn validate_stateful_set(
    spec: &Object,
    old_spec: Option<&Object>,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    one_of(
        spec,
        "podManagementPolicy",
        &["OrderedReady", "Parallel"],
        true,
        path,
        errs,
    );
    if let Some(strategy) = obj_at(spec, "updateStrategy") {
        let strategy_path = path.child("updateStrategy");
        one_of(
            strategy,
            "type",
            &["RollingUpdate", "OnDelete"],
            true,
            &strategy_path,
            errs,
        );
        if let Some(rolling) = obj_at(strategy, "rollingUpdate") {
            let rolling_path = strategy_path.child("rollingUpdate");
            if strategy.get("type").and_then(Value::as_str) == Some("OnDelete") {
                errs.push(FieldError::invalid(
                    &rolling_path,
                    Value::Object(rolling.clone()),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
            nonnegative(rolling, "partition", &rolling_path, errs);
            if let Some(max) = rolling.get("maxUnavailable").filter(|v| !v.is_null()) {
                int_or_percent(max, &rolling_path.child("maxUnavailable"), true, errs);
                if is_zero_int_or_percent(Some(max)) {
                    errs.push(FieldError::invalid(
                        rolling_path.child("maxUnavailable"),
                        max.clone(),
                        "must be greater than 0",
                    ));
                }
            }
        }
    }
    if let Some(policy) = obj_at(spec, "persistentVolumeClaimRetentionPolicy") {
        let policy_path = path.child("persistentVolumeClaimRetentionPolicy");
        one_of(
            policy,
            "whenDeleted",
            &["Retain", "Delete"],
            false,
            &policy_path,
            errs,
        );
        one_of(
            policy,
            "whenScaled",
            &["Retain", "Delete"],
            false,
            &policy_path,
            errs,
        );
    }
    nonnegative(spec, "replicas", path, errs);
    nonnegative(spec, "minReadySeconds", path, errs);
    nonnegative(spec, "revisionHistoryLimit", path, errs);
    if let Some(ordinals) = obj_at(spec, "ordinals") {
        nonnegative(ordinals, "start", &path.child("ordinals"), errs);
    }
    for (i, claim) in objects_at(spec, "volumeClaimTemplates") {
        let claim_path = path.child("volumeClaimTemplates").index(i);
        if let Some(claim_spec) = obj_at(claim, "spec") {
            validate_pvc_spec(claim_spec, &claim_path.child("spec"), errs);
        }
    }
    validate_selector_and_template(&with_claim_volumes(spec), path, "statefulset", errs);
    if let Some(old_spec) = old_spec {
        const MUTABLE: &[&str] = &[
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ];
        let strip = |s: &Object| {
            let mut s = s.clone();
            for key in MUTABLE {
                s.remove(*key);
            }
            // The selector has its own immutability error.
            s.remove("selector");
            s
        };
        if strip(spec) != strip(old_spec) {
            errs.push(FieldError::forbidden(
                path,
                super::apps::STATEFUL_SET_UPDATE_FORBIDDEN,
            ));
        }
    }
}

/// The spec with a volume for every claim template the template does not already name, as
/// the set's pods get them: mounts of the claims are valid (upstream does not validate a
/// StatefulSet's pod spec at all, for this reason).
fn with_claim_volumes(spec: &Object) -> Object {
    let mut spec = spec.clone();
    let claims: Vec<String> = objects_at(&spec, "volumeClaimTemplates")
        .into_iter()
        .filter_map(|(_, claim)| {
            claim
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let Some(pod_spec) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    else {
        return spec;
    };
    let volumes = pod_spec
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(volumes) = volumes.as_array_mut() {
        for claim in claims {
            let named = volumes
                .iter()
                .any(|v| v.get("name").and_then(Value::as_str) == Some(claim.as_str()));
            if !named {
                volumes.push(serde_json::json!({
                    "name": claim,
                    "persistentVolumeClaim": {"claimName": claim},
                }));
            }
        }
    }
    spec
}

fn validate_daemon_set(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    validate_selector_and_template(spec, path, "daemonset", errs);
    if let Some(strategy) = obj_at(spec, "updateStrategy") {
        let strategy_path = path.child("updateStrategy");
        one_of(
            strategy,
            "type",
            &["OnDelete", "RollingUpdate"],
            true,
            &strategy_path,
            errs,
        );
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(rolling) = obj_at(strategy, "rollingUpdate") {
                validate_rolling_update(rolling, &strategy_path.child("rollingUpdate"), errs);
            }
        }
    }
    nonnegative(spec, "minReadySeconds", path, errs);
    nonnegative(spec, "revisionHistoryLimit", path, errs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateful_set_templates_may_mount_their_claims() {
        let set = serde_json::json!({"spec": {
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"restartPolicy": "Always", "containers": [{
                    "name": "c", "image": "busybox", "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                    "volumeMounts": [{"name": "www", "mountPath": "/data"}]
                }]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}
            }}]
        }});
        let object = set.as_object().unwrap();
        let mut errs = Vec::new();
        validate("StatefulSet", object, None, &mut errs);
        let mounts: Vec<_> = errs
            .iter()
            .filter(|e| format!("{e:?}").contains("volumeMounts"))
            .collect();
        assert!(mounts.is_empty(), "{errs:?}");
        // Without the claim template, the mount names nothing.
        let mut without = object.clone();
        without["spec"]
            .as_object_mut()
            .unwrap()
            .remove("volumeClaimTemplates");
        let mut errs = Vec::new();
        validate("StatefulSet", &without, None, &mut errs);
        assert!(
            errs.iter()
                .any(|e| format!("{e:?}").contains("volumeMounts")),
            "{errs:?}"
        );
    }
}
