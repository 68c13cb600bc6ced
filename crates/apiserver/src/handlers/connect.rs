//! The pod subresources served by the pod's node: `log` (GET, streamed), and the connect
//! verbs `exec`, `attach` and `portforward` (GET or POST with an upgrade to SPDY/3.1 or
//! WebSocket). As upstream (`pkg/registry/core/pod/strategy.go` `LogLocation`,
//! `streamLocation`): the options are validated here, the pod's node and its kubelet endpoint
//! are looked up, and the request goes to the agent's server with the API server's
//! kubelet-client certificate.

use std::sync::Arc;

use http::Method;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

use super::Ctx;
use crate::http_util::{self, Body};
use crate::node_proxy;
use crate::route::{self, ResourcePath, Route};
use crate::server::AppState;
use crate::ApiError;

/// The connect subresources that upgrade the connection.
const STREAM_SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// The pod path of an `exec`, `attach` or `portforward` request, if the path is one; these
/// bypass the buffered request handling because they take over the connection.
pub(crate) fn stream_route(path: &str) -> Option<ResourcePath> {
    match route::parse(path) {
        Ok(Route::Resource(p))
            if p.kind.kind == "Pod"
                && p.kind.group.is_empty()
                && p.subresource
                    .as_deref()
                    .is_some_and(|s| STREAM_SUBRESOURCES.contains(&s)) =>
        {
            Some(p)
        }
        _ => None,
    }
}

/// The names of all the pod's containers, init containers first, as upstream lists them.
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| pod.pointer(&format!("/spec/{field}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The container a request names, or the pod's only container (upstream's
/// `validateContainer`).
fn validate_container(
    pod: &Value,
    name: &str,
    container: Option<&str>,
) -> Result<String, ApiError> {
    match container.filter(|c| !c.is_empty()) {
        Some(c) => {
            if container_names(pod).iter().any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => {
            let containers = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            match containers {
                [only] => Ok(only
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    container_names(pod).join(" ")
                ))),
            }
        }
    }
}

/// Whether the container has a log to read, from the pod's status as the kubelet checks it
/// (`validateContainerLogStatus`).
fn validate_log_status(
    pod: &Value,
    name: &str,
    container: &str,
    previous: bool,
) -> Result<(), ApiError> {
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|field| pod.pointer(&format!("/status/{field}"))?.as_array())
    .flatten()
    .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "container {container:?} in pod {name:?} is not available"
        ))
    })?;
    let has_id = |state: Option<&Value>| {
        state
            .and_then(|t| t.get("containerID"))
            .and_then(Value::as_str)
            .is_some_and(|id| !id.is_empty())
    };
    let state = status.get("state");
    let last_terminated = status.pointer("/lastState/terminated");
    if previous {
        if !has_id(last_terminated) {
            return Err(ApiError::bad_request(format!(
                "previous terminated container {container:?} in pod {name:?} not found"
            )));
        }
        return Ok(());
    }
    if state.and_then(|s| s.get("running")).is_some() {
        return Ok(());
    }
    let terminated = state.and_then(|s| s.get("terminated"));
    if let Some(t) = terminated.or(last_terminated) {
        return if has_id(Some(t)) {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "container {container:?} in pod {name:?} is terminated"
            )))
        };
    }
    let reason = state
        .and_then(|s| s.pointer("/waiting/reason"))
        .and_then(Value::as_str)
        .unwrap_or("ContainerCreating");
    let why = match reason {
        "ErrImagePull" => "image can't be pulled".to_string(),
        "ImagePullBackOff" => "trying and failing to pull image".to_string(),
        other => other.to_string(),
    };
    Err(ApiError::bad_request(format!(
        "container {container:?} in pod {name:?} is waiting to start: {why}"
    )))
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `PodLogOptions` of a request, validated as upstream (`ValidatePodLogOptions`), as the
/// kubelet's query string.
fn log_query(ctx: &Ctx<'_>, name: &str) -> Result<(bool, String), ApiError> {
    let q = &ctx.req.query;
    let mut errors = Vec::new();
    let tail = q.int("tailLines")?;
    if let Some(n) = tail.filter(|n| *n < 0) {
        errors.push(format!(
            "tailLines: Invalid value: {n}: must be greater than or equal to 0"
        ));
    }
    let limit = q.int("limitBytes")?;
    if let Some(n) = limit.filter(|n| *n < 1) {
        errors.push(format!(
            "limitBytes: Invalid value: {n}: must be greater than 0"
        ));
    }
    let since_seconds = q.int("sinceSeconds")?;
    let since_time = q.get("sinceTime");
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => errors.push(
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
        ),
        (Some(n), None) if n < 1 => errors.push(format!(
            "sinceSeconds: Invalid value: {n}: must be greater than 0"
        )),
        _ => {}
    }
    if let Some(t) = since_time {
        if time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_err() {
            return Err(ApiError::bad_request(format!(
                "parsing time \"{t}\" as \"2006-01-02T15:04:05Z07:00\": cannot parse"
            )));
        }
    }
    if !errors.is_empty() {
        let summary = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        return Err(ApiError::unprocessable(format!(
            "PodLogOptions \"{name}\" is invalid: {summary}"
        )));
    }
    let previous = q.flag("previous")?;
    let mut params = Vec::new();
    if q.flag("follow")? {
        params.push("follow=true".to_string());
    }
    if previous {
        params.push("previous=true".to_string());
    }
    if q.flag("timestamps")? {
        params.push("timestamps=true".to_string());
    }
    if let Some(n) = since_seconds {
        params.push(format!("sinceSeconds={n}"));
    }
    if let Some(t) = since_time {
        params.push(format!("sinceTime={}", encode(t)));
    }
    if let Some(n) = tail {
        params.push(format!("tailLines={n}"));
    }
    if let Some(n) = limit {
        params.push(format!("limitBytes={n}"));
    }
    Ok((previous, params.join("&")))
}

