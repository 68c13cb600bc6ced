//! Kinds served in two API groups but stored once, as upstream does: `events.k8s.io/v1`
//! Events are kept as `core/v1` Events, so `kubectl get events` and `kubectl describe` show
//! the events that components record through either API.

use serde_json::{Map, Value};

/// The `(group, plural)` under which a kind's objects are stored, when not its own.
pub fn stored_as(group: &str, kind: &str) -> Option<(&'static str, &'static str)> {
    match (group, kind) {
        ("events.k8s.io", "Event") => Some(("", "events")),
        _ => None,
    }
}

/// Field pairs `(events.k8s.io/v1 name, core/v1 name)` that differ only in name.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Renames the top-level fields of `obj` by `rename` and sets its apiVersion.
fn convert(obj: &mut Value, rename: impl Fn(&str) -> Option<&'static str>, api_version: &str) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let mut out = Map::new();
    for (key, value) in std::mem::take(map) {
        let key = rename(&key).map(str::to_string).unwrap_or(key);
        out.insert(key, value);
    }
    out.insert("apiVersion".into(), Value::String(api_version.to_string()));
    *map = out;
}

/// Converts an object of `(group, kind)` into its stored form.
pub fn to_stored(group: &str, kind: &str, obj: &mut Value) {
    if (group, kind) == ("events.k8s.io", "Event") {
        convert(
            obj,
            |k| {
                EVENT_RENAMES
                    .iter()
                    .find(|(new, _)| *new == k)
                    .map(|(_, old)| *old)
            },
            "v1",
        );
    }
}

/// Converts a stored object into the form of `(group, kind)`.
pub fn from_stored(group: &str, kind: &str, obj: &mut Value) {
    if (group, kind) == ("events.k8s.io", "Event") {
        convert(
            obj,
            |k| {
                EVENT_RENAMES
                    .iter()
                    .find(|(_, old)| *old == k)
                    .map(|(new, _)| *new)
            },
            "events.k8s.io/v1",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_through_the_core_form() {
        let original = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled",
            "reportingController": "nodeless/agent", "reportingInstance": "n1", "type": "Normal",
            "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Pull",
        });
        let mut stored = original.clone();
        to_stored("events.k8s.io", "Event", &mut stored);
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "pulled");
        assert_eq!(stored["reportingComponent"], "nodeless/agent");
        assert!(stored.get("regarding").is_none());
        from_stored("events.k8s.io", "Event", &mut stored);
        assert_eq!(stored, original);
        let mut core = json!({"apiVersion": "v1", "kind": "Event", "message": "m"});
        from_stored("", "Event", &mut core);
        assert_eq!(core["message"], "m");
    }
}
