//! T-23: slot accounting never leaks and never over-grants, whatever the watch misses.
//!
//! A model cluster runs alongside the queue: templates ask for slots, Job creates succeed or are
//! refused, Jobs finish or are deleted, and the watch delivers or misses each of those events. A
//! re-list shows what really exists (finished Jobs as finished, deleted ones not at all), and the
//! operator checks every slot the re-list did not show with the API server before giving it back.

use aim_resolve::{DiscoveryQueue, SlotRequest};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MAX: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// Template `t` asks for a slot; a granted create succeeds, or is refused.
    Request { t: u8, refused: bool },
    /// A Job finishes; the watch delivers the event or misses it.
    Finish { pick: u8, seen: bool },
    /// A Job is deleted (TTL, a person, the operator); the watch delivers the event or misses it.
    Delete { pick: u8, seen: bool },
    /// The watch re-lists.
    Relist,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..8, any::<bool>()).prop_map(|(t, r)| Step::Request { t, refused: r && t % 3 == 0 }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(pick, seen)| Step::Finish { pick, seen }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(pick, seen)| Step::Delete { pick, seen }),
        1 => Just(Step::Relist),
    ]
}

/// What really exists: Job key → active.
type Cluster = BTreeMap<String, bool>;

fn active_jobs(c: &Cluster) -> usize {
    c.values().filter(|a| **a).count()
}

fn relist(q: &mut DiscoveryQueue, c: &Cluster) {
    // Finished Jobs arrive as finished: their slot is given back.
    for (job, active) in c {
        if !active {
            q.release(job, |_| true);
        }
    }
    // Slots whose Job the re-list did not show: the API server says whether it exists.
    for job in q.unseen(|j| c.contains_key(j)) {
        if !c.contains_key(&job) {
            q.release(&job, |_| true);
        }
    }
}

proptest! {
    #[test]
    fn free_slots_match_the_jobs_that_really_exist(steps in prop::collection::vec(step(), 1..80)) {
        let mut q = DiscoveryQueue::new(MAX);
        let mut cluster = Cluster::new();
        let mut attempt: BTreeMap<u8, u32> = BTreeMap::new();
        for s in steps {
            match s {
                Step::Request { t, refused } => {
                    let template = format!("Namespace/team/t{t}");
                    let n = attempt.entry(t).or_default();
                    let job = format!("team/discover-t{t}-{n}");
                    // A template has at most one active Job (T-24): it asks only when it has none.
                    if cluster.get(&job) == Some(&true) {
                        continue;
                    }
                    if q.request(&template, i64::from(t), &job, |_| true) == SlotRequest::Granted {
                        if refused {
                            q.release(&job, |_| true);
                        } else {
                            cluster.insert(job.clone(), true);
                            q.confirm(&job);
                        }
                        *n += 1;
                    }
                }
                Step::Finish { pick, seen } => {
                    let actives: Vec<String> =
                        cluster.iter().filter(|(_, a)| **a).map(|(k, _)| k.clone()).collect();
                    if let Some(job) = actives.get(usize::from(pick) % actives.len().max(1)) {
                        cluster.insert(job.clone(), false);
                        if seen {
                            q.release(job, |_| true);
                        }
                    }
                }
                Step::Delete { pick, seen } => {
                    let all: Vec<String> = cluster.keys().cloned().collect();
                    if let Some(job) = all.get(usize::from(pick) % all.len().max(1)) {
                        cluster.remove(job);
                        if seen {
                            q.release(job, |_| true);
                        }
                    }
                }
                Step::Relist => relist(&mut q, &cluster),
            }
            // Never more active Jobs than the limit, and never fewer held slots than active Jobs.
            prop_assert!(active_jobs(&cluster) <= MAX);
            prop_assert!(q.active() >= active_jobs(&cluster));
        }
        // After a re-list nothing leaks: free slots are the limit minus the Jobs that really run.
        relist(&mut q, &cluster);
        prop_assert_eq!(q.active(), active_jobs(&cluster));
        prop_assert_eq!(MAX - q.active(), MAX - active_jobs(&cluster));
    }
}

#[test]
fn reserved_slots_survive_a_relist_until_their_create_answers() {
    // A slot granted but not yet created is not in any list; it must not be given away.
    let mut q = DiscoveryQueue::new(1);
    assert_eq!(
        q.request("Namespace/a/t", 1, "a/j", |_| true),
        SlotRequest::Granted
    );
    assert!(q.unseen(|_| false).is_empty());
    q.confirm("a/j");
    assert_eq!(q.unseen(|_| false), vec!["a/j".to_string()]);
}

#[test]
fn queue_positions_are_refreshed_when_others_move_on() {
    // T-23: a waiting template whose position changed is named once, to rewrite its status.
    let mut q = DiscoveryQueue::new(1);
    let live = |_: &str| true;
    assert_eq!(q.request("t0", 0, "j0", live), SlotRequest::Granted);
    for (i, t) in ["t1", "t2", "t3"].iter().enumerate() {
        assert_eq!(
            q.request(t, i as i64 + 1, &format!("j{}", i + 1), live),
            SlotRequest::Waiting {
                position: i + 1,
                max: 1
            }
        );
    }
    assert!(
        q.stale_positions(usize::MAX, 0).is_empty(),
        "everyone knows their place"
    );
    assert_eq!(q.release("j0", live), vec!["t1".to_string()]);
    assert_eq!(q.request("t1", 1, "j1", live), SlotRequest::Granted);
    assert_eq!(
        q.stale_positions(usize::MAX, 0),
        vec!["t2".to_string(), "t3".to_string()]
    );
    assert!(q.stale_positions(usize::MAX, 0).is_empty(), "named once");
    assert_eq!(
        q.request("t3", 3, "j3", live),
        SlotRequest::Waiting {
            position: 2,
            max: 1
        }
    );
}
