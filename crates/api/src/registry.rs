//! The resource registry: one entry per served kind, from which routing, discovery, storage
//! keys and the generic handlers are derived. A new kind is a new entry here.

/// How a kind takes part in the `scale` subresource (`autoscaling/v1` `Scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleSpec {
    /// Where the desired replicas live in the object, e.g. `["spec", "replicas"]`.
    pub spec_replicas: &'static [&'static str],
    /// Where the observed replicas live, e.g. `["status", "replicas"]`.
    pub status_replicas: &'static [&'static str],
    /// Where the label selector lives, e.g. `["spec", "selector"]`.
    pub selector: &'static [&'static str],
}

/// One served kind: its identity, its REST shape and its lifecycle rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group, `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name in URLs, e.g. `deployments`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores status changes and the
    /// subresource ignores everything but status.
    pub status_subresource: bool,
    /// Has a `/scale` subresource.
    pub scale: Option<ScaleSpec>,
    /// `metadata.generation` is bumped when the spec changes (upstream does it for every kind
    /// whose strategy tracks it; the others keep generation unset).
    pub tracks_generation: bool,
    /// Deletion is graceful (pods): a pod bound to a node gets a deletionTimestamp and is
    /// removed by its agent.
    pub graceful_delete: bool,
    /// `spec.finalizers` hold deletion as `metadata.finalizers` do (namespaces: the
    /// namespace controller empties the namespace, then removes `kubernetes` through
    /// `/finalize`).
    pub spec_finalizers: bool,
    /// The REST verbs served, as discovery lists them.
    pub verbs: &'static [&'static str],
}

/// The verbs of an ordinary read-write resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of a resource that is created by the system only (e.g. bindings).
pub const CREATE_ONLY: &[&str] = &["create"];

const NO_NAMES: &[&str] = &[];
const ALL: &[&str] = &["all"];

const REPLICAS_SCALE: ScaleSpec = ScaleSpec {
    spec_replicas: &["spec", "replicas"],
    status_replicas: &["status", "replicas"],
    selector: &["spec", "selector"],
};

impl ResourceKind {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of its list, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `plural.group` as upstream names a resource in messages (`deployments.apps`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key prefix of all objects of this kind, ending in `/`.
    pub fn key_prefix(&self) -> String {
        let (group, plural) = crate::conversion::stored_as(self.group, self.kind)
            .unwrap_or((self.group, self.plural));
        let group = if group.is_empty() { "core" } else { group };
        format!("/registry/{group}/{plural}/")
    }

    /// The store key prefix of one namespace's objects (or all of a cluster-scoped kind).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// Whether finalizers still hold an object that is being deleted.
    pub fn has_pending_finalizers(&self, obj: &serde_json::Value) -> bool {
        let non_empty = |v: Option<&serde_json::Value>| {
            v.and_then(|f| f.as_array()).is_some_and(|a| !a.is_empty())
        };
        non_empty(obj.get("metadata").and_then(|m| m.get("finalizers")))
            || (self.spec_finalizers
                && non_empty(obj.get("spec").and_then(|s| s.get("finalizers"))))
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.namespace_prefix(namespace))
    }
}

macro_rules! kind {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, namespaced: $ns:expr,
     short: $short:expr, categories: $cat:expr, status: $status:expr, scale: $scale:expr,
     generation: $gen:expr) => {
        ResourceKind {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: $short,
            categories: $cat,
            namespaced: $ns,
            status_subresource: $status,
            scale: $scale,
            tracks_generation: $gen,
            graceful_delete: false,
            spec_finalizers: false,
            verbs: ALL_VERBS,
        }
    };
}

