//! A pod's volumes on the host, laid out as the kubelet does:
//! `state_dir/pods/<uid>/volumes/<plugin>/<name>` (`kubernetes.io~empty-dir`,
//! `kubernetes.io~configmap`…); persistent volumes of the local CSI driver live apart, in
//! `state_dir/volumes/<volumeHandle>`, and outlive the pods that use them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, EmptyDirVolumeSource, KeyToPath, Pod, Volume,
};
use nodeless_api::quantity::Quantity;

use super::env::{container_resource_value, field_value};
use super::expand::expand;
use super::sources::Sources;
use super::writer::{self, apply_fs_group, create_dir_all, io_error, FileProjection, Payload};
use super::InputError;
use crate::runtime::Mount;

/// The CSI driver whose volumes are folders on this machine (see the volumes controller).
pub const LOCAL_CSI_DRIVER: &str = "local.nodeless.io";

/// The mode of a projected file when neither `defaultMode` nor the item's `mode` says.
const DEFAULT_MODE: u32 = 0o644;

/// A volume as it exists on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostVolume {
    /// Its folder.
    pub path: PathBuf,
    /// The volume is read-only whatever the mount says (API data volumes, `readOnly` claims).
    pub read_only: bool,
}

/// The folder of everything the agent keeps for one pod.
pub(crate) fn pod_dir(state_dir: &Path, pod_uid: &str) -> PathBuf {
    state_dir.join("pods").join(pod_uid)
}

fn volume_dir(state_dir: &Path, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(state_dir, pod_uid)
        .join("volumes")
        .join(plugin)
        .join(name)
}

/// The folder of a local persistent volume.
pub(crate) fn persistent_volume_dir(state_dir: &Path, handle: &str) -> PathBuf {
    state_dir.join("volumes").join(handle)
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

fn mode_of(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(default) & 0o7777
}

/// Sets up every volume of the pod (idempotent: an emptyDir keeps its content, API data is
/// rewritten only when it changed) and returns them by name.
pub(crate) async fn materialise(
    sources: &mut Sources<'_>,
    state_dir: &Path,
    pod: &Pod,
    pod_ip: Option<IpAddr>,
) -> Result<HashMap<String, HostVolume>, InputError> {
    let uid = pod_uid(pod)?;
    let mut volumes = HashMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let host = materialise_one(sources, state_dir, uid, pod, pod_ip, volume)
            .await
            .map_err(|e| match e {
                InputError::Missing(m) => InputError::Missing(format!(
                    "MountVolume.SetUp failed for volume {:?} : {m}",
                    volume.name
                )),
                other => other,
            })?;
        volumes.insert(volume.name.clone(), host);
    }
    Ok(volumes)
}

/// Rewrites the configMap, secret, downwardAPI and projected volumes of a running pod whose
/// folders exist; cheap when nothing changed (one read of each source, no write).
pub(crate) async fn refresh(
    sources: &mut Sources<'_>,
    state_dir: &Path,
    pod: &Pod,
) -> Result<(), InputError> {
    let uid = pod_uid(pod)?;
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let mut first_error = None;
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(plugin) = api_data_plugin(volume) else {
            continue;
        };
        if !volume_dir(state_dir, uid, plugin, &volume.name).is_dir() {
            continue;
        }
        if let Err(error) = materialise_one(sources, state_dir, uid, pod, pod_ip, volume).await {
            tracing::warn!(volume = %volume.name, %error, "volume refresh failed");
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn api_data_plugin(volume: &Volume) -> Option<&'static str> {
    if volume.config_map.is_some() {
        Some("kubernetes.io~configmap")
    } else if volume.secret.is_some() {
        Some("kubernetes.io~secret")
    } else if volume.downward_api.is_some() {
        Some("kubernetes.io~downward-api")
    } else if volume.projected.is_some() {
        Some("kubernetes.io~projected")
    } else {
        None
    }
}

fn pod_uid(pod: &Pod) -> Result<&str, InputError> {
    match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() && !uid.contains('/') && uid != ".." => Ok(uid),
        _ => Err(InputError::Invalid("the pod has no usable uid".to_string())),
    }
}

