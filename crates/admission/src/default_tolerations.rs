//! Upstream's DefaultTolerationSeconds plugin: every new pod tolerates the `not-ready` and
//! `unreachable` NoExecute taints for a while, so that a node that is unheard of for a short
//! time does not have its pods evicted at once.
//!
//! How long is the operator's choice (`--default-not-ready-toleration-seconds` and
//! `--default-unreachable-toleration-seconds`, 300 s as upstream): together with
//! `--node-monitor-grace-period` it is how long a failed agent's pods take to be replaced.

use nodeless_apiserver::admission::{AdmissionPlugin, AdmissionRequest, Operation};
use nodeless_apiserver::ApiError;
use serde_json::{json, Value};

/// The taint of a node whose Ready condition is False.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (unheard of).
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Adds the default tolerations to pods on create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    /// Seconds a pod tolerates the `not-ready` taint.
    pub not_ready: u32,
    /// Seconds a pod tolerates the `unreachable` taint.
    pub unreachable: u32,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        Self {
            not_ready: 300,
            unreachable: 300,
        }
    }
}

impl DefaultTolerationSeconds {
    /// Adds a NoExecute toleration for each taint the pod spec does not tolerate yet.
    pub fn apply(&self, spec: &mut serde_json::Map<String, Value>) {
        let tolerations = spec
            .entry("tolerations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if tolerations.is_null() {
            *tolerations = Value::Array(Vec::new());
        }
        let Some(tolerations) = tolerations.as_array_mut() else {
            return;
        };
        for (taint, seconds) in [
            (NOT_READY_TAINT, self.not_ready),
            (UNREACHABLE_TAINT, self.unreachable),
        ] {
            if !tolerations.iter().any(|t| tolerates_no_execute(t, taint)) {
                tolerations.push(json!({
                    "key": taint,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": seconds,
                }));
            }
        }
    }
}

/// Whether `toleration` already covers the NoExecute `taint` (by key, or a key-less `Exists`).
fn tolerates_no_execute(toleration: &Value, taint: &str) -> bool {
    let key = toleration.get("key").and_then(Value::as_str).unwrap_or("");
    let effect = toleration
        .get("effect")
        .and_then(Value::as_str)
        .unwrap_or("");
    let operator = toleration
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("Equal");
    (key == taint || (key.is_empty() && operator == "Exists"))
        && (effect.is_empty() || effect == "NoExecute")
}

#[async_trait::async_trait]
impl AdmissionPlugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    async fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        obj: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        let is_pod_create = (request.kind.group, request.kind.kind) == ("", "Pod")
            && request.operation == Operation::Create
            && request.subresource.is_none();
        if is_pod_create {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                self.apply(spec);
            }
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_pod_gets_both_tolerations_with_the_configured_seconds() {
        let plugin = DefaultTolerationSeconds {
            not_ready: 30,
            unreachable: 20,
        };
        let mut pod = spec(json!({"containers": []}));
        plugin.apply(&mut pod);
        assert_eq!(
            pod["tolerations"],
            json!([
                {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20},
            ])
        );
    }

    #[test]
    fn tolerations_the_pod_has_are_kept_and_not_doubled() {
        let plugin = DefaultTolerationSeconds::default();
        let own = json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3});
        let mut pod = spec(json!({"tolerations": [own.clone()]}));
        plugin.apply(&mut pod);
        let tolerations = pod["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0], own);
        assert_eq!(tolerations[1]["key"], NOT_READY_TAINT);
        assert_eq!(tolerations[1]["tolerationSeconds"], 300);

        // A key-less Exists toleration covers every taint; a NoSchedule one covers none.
        let mut everything = spec(json!({"tolerations": [{"operator": "Exists"}]}));
        plugin.apply(&mut everything);
        assert_eq!(everything["tolerations"].as_array().unwrap().len(), 1);
        let mut schedule_only = spec(
            json!({"tolerations": [{"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        plugin.apply(&mut schedule_only);
        assert_eq!(schedule_only["tolerations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn null_tolerations_are_replaced() {
        let mut pod = spec(json!({"tolerations": null}));
        DefaultTolerationSeconds::default().apply(&mut pod);
        assert_eq!(pod["tolerations"].as_array().unwrap().len(), 2);
    }
}
