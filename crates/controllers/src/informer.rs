//! One watch of a kind shared by every controller of the process (upstream's shared
//! informer): a single reflector store that all of them read, and a feed of its changes that
//! each subscribes to.
//!
//! Without it every controller that looks at pods held a copy of every pod, and decoded
//! every pod event, on a watch of its own. A change is applied to the store before it is
//! fed to the subscribers, so a controller that reacts to it finds the store at least as new
//! as the change. Each subscriber has an unbounded queue of its own, as upstream's
//! listeners do: a slow controller delays only itself, and misses nothing.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

/// One change of the shared store, as a watcher event plus what the store held before it.
#[derive(Debug, Clone)]
pub struct Change<K> {
    /// The event, with the objects shared among the subscribers.
    pub event: Event<Arc<K>>,
    /// The object as the store held it before this event (`None` if it was not there). For
    /// the events of a re-list, that is the state before the re-list.
    pub previous: Option<Arc<K>>,
}

impl<K> Change<K> {
    /// The object the event is about (`None` for `Init` and `InitDone`).
    pub fn object(&self) -> Option<&Arc<K>> {
        match &self.event {
            Event::Apply(obj) | Event::InitApply(obj) | Event::Delete(obj) => Some(obj),
            Event::Init | Event::InitDone => None,
        }
    }
}

/// A shared watch of every `K` in the cluster (managed fields dropped, see
/// [`crate::watch::strip_managed_fields`]). Cheap to clone: clones share the watch.
#[derive(Clone)]
pub struct SharedInformer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    shared: Arc<Shared<K>>,
}

struct Shared<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    state: Mutex<State<K>>,
}

struct State<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// Taken by [`SharedInformer::run`].
    writer: Option<reflector::store::Writer<K>>,
    subscribers: Vec<mpsc::UnboundedSender<Change<K>>>,
    /// Whether the first list is complete (a late subscriber then starts from the store).
    listed: bool,
}

impl<K> SharedInformer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// A shared watch that does nothing until [`run`](Self::run) drives it.
    pub fn new() -> Self {
        let (store, writer) = reflector::store::<K>();
        Self {
            store,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    writer: Some(writer),
                    subscribers: Vec::new(),
                    listed: false,
                }),
            }),
        }
    }

    /// The store every subscriber reads (ready once the first list is complete).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The changes from now on. A subscriber that comes after the first list gets the store's
    /// content first, as a re-list (`Init`, `InitApply` per object, `InitDone`).
    pub fn subscribe(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut state = lock(&self.shared.state);
        if state.listed {
            let _ = sender.send(Change {
                event: Event::Init,
                previous: None,
            });
            for obj in self.store.state() {
                let _ = sender.send(Change {
                    event: Event::InitApply(obj),
                    previous: None,
                });
            }
            let _ = sender.send(Change {
                event: Event::InitDone,
                previous: None,
            });
        }
        state.subscribers.push(sender);
        drop(state);
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }

    /// Drives the watch until it ends (it retries with back-off, so only when the process
    /// stops). Only the first call watches; later calls return at once.
    pub async fn run(&self, client: Client) {
        let Some(writer) = lock(&self.shared.state).writer.take() else {
            return;
        };
        let mut writer = writer;
        let api: Api<K> = Api::all(client);
        let mut events = watcher::watcher(api, watcher::Config::default())
            .modify(crate::watch::strip_managed_fields)
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(&mut writer, event),
                Err(error) => {
                    tracing::debug!(%error, kind = %K::kind(&Default::default()), "shared watch")
                }
            }
        }
        tracing::warn!(kind = %K::kind(&Default::default()), "shared watch ended");
    }

    /// Applies one event to the store, then feeds it to every subscriber.
    fn apply(&self, writer: &mut reflector::store::Writer<K>, event: Event<K>) {
        let previous = match &event {
            Event::Apply(obj) | Event::InitApply(obj) | Event::Delete(obj) => {
                self.store.get(&ObjectRef::from_obj(obj))
            }
            Event::Init | Event::InitDone => None,
        };
        // Under the lock, so that a subscriber joining now sees either the store before this
        // event and then the event, or the store after it; never neither, never both.
        let mut state = lock(&self.shared.state);
        writer.apply_watcher_event(&event);
        if matches!(event, Event::InitDone) {
            state.listed = true;
        }
        let change = Change {
            event: match event {
                Event::Apply(obj) => Event::Apply(Arc::new(obj)),
                Event::InitApply(obj) => Event::InitApply(Arc::new(obj)),
                Event::Delete(obj) => Event::Delete(Arc::new(obj)),
                Event::Init => Event::Init,
                Event::InitDone => Event::InitDone,
            },
            previous,
        };
        state
            .subscribers
            .retain(|subscriber| subscriber.send(change.clone()).is_ok());
    }
}

