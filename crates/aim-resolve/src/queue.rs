//! T-23/T-24: the cluster-wide discovery slots. The operator holds one queue behind a lock; this type
//! only does the bookkeeping, so it can be tested (and reasoned about) without a cluster.
//!
//! A slot is taken *before* a Job is created and given back only when the Job is seen finished or
//! gone, so the count never relies on a cache that lags behind our own writes. Waiting templates are
//! served oldest first (creation time, then key); a freed slot names the templates to wake at once.

use std::collections::{BTreeMap, BTreeSet};

/// Default cluster-wide limit of active discovery Jobs.
pub const DEFAULT_MAX_CONCURRENT_DISCOVERIES: usize = 10;

/// Answer to a slot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRequest {
    /// The slot is reserved for this Job; create it, then [`DiscoveryQueue::confirm`] or
    /// [`DiscoveryQueue::release`].
    Granted,
    /// Wait; `position` 1 is next.
    Waiting { position: usize, max: usize },
}

/// Where a held slot's Job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Granted; the create request has not answered yet.
    Reserved,
    /// The Job was created, or seen in the API.
    Created,
}

/// Bookkeeping of discovery slots.
#[derive(Debug, Clone)]
pub struct DiscoveryQueue {
    max: usize,
    /// Job key (`namespace/name`) → (template key, state).
    active: BTreeMap<String, (String, Held)>,
    /// (creation time in seconds, template key).
    waiting: BTreeSet<(i64, String)>,
    /// The position each waiting template was last told (what its status says).
    told: BTreeMap<String, usize>,
}

