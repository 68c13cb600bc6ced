//! Errors as Kubernetes `metav1.Status` responses.

use nodeless_api::error::FieldError;
use nodeless_api::registry::ResourceKind;
use serde_json::{json, Value};

/// An error answered to the client as a `Status` object with the matching HTTP code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn forbidden(kind: &ResourceKind, name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: {message}",
                kind.qualified_resource()
            ),
        )
        .with_details(details(kind, name, &[]))
    }
    pub fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_resource()),
        )
        .with_details(details(kind, name, &[]))
    }
    /// 404 for a path that names no resource.
    pub fn no_route(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }
    pub fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified_resource()),
        )
        .with_details(details(kind, name, &[]))
    }
    /// 409 for a stale resourceVersion or a failed precondition.
    pub fn conflict(kind: &ResourceKind, name: &str, why: impl Into<String>) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {}",
                kind.qualified_resource(),
                why.into()
            ),
        )
        .with_details(details(kind, name, &[]))
    }
    /// 409 for the stale-resourceVersion case, with upstream's wording.
    pub fn modified(kind: &ResourceKind, name: &str) -> Self {
        Self::conflict(kind, name, "the object has been modified; please apply your changes to the latest version and try again")
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// 422 with one cause per invalid field.
    pub fn invalid(kind: &ResourceKind, name: &str, errors: &[FieldError]) -> Self {
        let list = errors.iter().map(FieldError::message).collect::<Vec<_>>();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {summary}", kind_name(kind)),
        )
        .with_details(details(kind, name, errors))
    }
    /// 422 for a request that is well formed but cannot be carried out (e.g. a JSON patch
    /// whose path does not exist).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// Upstream names the kind (not the resource) in Invalid messages: `Deployment.apps "x" is invalid`.
fn kind_name(kind: &ResourceKind) -> String {
    if kind.group.is_empty() {
        kind.kind.to_string()
    } else {
        format!("{}.{}", kind.kind, kind.group)
    }
}

fn details(kind: &ResourceKind, name: &str, errors: &[FieldError]) -> Value {
    let mut d = json!({ "name": name, "group": kind.group, "kind": if errors.is_empty() { kind.plural } else { kind.kind } });
    if !errors.is_empty() {
        d["causes"] = Value::Array(errors.iter().map(FieldError::cause).collect());
    }
    d
}

impl From<nodeless_store::StoreError> for ApiError {
    fn from(e: nodeless_store::StoreError) -> Self {
        use nodeless_store::StoreError as E;
        match e {
            E::Compacted { .. } => Self::gone(format!("too old resource version: {e}")),
            E::Unavailable(msg) => Self::unavailable(format!("storage is unavailable: {msg}")),
            E::Timeout(msg) => Self::timeout(format!("storage did not answer in time: {msg}")),
            other => Self::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeless_store::StoreError;

    #[test]
    fn an_unreachable_store_is_503_and_a_hung_one_504() {
        let down = ApiError::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!((down.code, down.reason), (503, "ServiceUnavailable"));
        let hung = ApiError::from(StoreError::Timeout("no answer within 5s".into()));
        assert_eq!((hung.code, hung.reason), (504, "Timeout"));
        assert!(
            hung.message.contains("no answer within 5s"),
            "{}",
            hung.message
        );
        let broken = ApiError::from(StoreError::Backend("corrupt".into()));
        assert_eq!(broken.code, 500);
    }
}
