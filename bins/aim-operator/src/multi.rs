//! The watches of several namespaces into one reflector store (`--watch-namespaces`).
//!
//! A reflector's writer replaces its whole store when a list ends (`Init`, `InitApply`…, `InitDone`):
//! fed the merged watches of several namespaces as they are, one namespace's re-list would drop every
//! other namespace's objects. [`reflect`] merges them and writes the store itself, so that the writer
//! sees one `Init`, the first list of every namespace, and one `InitDone` once each namespace has
//! listed. After that a namespace's re-list becomes an `Apply` for each object it lists and a `Delete`
//! for each object of that namespace the store holds but the list no longer has. What happens before
//! every namespace has listed goes into that first list: a change is one more `InitApply`; a deletion
//! (the writer cannot delete from a list being gathered) and the objects a namespace's repeated first
//! list no longer has are deleted right after the `InitDone`.
//!
//! With one namespace, or the whole cluster, the watches use the plain watcher instead.

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::Event;
use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;

/// One watched namespace.
struct Namespace {
    name: String,
    /// The names its current list has shown (and, until the store is complete, every name it has
    /// shown since): what its objects in the store are compared with when the list ends.
    seen: HashSet<String>,
    /// It finished a list.
    listed: bool,
}

struct Merge<K: Resource<DynamicType = ()> + Clone + 'static, S> {
    events: Pin<Box<S>>,
    writer: Writer<K>,
    store: Store<K>,
    namespaces: Vec<Namespace>,
    /// The one `Init` was passed on.
    started: bool,
    /// The one `InitDone` was passed on: the store holds every namespace.
    complete: bool,
    /// What the writer takes next, before anything else is read.
    out: VecDeque<Event<K>>,
    /// Deletions seen before the store was complete; passed on right after its `InitDone`.
    deferred: HashMap<ObjectRef<K>, K>,
    /// Namespaces whose objects in the store are to be compared with what their list showed, once
    /// `out` is written.
    prune: Vec<usize>,
}

/// Merges the watches of `namespaces` (each event tagged with its namespace's index) and writes them
/// to `writer` as one store, as described in the [module](self). The stream yields each event after
/// the store took it, and every error as it comes.
pub fn reflect<K, E, S>(
    writer: Writer<K>,
    namespaces: Vec<String>,
    events: S,
) -> impl Stream<Item = Result<Event<K>, E>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    E: Send + 'static,
    S: Stream<Item = (usize, Result<Event<K>, E>)> + Send + 'static,
{
    let state = Merge {
        events: Box::pin(events),
        store: writer.as_reader(),
        writer,
        namespaces: namespaces
            .into_iter()
            .map(|name| Namespace {
                name,
                seen: HashSet::new(),
                listed: false,
            })
            .collect(),
        started: false,
        complete: false,
        out: VecDeque::new(),
        deferred: HashMap::new(),
        prune: Vec::new(),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.out.pop_front() {
                st.writer.apply_watcher_event(&ev);
                return Some((Ok(ev), st));
            }
            if !st.prune.is_empty() {
                // Everything passed on so far is in the store.
                st.prune_now();
                continue;
            }
            match st.events.next().await? {
                (_, Err(e)) => return Some((Err(e), st)),
                (i, Ok(ev)) => st.take(i, ev),
            }
        }
    })
}

