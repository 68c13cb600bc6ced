//! Discovery (`/api`, `/apis`, group and group-version documents) and the OpenAPI
//! documents, all derived from the registry.

use std::sync::OnceLock;

use hyper::Response;
use nodeless_api::registry::{self, ResourceKind, KINDS};
use nodeless_api::schema::ResourceInfo;
use serde_json::{json, Value};

use crate::http_util::{self, Body, Output};
use crate::ApiError;

/// `/api`
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "" }],
    })
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({ "groupVersion": format!("{g}/{v}"), "version": v }))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

/// `/apis`, aggregated when the client asks for it.
pub fn groups_response(accept: Option<&str>) -> Response<Body> {
    if let Some(version) = aggregated_version(accept) {
        return aggregated(false, version);
    }
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in registry::groups() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    let list = json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": names.into_iter().map(group_entry).collect::<Vec<_>>(),
    });
    http_util::value_response(200, &list, Output::Json)
}

/// `/apis/{group}`
pub fn group(group: &str) -> Value {
    let mut entry = group_entry(group);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    entry
}

/// The aggregated discovery version a client asks for first (`v2` or `v2beta1`), if any.
fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    for item in accept?.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let has = |k: &str, v: &str| {
            params
                .iter()
                .any(|(pk, pv)| pk.trim() == k && pv.trim() == v)
        };
        if media == "application/json"
            && has("g", "apidiscovery.k8s.io")
            && has("as", "APIGroupDiscoveryList")
        {
            if has("v", "v2") {
                return Some("v2");
            }
            if has("v", "v2beta1") {
                return Some("v2beta1");
            }
        }
        if media == "application/json" && params.is_empty() {
            return None;
        }
    }
    None
}

fn discovery_resource(kind: &ResourceKind) -> Value {
    let scope = if kind.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    };
    let mut subresources = Vec::new();
    let sub = |name: &str, group: &str, version: &str, kind_name: &str, verbs: &[&str]| json!({ "subresource": name, "responseKind": { "group": group, "version": version, "kind": kind_name }, "verbs": verbs });
    if kind.kind == "Pod" {
        subresources.push(sub(
            "attach",
            "",
            "v1",
            "PodAttachOptions",
            &["create", "get"],
        ));
        subresources.push(sub("binding", "", "v1", "Binding", &["create"]));
        subresources.push(sub("exec", "", "v1", "PodExecOptions", &["create", "get"]));
        subresources.push(sub("log", "", "v1", "Pod", &["get"]));
        subresources.push(sub(
            "portforward",
            "",
            "v1",
            "PodPortForwardOptions",
            &["create", "get"],
        ));
    }
    if kind.kind == "Namespace" {
        subresources.push(sub("finalize", "", "v1", "Namespace", &["update"]));
    }
    if kind.kind == "ServiceAccount" {
        subresources.push(sub(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            &["create"],
        ));
    }
    if kind.kind == "CertificateSigningRequest" {
        subresources.push(sub(
            "approval",
            kind.group,
            kind.version,
            kind.kind,
            &["get", "patch", "update"],
        ));
    }
    if kind.scale.is_some() {
        subresources.push(sub(
            "scale",
            "autoscaling",
            "v1",
            "Scale",
            &["get", "patch", "update"],
        ));
    }
    if kind.status_subresource {
        subresources.push(sub(
            "status",
            kind.group,
            kind.version,
            kind.kind,
            &["get", "patch", "update"],
        ));
    }
    let mut entry = json!({
        "resource": kind.plural,
        "responseKind": { "group": kind.group, "version": kind.version, "kind": kind.kind },
        "scope": scope,
        "singularResource": kind.singular,
        "verbs": kind.verbs,
    });
    if !kind.short_names.is_empty() {
        entry["shortNames"] = json!(kind.short_names);
    }
    if !kind.categories.is_empty() {
        entry["categories"] = json!(kind.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = Value::Array(subresources);
    }
    entry
}

