use std::time::Instant;

use serde_json::{json, Value};

use super::*;

const fn res(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    subresources: &'static [&'static str],
) -> ResourceInfo {
    ResourceInfo {
        group,
        version: "v1",
        kind,
        plural,
        namespaced,
        subresources,
        verbs: ALL_VERBS,
    }
}
const ALL_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn served() -> Vec<ResourceInfo> {
    vec![
        res("", "Namespace", "namespaces", false, &["status"]),
        res("", "Pod", "pods", true, &["status", "binding", "eviction"]),
        res("", "Service", "services", true, &["status"]),
        res("", "ConfigMap", "configmaps", true, &[]),
        res("", "Node", "nodes", false, &["status"]),
        res(
            "",
            "ReplicationController",
            "replicationcontrollers",
            true,
            &["status", "scale"],
        ),
        ResourceInfo {
            verbs: &["create"],
            ..res("", "Binding", "bindings", true, &[])
        },
        res(
            "apps",
            "Deployment",
            "deployments",
            true,
            &["status", "scale"],
        ),
        res(
            "apps",
            "StatefulSet",
            "statefulsets",
            true,
            &["status", "scale"],
        ),
        res("batch", "Job", "jobs", true, &["status"]),
        res("events.k8s.io", "Event", "events", true, &[]),
        res("coordination.k8s.io", "Lease", "leases", true, &[]),
        res(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
        ),
        res(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["status"],
        ),
        res(
            "storage.k8s.io",
            "StorageClass",
            "storageclasses",
            false,
            &[],
        ),
    ]
}

fn property<'a>(definition: &str, path: &[&str]) -> &'a Value {
    let mut schema = &definitions()[definition];
    for (i, name) in path.iter().enumerate() {
        schema = &schema["properties"][*name];
        if i + 1 < path.len() {
            let target = schema["$ref"]
                .as_str()
                .or(schema["items"]["$ref"].as_str())
                .unwrap();
            schema = &definitions()[target.strip_prefix(V2_REF_PREFIX).unwrap()];
        }
    }
    schema
}

#[test]
fn generation_is_fast_and_complete() {
    let start = Instant::now();
    let count = generate_definitions().len();
    let elapsed = start.elapsed();
    assert_eq!(count, definitions().len());
    eprintln!("generated {count} definitions in {elapsed:?}");
    assert!(count > 200, "{count}");
    let start = Instant::now();
    let v2 = openapi_v2(&served());
    let index = openapi_v3_index(&served());
    eprintln!(
        "v2 + v3 index in {:?} ({} bytes v2)",
        start.elapsed(),
        v2.to_string().len()
    );
    assert_eq!(index["paths"].as_object().unwrap().len(), 8);
}

#[test]
fn common_fields_carry_upstream_extensions() {
    let containers = property(
        "io.k8s.api.apps.v1.Deployment",
        &["spec", "template", "spec", "containers"],
    );
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    let ports = property("io.k8s.api.core.v1.Container", &["ports"]);
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(
        property("io.k8s.api.core.v1.Container", &["env"])["x-kubernetes-patch-merge-key"],
        "name"
    );
    assert_eq!(
        property("io.k8s.api.core.v1.Container", &["volumeMounts"])["x-kubernetes-patch-merge-key"],
        "mountPath"
    );
    assert_eq!(
        property("io.k8s.api.core.v1.EphemeralContainer", &["env"])["x-kubernetes-patch-merge-key"],
        "name"
    );
    let volumes = property("io.k8s.api.core.v1.PodSpec", &["volumes"]);
    assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let owners = property("io.k8s.api.core.v1.Pod", &["metadata", "ownerReferences"]);
    assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");
    let finalizers = property("io.k8s.api.core.v1.Pod", &["metadata", "finalizers"]);
    assert_eq!(finalizers["x-kubernetes-list-type"], "set");
    assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        property("io.k8s.api.core.v1.ServiceSpec", &["ports"])["x-kubernetes-list-map-keys"],
        json!(["port", "protocol"])
    );
    assert_eq!(
        property("io.k8s.api.core.v1.NodeStatus", &["conditions"])["x-kubernetes-patch-merge-key"],
        "type"
    );
    assert_eq!(
        property("io.k8s.api.core.v1.PodSpec", &["tolerations"])["x-kubernetes-list-type"],
        "atomic"
    );
    assert_eq!(
        property("io.k8s.api.core.v1.PodSpec", &["nodeSelector"])["x-kubernetes-map-type"],
        "atomic"
    );
    assert_eq!(
        property("io.k8s.api.apps.v1.DeploymentSpec", &["strategy"])["x-kubernetes-patch-strategy"],
        "retainKeys"
    );
    assert_eq!(
        definitions()["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]
            ["x-kubernetes-map-type"],
        "atomic"
    );
}

