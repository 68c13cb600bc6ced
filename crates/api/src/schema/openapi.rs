//! The `/openapi/v2` and `/openapi/v3` documents: paths for each served resource, built from
//! one operation model and rendered in swagger 2.0 or OpenAPI 3.0 form.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{definition_name, definitions, for_each_ref, kinds, ResourceInfo, V2_REF_PREFIX};

/// The version string in the documents' `info`.
const KUBERNETES_VERSION: &str = "v1.33.0";
/// Prefix of a `$ref` to a schema in OpenAPI v3.
const V3_REF_PREFIX: &str = "#/components/schemas/";

/// What responses are served as. Protobuf is read in request bodies but never written, so
/// it is not offered (upstream's documents list it because upstream writes it).
const PRODUCES: &[&str] = &["application/json", "application/yaml"];
const PRODUCES_LIST: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
const CONSUMES_PATCH: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// The JSON type of a parameter.
#[derive(Debug, Clone, Copy)]
enum ParamType {
    String,
    Integer,
    Boolean,
}

impl ParamType {
    fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
        }
    }
}

/// A query or path parameter.
#[derive(Debug, Clone, Copy)]
struct Param {
    name: &'static str,
    in_path: bool,
    ty: ParamType,
    description: &'static str,
}

const fn query(name: &'static str, ty: ParamType, description: &'static str) -> Param {
    Param {
        name,
        in_path: false,
        ty,
        description,
    }
}

const PRETTY: Param = query(
    "pretty",
    ParamType::String,
    "If 'true', then the output is pretty printed.",
);
const NAMESPACE: Param = Param {
    name: "namespace",
    in_path: true,
    ty: ParamType::String,
    description: "object name and auth scope, such as for teams and projects",
};
const NAME: Param = Param {
    name: "name",
    in_path: true,
    ty: ParamType::String,
    description: "name of the object",
};

const ALLOW_WATCH_BOOKMARKS: Param = query("allowWatchBookmarks", ParamType::Boolean, "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag.");
const CONTINUE: Param = query(
    "continue",
    ParamType::String,
    "The continue option should be set when retrieving more results from the server.",
);
const FIELD_SELECTOR: Param = query(
    "fieldSelector",
    ParamType::String,
    "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
);
const LABEL_SELECTOR: Param = query(
    "labelSelector",
    ParamType::String,
    "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
);
const LIMIT: Param = query(
    "limit",
    ParamType::Integer,
    "limit is a maximum number of responses to return for a list call.",
);
const RESOURCE_VERSION: Param = query(
    "resourceVersion",
    ParamType::String,
    "resourceVersion sets a constraint on what resource versions a request may be served from.",
);
const RESOURCE_VERSION_MATCH: Param = query(
    "resourceVersionMatch",
    ParamType::String,
    "resourceVersionMatch determines how resourceVersion is applied to list calls.",
);
const SEND_INITIAL_EVENTS: Param = query("sendInitialEvents", ParamType::Boolean, "`sendInitialEvents=true` may be set together with `watch=true`; the watch stream begins with synthetic events for the current state.");
const TIMEOUT_SECONDS: Param = query(
    "timeoutSeconds",
    ParamType::Integer,
    "Timeout for the list/watch call.",
);
const WATCH: Param = query("watch", ParamType::Boolean, "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.");
const DRY_RUN: Param = query("dryRun", ParamType::String, "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed");
const FIELD_MANAGER: Param = query(
    "fieldManager",
    ParamType::String,
    "fieldManager is a name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: Param = query("fieldValidation", ParamType::String, "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict");
const FORCE: Param = query("force", ParamType::Boolean, "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.");
const GRACE_PERIOD_SECONDS: Param = query(
    "gracePeriodSeconds",
    ParamType::Integer,
    "The duration in seconds before the object should be deleted.",
);
const IGNORE_STORE_READ_ERROR: Param = query("ignoreStoreReadErrorWithClusterBreakingPotential", ParamType::Boolean, "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error.");
const ORPHAN_DEPENDENTS: Param = query(
    "orphanDependents",
    ParamType::Boolean,
    "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7.",
);
const PROPAGATION_POLICY: Param = query("propagationPolicy", ParamType::String, "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'.");

const LIST_PARAMS: &[Param] = &[
    ALLOW_WATCH_BOOKMARKS,
    CONTINUE,
    FIELD_SELECTOR,
    LABEL_SELECTOR,
    LIMIT,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
    WATCH,
];
const WRITE_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    GRACE_PERIOD_SECONDS,
    IGNORE_STORE_READ_ERROR,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
];
const DELETE_COLLECTION_PARAMS: &[Param] = &[
    CONTINUE,
    DRY_RUN,
    FIELD_SELECTOR,
    GRACE_PERIOD_SECONDS,
    IGNORE_STORE_READ_ERROR,
    LABEL_SELECTOR,
    LIMIT,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
];

