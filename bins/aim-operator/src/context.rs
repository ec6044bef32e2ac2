//! What every controller shares: the client, the settings, the stores, the wakers, the discovery
//! queue, the event publisher, the metrics, the statuses written but not seen yet, and the retry
//! counts.

use crate::events::EventPublisher;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::stores::{Stores, Waker};
use aim_api::TemplateScope;
use aim_resolve::DiscoveryQueue;
use aim_resolve::children::TemplateRef;
use kube::Client;
use kube::runtime::reflector::ObjectRef;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub waker: Waker,
    pub queue: Mutex<DiscoveryQueue>,
    pub events: EventPublisher,
    pub metrics: Metrics,
    /// Statuses this process wrote that the stores may not show yet.
    pub written: WrittenStatuses,
    /// Consecutive failed reconciles per object UID, for the retry delay.
    failures: Mutex<HashMap<String, u32>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, stores: Stores, waker: Waker) -> Self {
        Self {
            events: EventPublisher::new(
                client.clone(),
                crate::client::FIELD_MANAGER,
                std::env::var("POD_NAME").ok(),
            ),
            client,
            queue: Mutex::new(DiscoveryQueue::new(settings.max_concurrent_discoveries)),
            settings,
            stores,
            waker,
            metrics: Metrics::default(),
            written: WrittenStatuses::default(),
            failures: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Keeps a background task, aborted by [`Context::stop`].
    pub fn keep(&self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.tasks.lock().expect("tasks lock").extend(tasks);
    }

    /// Whether the template of a queue key still exists.
    pub fn template_exists(&self, key: &str) -> bool {
        match TemplateRef::from_key(key) {
            Some(t) if t.scope == TemplateScope::Namespace => self
                .stores
                .templates
                .get(&ObjectRef::new(&t.name).within(t.namespace.as_deref().unwrap_or_default()))
                .is_some(),
            Some(t) => self
                .stores
                .cluster_templates
                .get(&ObjectRef::new(&t.name))
                .is_some(),
            None => false,
        }
    }

    /// The create request of a Job with a reserved slot answered: the Job exists.
    pub fn confirm_slot(&self, job_key: &str) {
        self.queue.lock().expect("queue lock").confirm(job_key);
    }

    /// Gives back a Job's slot and wakes whoever may take it.
    pub fn release_slot(&self, job_key: &str) {
        let wake = {
            let mut queue = self.queue.lock().expect("queue lock");
            if !queue.holds(job_key) {
                return;
            }
            queue.release(job_key, |k| self.template_exists(k))
        };
        for key in wake {
            self.waker.template_key(&key);
        }
    }

    /// The delay before retrying a failed reconcile of `key`: `first`, doubling, at most `max`.
    pub fn backoff_next(&self, key: &str, (first, max): (Duration, Duration)) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        first.saturating_mul(1u32 << (*n - 1).min(16)).min(max)
    }

    /// A reconcile of `key` succeeded: the next failure starts the delay afresh.
    pub fn backoff_reset(&self, key: &str) {
        let mut failures = self.failures.lock().expect("failures lock");
        if !failures.is_empty() {
            failures.remove(key);
        }
    }

    /// An object is gone: what is remembered of it by UID (a status written, a retry count) goes too.
    pub fn forget(&self, uid: &str) {
        self.written.forget(uid);
        let mut failures = self.failures.lock().expect("failures lock");
        if !failures.is_empty() {
            failures.remove(uid);
        }
    }

    pub fn stop(&self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

/// The last status written per object UID, with the resourceVersion the write produced: a reconcile
/// that runs before the watch delivers our own write decides from this instead of the older cached
/// status (a failure counted twice, a registry read twice). One map for every kind: UIDs are unique.
#[derive(Default)]
pub struct WrittenStatuses {
    map: Mutex<HashMap<String, (u64, AnyStatus)>>,
}

/// A status of any kind, as written.
type AnyStatus = Arc<dyn Any + Send + Sync>;

impl WrittenStatuses {
    /// The status to decide from: `stored` (the store's, at `stored_rv`) unless a newer write of ours
    /// has not reached the store yet.
    pub fn current<S: Clone + Send + Sync + 'static>(
        &self,
        uid: &str,
        stored_rv: u64,
        stored: Option<&S>,
    ) -> Option<S> {
        let mut map = self.map.lock().expect("written lock");
        match map.get(uid) {
            Some((rv, status)) if *rv > stored_rv => match status.downcast_ref::<S>() {
                Some(s) => Some(s.clone()),
                None => stored.cloned(),
            },
            Some(_) => {
                // The store caught up with our write: forget it, so the map stays small.
                map.remove(uid);
                stored.cloned()
            }
            None => stored.cloned(),
        }
    }

    /// The object of `uid` is gone.
    pub fn forget(&self, uid: &str) {
        self.map.lock().expect("written lock").remove(uid);
    }

    /// How many statuses are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().expect("written lock").len()
    }

    pub fn record<S: Send + Sync + 'static>(&self, uid: String, rv: u64, status: S) {
        self.map
            .lock()
            .expect("written lock")
            .insert(uid, (rv, Arc::new(status)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_write_wins_until_the_store_catches_up_and_a_deleted_object_is_forgotten() {
        let w = WrittenStatuses::default();
        w.record("u1".into(), 10, "written".to_string());
        w.record("u2".into(), 7, "other".to_string());
        let stored = "stored".to_string();
        assert_eq!(
            w.current("u1", 9, Some(&stored)).as_deref(),
            Some("written")
        );
        // The store has our write (or newer): its status, and the entry goes.
        assert_eq!(
            w.current("u1", 10, Some(&stored)).as_deref(),
            Some("stored")
        );
        assert_eq!(w.len(), 1);
        // An object deleted before the store caught up leaves nothing behind.
        w.forget("u2");
        assert_eq!(w.len(), 0);
    }
}
