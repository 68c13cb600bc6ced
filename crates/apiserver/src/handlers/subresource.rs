//! The `scale` subresource (`autoscaling/v1` `Scale`) and pod `binding`.

use http::Method;
use hyper::Response;
use nodeless_api::registry::ScaleSpec;
use nodeless_api::selector::LabelSelector;
use serde_json::{json, Value};

use super::{model, Ctx};
use crate::http_util::{self, Body};
use crate::objects;
use crate::ApiError;

use super::write::MAX_RETRIES;

/// The label selector of a scalable object as the `Scale` status string.
fn selector_string(obj: &Value, spec: &ScaleSpec) -> String {
    match objects::at(obj, spec.selector) {
        Some(sel) if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() => {
            LabelSelector::from_json(
                sel,
                &nodeless_api::error::FieldPath::root("spec").child("selector"),
            )
            .map(|s| s.to_string())
            .unwrap_or_default()
        }
        Some(Value::Object(map)) => LabelSelector::from_map(map).to_string(),
        _ => String::new(),
    }
}

fn to_scale(obj: &Value, spec: &ScaleSpec) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": { "replicas": objects::at(obj, spec.spec_replicas).and_then(Value::as_i64).unwrap_or(0) },
        "status": {
            "replicas": objects::at(obj, spec.status_replicas).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj, spec),
        },
    })
}

/// GET, PUT and PATCH of `/scale`.
pub async fn scale(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let Some(spec) = kind.scale else {
        return Err(ApiError::no_route("this resource has no scale subresource"));
    };
    let dry_run = super::write::dry_run(ctx)?;
    for _ in 0..MAX_RETRIES {
        let obj = ctx
            .state
            .storage
            .get_existing(kind, ctx.namespace(), name)
            .await?;
        let current = to_scale(&obj, &spec);
        if ctx.req.method == Method::GET {
            return Ok(http_util::value_response(200, &current, ctx.output));
        }
        let body = ctx.req.decode_body()?;
        let wanted = if ctx.req.method == Method::PUT {
            body
        } else {
            match model::PatchType::from_content_type(&ctx.req.content_type())? {
                model::PatchType::Json => nodeless_patch::json_patch(&current, &body)
                    .map_err(super::write::patch_error)?,
                model::PatchType::Merge | model::PatchType::Strategic | model::PatchType::Apply => {
                    nodeless_patch::merge_patch(&current, &body)
                        .map_err(super::write::patch_error)?
                }
            }
        };
        let replicas = match wanted.get("spec").and_then(|s| s.get("replicas")) {
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?,
            None | Some(Value::Null) => 0,
            Some(_) => return Err(ApiError::bad_request("spec.replicas must be an integer")),
        };
        if replicas < 0 || replicas > i32::MAX as i64 {
            return Err(ApiError::invalid(
                kind,
                name,
                &[nodeless_api::error::FieldError::invalid(
                    "spec.replicas",
                    json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let rv = objects::resource_version(&obj)
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0);
        if let Some(wanted_rv) = objects::resource_version(&wanted) {
            if wanted_rv != rv.to_string() && ctx.req.method == Method::PUT {
                return Err(ApiError::modified(kind, name));
            }
        }
        if objects::at(&obj, spec.spec_replicas).and_then(Value::as_i64) == Some(replicas) {
            return Ok(http_util::value_response(200, &current, ctx.output));
        }
        let mut new = obj.clone();
        objects::set_at(&mut new, spec.spec_replicas, json!(replicas));
        if kind.tracks_generation {
            let g = objects::at(&obj, &["metadata", "generation"])
                .and_then(Value::as_i64)
                .unwrap_or(0);
            objects::meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        model::track_update(kind, Some(&obj), &mut new, &ctx.req.field_manager());
        if dry_run {
            return Ok(http_util::value_response(
                200,
                &to_scale(&new, &spec),
                ctx.output,
            ));
        }
        match ctx.state.storage.update(kind, &new, rv).await {
            Err(e) if e.code == 409 && ctx.req.method != Method::PUT => continue,
            Err(e) => return Err(e),
            Ok(stored) => {
                return Ok(http_util::value_response(
                    200,
                    &to_scale(&stored, &spec),
                    ctx.output,
                ))
            }
        }
    }
    Err(ApiError::conflict(
        kind,
        name,
        "the object kept changing; giving up after several retries",
    ))
}

/// POST of a `Binding` to `pods/{name}/binding`: assigns the pod to a node, once.
pub async fn binding(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let body = ctx.req.decode_body()?;
    let node = body
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                kind,
                name,
                &[nodeless_api::error::FieldError::required("target.name", "")],
            )
        })?
        .to_string();
    for _ in 0..MAX_RETRIES {
        let pod = ctx
            .state
            .storage
            .get_existing(kind, ctx.namespace(), name)
            .await?;
        if objects::is_deleting(&pod) {
            return Err(ApiError::conflict(
                kind,
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = pod
            .get("spec")
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                kind,
                name,
                format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        let rv = objects::resource_version(&pod)
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0);
        let mut new = pod.clone();
        objects::set_at(&mut new, &["spec", "nodeName"], Value::String(node.clone()));
        let mut conditions: Vec<Value> = pod
            .get("status")
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conditions.push(json!({ "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now_rfc3339() }));
        objects::set_at(
            &mut new,
            &["status", "conditions"],
            Value::Array(conditions),
        );
        match ctx.state.storage.update(kind, &new, rv).await {
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
            Ok(_) => {
                let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 });
                return Ok(http_util::value_response(201, &status, ctx.output));
            }
        }
    }
    Err(ApiError::conflict(
        kind,
        name,
        "the pod kept changing; giving up after several retries",
    ))
}
