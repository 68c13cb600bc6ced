//! Volumes: the default StorageClass `standard`, a provisioner for it that gives every pending
//! PersistentVolumeClaim a PersistentVolume of its own and binds the two (as upstream's PV
//! controller does with an external provisioner), the retroactive default StorageClass
//! assignment, and the reclaim of a volume whose claim is gone.
//!
//! The volume's directory is made by the agent that mounts it: a PV here carries only a `csi`
//! source whose handle is the PV's name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{ControllerError, RETRY_AFTER};

/// The name of the StorageClass created at start.
pub const DEFAULT_CLASS: &str = "standard";
/// The provisioner this controller serves.
pub const PROVISIONER: &str = "nodeless.io/local";
/// The CSI driver named in the volumes it provisions (the agent maps handles to directories).
pub const CSI_DRIVER: &str = "local.nodeless.io";
/// The annotation marking the default StorageClass.
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta form of [`IS_DEFAULT_CLASS`], still honoured upstream.
const IS_DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The beta claim annotation naming a class; it wins over `spec.storageClassName`.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The PV annotation naming the provisioner that made it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// How soon a claim waiting for a (default) class is looked at again.
const CLASS_RETRY: Duration = Duration::from_secs(5);

struct Context {
    client: Client,
}

/// Ensures the default StorageClass exists, then runs the claim and volume controllers until
/// their watches end.
pub async fn run(client: Client) {
    while let Err(error) = ensure_default_class(&client).await {
        tracing::warn!(%error, "cannot create the default StorageClass yet");
        tokio::time::sleep(RETRY_AFTER).await;
    }
    let context = Arc::new(Context { client });
    tokio::join!(run_claims(context.clone()), run_volumes(context));
}

/// The default StorageClass `standard` as it is created (never updated afterwards).
pub fn default_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(DEFAULT_CLASS.into()),
            annotations: Some(BTreeMap::from([(IS_DEFAULT_CLASS.into(), "true".into())])),
            ..ObjectMeta::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..StorageClass::default()
    }
}

/// Creates [`default_class`] unless a class of that name exists (an operator's edits stay).
pub async fn ensure_default_class(client: &Client) -> Result<(), ControllerError> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    match classes
        .create(&PostParams::default(), &default_class())
        .await
    {
        Ok(_) => {
            tracing::info!(class = DEFAULT_CLASS, "default StorageClass created");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn run_claims(context: Arc<Context>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(context.client.clone());
    Controller::new(claims, watcher::Config::default())
        .run(reconcile_claim, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "claim reconcile");
            }
        })
        .await;
}

async fn run_volumes(context: Arc<Context>) {
    let client = context.client.clone();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client);
    Controller::new(volumes, watcher::Config::default())
        // A claim's deletion is what releases its volume.
        .watches(claims, watcher::Config::default(), |claim| {
            Some(ObjectRef::new(&volume_name_for(&claim)))
        })
        .run(reconcile_volume, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "volume reconcile");
            }
        })
        .await;
}

fn error_policy<K>(_object: Arc<K>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::debug!(%error, "volume controller will retry");
    Action::requeue(RETRY_AFTER)
}

/// The volume a claim is (or will be) bound to: its `spec.volumeName`, else `pvc-<uid>`.
pub fn volume_name_for(claim: &PersistentVolumeClaim) -> String {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("pvc-{}", claim.uid().unwrap_or_default()))
}

/// The class a claim asks for: the beta annotation, else `spec.storageClassName` (`None` when
/// neither is set; `Some("")` means "no class").
fn requested_class(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .annotations()
        .get(BETA_STORAGE_CLASS)
        .cloned()
        .or_else(|| claim.spec.as_ref()?.storage_class_name.clone())
}

fn is_default(class: &StorageClass) -> bool {
    let annotations = class.annotations();
    [IS_DEFAULT_CLASS, IS_DEFAULT_CLASS_BETA]
        .iter()
        .any(|key| annotations.get(*key).map(String::as_str) == Some("true"))
}

