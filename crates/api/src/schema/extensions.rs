//! The list, map and patch extensions of upstream's OpenAPI (`x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
//! `x-kubernetes-map-type`), which the k8s-openapi schemas do not carry.
//!
//! The table was extracted from the `+listType`, `+listMapKey`, `+mapType`, `+structType`,
//! `patchStrategy` and `patchMergeKey` markers of the Go types in k8s.io/api and
//! k8s.io/apimachinery v0.33.0 (fields of inlined structs are copied to the embedding type).

use serde_json::{json, Map, Value};

/// The extensions of one property of one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FieldExtension {
    pub definition: &'static str,
    pub property: &'static str,
    pub patch_strategy: Option<&'static str>,
    pub patch_merge_key: Option<&'static str>,
    pub list_type: Option<&'static str>,
    pub list_map_keys: &'static [&'static str],
    pub map_type: Option<&'static str>,
}

impl FieldExtension {
    /// Writes this entry's extensions into a property schema.
    fn apply(&self, property: &mut Map<String, Value>) {
        if let Some(list_type) = self.list_type {
            if !self.list_map_keys.is_empty() {
                property.insert(
                    "x-kubernetes-list-map-keys".into(),
                    json!(self.list_map_keys),
                );
            }
            property.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if let Some(map_type) = self.map_type {
            property.insert("x-kubernetes-map-type".into(), json!(map_type));
        }
        if let Some(key) = self.patch_merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if let Some(strategy) = self.patch_strategy {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
    }
}

/// Upstream's `+default=` markers on the keys of associative lists: server-side apply needs
/// them to match list items whose key the configuration leaves out.
const FIELD_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.EndpointPort", "protocol", "TCP"),
    ("io.k8s.api.discovery.v1.EndpointPort", "protocol", "TCP"),
];

/// Adds the table's extensions to `definitions`; entries whose definition or property is not
/// among them (types of groups that are not served) are skipped.
pub(super) fn inject(definitions: &mut Map<String, Value>) {
    for entry in FIELD_EXTENSIONS {
        let property = definitions
            .get_mut(entry.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(entry.property))
            .and_then(Value::as_object_mut);
        if let Some(property) = property {
            entry.apply(property);
        }
    }
    for (definition, property, default) in FIELD_DEFAULTS {
        let property = definitions
            .get_mut(*definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut);
        if let Some(property) = property {
            property.insert("default".into(), json!(default));
        }
    }
    for name in ATOMIC_STRUCTS {
        if let Some(Value::Object(definition)) = definitions.get_mut(*name) {
            definition.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
}

/// One entry per (definition, property) that carries a marker upstream.
#[rustfmt::skip]
pub(super) const FIELD_EXTENSIONS: &[FieldExtension] = &[
    FieldExtension { definition: "io.k8s.api.apps.v1.DaemonSetStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.apps.v1.DeploymentSpec", property: "strategy", patch_strategy: Some("retainKeys"), patch_merge_key: None, list_type: None, list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.apps.v1.DeploymentStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.apps.v1.ReplicaSetStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.apps.v1.StatefulSetSpec", property: "volumeClaimTemplates", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.apps.v1.StatefulSetStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.CronJobStatus", property: "active", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.JobStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.PodFailurePolicy", property: "rules", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", property: "values", patch_strategy: None, patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.PodFailurePolicyRule", property: "onPodConditions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.SuccessPolicy", property: "rules", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.UncountedTerminatedPods", property: "failed", patch_strategy: None, patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.batch.v1.UncountedTerminatedPods", property: "succeeded", patch_strategy: None, patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.AvoidPods", property: "preferAvoidPods", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Capabilities", property: "add", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Capabilities", property: "drop", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.CephFSPersistentVolumeSource", property: "monitors", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.CephFSVolumeSource", property: "monitors", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ComponentStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ConfigMapProjection", property: "items", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ConfigMapVolumeSource", property: "items", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "args", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "command", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "env", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "envFrom", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "ports", patch_strategy: Some("merge"), patch_merge_key: Some("containerPort"), list_type: Some("map"), list_map_keys: &["containerPort", "protocol"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "resizePolicy", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "volumeDevices", patch_strategy: Some("merge"), patch_merge_key: Some("devicePath"), list_type: Some("map"), list_map_keys: &["devicePath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Container", property: "volumeMounts", patch_strategy: Some("merge"), patch_merge_key: Some("mountPath"), list_type: Some("map"), list_map_keys: &["mountPath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ContainerImage", property: "names", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ContainerStatus", property: "allocatedResourcesStatus", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ContainerStatus", property: "volumeMounts", patch_strategy: Some("merge"), patch_merge_key: Some("mountPath"), list_type: Some("map"), list_map_keys: &["mountPath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.DownwardAPIProjection", property: "items", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.DownwardAPIVolumeSource", property: "items", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EndpointSubset", property: "addresses", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EndpointSubset", property: "notReadyAddresses", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EndpointSubset", property: "ports", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.Endpoints", property: "subsets", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "args", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "command", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "env", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "envFrom", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "ports", patch_strategy: Some("merge"), patch_merge_key: Some("containerPort"), list_type: Some("map"), list_map_keys: &["containerPort", "protocol"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "resizePolicy", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "volumeDevices", patch_strategy: Some("merge"), patch_merge_key: Some("devicePath"), list_type: Some("map"), list_map_keys: &["devicePath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainer", property: "volumeMounts", patch_strategy: Some("merge"), patch_merge_key: Some("mountPath"), list_type: Some("map"), list_map_keys: &["mountPath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "args", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "command", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "env", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "envFrom", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "ports", patch_strategy: Some("merge"), patch_merge_key: Some("containerPort"), list_type: Some("map"), list_map_keys: &["containerPort", "protocol"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "resizePolicy", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "volumeDevices", patch_strategy: Some("merge"), patch_merge_key: Some("devicePath"), list_type: Some("map"), list_map_keys: &["devicePath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.EphemeralContainerCommon", property: "volumeMounts", patch_strategy: Some("merge"), patch_merge_key: Some("mountPath"), list_type: Some("map"), list_map_keys: &["mountPath"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ExecAction", property: "command", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.FCVolumeSource", property: "targetWWNs", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.FCVolumeSource", property: "wwids", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.HTTPGetAction", property: "httpHeaders", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.HostAlias", property: "hostnames", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ISCSIPersistentVolumeSource", property: "portals", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ISCSIVolumeSource", property: "portals", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.LimitRangeSpec", property: "limits", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.LinuxContainerUser", property: "supplementalGroups", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.LoadBalancerIngress", property: "ports", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.LoadBalancerStatus", property: "ingress", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NamespaceSpec", property: "finalizers", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NamespaceStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeAffinity", property: "preferredDuringSchedulingIgnoredDuringExecution", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeSelector", property: "nodeSelectorTerms", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeSelectorRequirement", property: "values", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeSelectorTerm", property: "matchExpressions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeSelectorTerm", property: "matchFields", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeSpec", property: "podCIDRs", patch_strategy: Some("merge"), patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeSpec", property: "taints", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeStatus", property: "addresses", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeStatus", property: "images", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeStatus", property: "runtimeHandlers", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeStatus", property: "volumesAttached", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.NodeStatus", property: "volumesInUse", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PersistentVolumeClaimSpec", property: "accessModes", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PersistentVolumeClaimStatus", property: "accessModes", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PersistentVolumeClaimStatus", property: "allocatedResourceStatuses", patch_strategy: None, patch_merge_key: None, list_type: None, list_map_keys: &[], map_type: Some("granular") },
    FieldExtension { definition: "io.k8s.api.core.v1.PersistentVolumeClaimStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PersistentVolumeSpec", property: "accessModes", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PersistentVolumeSpec", property: "mountOptions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAffinity", property: "preferredDuringSchedulingIgnoredDuringExecution", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAffinity", property: "requiredDuringSchedulingIgnoredDuringExecution", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAffinityTerm", property: "matchLabelKeys", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAffinityTerm", property: "mismatchLabelKeys", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAffinityTerm", property: "namespaces", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAntiAffinity", property: "preferredDuringSchedulingIgnoredDuringExecution", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodAntiAffinity", property: "requiredDuringSchedulingIgnoredDuringExecution", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodDNSConfig", property: "nameservers", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodDNSConfig", property: "options", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodDNSConfig", property: "searches", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodExecOptions", property: "command", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodPortForwardOptions", property: "ports", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSecurityContext", property: "supplementalGroups", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSecurityContext", property: "sysctls", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "containers", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "ephemeralContainers", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "hostAliases", patch_strategy: Some("merge"), patch_merge_key: Some("ip"), list_type: Some("map"), list_map_keys: &["ip"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "imagePullSecrets", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "initContainers", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "nodeSelector", patch_strategy: None, patch_merge_key: None, list_type: None, list_map_keys: &[], map_type: Some("atomic") },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "readinessGates", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "resourceClaims", patch_strategy: Some("merge,retainKeys"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "schedulingGates", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "tolerations", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "topologySpreadConstraints", patch_strategy: Some("merge"), patch_merge_key: Some("topologyKey"), list_type: Some("map"), list_map_keys: &["topologyKey", "whenUnsatisfiable"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodSpec", property: "volumes", patch_strategy: Some("merge,retainKeys"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "containerStatuses", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "ephemeralContainerStatuses", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "hostIPs", patch_strategy: Some("merge"), patch_merge_key: Some("ip"), list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "initContainerStatuses", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "podIPs", patch_strategy: Some("merge"), patch_merge_key: Some("ip"), list_type: Some("map"), list_map_keys: &["ip"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.PodStatus", property: "resourceClaimStatuses", patch_strategy: Some("merge,retainKeys"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ProjectedVolumeSource", property: "sources", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.RBDPersistentVolumeSource", property: "monitors", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.RBDVolumeSource", property: "monitors", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ReplicationControllerSpec", property: "selector", patch_strategy: None, patch_merge_key: None, list_type: None, list_map_keys: &[], map_type: Some("atomic") },
    FieldExtension { definition: "io.k8s.api.core.v1.ReplicationControllerStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ResourceQuotaSpec", property: "scopes", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ResourceRequirements", property: "claims", patch_strategy: None, patch_merge_key: None, list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ResourceStatus", property: "resources", patch_strategy: None, patch_merge_key: None, list_type: Some("map"), list_map_keys: &["resourceID"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ScopeSelector", property: "matchExpressions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ScopedResourceSelectorRequirement", property: "values", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.SecretProjection", property: "items", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.SecretVolumeSource", property: "items", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceAccount", property: "imagePullSecrets", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceAccount", property: "secrets", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceSpec", property: "clusterIPs", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceSpec", property: "externalIPs", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceSpec", property: "ipFamilies", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceSpec", property: "loadBalancerSourceRanges", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceSpec", property: "ports", patch_strategy: Some("merge"), patch_merge_key: Some("port"), list_type: Some("map"), list_map_keys: &["port", "protocol"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceSpec", property: "selector", patch_strategy: None, patch_merge_key: None, list_type: None, list_map_keys: &[], map_type: Some("atomic") },
    FieldExtension { definition: "io.k8s.api.core.v1.ServiceStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.TopologySelectorLabelRequirement", property: "values", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.TopologySelectorTerm", property: "matchLabelExpressions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.core.v1.TopologySpreadConstraint", property: "matchLabelKeys", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.discovery.v1.Endpoint", property: "addresses", patch_strategy: None, patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.discovery.v1.EndpointHints", property: "forNodes", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.discovery.v1.EndpointHints", property: "forZones", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.discovery.v1.EndpointSlice", property: "endpoints", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.discovery.v1.EndpointSlice", property: "ports", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.policy.v1.PodDisruptionBudgetSpec", property: "selector", patch_strategy: Some("replace"), patch_merge_key: None, list_type: None, list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.policy.v1.PodDisruptionBudgetStatus", property: "conditions", patch_strategy: Some("merge"), patch_merge_key: Some("type"), list_type: Some("map"), list_map_keys: &["type"], map_type: None },
    FieldExtension { definition: "io.k8s.api.storage.v1.CSIDriverSpec", property: "tokenRequests", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.storage.v1.CSIDriverSpec", property: "volumeLifecycleModes", patch_strategy: None, patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.storage.v1.CSINodeDriver", property: "topologyKeys", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.storage.v1.CSINodeSpec", property: "drivers", patch_strategy: Some("merge"), patch_merge_key: Some("name"), list_type: Some("map"), list_map_keys: &["name"], map_type: None },
    FieldExtension { definition: "io.k8s.api.storage.v1.StorageClass", property: "allowedTopologies", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.api.storage.v1.StorageClass", property: "mountOptions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup", property: "serverAddressByClientCIDRs", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup", property: "versions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList", property: "groups", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIResource", property: "categories", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIResource", property: "shortNames", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList", property: "resources", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions", property: "serverAddressByClientCIDRs", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions", property: "versions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.ApplyOptions", property: "dryRun", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.CreateOptions", property: "dryRun", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", property: "dryRun", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.FieldSelectorRequirement", property: "values", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", property: "matchExpressions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", property: "values", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", property: "finalizers", patch_strategy: Some("merge"), patch_merge_key: None, list_type: Some("set"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", property: "managedFields", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", property: "ownerReferences", patch_strategy: Some("merge"), patch_merge_key: Some("uid"), list_type: Some("map"), list_map_keys: &["uid"], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.PatchOptions", property: "dryRun", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.RootPaths", property: "paths", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.Status", property: "details", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails", property: "causes", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.Table", property: "columnDefinitions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.Table", property: "rows", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.TableRow", property: "cells", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.TableRow", property: "conditions", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
    FieldExtension { definition: "io.k8s.apimachinery.pkg.apis.meta.v1.UpdateOptions", property: "dryRun", patch_strategy: None, patch_merge_key: None, list_type: Some("atomic"), list_map_keys: &[], map_type: None },
];
/// Definitions marked `+structType=atomic` (upstream: `x-kubernetes-map-type: atomic`).
pub(super) const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.api.autoscaling.v1.CrossVersionObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.EndpointAddress",
    "io.k8s.api.core.v1.EndpointPort",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.ScopeSelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
];
