//! Which sandboxes left by an earlier run of the agent are no pod's to keep: those of pods
//! deleted (or moved off the node) while the agent was down, and those of pods that had
//! finished before this run (their workers run nothing and hold no sandbox; their logs are
//! files of the agent's, which outlive the sandbox until the pod is deleted).
//!
//! The decision is taken against the live pod store of the watch, not a copy of the first
//! list: a pod created right after that list has its uid recorded before its worker can
//! make a sandbox, so the cleanup never takes a sandbox that this run made.

use std::collections::HashMap;
use std::sync::Mutex;

/// What this run of the agent knows of one pod uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PodFate {
    /// The pod exists and its worker runs (or ran) it: its sandbox is the worker's.
    Live,
    /// The pod had finished (Succeeded or Failed) when its worker began: nothing runs it,
    /// and its sandbox is only left from an earlier run.
    FinishedBefore,
    /// The pod was deleted, or left the node.
    Gone,
}

/// Whether a sandbox of a pod uid may be removed as an orphan, given what is known of the
/// uid (`None`: never seen by this run, so neither in the first list nor created since).
pub(super) fn is_orphan(fate: Option<PodFate>) -> bool {
    !matches!(fate, Some(PodFate::Live))
}

/// The pod uids the watch has seen, kept until the orphan cleanup is done.
#[derive(Debug, Default)]
pub(super) struct KnownPods {
    /// `None` once the cleanup is over: nothing is tracked any more.
    fates: Mutex<Option<HashMap<String, PodFate>>>,
}

impl KnownPods {
    /// A store that tracks uids until [`KnownPods::finish`].
    pub(super) fn new() -> Self {
        Self {
            fates: Mutex::new(Some(HashMap::new())),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, PodFate>) -> R) -> Option<R> {
        let mut guard = self.fates.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().map(f)
    }

    /// A worker began for `uid`; `finished` if the pod had finished by then. Called before
    /// the worker can make a sandbox. A uid already gone stays gone.
    pub(super) fn began(&self, uid: &str, finished: bool) {
        let fate = if finished {
            PodFate::FinishedBefore
        } else {
            PodFate::Live
        };
        self.with(|fates| {
            fates.entry(uid.to_string()).or_insert(fate);
        });
    }

    /// The pod of `uid` was deleted or left the node.
    pub(super) fn gone(&self, uid: &str) {
        self.with(|fates| fates.insert(uid.to_string(), PodFate::Gone));
    }

    /// Whether a sandbox of `uid`, listed after the first pod list, is an orphan now.
    /// After [`KnownPods::finish`], nothing is.
    pub(super) fn sandbox_is_orphan(&self, uid: &str) -> bool {
        self.with(|fates| is_orphan(fates.get(uid).copied()))
            .unwrap_or(false)
    }

    /// The cleanup is over: stops tracking (and frees what was tracked).
    pub(super) fn finish(&self) {
        let mut guard = self.fates.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_pods_keep_their_sandboxes() {
        assert!(!is_orphan(Some(PodFate::Live)));
        assert!(is_orphan(Some(PodFate::FinishedBefore)));
        assert!(is_orphan(Some(PodFate::Gone)));
        assert!(is_orphan(None));
    }

    #[test]
    fn a_pod_created_after_the_list_keeps_its_sandbox() {
        let known = KnownPods::new();
        known.began("listed", false);
        // The cleanup lists sandboxes; meanwhile a new pod's worker begins and makes one.
        known.began("new", false);
        assert!(!known.sandbox_is_orphan("listed"));
        assert!(!known.sandbox_is_orphan("new"));
        assert!(known.sandbox_is_orphan("deleted-while-down"));
    }

    #[test]
    fn finished_and_deleted_pods_lose_their_sandboxes() {
        let known = KnownPods::new();
        known.began("job", true);
        known.began("web", false);
        known.gone("web");
        // A late update of a deleted pod does not bring it back.
        known.began("web", false);
        assert!(known.sandbox_is_orphan("job"));
        assert!(known.sandbox_is_orphan("web"));
    }

    #[test]
    fn nothing_is_an_orphan_once_the_cleanup_is_over() {
        let known = KnownPods::new();
        known.finish();
        known.began("x", false);
        assert!(!known.sandbox_is_orphan("x"));
        assert!(!known.sandbox_is_orphan("unknown"));
    }
}