#[test]
fn table_entries_for_served_types_all_apply() {
    // Every table entry whose definition is generated must name one of its properties.
    for entry in extensions::FIELD_EXTENSIONS {
        if let Some(definition) = definitions().get(entry.definition) {
            assert!(
                definition["properties"].get(entry.property).is_some(),
                "{}.{}",
                entry.definition,
                entry.property
            );
        }
    }
}

#[test]
fn special_types_match_upstream_v2() {
    let int_or_string = &definitions()["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(
        (&int_or_string["type"], &int_or_string["format"]),
        (&json!("string"), &json!("int-or-string"))
    );
    let quantity = &definitions()["io.k8s.apimachinery.pkg.api.resource.Quantity"];
    assert_eq!(quantity["type"], "string");
    assert!(quantity.get("x-kubernetes-int-or-string").is_none());
    assert_eq!(
        definitions()["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"],
        "date-time"
    );
    // k8s-openapi requires metadata; upstream does not.
    assert!(definitions()["io.k8s.api.core.v1.Pod"]
        .get("required")
        .is_none());
    assert_eq!(
        definitions()["io.k8s.api.core.v1.Binding"]["required"],
        json!(["target"])
    );
}

#[test]
fn every_kind_has_a_definition_with_its_gvk() {
    for (name, schema_name) in kinds::table_names() {
        assert_eq!(name, schema_name);
    }
    for entry in kinds::KINDS {
        let gvk = json!([{ "group": entry.group, "kind": entry.kind, "version": entry.version }]);
        assert_eq!(
            definitions()[entry.definition]["x-kubernetes-group-version-kind"],
            gvk,
            "{}",
            entry.kind
        );
        if entry.has_list {
            let list_kind = format!("{}List", entry.kind);
            let list = definition_name(entry.group, entry.version, &list_kind).unwrap();
            assert_eq!(list, format!("{}List", entry.definition));
            assert_eq!(
                definitions()[list]["x-kubernetes-group-version-kind"][0]["kind"],
                list_kind.as_str()
            );
        }
    }
    assert_eq!(
        definition_name("apps", "v1", "Deployment"),
        Some("io.k8s.api.apps.v1.Deployment")
    );
    assert_eq!(
        definition_name("", "v1", "PodList"),
        Some("io.k8s.api.core.v1.PodList")
    );
    assert_eq!(
        definition_name("apps", "v1", "DeleteOptions"),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
    );
    assert_eq!(definition_name("apps", "v1", "BindingList"), None);
    assert_eq!(definition_name("apps", "v2", "Deployment"), None);
    let delete_options = &definitions()["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
        ["x-kubernetes-group-version-kind"];
    assert!(delete_options
        .as_array()
        .unwrap()
        .contains(&json!({ "group": "apps", "kind": "DeleteOptions", "version": "v1" })));
}

#[test]
fn every_ref_resolves() {
    let check = |doc: &Value, prefix: &str, schemas: &Value| {
        let mut dangling = Vec::new();
        for_each_ref(doc, &mut |target| match target.strip_prefix(prefix) {
            Some(name) if schemas.get(name).is_some() => {}
            _ => dangling.push(target.to_string()),
        });
        assert!(dangling.is_empty(), "{dangling:?}");
    };
    let v2 = openapi_v2(&served());
    check(&v2, V2_REF_PREFIX, &v2["definitions"]);
    let apps = openapi_v3_group_version(&served(), "apps", "v1").unwrap();
    check(
        &apps,
        "#/components/schemas/",
        &apps["components"]["schemas"],
    );
    let core = openapi_v3_group_version(&served(), "", "v1").unwrap();
    check(
        &core,
        "#/components/schemas/",
        &core["components"]["schemas"],
    );
}

#[test]
fn v2_paths_have_operations_and_parameters() {
    let v2 = openapi_v2(&served());
    assert_eq!(
        v2["info"],
        json!({ "title": "Kubernetes", "version": "v1.33.0" })
    );
    let item = &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({ "group": "apps", "kind": "Deployment", "version": "v1" })
    );
    let names: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["body", "dryRun", "fieldManager", "fieldValidation", "force"]
    );
    let collection = &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(
        collection["get"]["responses"]["200"]["schema"]["$ref"],
        "#/definitions/io.k8s.api.apps.v1.DeploymentList"
    );
    assert_eq!(
        collection["delete"]["x-kubernetes-action"],
        "deletecollection"
    );
    assert_eq!(
        v2["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"],
        "listAppsV1DeploymentForAllNamespaces"
    );
    let scale =
        &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    assert_eq!(
        v2["paths"]["/api/v1/namespaces/{name}"]["get"]["operationId"],
        "readCoreV1Namespace"
    );
    assert!(v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"].is_object());
    assert!(v2["paths"]["/api/v1/namespaces/{namespace}/bindings"]["post"].is_object());
    assert!(v2["paths"]["/api/v1/namespaces/{namespace}/bindings/{name}"].is_null());
    assert_eq!(
        v2["paths"]["/apis/events.k8s.io/v1/namespaces/{namespace}/events"]["get"]["tags"],
        json!(["events_v1"])
    );
}

