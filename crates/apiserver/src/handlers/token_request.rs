//! `POST serviceaccounts/{name}/token`: an `authentication.k8s.io/v1` `TokenRequest` for a
//! service account, answered with a signed token (upstream's `TokenREST`).

use hyper::Response;
use nodeless_api::registry;
use serde_json::{json, Value};

use super::Ctx;
use crate::http_util::{self, Body, Output};
use crate::objects;
use crate::tokens::{
    self, Claims, ObjectClaim, DEFAULT_EXPIRATION_SECONDS, MAX_EXPIRATION_SECONDS,
    MIN_EXPIRATION_SECONDS,
};
use crate::ApiError;

fn core_kind(plural: &str) -> Result<&'static registry::ResourceKind, ApiError> {
    registry::by_plural("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} in the registry")))
}

fn invalid(field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "TokenRequest.authentication.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {detail}"
    ))
}

/// The requested lifetime: 3600 s by default, between 10 minutes and 2^32 seconds.
fn expiration_seconds(spec: &Value) -> Result<i64, ApiError> {
    let field = "spec.expirationSeconds";
    match spec.get("expirationSeconds") {
        None | Some(Value::Null) => Ok(DEFAULT_EXPIRATION_SECONDS),
        Some(v) => {
            let secs = v
                .as_i64()
                .ok_or_else(|| invalid(field, v, "must be an integer"))?;
            if secs < MIN_EXPIRATION_SECONDS {
                Err(invalid(
                    field,
                    v,
                    "may not specify a duration less than 10 minutes",
                ))
            } else if secs > MAX_EXPIRATION_SECONDS {
                Err(invalid(
                    field,
                    v,
                    "may not specify a duration larger than 2^32 seconds",
                ))
            } else {
                Ok(secs)
            }
        }
    }
}

fn str_field<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get(field).and_then(Value::as_str).unwrap_or("")
}

/// Reads the object a token is bound to and checks the reference's uid, as upstream.
async fn bound_object(
    ctx: &Ctx<'_>,
    namespace: &str,
    bound: &Value,
) -> Result<(&'static str, Value), ApiError> {
    let (kind_name, api_version, name) = (
        str_field(bound, "kind"),
        str_field(bound, "apiVersion"),
        str_field(bound, "name"),
    );
    let (group, _) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match (group, kind_name) {
        ("", "Pod") => "pods",
        ("", "Secret") => "secrets",
        ("", "Node") => "nodes",
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {api_version}, Kind={kind_name}"
            )))
        }
    };
    let kind = core_kind(plural)?;
    let scope = kind.namespaced.then_some(namespace);
    let obj = ctx.state.storage.get_existing(kind, scope, name).await?;
    let uid = objects::uid(&obj).unwrap_or("");
    let wanted_uid = str_field(bound, "uid");
    if !wanted_uid.is_empty() && wanted_uid != uid {
        return Err(ApiError::conflict(
            kind,
            name,
            format!("the UID in the bound object reference ({wanted_uid}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
        ));
    }
    Ok((plural, obj))
}

fn claim_of(obj: &Value) -> ObjectClaim {
    ObjectClaim {
        name: objects::name(obj).unwrap_or("").to_string(),
        uid: objects::uid(obj).unwrap_or("").to_string(),
    }
}

/// Issues a token for service account `name` of the request's namespace.
pub async fn create(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, ApiError> {
    let namespace = ctx.namespace().unwrap_or("default").to_string();
    let mut request = ctx.req.decode_body()?;
    if !request.is_object() {
        return Err(ApiError::bad_request("the body is not a TokenRequest"));
    }
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = expiration_seconds(&spec)?;
    let sa = ctx
        .state
        .storage
        .get_existing(core_kind("serviceaccounts")?, Some(&namespace), name)
        .await?;
    let signer = &ctx.state.service_account_tokens;
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("spec.audiences", &json!(list), "must be strings"))?,
        _ => signer.api_audiences().to_vec(),
    };
    let now = tokens::now_seconds();
    let mut claims = Claims::new(
        &namespace,
        name,
        objects::uid(&sa).unwrap_or(""),
        audiences.clone(),
        now,
        expiration,
    );
    let bound_ref = spec.get("boundObjectRef").filter(|b| b.is_object());
    if let Some(bound) = bound_ref {
        let (plural, obj) = bound_object(ctx, &namespace, bound).await?;
        match plural {
            "pods" => {
                let pod_sa = objects::at(&obj, &["spec", "serviceAccountName"])
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {name:?} to pod running with serviceaccount {pod_sa:?}"
                    )));
                }
                claims.kubernetes.pod = Some(claim_of(&obj));
                // The pod's node, as information (upstream's ServiceAccountTokenPodNodeInfo).
                let node_name = objects::at(&obj, &["spec", "nodeName"])
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty());
                if let Some(node_name) = node_name {
                    let node = ctx
                        .state
                        .storage
                        .get(core_kind("nodes")?, None, node_name)
                        .await?;
                    claims.kubernetes.node = node.as_ref().map(claim_of);
                }
            }
            "secrets" => claims.kubernetes.secret = Some(claim_of(&obj)),
            _ => claims.kubernetes.node = Some(claim_of(&obj)),
        }
    }
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))?;
    let expires = time::OffsetDateTime::from_unix_timestamp(claims.exp)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut new_spec = json!({ "audiences": audiences, "expirationSeconds": expiration });
    if let Some(bound) = bound_ref {
        new_spec["boundObjectRef"] = bound.clone();
    }
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    let meta = objects::meta_mut(&mut request);
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    meta.entry("creationTimestamp").or_insert(Value::Null);
    request["spec"] = new_spec;
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": objects::format_time(expires),
    });
    tracing::debug!(namespace = %namespace, serviceaccount = %name, expiration, "token issued");
    let output = if ctx.output == Output::Yaml {
        Output::Yaml
    } else {
        Output::Json
    };
    Ok(http_util::value_response(201, &request, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_defaults_and_bounds() {
        assert_eq!(expiration_seconds(&json!({})).unwrap(), 3600);
        assert_eq!(
            expiration_seconds(&json!({ "expirationSeconds": 600 })).unwrap(),
            600
        );
        let short = expiration_seconds(&json!({ "expirationSeconds": 599 })).unwrap_err();
        assert_eq!(short.code, 422);
        assert!(
            short.message.contains("less than 10 minutes"),
            "{}",
            short.message
        );
        let long =
            expiration_seconds(&json!({ "expirationSeconds": (1i64 << 32) + 1 })).unwrap_err();
        assert!(long.message.contains("2^32"));
        assert_eq!(
            expiration_seconds(&json!({ "expirationSeconds": "x" }))
                .unwrap_err()
                .code,
            422
        );
    }
}