/// One operation of one path, independent of the OpenAPI version.
struct Operation {
    method: &'static str,
    operation_id: String,
    description: String,
    /// `x-kubernetes-action`: get, list, post, put, patch, delete, deletecollection.
    action: &'static str,
    gvk: Value,
    params: &'static [Param],
    /// Definition name of the request body.
    body: Option<&'static str>,
    /// Definition name of the success response.
    response: &'static str,
    /// Status codes returned on success besides 200.
    extra_codes: &'static [(&'static str, &'static str)],
    consumes: &'static [&'static str],
    produces: &'static [&'static str],
}

/// A path with its parameters and operations.
struct PathItem {
    path: String,
    params: Vec<Param>,
    operations: Vec<Operation>,
}

/// `apps` -> `Apps`, `""` -> `Core`, `events.k8s.io` -> `Events`, `v1` -> `V1`.
fn camel_group_version(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.trim_end_matches(".k8s.io")
    };
    let mut out = String::new();
    for part in group.split('.').chain(std::iter::once(version)) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The tag upstream puts on a group version's operations: `core_v1`, `apps_v1`, `events_v1`.
fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.trim_end_matches(".k8s.io")
    };
    format!("{}_{version}", group.replace('.', "_"))
}

/// The URL prefix of a group version: `/api/v1` or `/apis/apps/v1`.
fn group_version_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// The paths of one resource; none when its kind has no definition.
fn resource_paths(resource: &ResourceInfo) -> Vec<PathItem> {
    let (group, version, kind) = (resource.group, resource.version, resource.kind);
    let Some(definition) = definition_name(group, version, kind) else {
        return Vec::new();
    };
    let list_definition = definition_name(group, version, &format!("{kind}List"));
    let has = |verb: &str| resource.verbs.contains(&verb);
    let gvk = super::gvk(group, version, kind);
    let gv = camel_group_version(group, version);
    let scope = if resource.namespaced {
        "Namespaced"
    } else {
        ""
    };
    let prefix = group_version_prefix(group, version);
    let collection_path = if resource.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", resource.plural)
    } else {
        format!("{prefix}/{}", resource.plural)
    };
    let scope_params = if resource.namespaced {
        vec![NAMESPACE, PRETTY]
    } else {
        vec![PRETTY]
    };
    let item_params = if resource.namespaced {
        vec![NAME, NAMESPACE, PRETTY]
    } else {
        vec![NAME, PRETTY]
    };
    let op = |method,
              verb: &str,
              suffix: &str,
              action,
              params,
              body,
              response,
              extra_codes,
              consumes,
              produces,
              description: String| Operation {
        method,
        operation_id: format!("{verb}{gv}{scope}{kind}{suffix}"),
        description,
        action,
        gvk: gvk.clone(),
        params,
        body,
        response,
        extra_codes,
        consumes,
        produces,
    };
    const CREATED: &[(&str, &str)] = &[("201", "Created"), ("202", "Accepted")];
    const UPDATED: &[(&str, &str)] = &[("201", "Created")];
    const ACCEPTED: &[(&str, &str)] = &[("202", "Accepted")];
    const ANY: &[&str] = &["*/*"];
    let status = kinds::META_KINDS[0].definition;
    let delete_options = kinds::META_KINDS[1].definition;

    let mut paths = Vec::new();
    let mut collection = Vec::new();
    if let Some(list_definition) = list_definition.filter(|_| has("list")) {
        collection.push(op(
            "get",
            "list",
            "",
            "list",
            LIST_PARAMS,
            None,
            list_definition,
            &[],
            ANY,
            PRODUCES_LIST,
            format!("list or watch objects of kind {kind}"),
        ));
    }
    if has("create") {
        collection.push(op(
            "post",
            "create",
            "",
            "post",
            WRITE_PARAMS,
            Some(definition),
            definition,
            CREATED,
            ANY,
            PRODUCES,
            format!("create a {kind}"),
        ));
    }
    if has("deletecollection") {
        collection.push(op(
            "delete",
            "deleteCollection",
            "",
            "deletecollection",
            DELETE_COLLECTION_PARAMS,
            Some(delete_options),
            status,
            &[],
            ANY,
            PRODUCES,
            format!("delete collection of {kind}"),
        ));
    }
    if !collection.is_empty() {
        paths.push(PathItem {
            path: collection_path.clone(),
            params: scope_params,
            operations: collection,
        });
    }
    if resource.namespaced && has("list") {
        if let Some(list_definition) = list_definition {
            let operation = Operation {
                operation_id: format!("list{gv}{kind}ForAllNamespaces"),
                ..op(
                    "get",
                    "list",
                    "",
                    "list",
                    LIST_PARAMS,
                    None,
                    list_definition,
                    &[],
                    ANY,
                    PRODUCES_LIST,
                    format!("list or watch objects of kind {kind}"),
                )
            };
            paths.push(PathItem {
                path: format!("{prefix}/{}", resource.plural),
                params: vec![PRETTY],
                operations: vec![operation],
            });
        }
    }

    let item_path = format!("{collection_path}/{{name}}");
    let mut item = Vec::new();
    if has("get") {
        item.push(op(
            "get",
            "read",
            "",
            "get",
            &[],
            None,
            definition,
            &[],
            ANY,
            PRODUCES,
            format!("read the specified {kind}"),
        ));
    }
    if has("update") {
        item.push(op(
            "put",
            "replace",
            "",
            "put",
            WRITE_PARAMS,
            Some(definition),
            definition,
            UPDATED,
            ANY,
            PRODUCES,
            format!("replace the specified {kind}"),
        ));
    }
    if has("patch") {
        item.push(op(
            "patch",
            "patch",
            "",
            "patch",
            PATCH_PARAMS,
            Some(kinds::PATCH_DEFINITION),
            definition,
            UPDATED,
            CONSUMES_PATCH,
            PRODUCES,
            format!("partially update the specified {kind}"),
        ));
    }
    if has("delete") {
        item.push(op(
            "delete",
            "delete",
            "",
            "delete",
            DELETE_PARAMS,
            Some(delete_options),
            status,
            ACCEPTED,
            ANY,
            PRODUCES,
            format!("delete a {kind}"),
        ));
    }
    if !item.is_empty() {
        paths.push(PathItem {
            path: item_path.clone(),
            params: item_params.clone(),
            operations: item,
        });
    }

    for subresource in resource.subresources {
        let path = format!("{item_path}/{subresource}");
        let operations = match *subresource {
            "status" => vec![
                op(
                    "get",
                    "read",
                    "Status",
                    "get",
                    &[],
                    None,
                    definition,
                    &[],
                    ANY,
                    PRODUCES,
                    format!("read status of the specified {kind}"),
                ),
                op(
                    "put",
                    "replace",
                    "Status",
                    "put",
                    WRITE_PARAMS,
                    Some(definition),
                    definition,
                    UPDATED,
                    ANY,
                    PRODUCES,
                    format!("replace status of the specified {kind}"),
                ),
                op(
                    "patch",
                    "patch",
                    "Status",
                    "patch",
                    PATCH_PARAMS,
                    Some(kinds::PATCH_DEFINITION),
                    definition,
                    UPDATED,
                    CONSUMES_PATCH,
                    PRODUCES,
                    format!("partially update status of the specified {kind}"),
                ),
            ],
            "scale" => {
                let Some(scale) = definition_name("autoscaling", "v1", "Scale") else {
                    continue;
                };
                let scale_gvk = super::gvk("autoscaling", "v1", "Scale");
                vec![
                    Operation {
                        gvk: scale_gvk.clone(),
                        ..op(
                            "get",
                            "read",
                            "Scale",
                            "get",
                            &[],
                            None,
                            scale,
                            &[],
                            ANY,
                            PRODUCES,
                            format!("read scale of the specified {kind}"),
                        )
                    },
                    Operation {
                        gvk: scale_gvk.clone(),
                        ..op(
                            "put",
                            "replace",
                            "Scale",
                            "put",
                            WRITE_PARAMS,
                            Some(scale),
                            scale,
                            UPDATED,
                            ANY,
                            PRODUCES,
                            format!("replace scale of the specified {kind}"),
                        )
                    },
                    Operation {
                        gvk: scale_gvk,
                        ..op(
                            "patch",
                            "patch",
                            "Scale",
                            "patch",
                            PATCH_PARAMS,
                            Some(kinds::PATCH_DEFINITION),
                            scale,
                            UPDATED,
                            CONSUMES_PATCH,
                            PRODUCES,
                            format!("partially update scale of the specified {kind}"),
                        )
                    },
                ]
            }
            "binding" | "eviction" => {
                let (sub_group, sub_kind) = if *subresource == "binding" {
                    ("", "Binding")
                } else {
                    ("policy", "Eviction")
                };
                let Some(body) = definition_name(sub_group, "v1", sub_kind) else {
                    continue;
                };
                vec![Operation {
                    gvk: super::gvk(sub_group, "v1", sub_kind),
                    ..op(
                        "post",
                        "create",
                        sub_kind,
                        "post",
                        WRITE_PARAMS,
                        Some(body),
                        body,
                        CREATED,
                        ANY,
                        PRODUCES,
                        format!("create {subresource} of a {kind}"),
                    )
                }]
            }
            _ => continue,
        };
        paths.push(PathItem {
            path,
            params: item_params.clone(),
            operations,
        });
    }
    paths
}