async fn materialise_one(
    sources: &mut Sources<'_>,
    state_dir: &Path,
    uid: &str,
    pod: &Pod,
    pod_ip: Option<IpAddr>,
    volume: &Volume,
) -> Result<HostVolume, InputError> {
    let group = fs_group(pod);
    if let Some(empty_dir) = &volume.empty_dir {
        let dir = volume_dir(state_dir, uid, "kubernetes.io~empty-dir", &volume.name);
        setup_empty_dir(&dir, empty_dir, pod, group).await?;
        return Ok(HostVolume {
            path: dir,
            read_only: false,
        });
    }
    if let Some(plugin) = api_data_plugin(volume) {
        let payload = api_data_payload(sources, pod, pod_ip, volume).await?;
        let dir = volume_dir(state_dir, uid, plugin, &volume.name);
        if writer::write_payload(&dir, &payload, group)? {
            tracing::debug!(volume = %volume.name, files = payload.len(), "volume content written");
        }
        return Ok(HostVolume {
            path: dir,
            read_only: true,
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let dir = claimed_volume_dir(sources, state_dir, &claim.claim_name).await?;
        if !dir.is_dir() {
            create_dir_all(&dir, 0o777)?;
        }
        if let Some(gid) = group {
            // fsGroupChangePolicy OnRootMismatch: the walk happens when the root differs.
            if writer::group_of(&dir) != Some(gid) {
                apply_fs_group(&dir, gid, true)?;
            }
        }
        return Ok(HostVolume {
            path: dir,
            read_only: claim.read_only == Some(true),
        });
    }
    Err(InputError::Invalid(format!(
        "volume {:?}: unsupported volume type {}",
        volume.name,
        volume_type(volume)
    )))
}

/// The source field a volume sets (`hostPath`, `nfs`…), for messages.
fn volume_type(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "(none)".to_string())
}

async fn setup_empty_dir(
    dir: &Path,
    source: &EmptyDirVolumeSource,
    pod: &Pod,
    group: Option<u32>,
) -> Result<(), InputError> {
    let created = !dir.is_dir();
    if created {
        create_dir_all(dir, 0o777)?;
    }
    if source.medium.as_deref() == Some("Memory") && !is_mount_point(dir)? {
        let mut options = String::from("mode=0777");
        if let Some(bytes) = memory_volume_size(source, pod)? {
            options.push_str(&format!(",size={bytes}"));
        }
        let output = tokio::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir)
            .output()
            .await
            .map_err(|e| io_error(dir, e))?;
        if !output.status.success() {
            return Err(InputError::Io(format!(
                "mount tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        if let Some(gid) = group {
            apply_fs_group(dir, gid, true)?;
        }
    } else if created {
        if let Some(gid) = group {
            apply_fs_group(dir, gid, true)?;
        }
    }
    Ok(())
}

/// The size of a memory-backed emptyDir: its `sizeLimit`, else the sum of the containers'
/// memory limits when they all have one (upstream's SizeMemoryBackedVolumes), else the
/// kernel's default.
fn memory_volume_size(
    source: &EmptyDirVolumeSource,
    pod: &Pod,
) -> Result<Option<i128>, InputError> {
    let parse = |text: &str| {
        Quantity::parse(text)
            .map(|q| q.to_bytes())
            .map_err(|e| InputError::Invalid(format!("sizeLimit {text:?}: {e}")))
    };
    if let Some(limit) = &source.size_limit {
        let bytes = parse(&limit.0)?;
        return Ok((bytes > 0).then_some(bytes));
    }
    let mut total = 0;
    for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let limit = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"));
        match limit {
            Some(q) => total += parse(&q.0)?,
            None => return Ok(None),
        }
    }
    Ok((total > 0).then_some(total))
}

/// Whether `path` is a mount point (`/proc/self/mountinfo`).
fn is_mount_point(path: &Path) -> Result<bool, InputError> {
    Ok(mount_points()?.iter().any(|m| m == path))
}

fn mount_points() -> Result<Vec<PathBuf>, InputError> {
    let info = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(info).map_err(|e| io_error(info, e))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect())
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn claimed_volume_dir(
    sources: &Sources<'_>,
    state_dir: &Path,
    claim_name: &str,
) -> Result<PathBuf, InputError> {
    let namespace = sources.namespace().to_string();
    let Some(claim) = sources.claim(claim_name).await? else {
        return Err(InputError::Missing(format!(
            "persistentvolumeclaim {claim_name:?} not found"
        )));
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(InputError::Missing(format!(
            "can't start pod because PVC {namespace}/{claim_name} is being deleted"
        )));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(InputError::Missing(format!(
            "PVC {namespace}/{claim_name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})"
        )));
    }
    let Some(volume) = sources.volume(&volume_name).await? else {
        return Err(InputError::Missing(format!(
            "persistentvolume {volume_name:?} not found"
        )));
    };
    let spec = volume.spec.unwrap_or_default();
    let claim_uid = claim.metadata.uid.unwrap_or_default();
    match spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref()) {
        None => {
            return Err(InputError::Missing(format!(
                "found PV object {volume_name:?} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
            )))
        }
        Some(uid) if uid != claim_uid => {
            return Err(InputError::Missing(format!(
                "found PV object {volume_name:?} but its pv.Spec.ClaimRef.UID ({uid}) does not point to claim.UID ({claim_uid})"
            )))
        }
        Some(_) => {}
    }
    let Some(csi) = spec.csi.filter(|c| c.driver == LOCAL_CSI_DRIVER) else {
        return Err(InputError::Invalid(format!(
            "persistent volume {volume_name:?} is not a {LOCAL_CSI_DRIVER} volume; this node cannot mount it"
        )));
    };
    let handle = csi.volume_handle;
    if handle.is_empty() || handle.contains('/') || handle.starts_with('.') {
        return Err(InputError::Invalid(format!(
            "persistent volume {volume_name:?} has an unusable volumeHandle {handle:?}"
        )));
    }
    Ok(persistent_volume_dir(state_dir, &handle))
}

/// The files of a configMap, secret, downwardAPI or projected volume.
async fn api_data_payload(
    sources: &mut Sources<'_>,
    pod: &Pod,
    pod_ip: Option<IpAddr>,
    volume: &Volume,
) -> Result<Payload, InputError> {
    let mut payload = Payload::new();
    if let Some(cm) = &volume.config_map {
        let default = mode_of(cm.default_mode, DEFAULT_MODE);
        let name = cm.name.clone();
        add_config_map(
            sources,
            &mut payload,
            &name,
            cm.items.as_deref(),
            cm.optional,
            default,
        )
        .await?;
    } else if let Some(secret) = &volume.secret {
        let default = mode_of(secret.default_mode, DEFAULT_MODE);
        let name = secret.secret_name.clone().unwrap_or_default();
        add_secret(
            sources,
            &mut payload,
            &name,
            secret.items.as_deref(),
            secret.optional,
            default,
        )
        .await?;
    } else if let Some(downward) = &volume.downward_api {
        let default = mode_of(downward.default_mode, DEFAULT_MODE);
        let items = downward.items.as_deref().unwrap_or_default();
        add_downward_api(sources, &mut payload, pod, pod_ip, items, default).await?;
    } else if let Some(projected) = &volume.projected {
        let default = mode_of(projected.default_mode, DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                add_config_map(
                    sources,
                    &mut payload,
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional,
                    default,
                )
                .await?;
            } else if let Some(secret) = &source.secret {
                add_secret(
                    sources,
                    &mut payload,
                    &secret.name,
                    secret.items.as_deref(),
                    secret.optional,
                    default,
                )
                .await?;
            } else if let Some(downward) = &source.downward_api {
                let items = downward.items.as_deref().unwrap_or_default();
                add_downward_api(sources, &mut payload, pod, pod_ip, items, default).await?;
            } else if let Some(token) = &source.service_account_token {
                writer::validate_payload_path(&token.path)?;
                let value =
                    super::service_account_token::token(sources.client(), pod, token).await?;
                payload.insert(
                    token.path.clone(),
                    FileProjection {
                        data: value.into_bytes(),
                        mode: default,
                    },
                );
            } else {
                return Err(InputError::Invalid(format!(
                    "volume {:?}: unsupported projected volume source",
                    volume.name
                )));
            }
        }
    }
    Ok(payload)
}