impl<K> Default for SharedInformer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The informers that several controllers share, made once by [`crate::run_controllers`].
#[derive(Clone, Default)]
pub struct Informers {
    /// Every pod in the cluster.
    pub pods: SharedInformer<k8s_openapi::api::core::v1::Pod>,
}

impl Informers {
    /// Drives every shared watch until they end.
    pub async fn run(&self, client: Client) {
        self.pods.run(client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, label: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.labels = Some([("app".to_string(), label.to_string())].into());
        pod
    }

    fn drain(stream: &mut (impl Stream<Item = Change<Pod>> + Unpin)) -> Vec<Change<Pod>> {
        let mut out = Vec::new();
        while let Some(Some(change)) = futures::FutureExt::now_or_never(stream.next()) {
            out.push(change);
        }
        out
    }

    fn name(change: &Change<Pod>) -> String {
        change
            .object()
            .and_then(|p| p.metadata.name.clone())
            .unwrap_or_default()
    }

    #[test]
    fn changes_reach_every_subscriber_after_the_store_with_what_was_there_before() {
        let informer = SharedInformer::<Pod>::new();
        let mut writer = lock(&informer.shared.state).writer.take().unwrap();
        let mut first = Box::pin(informer.subscribe());
        let mut second = Box::pin(informer.subscribe());
        informer.apply(&mut writer, Event::Init);
        informer.apply(&mut writer, Event::InitApply(pod("a", "v1")));
        informer.apply(&mut writer, Event::InitDone);
        informer.apply(&mut writer, Event::Apply(pod("a", "v2")));
        informer.apply(&mut writer, Event::Delete(pod("a", "v2")));
        for stream in [&mut first, &mut second] {
            let changes = drain(stream);
            assert_eq!(changes.len(), 5);
            assert!(matches!(changes[0].event, Event::Init));
            assert!(matches!(changes[2].event, Event::InitDone));
            // The update names the version the store held before it.
            let before = changes[3].previous.as_ref().unwrap();
            assert_eq!(before.metadata.labels.as_ref().unwrap()["app"], "v1");
            assert!(matches!(changes[4].event, Event::Delete(_)));
            assert_eq!(name(&changes[4]), "a");
        }
        assert!(informer.store.state().is_empty());
    }

    #[test]
    fn a_late_subscriber_starts_from_the_store_as_a_relist() {
        let informer = SharedInformer::<Pod>::new();
        let mut writer = lock(&informer.shared.state).writer.take().unwrap();
        informer.apply(&mut writer, Event::Init);
        informer.apply(&mut writer, Event::InitApply(pod("a", "v1")));
        informer.apply(&mut writer, Event::InitApply(pod("b", "v1")));
        informer.apply(&mut writer, Event::InitDone);
        let mut late = Box::pin(informer.subscribe());
        informer.apply(&mut writer, Event::Apply(pod("c", "v1")));
        let changes = drain(&mut late);
        assert!(matches!(changes[0].event, Event::Init));
        let mut listed: Vec<String> = changes[1..3].iter().map(name).collect();
        listed.sort();
        assert_eq!(listed, ["a", "b"]);
        assert!(matches!(changes[3].event, Event::InitDone));
        assert_eq!(name(&changes[4]), "c");
        assert!(changes[4].previous.is_none());
        assert_eq!(changes.len(), 5);
    }

    #[test]
    fn a_gone_subscriber_is_dropped() {
        let informer = SharedInformer::<Pod>::new();
        let mut writer = lock(&informer.shared.state).writer.take().unwrap();
        let gone = informer.subscribe();
        drop(gone);
        let mut kept = Box::pin(informer.subscribe());
        informer.apply(&mut writer, Event::Apply(pod("a", "v1")));
        assert_eq!(lock(&informer.shared.state).subscribers.len(), 1);
        assert_eq!(drain(&mut kept).len(), 1);
    }
}
