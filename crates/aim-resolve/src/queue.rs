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
    /// The position each waiting template was last told (what its status says), and in which round
    /// of [`stale_positions`](Self::stale_positions).
    told: BTreeMap<String, Told>,
    /// Rounds of `stale_positions` so far.
    rounds: u64,
}

#[derive(Debug, Clone, Copy)]
struct Told {
    position: usize,
    round: u64,
}

impl DiscoveryQueue {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            active: BTreeMap::new(),
            waiting: BTreeSet::new(),
            told: BTreeMap::new(),
            rounds: 0,
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

    /// Records a Job found active in the API: at start-up or leadership, before any new Job is created;
    /// later, an active Job the watch shows that holds no slot (its create answered with an error
    /// although the Job was made): the slot is adopted, so that it counts against the limit (T-23).
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
            let round = self.rounds;
            let told = self
                .told
                .entry(template_key.to_string())
                .or_insert(Told { position, round });
            SlotRequest::Waiting {
                position: told.position,
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

    /// The Jobs holding a slot for `template_key`.
    pub fn held_by(&self, template_key: &str) -> Vec<String> {
        self.active
            .iter()
            .filter(|(_, (t, _))| t == template_key)
            .map(|(j, _)| j.clone())
            .collect()
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

    /// One round of refreshing positions: at most `limit` waiting templates whose status shows a
    /// position that is no longer theirs (others got slots or left) and that were last told at least
    /// `spacing` rounds ago; those told longest ago first, then the oldest. Each is marked as told, so
    /// the caller wakes it once to rewrite its position.
    ///
    /// Called often with a small limit, this spreads the rewrites: the controller's queue never holds
    /// a few hundred of them at once, among which a template just given a slot would wait its turn in
    /// no particular order. `spacing` keeps each waiter to one rewrite per so many rounds.
    pub fn stale_positions(&mut self, limit: usize, spacing: u64) -> Vec<String> {
        self.rounds += 1;
        let now = self.rounds;
        let mut stale: Vec<(u64, usize, &String)> = self
            .waiting
            .iter()
            .enumerate()
            .filter_map(|(i, (_, k))| match self.told.get(k) {
                Some(t) if t.position == i + 1 || t.round + spacing > now => None,
                Some(t) => Some((t.round, i + 1, k)),
                None => Some((0, i + 1, k)),
            })
            .collect();
        stale.sort();
        stale.truncate(limit);
        let stale: Vec<(String, usize)> =
            stale.into_iter().map(|(_, p, k)| (k.clone(), p)).collect();
        for (key, position) in &stale {
            self.told.insert(
                key.clone(),
                Told {
                    position: *position,
                    round: now,
                },
            );
        }
        stale.into_iter().map(|(k, _)| k).collect()
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
        assert_eq!(q.stale_positions(usize::MAX, 0), vec!["t5".to_string()]);
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
    fn a_limited_refresh_takes_those_told_longest_ago_first() {
        // T-23: 6 waiters behind one slot; each round may rewrite 2 of them.
        let mut q = DiscoveryQueue::new(1);
        assert_eq!(q.request("t0", 0, "j0", live), SlotRequest::Granted);
        for i in 1..=6 {
            q.request(&format!("t{i}"), i, &format!("j{i}"), live);
        }
        assert!(q.stale_positions(2, 0).is_empty(), "all told correctly");
        // t1 takes the slot: everyone behind it moves up.
        q.release("j0", live);
        assert_eq!(q.request("t1", 1, "j1", live), SlotRequest::Granted);
        assert_eq!(q.stale_positions(2, 0), vec!["t2", "t3"]);
        // t2 moves again before the others were told: those told longest ago still come first.
        q.release("j1", live);
        assert_eq!(q.request("t2", 2, "j2", live), SlotRequest::Granted);
        assert_eq!(q.stale_positions(2, 0), vec!["t4", "t5"]);
        assert_eq!(q.stale_positions(2, 0), vec!["t6", "t3"]);
        assert!(q.stale_positions(2, 0).is_empty(), "every waiter told");
        assert_eq!(
            q.request("t6", 6, "j6", live),
            SlotRequest::Waiting {
                position: 4,
                max: 1
            }
        );
    }

    #[test]
    fn a_waiter_is_rewritten_at_most_once_per_spacing() {
        // T-23: not on every hand-off.
        let mut q = DiscoveryQueue::new(1);
        assert_eq!(q.request("t0", 0, "j0", live), SlotRequest::Granted);
        q.request("t1", 1, "j1", live);
        q.request("t2", 2, "j2", live);
        q.release("j0", live);
        assert_eq!(q.request("t1", 1, "j1", live), SlotRequest::Granted);
        // t2 was told in round 0; with a spacing of 3 rounds it is rewritten in round 3, not before.
        assert!(q.stale_positions(10, 3).is_empty(), "round 1");
        assert!(q.stale_positions(10, 3).is_empty(), "round 2");
        assert_eq!(q.stale_positions(10, 3), vec!["t2"], "round 3");
        q.request("t3", 3, "j3", live);
        q.release("j1", live);
        assert_eq!(q.request("t2", 2, "j2", live), SlotRequest::Granted);
        // t3 (told in round 3) moved up at once, but waits out the spacing too.
        assert!(q.stale_positions(10, 3).is_empty(), "round 4");
        assert!(q.stale_positions(10, 3).is_empty(), "round 5");
        assert_eq!(q.stale_positions(10, 3), vec!["t3"], "round 6");
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
