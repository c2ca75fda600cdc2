//! The object store: every object by kind, namespace and name, one global resourceVersion
//! counter, and the watch fan-out.
//!
//! Objects are kept as JSON (`serde_json::Value`) exactly as they are served. Every write bumps
//! the global resourceVersion, stamps it into `metadata.resourceVersion`, appends an event to a
//! bounded history (so a watch can resume from a recent resourceVersion) and broadcasts it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::Value;
use tokio::sync::broadcast;

/// The live feed's buffer: a watcher more than this many changes behind is ended with 410.
const LIVE_BUFFER: usize = 4096;

/// The kinds this API server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Namespace,
    Pod,
    Secret,
    ConfigMap,
    ServiceAccount,
    Event,
    ResourceQuota,
    Node,
}

impl Kind {
    /// All stored kinds, in discovery order.
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ServiceAccount,
        Kind::Event,
        Kind::ResourceQuota,
    ];

    /// The resource name used in URLs (`pods`).
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Event => "events",
            Kind::ResourceQuota => "resourcequotas",
            Kind::Node => "nodes",
        }
    }

    /// The object kind (`Pod`).
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Event => "Event",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::Node => "Node",
        }
    }

    /// The singular resource name (`pod`).
    pub(crate) fn singular(self) -> String {
        self.kind().to_ascii_lowercase()
    }

    /// Whether objects of this kind live in a namespace.
    pub(crate) fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Looks a kind up by its URL resource name.
    pub(crate) fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.plural() == plural)
    }
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) type_: EventType,
    /// The object after the change (for a deletion: the last state, with the new resourceVersion).
    pub(crate) object: Arc<Value>,
    /// The object before the change, for watches filtered by a selector.
    pub(crate) previous: Option<Arc<Value>>,
    pub(crate) resource_version: u64,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    NotFound,
    AlreadyExists,
    /// The caller's resourceVersion is not the stored one.
    Conflict,
    /// A watch asked for a resourceVersion older than the history.
    Gone {
        requested: u64,
        oldest: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: Kind,
    namespace: String,
    name: String,
}

#[derive(Debug, Default)]
struct Inner {
    resource_version: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Change>,
}

/// The object store.
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    /// How many changes the history keeps (the watch window).
    window: usize,
}

/// The start of a watch: the changes to replay, then the live feed.
#[derive(Debug)]
pub(crate) struct WatchStart {
    pub(crate) backlog: Vec<Change>,
    pub(crate) live: broadcast::Receiver<Change>,
    /// The resourceVersion when the watch started: every change up to it is in `backlog` (or
    /// out of the watch's scope), every later one comes through `live`.
    pub(crate) resource_version: u64,
}

impl Store {
    /// A store whose history keeps the last `window` changes (at least one).
    pub(crate) fn new(window: usize) -> Self {
        let (changes, _) = broadcast::channel(LIVE_BUFFER);
        Self {
            inner: Mutex::new(Inner { resource_version: 1, ..Inner::default() }),
            changes,
            window: window.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-written (every write is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().objects.get(&key(kind, namespace, name)).cloned()
    }

    /// Every object of a kind, in one namespace or in all (`None`), with the list's resourceVersion.
    pub(crate) fn list(&self, kind: Kind, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| Arc::clone(v))
            .collect();
        (items, inner.resource_version)
    }

    /// Stores a new object. `metadata.name` must be set; the resourceVersion is stamped here.
    pub(crate) fn create(
        &self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let name = object_name(&object);
        let mut inner = self.lock();
        let k = key(kind, namespace, &name);
        if inner.objects.contains_key(&k) {
            return Err(StoreError::AlreadyExists);
        }
        let rv = inner.next_rv();
        set_resource_version(&mut object, rv);
        let object = Arc::new(object);
        inner.objects.insert(k, Arc::clone(&object));
        self.publish(&mut inner, kind, namespace, EventType::Added, Arc::clone(&object), None, rv);
        Ok(object)
    }

    /// Changes a stored object through `change`. When `expected_rv` is set and differs from the
    /// stored one the update is refused with [`StoreError::Conflict`]. If `change` returns an
    /// error nothing is written. If the object is unchanged, nothing is written either.
    pub(crate) fn update<E>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_rv: Option<&str>,
        change: impl FnOnce(&mut Value) -> Result<(), E>,
    ) -> Result<Result<Arc<Value>, E>, StoreError> {
        let mut inner = self.lock();
        let k = key(kind, namespace, name);
        let current = inner.objects.get(&k).cloned().ok_or(StoreError::NotFound)?;
        if let Some(expected) = expected_rv.filter(|rv| !rv.is_empty())
            && current.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                != Some(expected)
        {
            return Err(StoreError::Conflict);
        }
        let mut next = (*current).clone();
        if let Err(err) = change(&mut next) {
            return Ok(Err(err));
        }
        if next == *current {
            return Ok(Ok(current));
        }
        let rv = inner.next_rv();
        set_resource_version(&mut next, rv);
        let next = Arc::new(next);
        inner.objects.insert(k, Arc::clone(&next));
        self.publish(
            &mut inner,
            kind,
            namespace,
            EventType::Modified,
            Arc::clone(&next),
            Some(current),
            rv,
        );
        Ok(Ok(next))
    }