/// The aggregated discovery document of the core group (`core == true`) or of all the
/// named groups, in the version the client asked for.
fn aggregated(core: bool, version: &str) -> Response<Body> {
    let mut items = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (group, _) in registry::groups() {
        if group.is_empty() != core || seen.contains(&group) {
            continue;
        }
        seen.push(group);
        let versions: Vec<Value> = registry::groups()
            .into_iter()
            .filter(|(g, _)| *g == group)
            .map(|(g, v)| {
                json!({
                    "version": v,
                    "resources": registry::in_group_version(g, v).map(discovery_resource).collect::<Vec<_>>(),
                    "freshness": "Current",
                })
            })
            .collect();
        items.push(json!({ "metadata": { "name": group, "creationTimestamp": null }, "versions": versions }));
    }
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    let mut resp = http_util::value_response(200, &doc, Output::Json);
    if let Ok(v) = http::HeaderValue::from_str(&content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// `/api` in aggregated form, when the client asks for it.
pub fn aggregated_core(accept: Option<&str>) -> Option<Response<Body>> {
    aggregated_version(accept).map(|v| aggregated(true, v))
}

fn storage_version_hash(kind: &ResourceKind) -> String {
    use base64::Engine;
    // Upstream hashes group/version/kind of the storage version; any stable value works for
    // clients, which only compare it.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{}/{}/{}", kind.group, kind.version, kind.kind).bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    base64::engine::general_purpose::STANDARD.encode(&h.to_be_bytes()[..8])
}

/// The `APIResource` entries of one kind: the resource and its subresources.
fn api_resources(kind: &ResourceKind) -> Vec<Value> {
    let mut main = json!({
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": kind.verbs,
        "storageVersionHash": storage_version_hash(kind),
    });
    if !kind.short_names.is_empty() {
        main["shortNames"] = json!(kind.short_names);
    }
    if !kind.categories.is_empty() {
        main["categories"] = json!(kind.categories);
    }
    let mut out = vec![main];
    let sub = |name: &str, kind_name: &str, verbs: &[&str]| json!({ "name": format!("{}/{name}", kind.plural), "singularName": "", "namespaced": kind.namespaced, "kind": kind_name, "verbs": verbs });
    if kind.kind == "Pod" {
        out.push(sub("attach", "PodAttachOptions", &["create", "get"]));
        out.push(sub("binding", "Binding", &["create"]));
        out.push(sub("exec", "PodExecOptions", &["create", "get"]));
        out.push(sub("log", "Pod", &["get"]));
        out.push(sub(
            "portforward",
            "PodPortForwardOptions",
            &["create", "get"],
        ));
    }
    if kind.kind == "Namespace" {
        out.push(sub("finalize", "Namespace", &["update"]));
    }
    if kind.kind == "ServiceAccount" {
        let mut token = sub("token", "TokenRequest", &["create"]);
        token["group"] = json!("authentication.k8s.io");
        token["version"] = json!("v1");
        out.push(token);
    }
    if kind.scale.is_some() {
        let mut scale = sub("scale", "Scale", &["get", "patch", "update"]);
        scale["group"] = json!("autoscaling");
        scale["version"] = json!("v1");
        out.push(scale);
    }
    if kind.status_subresource {
        out.push(sub("status", kind.kind, &["get", "patch", "update"]));
    }
    out
}

/// `/api/v1`, `/apis/{group}/{version}`
pub fn resource_list(group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = registry::in_group_version(group, version)
        .flat_map(api_resources)
        .collect();
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
}

fn subresources_of(kind: &ResourceKind) -> &'static [&'static str] {
    match (kind.status_subresource, kind.scale.is_some(), kind.kind) {
        (true, _, "Pod") => &["status", "binding"],
        (true, true, _) => &["status", "scale"],
        (true, false, _) => &["status"],
        (false, true, _) => &["scale"],
        (false, false, _) => &[],
    }
}

fn resource_infos() -> &'static [ResourceInfo] {
    static INFOS: OnceLock<Vec<ResourceInfo>> = OnceLock::new();
    INFOS.get_or_init(|| {
        KINDS
            .iter()
            .map(|k| ResourceInfo {
                group: k.group,
                version: k.version,
                kind: k.kind,
                plural: k.plural,
                namespaced: k.namespaced,
                subresources: subresources_of(k),
                verbs: k.verbs,
            })
            .collect()
    })
}

/// The media type of the gnostic protobuf form of `/openapi/v2`, which kubectl asks for.
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// `/openapi/v2`: JSON, or gnostic protobuf when the client asks for it first.
pub fn openapi_v2(accept: Option<&str>) -> Result<Response<Body>, ApiError> {
    static JSON: OnceLock<Value> = OnceLock::new();
    static JSON_BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    static PROTOBUF: OnceLock<Vec<u8>> = OnceLock::new();
    let doc = || JSON.get_or_init(|| nodeless_api::schema::openapi_v2(resource_infos()));
    let media: Vec<&str> = accept
        .unwrap_or("application/json")
        .split(',')
        .map(|m| m.split(';').next().unwrap_or("").trim())
        .collect();
    for m in media {
        match m {
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" | OPENAPI_V2_PROTOBUF => {
                let body =
                    PROTOBUF.get_or_init(|| nodeless_api::schema::openapi_v2_protobuf(doc()));
                return Ok(http_util::bytes_response(
                    200,
                    "application/octet-stream",
                    body.clone(),
                ));
            }
            "application/json" | "*/*" | "" => {
                let body = JSON_BYTES.get_or_init(|| serde_json::to_vec(doc()).unwrap_or_default());
                return Ok(http_util::bytes_response(
                    200,
                    "application/json",
                    body.clone(),
                ));
            }
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(
        "/openapi/v2 is served as application/json or as gnostic protobuf",
    ))
}

/// `/openapi/v3`
pub fn openapi_v3_index() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| nodeless_api::schema::openapi_v3_index(resource_infos()))
}

/// Builds the `/openapi/v3` index and every group version's document ahead of the first
/// request (about 150 ms of CPU), so that the first `kubectl create` after a start, which
/// reads both, does not wait for them.
pub fn prepare_openapi_v3() {
    for (group, version) in openapi_v3_group_versions() {
        let _ = openapi_v3(group, version, None, None);
    }
}

