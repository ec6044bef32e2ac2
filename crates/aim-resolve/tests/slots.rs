//! T-23: slot accounting never leaks and never over-grants, whatever the watch misses.
//!
//! A model cluster runs alongside the queue: templates ask for slots, Job creates succeed or are
//! refused, or answer with an error whether or not the Job was made; Jobs finish or are deleted,
//! templates go, and the watch delivers or misses each of those events (an active Job it shows
//! without a slot has one adopted). A re-list shows what really exists (finished Jobs as finished,
//! deleted ones not at all), and the operator checks every slot the re-list did not show with the
//! API server before giving it back.

use aim_resolve::{DiscoveryQueue, SlotRequest};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MAX: usize = 3;

/// How the create request of a granted Job answers.
#[derive(Debug, Clone, Copy)]
enum Create {
    Made,
    /// Refused for good (quota, admission): nothing was made, the slot is given back.
    Refused,
    /// An error (a timeout, a lost answer) although the Job was made: the slot stays held.
    ErrorButMade,
    /// An error, and nothing was made: the slot stays held until the template asks again or goes.
    ErrorNotMade,
}

#[derive(Debug, Clone)]
enum Step {
    /// Template `t` asks for a slot; a granted create answers as `create` says.
    Request { t: u8, create: Create },
    /// Template `t` is deleted.
    Gone { t: u8 },
    /// A Job finishes; the watch delivers the event or misses it.
    Finish { pick: u8, seen: bool },
    /// A Job is deleted (TTL, a person, the operator); the watch delivers the event or misses it.
    Delete { pick: u8, seen: bool },
    /// The watch re-lists.
    Relist,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..8, 0u8..8).prop_map(|(t, c)| Step::Request { t, create: match c {
            0 if t % 3 == 0 => Create::Refused,
            1 => Create::ErrorButMade,
            2 => Create::ErrorNotMade,
            _ => Create::Made,
        } }),
        1 => (0u8..8).prop_map(|t| Step::Gone { t }),
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

fn template_of(job: &str) -> String {
    // "team/discover-t<t>-<n>" belongs to "Namespace/team/t<t>".
    let t = job
        .trim_start_matches("team/discover-")
        .rsplit_once('-')
        .unwrap()
        .0;
    format!("Namespace/team/{t}")
}

/// The operator's answer to a Job the watch shows: finished gives its slot back, active without a
/// slot adopts one.
fn observe(q: &mut DiscoveryQueue, job: &str, active: bool) {
    if !active {
        q.release(job, |_| true);
    } else if !q.holds(job) {
        q.occupy(job, &template_of(job));
    }
}

/// Slots `template` holds for Jobs that do not exist are given back, except `keep`'s.
fn release_absent(q: &mut DiscoveryQueue, c: &Cluster, template: &str, keep: Option<&str>) {
    for job in q.held_by(template) {
        if Some(job.as_str()) != keep && !c.contains_key(&job) {
            q.release(&job, |_| true);
        }
    }
}

fn relist(q: &mut DiscoveryQueue, c: &Cluster) {
    for (job, active) in c {
        observe(q, job, *active);
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
                Step::Request { t, create } => {
                    let template = format!("Namespace/team/t{t}");
                    let n = attempt.entry(t).or_default();
                    let job = format!("team/discover-t{t}-{n}");
                    // A template has at most one active Job (T-24): it asks only when it has none.
                    if cluster.get(&job) == Some(&true) {
                        continue;
                    }
                    release_absent(&mut q, &cluster, &template, Some(&job));
                    if q.request(&template, i64::from(t), &job, |_| true) == SlotRequest::Granted {
                        match create {
                            Create::Made => {
                                cluster.insert(job.clone(), true);
                                q.confirm(&job);
                                *n += 1;
                            }
                            Create::Refused => {
                                q.release(&job, |_| true);
                                *n += 1;
                            }
                            // The retry asks for the same Job.
                            Create::ErrorButMade => {
                                cluster.insert(job.clone(), true);
                                q.confirm(&job);
                            }
                            Create::ErrorNotMade => q.confirm(&job),
                        }
                    }
                }
                Step::Gone { t } => {
                    let template = format!("Namespace/team/t{t}");
                    q.forget(&template);
                    release_absent(&mut q, &cluster, &template, None);
                }
                Step::Finish { pick, seen } => {
                    let actives: Vec<String> =
                        cluster.iter().filter(|(_, a)| **a).map(|(k, _)| k.clone()).collect();
                    if let Some(job) = actives.get(usize::from(pick) % actives.len().max(1)) {
                        cluster.insert(job.clone(), false);
                        if seen {
                            observe(&mut q, job, false);
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
