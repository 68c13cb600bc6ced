//! `policy/v1`: PodDisruptionBudget.

use serde_json::Value;

use super::{int_or_percent, obj_at, one_of, Object};
use crate::error::{FieldError, FieldPath};

pub(super) fn validate(
    kind: &str,
    obj: &Object,
    _old: Option<&Object>,
    errs: &mut Vec<FieldError>,
) {
    if kind != "PodDisruptionBudget" {
        return;
    }
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        return;
    };
    let min_available = spec.get("minAvailable").filter(|v| !v.is_null());
    let max_unavailable = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min_available.is_some() && max_unavailable.is_some() {
        errs.push(FieldError::invalid(
            &path,
            Value::Object(spec.clone()),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(v) = min_available {
        int_or_percent(v, &path.child("minAvailable"), true, errs);
    }
    if let Some(v) = max_unavailable {
        int_or_percent(v, &path.child("maxUnavailable"), true, errs);
    }
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        if let Err(e) = crate::selector::LabelSelector::from_json(selector, &path.child("selector"))
        {
            errs.extend(e);
        }
    }
    one_of(
        spec,
        "unhealthyPodEvictionPolicy",
        &["AlwaysAllow", "IfHealthyBudget"],
        false,
        &path,
        errs,
    );
}
