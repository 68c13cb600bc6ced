//! The ServiceAccount admission plugin (upstream's `plugin/pkg/admission/serviceaccount`): on
//! pod creation, give the pod the namespace's `default` service account when it names none,
//! refuse a pod whose service account does not exist, copy the service account's
//! `imagePullSecrets` to a pod that has none, and, unless `automountServiceAccountToken` is
//! false on the pod or the service account, add the `kube-api-access-xxxxx` projected volume
//! (a bound token, the cluster CA, the namespace) mounted read-only at
//! [`TOKEN_MOUNT_PATH`] in every container and init container.
//!
//! Mirror pods are not changed and may not reference service accounts or token projections.
//! Updates are not looked at (the pod spec is immutable where it matters).

use std::time::Duration;

use nodeless_apiserver::admission::{AdmissionPlugin, AdmissionRequest, Operation};
use nodeless_apiserver::ApiError;
use serde_json::{json, Value};

/// The service account a pod runs as when it names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the token volume's name.
pub const VOLUME_NAME_PREFIX: &str = "kube-api-access-";
/// The lifetime the projected token asks for (upstream's 3607 s: one hour and a bit, so that
/// the extended-expiry tokens of the kubelet can be told apart).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap with the cluster CA that every namespace gets (root CA publisher).
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The annotation of mirror pods.
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// How often the `default` service account is looked up before the pod is refused: just
/// after a namespace is created (or the server started), the service account controller may
/// not have made it yet. Upstream tries 10 times over 1-2 s; a busy machine running several
/// clusters needs longer, so this waits up to 5 s.
const DEFAULT_ACCOUNT_ATTEMPTS: u32 = 25;
/// The pause between two lookups of the `default` service account.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// The plugin; see the module documentation.
#[derive(Debug, Clone)]
pub struct ServiceAccountAdmission {
    attempts_for_default: u32,
    retry_interval: Duration,
}

impl Default for ServiceAccountAdmission {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceAccountAdmission {
    /// The plugin with upstream's retries for the `default` service account.
    pub fn new() -> Self {
        Self {
            attempts_for_default: DEFAULT_ACCOUNT_ATTEMPTS,
            retry_interval: RETRY_INTERVAL,
        }
    }

    /// Looks up `namespace/name`, several times for `default`; `None` when it does not exist.
    async fn service_account(
        &self,
        request: &AdmissionRequest<'_>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let Some(kind) = nodeless_api::registry::by_plural("", "v1", "serviceaccounts") else {
            return Err(ApiError::internal("no serviceaccounts in the registry"));
        };
        let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
            self.attempts_for_default.max(1)
        } else {
            1
        };
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.retry_interval).await;
            }
            if let Some(sa) = request
                .storage
                .get(kind, Some(request.namespace), name)
                .await?
            {
                return Ok(Some(sa));
            }
        }
        Ok(None)
    }
}

fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
}

fn pod_name(pod: &Value) -> String {
    let meta = pod.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    field("name")
        .or_else(|| field("generateName"))
        .unwrap_or_default()
        .to_string()
}

fn has_token_projection(pod: &Value) -> bool {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
        .flatten()
        .any(|s| s.get("serviceAccountToken").is_some())
}

/// Five characters of upstream's name generator alphabet (no vowels, no confusable digits).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut bits = hasher.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The projected volume of a pod's API access.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                { "serviceAccountToken": { "expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token" } },
                { "configMap": { "name": ROOT_CA_CONFIG_MAP, "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
            ],
        },
    })
}

/// Whether `automountServiceAccountToken` allows the token volume: the pod's setting wins,
/// then the service account's; on by default.
fn should_automount(pod: &Value, sa: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// Adds the token volume (reusing a `kube-api-access-` volume the pod has) and mounts it in
/// every container that does not mount something at [`TOKEN_MOUNT_PATH`] already.
fn mount_token(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_NAME_PREFIX))
        .map(str::to_string);
    let has_volume = existing.is_some();
    let volume_name =
        existing.unwrap_or_else(|| format!("{VOLUME_NAME_PREFIX}{}", random_suffix()));
    let mount = json!({ "name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH });
    let mut needs_volume = false;
    for field in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(mount.clone());
                needs_volume = true;
            }
        }
    }
    if needs_volume && !has_volume {
        let volumes = spec
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&volume_name));
        }
    }
}

