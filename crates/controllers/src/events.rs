//! Recording Events: what every controller shares, so that `kubectl describe` shows the
//! story of an object as upstream's controllers tell it.

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource};

/// Records an Event about `object` (failures are only logged: events are best effort).
pub(crate) async fn record<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        // kube-rs folds events with the same action and reason into one series; a distinct
        // action per message keeps distinct messages apart, as upstream's correlator does.
        action: note.chars().take(128).collect(),
        note: Some(note),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %e, reason, "recording an event");
    }
}

/// An event recorder reporting as `controller`.
pub(crate) fn recorder(client: &Client, controller: &str) -> Recorder {
    let reporter = Reporter {
        controller: controller.into(),
        instance: None,
    };
    Recorder::new(client.clone(), reporter)
}