impl DiscoveryQueue {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            active: BTreeMap::new(),
            waiting: BTreeSet::new(),
            told: BTreeMap::new(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Held slots (reserved or created), counted against the limit.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Templates waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether this Job holds a slot.
    pub fn holds(&self, job_key: &str) -> bool {
        self.active.contains_key(job_key)
    }

    /// Records a Job found active in the API (at start-up or leadership, before any new Job is created;
    /// later, a Job the watch shows active).
    pub fn occupy(&mut self, job_key: &str, template_key: &str) {
        self.active.insert(
            job_key.to_string(),
            (template_key.to_string(), Held::Created),
        );
        self.drop_waiter(template_key);
    }

    fn drop_waiter(&mut self, template_key: &str) {
        self.waiting.retain(|(_, k)| k != template_key);
        self.told.remove(template_key);
    }

    fn position(&self, template_key: &str) -> Option<usize> {
        self.waiting
            .iter()
            .position(|(_, k)| k == template_key)
            .map(|p| p + 1)
    }

    /// Asks for a slot for `template_key`'s Job `job_key`. Idempotent. Waiters for which `is_live` is false
    /// (their template is gone) are dropped first.
    pub fn request(
        &mut self,
        template_key: &str,
        created: i64,
        job_key: &str,
        is_live: impl Fn(&str) -> bool,
    ) -> SlotRequest {
        if self.active.contains_key(job_key) {
            return SlotRequest::Granted;
        }
        self.prune(|k| k == template_key || is_live(k));
        self.waiting.retain(|(_, k)| k != template_key);
        self.waiting.insert((created, template_key.to_string()));
        let position = self.position(template_key).unwrap_or(1);
        let free = self.max.saturating_sub(self.active.len());
        if position <= free {
            self.drop_waiter(template_key);
            self.active.insert(
                job_key.to_string(),
                (template_key.to_string(), Held::Reserved),
            );
            SlotRequest::Granted
        } else {
            // A waiter keeps the position it was told until `stale_positions` names it: every status
            // write wakes its template again, and answering with the live rank would rewrite a waiter
            // each time the queue moved between two of its own reconciles (17.7 status writes per
            // template while 200 drained, instead of one per refresh).
            let told = *self
                .told
                .entry(template_key.to_string())
                .or_insert(position);
            SlotRequest::Waiting {
                position: told,
                max: self.max,
            }
        }
    }

    fn prune(&mut self, is_live: impl Fn(&str) -> bool) {
        self.waiting.retain(|(_, k)| is_live(k));
        let waiting = &self.waiting;
        self.told.retain(|k, _| waiting.iter().any(|(_, w)| w == k));
    }

    /// The create request of a granted Job answered: it exists now (created, or it already existed).
    pub fn confirm(&mut self, job_key: &str) {
        if let Some((_, held)) = self.active.get_mut(job_key) {
            *held = Held::Created;
        }
    }

    /// Gives back the slot of a Job that finished, failed, was deleted, or was never created. Returns
    /// the templates that may now take a slot (oldest first).
    pub fn release(&mut self, job_key: &str, is_live: impl Fn(&str) -> bool) -> Vec<String> {
        self.active.remove(job_key);
        self.wake(is_live)
    }

    /// A template that no longer waits (it needs no discovery, or it is gone).
    pub fn forget(&mut self, template_key: &str) {
        self.drop_waiter(template_key);
    }

    /// The waiting templates that fit in the free slots.
    pub fn wake(&mut self, is_live: impl Fn(&str) -> bool) -> Vec<String> {
        self.prune(is_live);
        let free = self.max.saturating_sub(self.active.len());
        self.waiting
            .iter()
            .take(free)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Created slots whose Job `exists` does not know: after a re-list these may have been deleted
    /// while the watch was down (no delete event comes for them). The caller checks each with the API
    /// server and [`release`](Self::release)s those that are really gone. Reserved slots are left
    /// alone: their create request has not answered yet.
    pub fn unseen(&self, exists: impl Fn(&str) -> bool) -> Vec<String> {
        self.active
            .iter()
            .filter(|(job, (_, held))| *held == Held::Created && !exists(job))
            .map(|(job, _)| job.clone())
            .collect()
    }

    /// Waiting templates whose status shows a position that is no longer theirs (others got slots or
    /// left). Each is marked as told, so the caller wakes it once to rewrite its position.
    pub fn stale_positions(&mut self) -> Vec<String> {
        let current: Vec<(String, usize)> = self
            .waiting
            .iter()
            .enumerate()
            .map(|(i, (_, k))| (k.clone(), i + 1))
            .collect();
        let mut stale = Vec::new();
        for (key, position) in current {
            if self.told.get(&key) != Some(&position) {
                self.told.insert(key.clone(), position);
                stale.push(key);
            }
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(_: &str) -> bool {
        true
    }

    #[test]
    fn limit_is_hard_and_fifo_by_creation() {
        // T-23
        let mut q = DiscoveryQueue::new(2);
        assert_eq!(q.request("t3", 3, "j3", live), SlotRequest::Granted);
        assert_eq!(q.request("t1", 1, "j1", live), SlotRequest::Granted);
        assert_eq!(
            q.request("t5", 5, "j5", live),
            SlotRequest::Waiting {
                position: 1,
                max: 2
            }
        );
        assert_eq!(
            q.request("t4", 4, "j4", live),
            SlotRequest::Waiting {
                position: 1,
                max: 2
            }
        );
        // t4 is older: t5 is now second, and is told so at the next refresh, not on every request.
        assert_eq!(
            q.request("t5", 5, "j5", live),
            SlotRequest::Waiting {
                position: 1,
                max: 2
            }
        );
        assert_eq!(q.stale_positions(), vec!["t5".to_string()]);
        assert_eq!(
            q.request("t5", 5, "j5", live),
            SlotRequest::Waiting {
                position: 2,
                max: 2
            }
        );
        assert_eq!(q.active(), 2);
        // A freed slot goes to the oldest waiter, named at once.
        assert_eq!(q.release("j1", live), vec!["t4".to_string()]);
        assert_eq!(
            q.request("t5", 5, "j5", live),
            SlotRequest::Waiting {
                position: 2,
                max: 2
            }
        );
        assert_eq!(q.request("t4", 4, "j4", live), SlotRequest::Granted);
        assert_eq!(q.active(), 2);
    }

    #[test]
    fn requests_are_idempotent_and_gone_templates_do_not_block() {
        let mut q = DiscoveryQueue::new(1);
        assert_eq!(q.request("a", 1, "ja", live), SlotRequest::Granted);
        assert_eq!(q.request("a", 1, "ja", live), SlotRequest::Granted);
        assert_eq!(q.active(), 1);
        assert!(matches!(
            q.request("b", 2, "jb", live),
            SlotRequest::Waiting { .. }
        ));
        assert!(matches!(
            q.request("c", 3, "jc", live),
            SlotRequest::Waiting { position: 2, .. }
        ));
        // b is deleted while waiting: c is next.
        assert_eq!(q.release("ja", |k| k != "b"), vec!["c".to_string()]);
        assert_eq!(q.request("c", 3, "jc", |k| k != "b"), SlotRequest::Granted);
    }

    #[test]
    fn occupied_slots_count_after_a_restart() {
        // T-23: rebuilt from the API server before any new Job is created.
        let mut q = DiscoveryQueue::new(2);
        q.occupy("j1", "t1");
        q.occupy("j2", "t2");
        assert!(matches!(
            q.request("t3", 0, "j3", live),
            SlotRequest::Waiting { .. }
        ));
    }
}
