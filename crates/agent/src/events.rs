//! The pod events the agent records, as the kubelet does (`Pulled`, `Created`, `Started`,
//! `Failed`, `BackOff`, `Killing`), so that `kubectl describe pod` tells the pod's story.
//!
//! Events go through a bounded queue to one publisher: a burst of pods never waits on event
//! writes, and events beyond the queue's room are dropped (upstream's broadcaster drops too).

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::mpsc;

/// How many events may wait to be written.
const QUEUE: usize = 2048;

/// One event about a pod.
struct PodEvent {
    pod: ObjectReference,
    warning: bool,
    reason: &'static str,
    note: String,
}

/// Where the pod workers send their events.
#[derive(Clone)]
pub(crate) struct PodEvents {
    queue: mpsc::Sender<PodEvent>,
}

impl PodEvents {
    /// Starts the publisher, reporting as `kubelet` on `node`.
    pub(crate) fn start(client: Client, node: &str) -> Self {
        let (queue, mut rx) = mpsc::channel::<PodEvent>(QUEUE);
        let reporter = Reporter {
            controller: "kubelet".into(),
            instance: Some(node.to_string()),
        };
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let event = Event {
                    type_: if e.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: e.reason.into(),
                    // A distinct action per message keeps kube-rs from folding different
                    // containers' events into one series.
                    action: e.note.chars().take(128).collect(),
                    note: Some(e.note),
                    secondary: None,
                };
                if let Err(error) = recorder.publish(&event, &e.pod).await {
                    tracing::debug!(%error, reason = e.reason, "recording a pod event");
                }
            }
        });
        Self { queue }
    }

    /// Records an event about `pod`, or drops it when the queue is full.
    pub(crate) fn record(&self, pod: &Pod, warning: bool, reason: &'static str, note: String) {
        let event = PodEvent {
            pod: pod.object_ref(&()),
            warning,
            reason,
            note,
        };
        if self.queue.try_send(event).is_err() {
            tracing::debug!(reason, "the event queue is full; event dropped");
        }
    }
}