    /// Removes an object; watchers see DELETED.
    pub(crate) fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let removed =
            inner.objects.remove(&key(kind, namespace, name)).ok_or(StoreError::NotFound)?;
        let rv = inner.next_rv();
        let mut last = (*removed).clone();
        set_resource_version(&mut last, rv);
        let last = Arc::new(last);
        self.publish(
            &mut inner,
            kind,
            namespace,
            EventType::Deleted,
            Arc::clone(&last),
            Some(removed),
            rv,
        );
        Ok(last)
    }

    /// Starts a watch on a kind (optionally one namespace).
    ///
    /// `since = None` (resourceVersion unset or `0`) replays every existing object as ADDED, then
    /// follows changes; `since = Some(n)` replays the changes after `n` from the history, or fails
    /// with [`StoreError::Gone`] when `n` is older than the history.
    pub(crate) fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStart, StoreError> {
        let inner = self.lock();
        // Subscribing under the lock: no change can slip between backlog and live feed.
        let live = self.changes.subscribe();
        let in_scope = |c: &Change| c.kind == kind && namespace.is_none_or(|ns| c.namespace == ns);
        let backlog = match since {
            None => inner
                .objects
                .iter()
                .filter(|(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
                .map(|(k, v)| Change {
                    kind,
                    namespace: k.namespace.clone(),
                    type_: EventType::Added,
                    object: Arc::clone(v),
                    previous: None,
                    resource_version: inner.resource_version,
                })
                .collect(),
            Some(since) => {
                let oldest =
                    inner.history.front().map_or(inner.resource_version, |c| c.resource_version);
                // Every change after `since` must still be in the history.
                if since + 1 < oldest && since < inner.resource_version {
                    return Err(StoreError::Gone { requested: since, oldest });
                }
                inner
                    .history
                    .iter()
                    .filter(|c| c.resource_version > since && in_scope(c))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart { backlog, live, resource_version: inner.resource_version })
    }

    #[allow(clippy::too_many_arguments)] // reason: one flat record of a change; a struct would only wrap these
    fn publish(
        &self,
        inner: &mut Inner,
        kind: Kind,
        namespace: &str,
        type_: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
        resource_version: u64,
    ) {
        let change = Change {
            kind,
            namespace: namespace.to_owned(),
            type_,
            object,
            previous,
            resource_version,
        };
        while inner.history.len() >= self.window {
            inner.history.pop_front();
        }
        inner.history.push_back(change.clone());
        // No receiver is fine: nobody watches.
        let _ = self.changes.send(change);
    }
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }
}

fn key(kind: Kind, namespace: &str, name: &str) -> Key {
    Key {
        kind,
        namespace: if kind.namespaced() { namespace.to_owned() } else { String::new() },
        name: name.to_owned(),
    }
}

fn object_name(object: &Value) -> String {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn create_stamps_increasing_resource_versions_and_refuses_duplicates() {
        let store = Store::new(100);
        let a = store.create(Kind::Pod, "default", pod("a")).expect("create a");
        let b = store.create(Kind::Pod, "default", pod("b")).expect("create b");
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .parse::<u64>()
                .unwrap_or(0)
        };
        assert!(rv(&b) > rv(&a));
        assert_eq!(store.create(Kind::Pod, "default", pod("a")), Err(StoreError::AlreadyExists));
    }

    #[test]
    fn update_with_a_stale_resource_version_is_a_conflict() {
        let store = Store::new(100);
        let a = store.create(Kind::Pod, "default", pod("a")).expect("create");
        let stale = a["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned();
        store
            .update(Kind::Pod, "default", "a", Some(&stale), |v| {
                v["metadata"]["labels"] = json!({"x": "1"});
                Ok::<_, ()>(())
            })
            .expect("first update")
            .expect("change applies");
        let second = store.update(Kind::Pod, "default", "a", Some(&stale), |_| Ok::<_, ()>(()));
        assert_eq!(second.err(), Some(StoreError::Conflict));
    }

    #[test]
    fn watch_from_a_resource_version_replays_only_later_changes() {
        let store = Store::new(100);
        let a = store.create(Kind::Pod, "default", pod("a")).expect("create");
        let since =
            a["metadata"]["resourceVersion"].as_str().unwrap_or_default().parse().unwrap_or(0);
        store.create(Kind::Pod, "default", pod("b")).expect("create");
        store.create(Kind::Secret, "default", pod("s")).expect("create");
        store.delete(Kind::Pod, "default", "a").expect("delete");
        let start = store.watch(Kind::Pod, Some("default"), Some(since)).expect("watch");
        let seen: Vec<_> =
            start.backlog.iter().map(|c| (c.type_, object_name(&c.object))).collect();
        assert_eq!(
            seen,
            vec![(EventType::Added, "b".to_owned()), (EventType::Deleted, "a".to_owned())]
        );
    }
}
