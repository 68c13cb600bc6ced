//! Which k8s-openapi type describes each served kind, and the names of their definitions.

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::{
    apps, batch, certificates, coordination, core, discovery, events, policy, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::SchemaGenerator;

/// A kind with a fixed group and version whose schema comes from a k8s-openapi type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KindDefinition {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The OpenAPI definition name, as k8s-openapi's `schema_name()`.
    pub definition: &'static str,
    /// Whether a `<Kind>List` definition is synthesized for it.
    pub has_list: bool,
}

macro_rules! kind_table {
    ($($group:literal $version:literal $kind:literal $list:literal => $ty:ty, $def:literal;)*) => {
        /// The served kinds (and a few others used by subresources).
        pub(super) const KINDS: &[KindDefinition] = &[
            $(KindDefinition { group: $group, version: $version, kind: $kind, definition: $def, has_list: $list },)*
        ];

        /// Adds the schemas of every kind in [`KINDS`] (and what they reference) to `generator`.
        fn register_kinds(generator: &mut SchemaGenerator) {
            $(generator.subschema_for::<$ty>();)*
        }

        #[cfg(test)]
        /// `(definition name in the table, schema_name() of the type)` for each kind.
        pub(super) fn table_names() -> Vec<(&'static str, String)> {
            vec![$(($def, <$ty as schemars::JsonSchema>::schema_name().into_owned()),)*]
        }
    };
}

kind_table! {
    "" "v1" "Namespace" true => core::v1::Namespace, "io.k8s.api.core.v1.Namespace";
    "" "v1" "Pod" true => core::v1::Pod, "io.k8s.api.core.v1.Pod";
    "" "v1" "Service" true => core::v1::Service, "io.k8s.api.core.v1.Service";
    "" "v1" "Endpoints" true => core::v1::Endpoints, "io.k8s.api.core.v1.Endpoints";
    "" "v1" "ConfigMap" true => core::v1::ConfigMap, "io.k8s.api.core.v1.ConfigMap";
    "" "v1" "Secret" true => core::v1::Secret, "io.k8s.api.core.v1.Secret";
    "" "v1" "ServiceAccount" true => core::v1::ServiceAccount, "io.k8s.api.core.v1.ServiceAccount";
    "" "v1" "PersistentVolumeClaim" true => core::v1::PersistentVolumeClaim, "io.k8s.api.core.v1.PersistentVolumeClaim";
    "" "v1" "PersistentVolume" true => core::v1::PersistentVolume, "io.k8s.api.core.v1.PersistentVolume";
    "" "v1" "Event" true => core::v1::Event, "io.k8s.api.core.v1.Event";
    "" "v1" "Node" true => core::v1::Node, "io.k8s.api.core.v1.Node";
    "" "v1" "ReplicationController" true => core::v1::ReplicationController, "io.k8s.api.core.v1.ReplicationController";
    "" "v1" "LimitRange" true => core::v1::LimitRange, "io.k8s.api.core.v1.LimitRange";
    "" "v1" "ResourceQuota" true => core::v1::ResourceQuota, "io.k8s.api.core.v1.ResourceQuota";
    "" "v1" "PodTemplate" true => core::v1::PodTemplate, "io.k8s.api.core.v1.PodTemplate";
    "" "v1" "Binding" false => core::v1::Binding, "io.k8s.api.core.v1.Binding";
    "apps" "v1" "Deployment" true => apps::v1::Deployment, "io.k8s.api.apps.v1.Deployment";
    "apps" "v1" "ReplicaSet" true => apps::v1::ReplicaSet, "io.k8s.api.apps.v1.ReplicaSet";
    "apps" "v1" "StatefulSet" true => apps::v1::StatefulSet, "io.k8s.api.apps.v1.StatefulSet";
    "apps" "v1" "ControllerRevision" true => apps::v1::ControllerRevision, "io.k8s.api.apps.v1.ControllerRevision";
    "apps" "v1" "DaemonSet" true => apps::v1::DaemonSet, "io.k8s.api.apps.v1.DaemonSet";
    "batch" "v1" "Job" true => batch::v1::Job, "io.k8s.api.batch.v1.Job";
    "batch" "v1" "CronJob" true => batch::v1::CronJob, "io.k8s.api.batch.v1.CronJob";
    "events.k8s.io" "v1" "Event" true => events::v1::Event, "io.k8s.api.events.v1.Event";
    "coordination.k8s.io" "v1" "Lease" true => coordination::v1::Lease, "io.k8s.api.coordination.v1.Lease";
    "certificates.k8s.io" "v1" "CertificateSigningRequest" true => certificates::v1::CertificateSigningRequest, "io.k8s.api.certificates.v1.CertificateSigningRequest";
    "storage.k8s.io" "v1" "StorageClass" true => storage::v1::StorageClass, "io.k8s.api.storage.v1.StorageClass";
    "discovery.k8s.io" "v1" "EndpointSlice" true => discovery::v1::EndpointSlice, "io.k8s.api.discovery.v1.EndpointSlice";
    "policy" "v1" "PodDisruptionBudget" true => policy::v1::PodDisruptionBudget, "io.k8s.api.policy.v1.PodDisruptionBudget";
    "policy" "v1" "Eviction" false => policy::v1::Eviction, "io.k8s.api.policy.v1.Eviction";
    "autoscaling" "v1" "Scale" false => Scale, "io.k8s.api.autoscaling.v1.Scale";
}

/// Kinds of meta/v1 that every group version uses (`DeleteOptions`, `WatchEvent`), or that
/// are served at fixed discovery endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MetaKind {
    pub kind: &'static str,
    pub definition: &'static str,
    /// Whether upstream lists this kind under every group version (else only `v1`).
    pub every_group_version: bool,
}

/// The meta kinds.
pub(super) const META_KINDS: &[MetaKind] = &[
    MetaKind {
        kind: "Status",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        every_group_version: false,
    },
    MetaKind {
        kind: "DeleteOptions",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        every_group_version: true,
    },
    MetaKind {
        kind: "WatchEvent",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
        every_group_version: true,
    },
    MetaKind {
        kind: "APIResourceList",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
        every_group_version: false,
    },
    MetaKind {
        kind: "APIGroupList",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList",
        every_group_version: false,
    },
    MetaKind {
        kind: "APIGroup",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup",
        every_group_version: false,
    },
    MetaKind {
        kind: "APIVersions",
        definition: "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions",
        every_group_version: false,
    },
];

/// The definition name of `Patch`, the body of every PATCH operation.
pub(super) const PATCH_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// Adds every kind's schema, the meta kinds and `ListMeta`/`Patch` to `generator`.
pub(super) fn register(generator: &mut SchemaGenerator) {
    register_kinds(generator);
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::WatchEvent<()>>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::APIGroupList>();
    generator.subschema_for::<meta::APIGroup>();
    generator.subschema_for::<meta::APIVersions>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::Patch>();
}

/// The kind entry for `(group, version, kind)`, without List kinds.
pub(super) fn find(group: &str, version: &str, kind: &str) -> Option<&'static KindDefinition> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// The distinct `(group, version)` pairs of [`KINDS`], in table order.
pub(super) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}