impl<K, S> Merge<K, S>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// What an event of namespace `i` becomes.
    fn take(&mut self, i: usize, ev: Event<K>) {
        if i >= self.namespaces.len() {
            return;
        }
        if !self.started {
            self.started = true;
            self.out.push_back(Event::Init);
        }
        let name = |o: &K| o.meta().name.clone().unwrap_or_default();
        match ev {
            Event::Init => {
                // A (re-)list begins: what the store holds of the namespace is checked against it.
                self.namespaces[i].seen.clear();
            }
            Event::InitApply(o) | Event::Apply(o) if !self.complete => {
                self.namespaces[i].seen.insert(name(&o));
                self.deferred.remove(&ObjectRef::from_obj(&o));
                self.out.push_back(Event::InitApply(o));
            }
            Event::InitApply(o) => {
                self.namespaces[i].seen.insert(name(&o));
                self.out.push_back(Event::Apply(o));
            }
            Event::Apply(o) => self.out.push_back(Event::Apply(o)),
            Event::Delete(o) if !self.complete => {
                self.namespaces[i].seen.remove(&name(&o));
                self.deferred.insert(ObjectRef::from_obj(&o), o);
            }
            Event::Delete(o) => self.out.push_back(Event::Delete(o)),
            Event::InitDone => {
                self.namespaces[i].listed = true;
                if self.complete {
                    self.prune.push(i);
                } else if self.namespaces.iter().all(|n| n.listed) {
                    self.complete = true;
                    self.out.push_back(Event::InitDone);
                    let deferred = std::mem::take(&mut self.deferred);
                    self.out.extend(deferred.into_values().map(Event::Delete));
                    // A namespace whose first list started over may have left objects behind.
                    self.prune.extend(0..self.namespaces.len());
                }
            }
        }
    }

    /// Deletes the objects of the namespaces in `prune` that their list did not show.
    fn prune_now(&mut self) {
        let mut lists: HashMap<String, HashSet<String>> = HashMap::new();
        for i in std::mem::take(&mut self.prune) {
            let ns = &mut self.namespaces[i];
            lists.insert(ns.name.clone(), std::mem::take(&mut ns.seen));
        }
        for o in self.store.state() {
            let meta = o.meta();
            let gone = meta
                .namespace
                .as_deref()
                .and_then(|ns| lists.get(ns))
                .is_some_and(|seen| !seen.contains(meta.name.as_deref().unwrap_or_default()));
            if gone {
                self.out.push_back(Event::Delete(o.as_ref().clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::channel::mpsc::{UnboundedSender, unbounded};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    type Input = UnboundedSender<(usize, Result<Event<ConfigMap>, String>)>;

    fn cm(key: &str, data: &str) -> ConfigMap {
        let (ns, name) = key.split_once('/').unwrap();
        let mut o = ConfigMap::default();
        o.metadata.namespace = Some(ns.into());
        o.metadata.name = Some(name.into());
        o.data = Some([("v".to_string(), data.to_string())].into());
        o
    }

    fn key(o: &ConfigMap) -> String {
        format!(
            "{}/{}",
            o.metadata.namespace.as_deref().unwrap(),
            o.metadata.name.as_deref().unwrap()
        )
    }

    /// Two namespaces `a` (0) and `b` (1) merged into one store.
    struct Harness {
        input: Input,
        output: Pin<Box<dyn Stream<Item = Result<Event<ConfigMap>, String>> + Send>>,
        store: Store<ConfigMap>,
    }

    impl Harness {
        fn new() -> Self {
            let (store, writer) = reflector::store::<ConfigMap>();
            let (input, rx) = unbounded();
            Self {
                input,
                output: Box::pin(reflect(writer, vec!["a".into(), "b".into()], rx)),
                store,
            }
        }

        fn send(&self, ns: usize, ev: Event<ConfigMap>) {
            self.input.unbounded_send((ns, Ok(ev))).unwrap();
        }

        fn list(&self, ns: usize, keys: &[&str]) {
            self.send(ns, Event::Init);
            for k in keys {
                self.send(ns, Event::InitApply(cm(k, "1")));
            }
            self.send(ns, Event::InitDone);
        }

        /// What the writer took since the last call.
        fn written(&mut self) -> Vec<String> {
            let mut seen = Vec::new();
            while let Some(Some(item)) = self.output.next().now_or_never() {
                seen.push(match item {
                    Ok(Event::Init) => "Init".to_string(),
                    Ok(Event::InitApply(o)) => format!("InitApply {}", key(&o)),
                    Ok(Event::InitDone) => "InitDone".to_string(),
                    Ok(Event::Apply(o)) => format!("Apply {}", key(&o)),
                    Ok(Event::Delete(o)) => format!("Delete {}", key(&o)),
                    Err(e) => format!("Err {e}"),
                });
            }
            seen
        }

        fn ready(&self) -> bool {
            self.store.wait_until_ready().now_or_never().is_some()
        }

        /// The store's objects, sorted, with their data.
        fn stored(&self) -> Vec<String> {
            let mut all: Vec<String> = self
                .store
                .state()
                .iter()
                .map(|o| format!("{}={}", key(o), o.data.as_ref().unwrap()["v"]))
                .collect();
            all.sort();
            all
        }
    }

    #[test]
    fn the_store_is_ready_once_every_namespace_has_listed() {
        let mut h = Harness::new();
        h.list(0, &["a/x", "a/y"]);
        assert_eq!(h.written(), ["Init", "InitApply a/x", "InitApply a/y"]);
        assert!(!h.ready(), "b has not listed yet");
        assert!(h.stored().is_empty());
        h.send(1, Event::Init);
        h.send(1, Event::InitApply(cm("b/z", "1")));
        assert_eq!(h.written(), ["InitApply b/z"], "one Init only");
        assert!(!h.ready());
        h.send(1, Event::InitDone);
        assert_eq!(h.written(), ["InitDone"]);
        assert!(h.ready());
        assert_eq!(h.stored(), ["a/x=1", "a/y=1", "b/z=1"]);
    }

    #[test]
    fn a_relist_of_one_namespace_keeps_the_other_and_deletes_what_is_gone() {
        let mut h = Harness::new();
        h.list(0, &["a/x", "a/y"]);
        h.list(1, &["b/z"]);
        h.written();
        // a's watch fell behind and lists again: y went meanwhile, x changed, w is new.
        h.send(0, Event::Init);
        h.send(0, Event::InitApply(cm("a/x", "2")));
        h.send(0, Event::InitApply(cm("a/w", "1")));
        assert_eq!(h.written(), ["Apply a/x", "Apply a/w"]);
        h.send(0, Event::InitDone);
        assert_eq!(h.written(), ["Delete a/y"]);
        assert_eq!(h.stored(), ["a/w=1", "a/x=2", "b/z=1"]);
        // Then changes pass as they are.
        h.send(1, Event::Apply(cm("b/z", "3")));
        h.send(1, Event::Delete(cm("b/z", "3")));
        h.send(0, Event::Apply(cm("a/v", "1")));
        assert_eq!(h.written(), ["Apply b/z", "Delete b/z", "Apply a/v"]);
        assert_eq!(h.stored(), ["a/v=1", "a/w=1", "a/x=2"]);
        // An empty re-list of b leaves a alone.
        h.list(1, &[]);
        assert_eq!(h.written(), Vec::<String>::new());
        assert_eq!(h.stored(), ["a/v=1", "a/w=1", "a/x=2"]);
    }

    #[test]
    fn changes_before_every_namespace_listed_join_the_first_list() {
        let mut h = Harness::new();
        h.list(0, &["a/x", "a/y"]);
        // a watches while b still lists: a change, a new object, a deletion, a deletion undone.
        h.send(0, Event::Apply(cm("a/x", "2")));
        h.send(0, Event::Apply(cm("a/n", "1")));
        h.send(0, Event::Delete(cm("a/y", "1")));
        h.send(0, Event::Delete(cm("a/n", "1")));
        h.send(0, Event::Apply(cm("a/n", "2")));
        assert_eq!(
            h.written(),
            [
                "Init",
                "InitApply a/x",
                "InitApply a/y",
                "InitApply a/x",
                "InitApply a/n",
                "InitApply a/n"
            ]
        );
        h.list(1, &["b/z"]);
        assert_eq!(h.written(), ["InitApply b/z", "InitDone", "Delete a/y"]);
        assert_eq!(h.stored(), ["a/n=2", "a/x=2", "b/z=1"]);
    }

    #[test]
    fn a_first_list_that_starts_over_leaves_nothing_behind() {
        let mut h = Harness::new();
        // a's list breaks off after x and y, and starts over; y is gone by then.
        h.send(0, Event::Init);
        h.send(0, Event::InitApply(cm("a/x", "1")));
        h.send(0, Event::InitApply(cm("a/y", "1")));
        h.input
            .unbounded_send((0, Err("list failed".into())))
            .unwrap();
        h.list(0, &["a/x"]);
        h.list(1, &["b/z"]);
        let written = h.written();
        assert!(
            written.contains(&"Err list failed".to_string()),
            "{written:?}"
        );
        assert_eq!(written.iter().filter(|e| *e == "Init").count(), 1);
        assert_eq!(written.last().unwrap(), "Delete a/y", "{written:?}");
        assert!(h.ready());
        assert_eq!(h.stored(), ["a/x=1", "b/z=1"]);
    }

    #[test]
    fn the_stream_ends_with_its_watches() {
        let mut h = Harness::new();
        h.list(0, &["a/x"]);
        h.list(1, &[]);
        h.input.close_channel();
        let mut items = 0;
        loop {
            match h.output.next().now_or_never() {
                Some(Some(_)) => items += 1,
                Some(None) => break,
                None => panic!("pending after its input ended"),
            }
        }
        assert_eq!(items, 3, "Init, InitApply a/x, InitDone");
    }
}