#[async_trait::async_trait]
impl AdmissionPlugin for ServiceAccountAdmission {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        if (request.kind.group, request.kind.kind) != ("", "Pod")
            || request.subresource.is_some()
            || request.operation != Operation::Create
        {
            return Ok(Vec::new());
        }
        let name = pod_name(obj);
        let forbidden = |message: String| ApiError::forbidden(request.kind, &name, message);
        if is_mirror_pod(obj) {
            let named = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if named {
                return Err(forbidden(
                    "a mirror pod may not reference service accounts".into(),
                ));
            }
            if has_token_projection(obj) {
                return Err(forbidden(
                    "a mirror pod may not use ServiceAccountToken volume projections".into(),
                ));
            }
            return Ok(Vec::new());
        }
        let account = match obj
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
        {
            Some(sa) if !sa.is_empty() => sa.to_string(),
            _ => DEFAULT_SERVICE_ACCOUNT.to_string(),
        };
        let Some(sa) = self.service_account(request, &account).await? else {
            return Err(forbidden(format!(
                "error looking up service account {}/{account}: serviceaccount \"{account}\" not found",
                request.namespace
            )));
        };
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("serviceAccountName".into(), json!(account));
            let no_pull_secrets = spec
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if let Some(secrets) = sa
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .filter(|s| no_pull_secrets && !s.is_empty())
            {
                spec.insert("imagePullSecrets".into(), Value::Array(secrets.clone()));
            }
        }
        if should_automount(obj, &sa) {
            mount_token(obj);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({ "metadata": { "name": "web", "namespace": "team" }, "spec": spec })
    }

    fn mounts(pod: &Value, field: &str, i: usize) -> Vec<Value> {
        pod["spec"][field][i]["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn every_container_mounts_one_new_projected_volume() {
        let mut p = pod(json!({
            "initContainers": [{ "name": "init", "image": "busybox" }],
            "containers": [
                { "name": "a", "image": "busybox" },
                { "name": "b", "image": "busybox", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
            ],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        }));
        mount_token(&mut p);
        let volumes = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_NAME_PREFIX) && name.len() == VOLUME_NAME_PREFIX.len() + 5);
        let sources = volumes[1]["projected"]["sources"].as_array().unwrap();
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], ROOT_CA_CONFIG_MAP);
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        for (field, i) in [("initContainers", 0), ("containers", 0), ("containers", 1)] {
            let m = mounts(&p, field, i);
            let token = m
                .iter()
                .find(|m| m["mountPath"] == TOKEN_MOUNT_PATH)
                .unwrap();
            assert_eq!(token["name"], name);
            assert_eq!(token["readOnly"], true);
        }
        assert_eq!(mounts(&p, "containers", 1).len(), 2);
    }

    #[test]
    fn a_container_with_its_own_mount_at_the_path_keeps_it() {
        let mut p = pod(json!({
            "containers": [{ "name": "a", "image": "busybox", "volumeMounts": [{ "name": "mine", "mountPath": TOKEN_MOUNT_PATH }] }],
            "volumes": [{ "name": "mine", "emptyDir": {} }],
        }));
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(mounts(&p, "containers", 0).len(), 1);
    }

    #[test]
    fn an_existing_api_access_volume_is_reused() {
        let mut p = pod(json!({
            "containers": [{ "name": "a", "image": "busybox" }],
            "volumes": [token_volume("kube-api-access-abcde")],
        }));
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            mounts(&p, "containers", 0)[0]["name"],
            "kube-api-access-abcde"
        );
    }

    #[test]
    fn automount_pod_setting_wins_over_the_service_account() {
        let sa_off = json!({ "automountServiceAccountToken": false });
        let sa_unset = json!({});
        assert!(should_automount(&pod(json!({})), &sa_unset));
        assert!(!should_automount(&pod(json!({})), &sa_off));
        assert!(should_automount(
            &pod(json!({ "automountServiceAccountToken": true })),
            &sa_off
        ));
        assert!(!should_automount(
            &pod(json!({ "automountServiceAccountToken": false })),
            &sa_unset
        ));
    }

    #[test]
    fn suffixes_use_the_name_alphabet() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert!(is_mirror_pod(
            &json!({ "metadata": { "annotations": { MIRROR_POD_ANNOTATION: "x" } } })
        ));
        assert!(has_token_projection(&pod(
            json!({ "volumes": [token_volume("v")] })
        )));
    }

    mod admit {
        use std::sync::Arc;

        use nodeless_apiserver::admission::Storage;

        use super::*;

        fn plugin() -> ServiceAccountAdmission {
            ServiceAccountAdmission {
                attempts_for_default: 3,
                retry_interval: Duration::from_millis(5),
            }
        }

        fn storage(dir: &tempfile::TempDir) -> Storage {
            let store = nodeless_store::SqliteStore::open(dir.path().join("db")).unwrap();
            Storage::new(Arc::new(store))
        }

        async fn add_account(storage: &Storage, name: &str, extra: Value) {
            let kind = nodeless_api::registry::by_plural("", "v1", "serviceaccounts").unwrap();
            let mut sa = json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name, "namespace": "team", "uid": format!("uid-{name}") } });
            if let (Some(sa), Some(extra)) = (sa.as_object_mut(), extra.as_object()) {
                sa.extend(extra.clone());
            }
            storage.create(kind, &sa).await.unwrap();
        }

        async fn run(
            storage: &Storage,
            op: Operation,
            obj: &mut Value,
        ) -> Result<Vec<String>, ApiError> {
            let kind = nodeless_api::registry::by_plural("", "v1", "pods").unwrap();
            let request = AdmissionRequest {
                kind,
                operation: op,
                subresource: None,
                old: None,
                dry_run: false,
                namespace: "team",
                user: None,
                storage,
            };
            plugin().admit(&request, obj).await
        }

        fn busybox(extra: Value) -> Value {
            let mut spec = json!({ "containers": [{ "name": "a", "image": "busybox" }] });
            if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
                spec.extend(extra.clone());
            }
            pod(spec)
        }

        #[tokio::test]
        async fn a_missing_service_account_is_forbidden_as_upstream_words_it() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            let err = run(&storage, Operation::Create, &mut busybox(json!({})))
                .await
                .unwrap_err();
            assert_eq!(err.code, 403);
            assert_eq!(
                err.message,
                "pods \"web\" is forbidden: error looking up service account team/default: serviceaccount \"default\" not found"
            );
            let err = run(
                &storage,
                Operation::Create,
                &mut busybox(json!({ "serviceAccountName": "robot" })),
            )
            .await
            .unwrap_err();
            assert!(err.message.contains("team/robot"), "{}", err.message);
            // Updates are not looked at.
            assert!(run(&storage, Operation::Update, &mut busybox(json!({})))
                .await
                .is_ok());
        }

        #[tokio::test]
        async fn the_default_account_is_assigned_and_its_token_mounted() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_account(
                &storage,
                "default",
                json!({ "imagePullSecrets": [{ "name": "regcred" }] }),
            )
            .await;
            let mut p = busybox(json!({}));
            run(&storage, Operation::Create, &mut p).await.unwrap();
            assert_eq!(p["spec"]["serviceAccountName"], "default");
            assert_eq!(p["spec"]["imagePullSecrets"][0]["name"], "regcred");
            let volume = &p["spec"]["volumes"][0];
            assert!(volume["name"]
                .as_str()
                .unwrap()
                .starts_with(VOLUME_NAME_PREFIX));
            assert_eq!(
                mounts(&p, "containers", 0)[0]["mountPath"],
                TOKEN_MOUNT_PATH
            );
        }

        #[tokio::test]
        async fn automount_off_on_the_account_skips_the_volume() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            add_account(
                &storage,
                "quiet",
                json!({ "automountServiceAccountToken": false }),
            )
            .await;
            let mut p = busybox(
                json!({ "serviceAccountName": "quiet", "imagePullSecrets": [{ "name": "own" }] }),
            );
            run(&storage, Operation::Create, &mut p).await.unwrap();
            assert!(p["spec"].get("volumes").is_none());
            assert!(mounts(&p, "containers", 0).is_empty());
            assert_eq!(p["spec"]["imagePullSecrets"][0]["name"], "own");
        }

        #[tokio::test]
        async fn mirror_pods_are_left_alone_but_may_not_name_accounts() {
            let dir = tempfile::tempdir().unwrap();
            let storage = storage(&dir);
            let mut p = busybox(json!({}));
            p["metadata"]["annotations"] = json!({ MIRROR_POD_ANNOTATION: "hash" });
            let before = p.clone();
            run(&storage, Operation::Create, &mut p).await.unwrap();
            assert_eq!(p, before);
            p["spec"]["serviceAccountName"] = json!("default");
            let err = run(&storage, Operation::Create, &mut p).await.unwrap_err();
            assert!(err
                .message
                .contains("mirror pod may not reference service accounts"));
        }
    }
}