/// What kubectl's query-param verifier (cli-runtime query_param_verifier_v3.go) does: the
/// first PATCH operation with the GVK must list the parameter.
fn v3_supports_param(doc: &Value, group: &str, version: &str, kind: &str, param: &str) -> bool {
    for item in doc["paths"].as_object().unwrap().values() {
        let Some(patch) = item.get("patch") else {
            continue;
        };
        let gvk = &patch["x-kubernetes-group-version-kind"];
        if gvk["group"] != group || gvk["version"] != version || gvk["kind"] != kind {
            continue;
        }
        return patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == param);
    }
    false
}

#[test]
fn v3_documents_support_field_validation_and_explain() {
    let index = openapi_v3_index(&served());
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    assert!(index["paths"]["api/v1"].is_object());
    // The hash is stable.
    assert_eq!(openapi_v3_index(&served()), index);

    let apps = openapi_v3_group_version(&served(), "apps", "v1").unwrap();
    assert_eq!(apps["openapi"], "3.0.0");
    assert!(v3_supports_param(
        &apps,
        "apps",
        "v1",
        "Deployment",
        "fieldValidation"
    ));
    assert!(v3_supports_param(
        &apps,
        "apps",
        "v1",
        "StatefulSet",
        "fieldValidation"
    ));
    let core = openapi_v3_group_version(&served(), "", "v1").unwrap();
    assert!(v3_supports_param(&core, "", "v1", "Pod", "fieldValidation"));
    assert!(!v3_supports_param(&core, "", "v1", "Pod", "noSuchParam"));
    assert!(openapi_v3_group_version(&served(), "apps", "v2").is_none());

    // kubectl explain finds the schema by its GVK extension and follows allOf refs.
    let schemas = apps["components"]["schemas"].as_object().unwrap();
    let deployment = schemas
        .values()
        .find(|s| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|l| {
                    l.contains(&json!({ "group": "apps", "kind": "Deployment", "version": "v1" }))
                })
        })
        .unwrap();
    assert_eq!(
        deployment["properties"]["spec"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );
    assert!(
        schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]["description"]
            .is_string()
    );
    assert!(schemas.contains_key("io.k8s.api.apps.v1.DeploymentStrategy"));
    assert!(!schemas.contains_key("io.k8s.api.batch.v1.Job"));
    assert_eq!(
        schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["oneOf"],
        json!([{ "type": "integer" }, { "type": "string" }])
    );
    let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(
        patch["requestBody"]["content"]["application/strategic-merge-patch+json"]["schema"]["$ref"]
            .is_string()
    );
    assert_eq!(patch["parameters"][2]["schema"]["type"], "string");
}