/// GET `pods/{name}/log`: the container's log from its node, streamed as it comes.
pub(crate) async fn log(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, ApiError> {
    let kind = ctx.kind();
    let namespace = ctx.namespace().unwrap_or_default();
    let pod = ctx
        .state
        .storage
        .get_existing(kind, Some(namespace), name)
        .await?;
    let container = validate_container(&pod, name, ctx.req.query.get("container"))?;
    let (previous, query) = log_query(ctx, name)?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty() {
        // Upstream answers an unscheduled pod's log with an empty stream.
        return Ok(http_util::bytes_response(200, "text/plain", Vec::new()));
    }
    validate_log_status(&pod, name, &container, previous)?;
    let node = node_proxy::locate_node(&ctx.state.storage, node_name).await?;
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    ctx.state.node_client.get_streaming(&node, &path).await
}

/// The raw query parameters, in order, repeated keys kept.
fn raw_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let q = http_util::Query::parse(&format!("k={v}"));
            (k.to_string(), q.get("k").unwrap_or_default().to_string())
        })
        .collect()
}

fn flag(pairs: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    match pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
    {
        None => Ok(false),
        Some("true" | "1" | "True" | "") => Ok(true),
        Some("false" | "0" | "False") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid value {other:?} for boolean parameter {key}"
        ))),
    }
}

/// The agent's path of an exec, attach or port-forward of the pod.
fn stream_path(
    pod: &Value,
    namespace: &str,
    name: &str,
    subresource: &str,
    query: Option<&str>,
) -> Result<String, ApiError> {
    let pairs = raw_pairs(query);
    let mut params = Vec::new();
    if subresource == "portforward" {
        for (_, port) in pairs.iter().filter(|(k, _)| k == "ports" || k == "port") {
            params.push(format!("port={}", encode(port)));
        }
        let query = params.join("&");
        return Ok(format!("/portForward/{namespace}/{name}?{query}"));
    }
    let container = pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    let container = validate_container(pod, name, container)?;
    for (param, kubelet) in [
        ("stdin", "input"),
        ("stdout", "output"),
        ("stderr", "error"),
        ("tty", "tty"),
    ] {
        if flag(&pairs, param)? {
            params.push(format!("{kubelet}=1"));
        }
    }
    if subresource == "exec" {
        for (_, c) in pairs.iter().filter(|(k, _)| k == "command") {
            params.push(format!("command={}", encode(c)));
        }
    }
    let query = params.join("&");
    let agent_verb = if subresource == "exec" {
        "exec"
    } else {
        "attach"
    };
    Ok(format!(
        "/{agent_verb}/{namespace}/{name}/{container}?{query}"
    ))
}

