//! `coordination.k8s.io/v1`: Lease.

use super::{nonnegative, obj_at, positive, Object};
use crate::error::{FieldError, FieldPath};

pub(super) fn validate(
    kind: &str,
    obj: &Object,
    _old: Option<&Object>,
    errs: &mut Vec<FieldError>,
) {
    if kind != "Lease" {
        return;
    }
    let path = FieldPath::root("spec");
    if let Some(spec) = obj_at(obj, "spec") {
        positive(spec, "leaseDurationSeconds", &path, errs);
        nonnegative(spec, "leaseTransitions", &path, errs);
        super::one_of(
            spec,
            "strategy",
            &["OldestEmulationVersion"],
            false,
            &path,
            errs,
        );
    }
}