#[test]
fn unknown_fields_are_found_at_depth() {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "labels": { "app": "web" }, "annotaions": {} },
        "spec": {
            "replicas": 2,
            "replica": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxSurgee": 1 } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "containers": [
                        { "name": "a", "image": "nginx" },
                        { "name": "b", "image": "nginx", "imagePullPolic": "Always",
                          "resources": { "limits": { "cpu": "1" } },
                          "ports": [{ "containerPort": 80, "protocl": "TCP" }],
                          "env": [{ "name": "X", "valueFrom": { "fieldRef": { "fieldPath": "x", "bogus": 1 } } }] }
                    ]
                }
            }
        },
        "status": {}
    });
    assert_eq!(
        unknown_fields("io.k8s.api.apps.v1.Deployment", &deployment),
        [
            "metadata.annotaions",
            "spec.replica",
            "spec.strategy.rollingUpdate.maxSurgee",
            "spec.template.spec.containers[1].imagePullPolic",
            "spec.template.spec.containers[1].ports[0].protocl",
            "spec.template.spec.containers[1].env[0].valueFrom.fieldRef.bogus",
        ]
    );
    assert!(unknown_fields(
        "io.k8s.api.apps.v1.Deployment",
        &json!({ "spec": { "replicas": 1 } })
    )
    .is_empty());
    assert!(unknown_fields("no.such.Definition", &json!({ "x": 1 })).is_empty());
}

#[test]
fn free_form_and_map_fields_accept_anything_they_should() {
    // ControllerRevision.data is a RawExtension: any content.
    let revision = json!({ "data": { "anything": { "goes": [1, 2] } }, "revision": 1, "metadata": { "managedFields": [{ "fieldsV1": { "f:x": {} } }] } });
    assert!(unknown_fields("io.k8s.api.apps.v1.ControllerRevision", &revision).is_empty());
    // Map values with a struct schema are checked, with the key in the path.
    let quota =
        json!({ "spec": { "hard": { "cpu": "1" } }, "metadata": { "labels": { "a": "b" } } });
    assert!(unknown_fields("io.k8s.api.core.v1.ResourceQuota", &quota).is_empty());
    let list = json!({ "items": [{ "metadata": {}, "spek": {} }], "metadata": { "resourceVersion": "1" } });
    assert_eq!(
        unknown_fields("io.k8s.api.core.v1.PodList", &list),
        ["items[0].spek"]
    );
}

#[test]
fn type_errors_report_wrong_json_types() {
    let deployment = json!({
        "metadata": { "name": "web", "labels": { "app": 1 } },
        "spec": {
            "replicas": "2",
            "paused": null,
            "strategy": { "rollingUpdate": { "maxSurge": 1, "maxUnavailable": "25%" } },
            "template": { "spec": { "containers": [{ "name": "a", "ports": [{ "containerPort": 1.5 }], "resources": { "limits": { "cpu": 1, "memory": "1Gi" } }, "args": "x" }] } }
        }
    });
    let errors = type_errors("io.k8s.api.apps.v1.Deployment", &deployment);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "metadata.labels.app",
            "spec.replicas",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "spec.template.spec.containers[0].args"
        ]
    );
    assert_eq!(errors[1].detail, "expected integer, got string");
    assert!(type_errors(
        "io.k8s.api.apps.v1.Deployment",
        &json!({ "spec": { "replicas": 3 } })
    )
    .is_empty());
}

#[test]
fn pruning_drops_unknown_fields_at_depth() {
    let mut obj = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "bogus": 1,
        "metadata": {"name": "x", "labels": {"keep": "me"}},
        "spec": {"replicaz": 3, "template": {"spec": {"containers": [{"name": "a", "image": "b", "imagePullPolic": "x"}]}}}
    });
    super::prune_unknown_fields("io.k8s.api.apps.v1.Deployment", &mut obj);
    assert!(obj.get("bogus").is_none());
    assert!(obj["spec"].get("replicaz").is_none());
    assert!(obj["spec"]["template"]["spec"]["containers"][0]
        .get("imagePullPolic")
        .is_none());
    assert_eq!(obj["metadata"]["labels"]["keep"], "me");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "b"
    );
}
