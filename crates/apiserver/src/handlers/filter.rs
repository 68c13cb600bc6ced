//! Label and field selectors of list, watch and deletecollection requests.

use nodeless_api::registry::ResourceKind;
use nodeless_api::selector::{FieldSelector, LabelSelector};
use serde_json::Value;

use crate::http_util::Query;
use crate::objects;
use crate::ApiError;

/// The selectors of one request.
pub struct Filter {
    kind: &'static ResourceKind,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector`, refusing fields the kind does not support.
    pub fn from_query(kind: &'static ResourceKind, query: &Query) -> Result<Self, ApiError> {
        let labels =
            match query.get("labelSelector") {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let fields = match query.get("fieldSelector") {
            Some(s) => {
                let sel = FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
                let supported = nodeless_api::fields::supported_fields(kind.group, kind.kind);
                for field in sel.requirements().iter().map(|r| r.field.as_str()) {
                    if !supported.contains(&field) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {field}"
                        )));
                    }
                }
                Some(sel)
            }
            None => None,
        };
        Ok(Self {
            kind,
            labels,
            fields,
        })
    }

    /// Whether the request selects everything.
    pub fn is_everything(&self) -> bool {
        self.labels.as_ref().is_none_or(LabelSelector::is_empty) && self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(labels) = &self.labels {
            if !labels.matches(objects::labels(obj)) {
                return false;
            }
        }
        if let Some(fields) = &self.fields {
            let (group, kind) = (self.kind.group, self.kind.kind);
            if !fields.matches(|f| nodeless_api::fields::field_value(group, kind, obj, f)) {
                return false;
            }
        }
        true
    }
}