/// The `$ref` to `definition` in the given prefix style.
fn reference(prefix: &str, definition: &str) -> Value {
    json!({ "$ref": format!("{prefix}{definition}") })
}

/// A parameter in swagger 2.0 form.
fn v2_param(param: &Param) -> Value {
    let mut out = Map::new();
    if !param.description.is_empty() {
        out.insert("description".into(), json!(param.description));
    }
    out.insert(
        "in".into(),
        json!(if param.in_path { "path" } else { "query" }),
    );
    out.insert("name".into(), json!(param.name));
    if param.in_path {
        out.insert("required".into(), json!(true));
    }
    out.insert("type".into(), json!(param.ty.name()));
    out.insert("uniqueItems".into(), json!(true));
    Value::Object(out)
}

/// The paths of all resources in swagger 2.0 form.
fn v2_paths(resources: &[ResourceInfo]) -> Map<String, Value> {
    let mut paths = Map::new();
    for resource in resources {
        for item in resource_paths(resource) {
            let mut path = Map::new();
            for operation in &item.operations {
                let mut parameters = Vec::new();
                if let Some(body) = operation.body {
                    parameters.push(json!({ "in": "body", "name": "body", "required": true, "schema": reference(V2_REF_PREFIX, body) }));
                }
                parameters.extend(operation.params.iter().map(v2_param));
                let mut responses = Map::new();
                responses.insert("200".into(), json!({ "description": "OK", "schema": reference(V2_REF_PREFIX, operation.response) }));
                for (code, text) in operation.extra_codes {
                    responses.insert((*code).into(), json!({ "description": text, "schema": reference(V2_REF_PREFIX, operation.response) }));
                }
                responses.insert("401".into(), json!({ "description": "Unauthorized" }));
                path.insert(
                    operation.method.into(),
                    json!({
                        "consumes": operation.consumes,
                        "description": operation.description,
                        "operationId": operation.operation_id,
                        "parameters": parameters,
                        "produces": operation.produces,
                        "responses": responses,
                        "schemes": ["https"],
                        "tags": [tag(resource.group, resource.version)],
                        "x-kubernetes-action": operation.action,
                        "x-kubernetes-group-version-kind": operation.gvk,
                    }),
                );
            }
            path.insert(
                "parameters".into(),
                Value::Array(item.params.iter().map(v2_param).collect()),
            );
            paths.insert(item.path, Value::Object(path));
        }
    }
    paths
}