/// `exec`, `attach` and `portforward`: validates, finds the pod's node and proxies the
/// upgrade to its agent. Failures are `Status` responses.
pub(crate) async fn stream(
    state: &Arc<AppState>,
    path: ResourcePath,
    req: Request<Incoming>,
) -> Response<Body> {
    match stream_inner(state, path, req).await {
        Ok(resp) => resp,
        Err(e) => http_util::error_response(&e),
    }
}

async fn stream_inner(
    state: &Arc<AppState>,
    path: ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method(),
            req.uri().path()
        )));
    }
    let (Some(name), Some(subresource)) = (path.name.as_deref(), path.subresource.as_deref())
    else {
        return Err(ApiError::no_route(
            "the server could not find the requested resource",
        ));
    };
    let namespace = path.namespace.as_deref().unwrap_or_default();
    let pod = state
        .storage
        .get_existing(path.kind, Some(namespace), name)
        .await?;
    let agent_path = stream_path(&pod, namespace, name, subresource, req.uri().query())?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = node_proxy::locate_node(&state.storage, node_name).await?;
    state
        .node_client
        .proxy_upgrade(&node, &agent_path, req)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "app"}, {"name": "side"}]},
            "status": {"containerStatuses": [
                {"name": "app", "state": {"running": {}}, "lastState": {}},
                {"name": "side", "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}},
            ]},
        })
    }

    #[test]
    fn containers_are_validated_as_upstream() {
        let p = pod();
        assert_eq!(
            validate_container(&p, "web", None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [init app side]"
        );
        assert_eq!(validate_container(&p, "web", Some("app")).unwrap(), "app");
        let e = validate_container(&p, "web", Some("nope")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container nope is not valid for pod web")
        );
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(validate_container(&single, "x", None).unwrap(), "only");
    }

    #[test]
    fn log_status_follows_the_kubelet() {
        let p = pod();
        assert!(validate_log_status(&p, "web", "app", false).is_ok());
        assert_eq!(
            validate_log_status(&p, "web", "side", false)
                .unwrap_err()
                .message,
            "container \"side\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        assert_eq!(
            validate_log_status(&p, "web", "app", true)
                .unwrap_err()
                .message,
            "previous terminated container \"app\" in pod \"web\" not found"
        );
        let restarted = json!({"status": {"containerStatuses": [{"name": "app",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "simulated://x"}}}]}});
        assert!(validate_log_status(&restarted, "web", "app", false).is_ok());
        assert!(validate_log_status(&restarted, "web", "app", true).is_ok());
    }

    #[test]
    fn stream_paths_use_the_kubelet_parameters() {
        let p = pod();
        assert_eq!(
            stream_path(
                &p,
                "ns",
                "web",
                "exec",
                Some(
                    "command=sh&command=-c&command=echo%20hi&container=app&stdout=true&stderr=true"
                )
            )
            .unwrap(),
            "/exec/ns/web/app?output=1&error=1&command=sh&command=-c&command=echo%20hi"
        );
        assert_eq!(
            stream_path(
                &p,
                "ns",
                "web",
                "attach",
                Some("container=side&stdin=true&tty=true")
            )
            .unwrap(),
            "/attach/ns/web/side?input=1&tty=1"
        );
        assert_eq!(
            stream_path(
                &p,
                "ns",
                "web",
                "portforward",
                Some("ports=8080&ports=9090")
            )
            .unwrap(),
            "/portForward/ns/web?port=8080&port=9090"
        );
        assert!(stream_path(&p, "ns", "web", "exec", Some("command=ls")).is_err());
        assert!(stream_route("/api/v1/namespaces/ns/pods/web/exec").is_some());
        assert!(stream_route("/api/v1/namespaces/ns/pods/web/log").is_none());
    }
}
