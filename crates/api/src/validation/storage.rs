//! `storage.k8s.io/v1`: StorageClass.

use serde_json::Value;

use super::{immutable, one_of, str_at, Object};
use crate::error::{FieldError, FieldPath};
use crate::names::is_qualified_name;

pub(super) fn validate(kind: &str, obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    if kind != "StorageClass" {
        return;
    }
    let root = FieldPath::default();
    let provisioner = str_at(obj, "provisioner");
    if provisioner.is_empty() {
        errs.push(FieldError::required("provisioner", ""));
    } else {
        let name = provisioner.to_lowercase();
        for msg in is_qualified_name(&name) {
            errs.push(FieldError::invalid("provisioner", provisioner.into(), msg));
        }
    }
    one_of(
        obj,
        "reclaimPolicy",
        &["Delete", "Retain"],
        false,
        &root,
        errs,
    );
    one_of(
        obj,
        "volumeBindingMode",
        &["Immediate", "WaitForFirstConsumer"],
        false,
        &root,
        errs,
    );
    if let Some(parameters) = obj.get("parameters").and_then(Value::as_object) {
        if parameters.len() > 512 {
            errs.push(FieldError::too_long("parameters", 512));
        }
    }
    if let Some(old) = old {
        let changed = |key: &str| {
            let normalize = |m: &Object| m.get(key).filter(|v| !v.is_null()).cloned();
            normalize(obj) != normalize(old)
        };
        for key in ["parameters", "provisioner", "reclaimPolicy"] {
            if changed(key) {
                errs.push(FieldError::forbidden(
                    key,
                    format!("updates to {key} are forbidden."),
                ));
            }
        }
        immutable(obj, old, "volumeBindingMode", &root, errs);
    }
}