/// The swagger 2.0 document served at `/openapi/v2`: every definition and the paths of
/// `resources` (resources whose kind has no definition are left out).
pub fn openapi_v2(resources: &[ResourceInfo]) -> Value {
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
        "paths": v2_paths(resources),
        "definitions": definitions(),
        "securityDefinitions": {
            "BearerToken": { "description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey" }
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// The distinct group versions of `resources`, in order of first appearance.
fn served_group_versions(resources: &[ResourceInfo]) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for r in resources {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The `/openapi/v3` discovery document: one entry per served group version, whose URL
/// carries a hash of that group version's document (clients cache by it).
pub fn openapi_v3_index(resources: &[ResourceInfo]) -> Value {
    let mut paths = Map::new();
    for (group, version) in served_group_versions(resources) {
        let Some(document) = openapi_v3_group_version(resources, group, version) else {
            continue;
        };
        let key = group_version_prefix(group, version)
            .trim_start_matches('/')
            .to_string();
        let url = format!("/openapi/v3/{key}?hash={}", openapi_v3_hash(&document));
        paths.insert(key, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// The hash of an OpenAPI v3 document that its `serverRelativeURL` carries (`?hash=`): a
/// stable hash as upper-case hex (FNV-1a over its compact JSON text, twice with different
/// offsets for 128 bits). A URL with the current hash names content that never changes.
pub fn openapi_v3_hash(document: &Value) -> String {
    let text = document.to_string();
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// The OpenAPI 3.0 document of one group version (`/openapi/v3/apis/apps/v1`): its paths
/// and the schemas they reach, as `#/components/schemas/<name>`. `None` when no resource of
/// `resources` is in that group version.
pub fn openapi_v3_group_version(
    resources: &[ResourceInfo],
    group: &str,
    version: &str,
) -> Option<Value> {
    let selected: Vec<ResourceInfo> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .copied()
        .collect();
    if selected.is_empty() {
        return None;
    }
    let v2 = v2_paths(&selected);
    let mut roots = BTreeSet::new();
    for_each_ref(&Value::Object(v2.clone()), &mut |target| {
        if let Some(name) = target.strip_prefix(V2_REF_PREFIX) {
            roots.insert(name.to_string());
        }
    });
    for resource in &selected {
        if let Some(name) = definition_name(group, version, resource.kind) {
            roots.insert(name.to_string());
        }
    }
    let mut paths = Map::new();
    for (path, item) in v2 {
        paths.insert(path, v3_path_item(&item));
    }
    let mut schemas = Map::new();
    for name in reachable(roots) {
        if let Some(schema) = definitions().get(&name) {
            schemas.insert(name.clone(), v3_schema(&name, schema));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": { "type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header" }
            }
        },
    }))
}

/// The names of the definitions reachable from `roots`, sorted.
fn reachable(roots: BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = definitions().get(&name) {
            for_each_ref(schema, &mut |target| {
                if let Some(next) = target.strip_prefix(V2_REF_PREFIX) {
                    if !seen.contains(next) {
                        pending.push(next.to_string());
                    }
                }
            });
        }
    }
    seen
}

/// Converts a v2 path item (as built by [`v2_paths`]) to OpenAPI 3.0.
fn v3_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    let Value::Object(item) = item else {
        return Value::Object(out);
    };
    for (method, operation) in item {
        if method == "parameters" {
            continue;
        }
        let mut converted = Map::new();
        converted.insert("tags".into(), operation["tags"].clone());
        converted.insert("description".into(), operation["description"].clone());
        converted.insert("operationId".into(), operation["operationId"].clone());
        let mut parameters = Vec::new();
        for param in operation["parameters"].as_array().into_iter().flatten() {
            if param["in"] == "body" {
                let consumes = operation["consumes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let schema = v3_refs(&param["schema"]);
                let content: Map<String, Value> = consumes
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|mime| (mime.to_string(), json!({ "schema": schema })))
                    .collect();
                converted.insert(
                    "requestBody".into(),
                    json!({ "content": content, "required": true }),
                );
            } else {
                parameters.push(v3_param_from_v2(param));
            }
        }
        if !parameters.is_empty() {
            converted.insert("parameters".into(), Value::Array(parameters));
        }
        let mut responses = Map::new();
        for (code, response) in operation["responses"].as_object().into_iter().flatten() {
            let mut r = Map::new();
            r.insert("description".into(), response["description"].clone());
            if let Some(schema) = response.get("schema") {
                let schema = v3_refs(schema);
                let content: Map<String, Value> = operation["produces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|mime| (mime.to_string(), json!({ "schema": schema })))
                    .collect();
                r.insert("content".into(), Value::Object(content));
            }
            responses.insert(code.clone(), Value::Object(r));
        }
        converted.insert("responses".into(), Value::Object(responses));
        converted.insert(
            "x-kubernetes-action".into(),
            operation["x-kubernetes-action"].clone(),
        );
        converted.insert(
            "x-kubernetes-group-version-kind".into(),
            operation["x-kubernetes-group-version-kind"].clone(),
        );
        out.insert(method.clone(), Value::Object(converted));
    }
    if let Some(Value::Array(params)) = item.get("parameters") {
        out.insert(
            "parameters".into(),
            Value::Array(params.iter().map(v3_param_from_v2).collect()),
        );
    }
    Value::Object(out)
}

/// Converts a v2 query/path parameter to v3 (type moves under `schema`).
fn v3_param_from_v2(param: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required"] {
        if let Some(value) = param.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    out.insert(
        "schema".into(),
        json!({ "type": param["type"], "uniqueItems": true }),
    );
    Value::Object(out)
}

/// Rewrites `#/definitions/` refs to `#/components/schemas/`, and a `$ref` with siblings
/// (a description) to `allOf: [{$ref}]` as upstream's v3 does.
fn v3_refs(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut out = Map::new();
            let target = object
                .get("$ref")
                .and_then(Value::as_str)
                .map(|t| t.replacen(V2_REF_PREFIX, V3_REF_PREFIX, 1));
            if let Some(target) = target {
                if object.len() == 1 {
                    out.insert("$ref".into(), json!(target));
                } else {
                    out.insert("allOf".into(), json!([{ "$ref": target }]));
                }
            }
            for (key, value) in object {
                if key == "$ref" {
                    continue;
                }
                let converted = if key == "x-kubernetes-group-version-kind"
                    || key == "x-kubernetes-list-map-keys"
                {
                    value.clone()
                } else {
                    v3_refs(value)
                };
                out.insert(key.clone(), converted);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(v3_refs).collect()),
        other => other.clone(),
    }
}

/// One definition in v3 form: refs rewritten, int-or-string types as upstream's `oneOf`.
fn v3_schema(name: &str, schema: &Value) -> Value {
    let mut converted = v3_refs(schema);
    if let Value::Object(object) = &mut converted {
        let one_of = if name.ends_with(".IntOrString") {
            Some(json!([{ "type": "integer" }, { "type": "string" }]))
        } else if name.ends_with(".Quantity") {
            Some(json!([{ "type": "string" }, { "type": "number" }]))
        } else {
            None
        };
        if let Some(one_of) = one_of {
            object.remove("type");
            object.insert("oneOf".into(), one_of);
        }
    }
    converted
}