/// The default class: of several, the newest (then the first by name), as upstream picks.
async fn default_class_name(client: &Client) -> Result<Option<String>, ControllerError> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let mut defaults: Vec<StorageClass> = classes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(is_default)
        .collect();
    defaults.sort_by(|a, b| {
        b.creation_timestamp()
            .cmp(&a.creation_timestamp())
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    Ok(defaults.first().map(ResourceExt::name_any))
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let bound_to = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty());
    if phase == Some("Bound") || phase == Some("Lost") {
        return Ok(Action::await_change());
    }
    let Some(class_name) = requested_class(&claim) else {
        if bound_to.is_some() {
            return Ok(Action::await_change());
        }
        // Retroactive default StorageClass assignment for an unbound claim.
        let Some(default) = default_class_name(&ctx.client).await? else {
            return Ok(Action::requeue(CLASS_RETRY));
        };
        let patch = json!({
            "metadata": {"resourceVersion": claim.resource_version()},
            "spec": {"storageClassName": default},
        });
        claims
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(%namespace, claim = %name, class = %default, "default StorageClass assigned");
        return Ok(Action::await_change());
    };
    if class_name.is_empty() {
        // Static binding to pre-made volumes is not done here.
        return Ok(Action::await_change());
    }
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let Some(class) = classes.get_opt(&class_name).await? else {
        return Ok(Action::requeue(CLASS_RETRY));
    };
    if class.provisioner != PROVISIONER {
        return Ok(Action::await_change());
    }
    let Some(volume) = provisioned_volume(&claim, &class) else {
        tracing::warn!(%namespace, claim = %name, "claim requests no storage; not provisioned");
        return Ok(Action::await_change());
    };
    let volume_name = volume.name_any();
    if bound_to.is_some_and(|bound| bound != volume_name) {
        // Bound (by someone else) to a volume we did not make.
        return Ok(Action::await_change());
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let volume = match volumes.get_opt(&volume_name).await? {
        Some(existing) => existing,
        None => {
            let created = volumes.create(&PostParams::default(), &volume).await?;
            tracing::info!(%namespace, claim = %name, volume = %volume_name, "volume provisioned");
            created
        }
    };
    bind(&ctx.client, &claim, &volume).await?;
    tracing::info!(%namespace, claim = %name, volume = %volume_name, "claim bound");
    Ok(Action::await_change())
}

/// The volume to provision for `claim` of `class`; `None` if the claim requests no storage.
pub fn provisioned_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    let storage = spec.resources.as_ref()?.requests.as_ref()?.get("storage")?;
    let name = format!("pvc-{}", claim.uid()?);
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.into(),
                PROVISIONER.into(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".into(), storage.clone())])),
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: Some(class.name_any()),
            volume_mode: Some(
                spec.volume_mode
                    .clone()
                    .unwrap_or_else(|| "Filesystem".into()),
            ),
            mount_options: class.mount_options.clone(),
            csi: Some(CSIPersistentVolumeSource {
                driver: CSI_DRIVER.into(),
                volume_handle: name,
                ..CSIPersistentVolumeSource::default()
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.namespace(),
                name: Some(claim.name_any()),
                uid: claim.uid(),
                resource_version: claim.resource_version(),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

/// Binds `claim` to `volume`: the volume's phase, then the claim's `volumeName` and
/// annotations, then the claim's phase, capacity and access modes.
async fn bind(
    client: &Client,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<(), ControllerError> {
    let volume_name = volume.name_any();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    if volume.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        let patch = json!({"status": {"phase": "Bound"}});
        volumes
            .patch_status(&volume_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let namespace = claim.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let name = claim.name_any();
    let patch = json!({
        "metadata": {
            "resourceVersion": claim.resource_version(),
            "annotations": {
                BIND_COMPLETED: "yes",
                BOUND_BY_CONTROLLER: "yes",
                STORAGE_PROVISIONER: PROVISIONER,
                STORAGE_PROVISIONER_BETA: PROVISIONER,
            },
        },
        "spec": {"volumeName": volume_name},
    });
    claims
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let spec = volume.spec.as_ref();
    let patch = json!({"status": {
        "phase": "Bound",
        "capacity": spec.and_then(|s| s.capacity.clone()),
        "accessModes": spec.and_then(|s| s.access_modes.clone()),
    }});
    claims
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Released") | Some("Failed")) {
        return Ok(Action::await_change());
    }
    let Some(spec) = volume.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let Some(claim_ref) = spec.claim_ref.as_ref() else {
        return Ok(Action::await_change());
    };
    let (Some(namespace), Some(claim_name)) = (&claim_ref.namespace, &claim_ref.name) else {
        return Ok(Action::await_change());
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let claim = claims.get_opt(claim_name).await?;
    let claim_gone = match (&claim, &claim_ref.uid) {
        (None, _) => true,
        (Some(claim), Some(uid)) => claim.uid().as_deref() != Some(uid.as_str()),
        (Some(_), None) => false,
    };
    if !claim_gone {
        return Ok(Action::await_change());
    }
    let name = volume.name_any();
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Retain");
    let ours = volume.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
    if policy == "Delete" && ours {
        volumes.delete(&name, &DeleteParams::background()).await?;
        tracing::info!(volume = %name, claim = %claim_name, "volume of a deleted claim deleted");
    } else {
        let patch = json!({"status": {"phase": "Released"}});
        volumes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(volume = %name, claim = %claim_name, "volume released");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn claim(class: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("default".into()),
                uid: Some("1234".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: class.map(Into::into),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity("2Gi".into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn provisioned_volume_follows_claim_and_class() {
        let mut class = default_class();
        class.reclaim_policy = Some("Retain".into());
        let pv = provisioned_volume(&claim(Some("standard")), &class).unwrap();
        assert_eq!(pv.name_any(), "pvc-1234");
        assert_eq!(pv.annotations()[PROVISIONED_BY], PROVISIONER);
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("2Gi".into()));
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteOnce"]);
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        let csi = spec.csi.unwrap();
        assert_eq!(
            (csi.driver.as_str(), csi.volume_handle.as_str()),
            (CSI_DRIVER, "pvc-1234")
        );
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(claim_ref.name.as_deref(), Some("data"));
        assert_eq!(claim_ref.uid.as_deref(), Some("1234"));
    }

    #[test]
    fn claim_without_storage_request_is_not_provisioned() {
        let mut c = claim(None);
        c.spec.as_mut().unwrap().resources = None;
        assert!(provisioned_volume(&c, &default_class()).is_none());
    }

    #[test]
    fn requested_class_prefers_beta_annotation() {
        assert_eq!(requested_class(&claim(None)), None);
        assert_eq!(requested_class(&claim(Some(""))).as_deref(), Some(""));
        let mut c = claim(Some("standard"));
        c.metadata.annotations = Some(BTreeMap::from([(BETA_STORAGE_CLASS.into(), "fast".into())]));
        assert_eq!(requested_class(&c).as_deref(), Some("fast"));
    }

    #[test]
    fn default_class_is_marked_default() {
        let class = default_class();
        assert!(is_default(&class));
        assert_eq!(class.provisioner, PROVISIONER);
        let mut other = default_class();
        other.metadata.annotations = None;
        assert!(!is_default(&other));
    }

    #[test]
    fn volume_name_prefers_spec() {
        let mut c = claim(None);
        assert_eq!(volume_name_for(&c), "pvc-1234");
        c.spec.as_mut().unwrap().volume_name = Some("pv-static".into());
        assert_eq!(volume_name_for(&c), "pv-static");
    }
}