/// Every kind nodeless serves, in discovery order.
pub static KINDS: &[ResourceKind] = &[
    // core/v1
    ResourceKind {
        spec_finalizers: true,
        ..kind!("", "v1", "Namespace", "namespaces", "namespace", namespaced: false, short: &["ns"], categories: NO_NAMES, status: true, scale: None, generation: false)
    },
    ResourceKind {
        graceful_delete: true,
        ..kind!("", "v1", "Pod", "pods", "pod", namespaced: true, short: &["po"], categories: ALL, status: true, scale: None, generation: false)
    },
    kind!("", "v1", "Service", "services", "service", namespaced: true, short: &["svc"], categories: ALL, status: true, scale: None, generation: false),
    kind!("", "v1", "Endpoints", "endpoints", "endpoints", namespaced: true, short: &["ep"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("", "v1", "ConfigMap", "configmaps", "configmap", namespaced: true, short: &["cm"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("", "v1", "Secret", "secrets", "secret", namespaced: true, short: NO_NAMES, categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", namespaced: true, short: &["sa"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", namespaced: true, short: &["pvc"], categories: NO_NAMES, status: true, scale: None, generation: false),
    kind!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", namespaced: false, short: &["pv"], categories: NO_NAMES, status: true, scale: None, generation: false),
    kind!("", "v1", "Event", "events", "event", namespaced: true, short: &["ev"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("", "v1", "Node", "nodes", "node", namespaced: false, short: &["no"], categories: NO_NAMES, status: true, scale: None, generation: false),
    kind!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", namespaced: true, short: &["rc"], categories: ALL, status: true, scale: Some(ScaleSpec { selector: &["spec", "selector"], ..REPLICAS_SCALE }), generation: true),
    kind!("", "v1", "LimitRange", "limitranges", "limitrange", namespaced: true, short: &["limits"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", namespaced: true, short: &["quota"], categories: NO_NAMES, status: true, scale: None, generation: false),
    kind!("", "v1", "PodTemplate", "podtemplates", "podtemplate", namespaced: true, short: NO_NAMES, categories: NO_NAMES, status: false, scale: None, generation: false),
    // apps/v1
    kind!("apps", "v1", "Deployment", "deployments", "deployment", namespaced: true, short: &["deploy"], categories: ALL, status: true, scale: Some(REPLICAS_SCALE), generation: true),
    kind!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", namespaced: true, short: &["rs"], categories: ALL, status: true, scale: Some(REPLICAS_SCALE), generation: true),
    kind!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", namespaced: true, short: &["sts"], categories: ALL, status: true, scale: Some(REPLICAS_SCALE), generation: true),
    kind!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", namespaced: true, short: NO_NAMES, categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", namespaced: true, short: &["ds"], categories: ALL, status: true, scale: None, generation: true),
    // batch/v1
    kind!("batch", "v1", "Job", "jobs", "job", namespaced: true, short: NO_NAMES, categories: ALL, status: true, scale: None, generation: true),
    kind!("batch", "v1", "CronJob", "cronjobs", "cronjob", namespaced: true, short: &["cj"], categories: ALL, status: true, scale: None, generation: true),
    // others
    kind!("events.k8s.io", "v1", "Event", "events", "event", namespaced: true, short: &["ev"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced: true, short: NO_NAMES, categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", namespaced: false, short: &["sc"], categories: NO_NAMES, status: false, scale: None, generation: false),
    kind!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", namespaced: true, short: NO_NAMES, categories: NO_NAMES, status: false, scale: None, generation: true),
    kind!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", namespaced: false, short: &["csr"], categories: NO_NAMES, status: true, scale: None, generation: false),
    kind!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", namespaced: true, short: &["pdb"], categories: NO_NAMES, status: true, scale: None, generation: true),
];

/// The API groups in discovery order, with their served versions.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// The kind served at `group/version/plural`.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind served for `group/version` and `kind`.
pub fn by_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Every kind of one group-version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceKind> + 'a {
    KINDS
        .iter()
        .filter(move |k| k.group == group && k.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_unique_per_group() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn keys_separate_namespaces_and_kinds() {
        let pods = by_plural("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.namespace_prefix(None), "/registry/core/pods/");
        let deploy = by_kind("apps", "v1", "Deployment").unwrap();
        assert_eq!(deploy.qualified_resource(), "deployments.apps");
        assert_eq!(deploy.api_version(), "apps/v1");
        let ns = by_plural("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.key(Some("ignored"), "kube-system"),
            "/registry/core/namespaces/kube-system"
        );
    }
}
