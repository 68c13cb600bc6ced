//! The serverless rules as an admission plugin: refuse what a node-less cluster cannot
//! offer, and size every pod (the `nodeless.io/capacity-provisioned` annotation).

use nodeless_api::error::{FieldError, FieldPath};
use nodeless_apiserver::admission::{AdmissionPlugin, AdmissionRequest};
use nodeless_apiserver::ApiError;
use nodeless_serverless::{Policy, ServerlessError, SizeTable, Violation, ANNOTATION};
use serde_json::Value;

/// Checks every create and update of every kind against the cluster's policy.
pub struct ServerlessAdmission {
    policy: Policy,
    table: SizeTable,
}

impl ServerlessAdmission {
    /// A plugin enforcing `policy` and sizing pods by `table`.
    pub fn new(policy: Policy, table: SizeTable) -> Self {
        Self { policy, table }
    }
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn sizing_error(
    request: &AdmissionRequest<'_>,
    obj: &Value,
    path: &FieldPath,
    e: ServerlessError,
) -> ApiError {
    let field = FieldError::invalid(
        path.child("containers").to_string(),
        Value::Null,
        e.to_string(),
    );
    let field = FieldError {
        value: None,
        ..field
    };
    ApiError::invalid(request.kind, &name_of(obj), &[field])
}

#[async_trait::async_trait]
impl AdmissionPlugin for ServerlessAdmission {
    fn name(&self) -> &'static str {
        "serverless"
    }

    async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        // The agent and controllers write status; those writes are not the user's requests.
        if request.subresource.is_some() {
            return Ok(Vec::new());
        }
        let (group, kind) = (request.kind.group, request.kind.kind);
        let violations: Vec<Violation> =
            nodeless_serverless::check_object(group, kind, obj, &self.policy);
        if let Some(v) = violations.iter().find(|v| v.forbidden) {
            return Err(ApiError::forbidden(request.kind, &name_of(obj), v.detail()));
        }
        if !violations.is_empty() {
            let errors: Vec<FieldError> = violations.iter().map(Violation::field_error).collect();
            return Err(ApiError::invalid(request.kind, &name_of(obj), &errors));
        }
        let mut warnings = Vec::new();
        if (group, kind) == ("", "Pod") {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            let provisioned = nodeless_serverless::provision(&spec, &self.table)
                .map_err(|e| sizing_error(request, obj, &FieldPath::root("spec"), e))?;
            let meta = obj
                .as_object_mut()
                .and_then(|o| o.get_mut("metadata"))
                .and_then(Value::as_object_mut);
            if let Some(meta) = meta {
                let annotations = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Default::default()));
                if !annotations.is_object() {
                    *annotations = Value::Object(Default::default());
                }
                if let Some(map) = annotations.as_object_mut() {
                    map.insert(
                        ANNOTATION.into(),
                        Value::String(provisioned.size.to_string()),
                    );
                }
            }
            warnings.extend(provisioned.warning);
        } else if let Some((path, spec)) = nodeless_serverless::pod_spec_of(group, kind, obj) {
            // A template too big for any size is refused now, not as pods stuck later.
            let fit = nodeless_serverless::demand_at(spec, &path).and_then(|d| self.table.fit(&d));
            if let Err(e) = fit {
                return Err(sizing_error(request, obj, &path, e));
            }
        }
        Ok(warnings)
    }
}