/// Adds the keys of a source to the payload: `items` pick and rename keys, otherwise every
/// key becomes a file of its name.
fn add_keys(
    payload: &mut Payload,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: u32,
    missing_key: impl Fn(&str) -> String,
) -> Result<(), InputError> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(InputError::Missing(missing_key(&item.key)));
                };
                writer::validate_payload_path(&item.path)?;
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: value.clone(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
        }
        _ => {
            for (key, value) in data {
                payload.insert(
                    key,
                    FileProjection {
                        data: value,
                        mode: default_mode,
                    },
                );
            }
        }
    }
    Ok(())
}

async fn add_config_map(
    sources: &mut Sources<'_>,
    payload: &mut Payload,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: u32,
) -> Result<(), InputError> {
    let optional = optional == Some(true);
    let Some(cm) = sources.config_map(name).await? else {
        if optional {
            return Ok(());
        }
        return Err(InputError::Missing(format!("configmap {name:?} not found")));
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    data.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    add_keys(payload, data, items, optional, default_mode, |key| {
        format!("configmap references non-existent config key: {key}")
    })
}

async fn add_secret(
    sources: &mut Sources<'_>,
    payload: &mut Payload,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: u32,
) -> Result<(), InputError> {
    let optional = optional == Some(true);
    let Some(secret) = sources.secret(name).await? else {
        if optional {
            return Ok(());
        }
        return Err(InputError::Missing(format!("secret {name:?} not found")));
    };
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    add_keys(payload, data, items, optional, default_mode, |key| {
        format!("references non-existent secret key: {key}")
    })
}

async fn add_downward_api(
    sources: &mut Sources<'_>,
    payload: &mut Payload,
    pod: &Pod,
    pod_ip: Option<IpAddr>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<(), InputError> {
    for item in items {
        writer::validate_payload_path(&item.path)?;
        let value = if let Some(field) = &item.field_ref {
            field_value(sources, pod, pod_ip, &field.field_path).await?
        } else if let Some(resource) = &item.resource_field_ref {
            let name = resource.container_name.as_deref().unwrap_or_default();
            let container = find_container(pod, name).ok_or_else(|| {
                InputError::Invalid(format!(
                    "resourceFieldRef of {:?} names no container {name:?}",
                    item.path
                ))
            })?;
            let allocatable = sources.node_allocatable(pod).await?;
            container_resource_value(resource, container, pod, &allocatable)?
        } else {
            continue;
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode),
            },
        );
    }
    Ok(())
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// The mounts of `container`, from its `volumeMounts` over the pod's host volumes; `env` is
/// the container's resolved environment (for `subPathExpr`).
pub(crate) fn container_mounts(
    container: &Container,
    volumes: &HashMap<String, HostVolume>,
    env: &HashMap<String, String>,
) -> Result<Vec<Mount>, InputError> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.get(&mount.name) else {
            return Err(InputError::Invalid(format!(
                "cannot find volume {:?} to mount into container {:?}",
                mount.name, container.name
            )));
        };
        let mut sub_path = mount.sub_path.clone().unwrap_or_default();
        if let Some(expr) = mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            let mut missing = std::collections::BTreeSet::new();
            let expanded = expand(expr, |name| match env.get(name) {
                Some(value) if !value.is_empty() => Some(value.clone()),
                _ => {
                    missing.insert(name.to_string());
                    Some(String::new())
                }
            });
            if !missing.is_empty() {
                return Err(InputError::Invalid(format!(
                    "missing value for {}",
                    missing.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            sub_path = expanded;
        }
        let host_path = if sub_path.is_empty() {
            volume.path.clone()
        } else {
            resolve_sub_path(&volume.path, &sub_path)?
        };
        mounts.push(Mount {
            host_path,
            container_path: mount.mount_path.clone(),
            read_only: mount.read_only == Some(true) || volume.read_only,
        });
    }
    Ok(mounts)
}

/// The host path of a `subPath` inside a volume: refused when absolute or with `..`, created
/// (as a folder) when missing, and checked to stay inside the volume once symlinks resolve.
pub(crate) fn resolve_sub_path(volume: &Path, sub_path: &str) -> Result<PathBuf, InputError> {
    if Path::new(sub_path).is_absolute() {
        return Err(InputError::Invalid(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        )));
    }
    if sub_path.split('/').any(|part| part == "..") {
        return Err(InputError::Invalid(format!(
            "unable to provision SubPath `{sub_path}`: must not contain '..'"
        )));
    }
    let joined = volume.join(sub_path);
    if std::fs::symlink_metadata(&joined).is_err() {
        create_dir_all(&joined, 0o777)?;
    }
    let root = volume.canonicalize().map_err(|e| io_error(volume, e))?;
    let resolved = joined.canonicalize().map_err(|e| io_error(&joined, e))?;
    if !resolved.starts_with(&root) {
        return Err(InputError::Invalid(format!(
            "subpath {sub_path:?} resolves outside of the volume"
        )));
    }
    Ok(resolved)
}

/// Unmounts the pod's memory-backed volumes and removes its folder; persistent volumes
/// (`state_dir/volumes`) are never touched.
pub(crate) fn cleanup(state_dir: &Path, pod_uid: &str) -> Result<(), InputError> {
    if pod_uid.is_empty() || pod_uid.contains('/') || pod_uid == ".." {
        return Err(InputError::Invalid(format!("unusable pod uid {pod_uid:?}")));
    }
    let dir = pod_dir(state_dir, pod_uid);
    if !dir.exists() {
        return Ok(());
    }
    let mut mounted: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    // Deepest first.
    mounted.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for point in mounted {
        let output = std::process::Command::new("umount")
            .arg(&point)
            .output()
            .map_err(|e| io_error(&point, e))?;
        if !output.status.success() {
            return Err(InputError::Io(format!(
                "umount {}: {}",
                point.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    fn host(path: &Path, read_only: bool) -> HostVolume {
        HostVolume {
            path: path.to_path_buf(),
            read_only,
        }
    }

    #[test]
    fn sub_paths_are_checked_and_created() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("vol");
        std::fs::create_dir(&volume).unwrap();
        let err = resolve_sub_path(&volume, "/etc").unwrap_err().to_string();
        assert_eq!(err, "error SubPath `/etc` must not be an absolute path");
        let err = resolve_sub_path(&volume, "a/../../x")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unable to provision SubPath `a/../../x`: must not contain '..'"
        );
        let made = resolve_sub_path(&volume, "data/inner").unwrap();
        assert!(made.is_dir());
        assert!(made.ends_with("vol/data/inner"));
        // A symlink planted in a writable volume cannot lead out of it.
        std::os::unix::fs::symlink("/", volume.join("escape")).unwrap();
        assert!(resolve_sub_path(&volume, "escape").is_err());
        // "a..b" is a name, not a backstep.
        assert!(resolve_sub_path(&volume, "a..b").is_ok());
    }

    #[test]
    fn mounts_follow_volume_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&config).unwrap();
        let volumes = HashMap::from([
            ("data".to_string(), host(&data, false)),
            ("config".to_string(), host(&config, true)),
        ]);
        let container = Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    sub_path_expr: Some("pods/$(POD_NAME)".into()),
                    ..Default::default()
                },
                VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/app".into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/ro".into(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let env = HashMap::from([("POD_NAME".to_string(), "web-0".to_string())]);
        let mounts = container_mounts(&container, &volumes, &env).unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[0].host_path,
            data.canonicalize().unwrap().join("pods/web-0")
        );
        assert!(!mounts[0].read_only);
        assert_eq!(
            (
                mounts[1].host_path.clone(),
                mounts[1].container_path.as_str(),
                mounts[1].read_only
            ),
            (config.clone(), "/etc/app", true)
        );
        assert!(mounts[2].read_only);

        let err = container_mounts(&container, &volumes, &HashMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "missing value for POD_NAME");
        let missing = Container {
            name: "app".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "nope".into(),
                mount_path: "/x".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(container_mounts(&missing, &volumes, &env).is_err());
    }

    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn memory_empty_dir_is_a_sized_tmpfs_and_cleanup_unmounts_it() {
        if !is_root() {
            eprintln!("skipped: tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                uid: Some("tmpfs-pod".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                volumes: Some(vec![Volume {
                    name: "shm".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                            "1Mi".into(),
                        )),
                    }),
                    ..Default::default()
                }]),
                security_context: Some(k8s_openapi::api::core::v1::PodSecurityContext {
                    fs_group: Some(4321),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut sources = Sources::offline("ns");
        let volumes = materialise(&mut sources, dir.path(), &pod, None)
            .await
            .unwrap();
        let path = &volumes["shm"].path;
        assert!(is_mount_point(path).unwrap());
        let stat = std::process::Command::new("df")
            .arg("-k")
            .arg(path)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&stat.stdout).contains(" 1024 "),
            "{stat:?}"
        );
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o2000, 0o2000, "setgid folder");
        // A second container of the pod finds it mounted and mounts nothing more.
        materialise(&mut sources, dir.path(), &pod, None)
            .await
            .unwrap();
        let count = mount_points()
            .unwrap()
            .iter()
            .filter(|m| *m == path)
            .count();
        assert_eq!(count, 1);
        cleanup(dir.path(), "tmpfs-pod").unwrap();
        assert!(!is_mount_point(path).unwrap());
        assert!(!pod_dir(dir.path(), "tmpfs-pod").exists());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn cleanup_removes_the_pod_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let pod = pod_dir(dir.path(), "u-1").join("volumes/kubernetes.io~empty-dir/scratch");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("f"), "x").unwrap();
        let claim = persistent_volume_dir(dir.path(), "pvc-1");
        std::fs::create_dir_all(&claim).unwrap();
        cleanup(dir.path(), "u-1").unwrap();
        assert!(!pod_dir(dir.path(), "u-1").exists());
        assert!(claim.is_dir());
        assert!(cleanup(dir.path(), "u-1").is_ok(), "idempotent");
        assert!(cleanup(dir.path(), "..").is_err());
    }
}