/// The group versions the `/openapi/v3` index lists (`api/v1` is the core group, `""`).
fn openapi_v3_group_versions() -> Vec<(&'static str, &'static str)> {
    let Some(paths) = openapi_v3_index()["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .keys()
        .map(|key| match key.strip_prefix("apis/") {
            Some(rest) => rest.split_once('/').unwrap_or((rest, "")),
            None => ("", key.strip_prefix("api/").unwrap_or(key)),
        })
        .collect()
}

/// `/openapi/v3/apis/{group}/{version}`, cached as upstream's kube-openapi serves it: with
/// the current `?hash=` the content is immutable (clients such as kubectl keep it in their
/// HTTP cache and do not fetch it again); a stale hash redirects to the current URL; without
/// a hash, an ETag answers `If-None-Match` with 304.
pub fn openapi_v3(
    group: &str,
    version: &str,
    asked_hash: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    type Docs = std::collections::HashMap<String, (Vec<u8>, String)>;
    static DOCS: OnceLock<std::sync::Mutex<Docs>> = OnceLock::new();
    let cache = DOCS.get_or_init(Default::default);
    let key = format!("{group}/{version}");
    let cached = cache.lock().ok().and_then(|c| c.get(&key).cloned());
    let (body, hash) = match cached {
        Some(entry) => entry,
        None => {
            let doc =
                nodeless_api::schema::openapi_v3_group_version(resource_infos(), group, version)
                    .ok_or_else(|| ApiError::no_route(format!("no OpenAPI document for {key}")))?;
            let entry = (
                serde_json::to_vec(&doc).unwrap_or_default(),
                nodeless_api::schema::openapi_v3_hash(&doc),
            );
            if let Ok(mut c) = cache.lock() {
                c.insert(key.clone(), entry.clone());
            }
            entry
        }
    };
    let etag = format!("\"{hash}\"");
    let mut resp = match asked_hash {
        Some(asked) if asked != hash.as_str() => {
            let path = if group.is_empty() {
                format!("/openapi/v3/api/{version}?hash={hash}")
            } else {
                format!("/openapi/v3/apis/{group}/{version}?hash={hash}")
            };
            let mut resp = http_util::bytes_response(301, "text/plain", Vec::new());
            if let Ok(location) = http::HeaderValue::from_str(&path) {
                resp.headers_mut().insert(http::header::LOCATION, location);
            }
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache, private"),
            );
            return Ok(resp);
        }
        Some(_) => {
            let mut resp = http_util::bytes_response(200, "application/json", body);
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, immutable, max-age=31536000"),
            );
            resp
        }
        None if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) => {
            http_util::bytes_response(304, "application/json", Vec::new())
        }
        None => {
            let mut resp = http_util::bytes_response(200, "application/json", body);
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache, private"),
            );
            resp
        }
    };
    if let Ok(value) = http::HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(http::header::ETAG, value);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(resp: &Response<Body>, name: http::header::HeaderName) -> &str {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn every_group_version_of_the_openapi_index_is_prepared_under_its_listed_hash() {
        prepare_openapi_v3();
        let listed = openapi_v3_group_versions();
        assert!(listed.contains(&("", "v1")) && listed.contains(&("apps", "v1")));
        let paths = openapi_v3_index()["paths"].as_object().unwrap();
        assert_eq!(listed.len(), paths.len());
        for (group, version) in listed {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
            let hash = url.split("?hash=").nth(1).unwrap();
            let resp = openapi_v3(group, version, Some(hash), None).unwrap();
            assert_eq!(resp.status(), 200, "{key}");
        }
    }

    #[test]
    fn openapi_v3_documents_are_immutable_under_their_hash_url() {
        let url = openapi_v3_index()["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .to_string();
        let hash = url.split_once("?hash=").unwrap().1;
        let current = openapi_v3("", "v1", Some(hash), None).unwrap();
        assert_eq!(current.status(), 200);
        assert_eq!(
            header(&current, http::header::CACHE_CONTROL),
            "public, immutable, max-age=31536000"
        );
        let etag = header(&current, http::header::ETAG).to_string();
        assert_eq!(etag, format!("\"{hash}\""));

        // A stale hash: a redirect to the current document.
        let stale = openapi_v3("", "v1", Some("0BAD"), None).unwrap();
        assert_eq!(stale.status(), 301);
        assert_eq!(header(&stale, http::header::LOCATION), url);

        // No hash: revalidated by its ETag.
        let plain = openapi_v3("", "v1", None, None).unwrap();
        assert_eq!(plain.status(), 200);
        assert_eq!(
            header(&plain, http::header::CACHE_CONTROL),
            "no-cache, private"
        );
        let unchanged = openapi_v3("", "v1", None, Some(&etag)).unwrap();
        assert_eq!(unchanged.status(), 304);
        let changed = openapi_v3("", "v1", None, Some("\"other\"")).unwrap();
        assert_eq!(changed.status(), 200);
        assert!(openapi_v3("nope.example", "v1", None, None).is_err());
    }
}
