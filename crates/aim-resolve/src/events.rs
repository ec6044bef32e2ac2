//! Which events are the same occurrence, and whether the next one is a new Event object or continues
//! the series of an earlier one (`series.count`, `series.lastObservedTime`), as client-go's recorder
//! decides it: the same type, action, reason, note, regarding and related object, from the same
//! controller, within six minutes of the last occurrence. The operator does the writing.
//!
//! A recent event costs its key's 64-bit hash, its name and its count. (kube's `Recorder` keeps a whole
//! Event object and its key, about 2 KB inline, for each: 17.7 MB of heap at 5,000 templates.)

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// How long after its last occurrence an event is still continued as a series.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often the recent events are pruned (at most).
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// What one event says, for telling repeats apart.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub controller: &'a str,
    /// `Normal` or `Warning`.
    pub type_: &'a str,
    pub action: &'a str,
    pub reason: &'a str,
    pub note: Option<&'a str>,
    pub regarding: &'a ObjectReference,
    pub related: Option<&'a ObjectReference>,
}

/// What makes two events the same occurrence: the fields client-go's recorder compares.
pub fn event_key(e: &EventFields<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    e.controller.hash(&mut h);
    e.type_.hash(&mut h);
    e.action.hash(&mut h);
    e.reason.hash(&mut h);
    e.note.hash(&mut h);
    let object = |r: &ObjectReference, h: &mut DefaultHasher| {
        r.api_version.hash(h);
        r.kind.hash(h);
        r.namespace.hash(h);
        r.name.hash(h);
        r.uid.hash(h);
    };
    object(e.regarding, &mut h);
    e.related.is_some().hash(&mut h);
    if let Some(r) = e.related {
        object(r, &mut h);
    }
    h.finish()
}

/// The name of a new Event about the object `regarding`: `<object name>.<the time in hex nanoseconds>`,
/// as client-go names them, with the object's name cut (and given a hash, [`crate::names::fit`]) so that
/// the whole stays within the 253 characters of a name. An Event about a long-named template is
/// therefore stored, not refused.
pub fn event_name(regarding: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let object = crate::names::fit(regarding, crate::names::MAX_SUBDOMAIN - suffix.len());
    format!("{object}{suffix}")
}

/// Longest note the API server takes on an Event (`events.k8s.io/v1`: 1 kB).
pub const MAX_NOTE: usize = 1024;

/// The note of an Event: the message, clipped to [`MAX_NOTE`] bytes (ending in `…`) when longer, so a
/// long message (an API server's refusal, many long template names) does not lose the Event.
pub fn event_note(message: &str) -> String {
    if message.len() <= MAX_NOTE {
        return message.to_string();
    }
    let mut end = MAX_NOTE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// What to write for an event.
#[derive(Debug, PartialEq, Eq)]
pub enum NextWrite {
    Create,
    /// Continue the series of the event `name`, which then counts `count`.
    Series {
        name: String,
        count: i32,
    },
}

#[derive(Debug)]
struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

/// The events published in the last [`SERIES_WINDOW`], by key.
#[derive(Debug, Default)]
pub struct RecentEvents {
    by_key: HashMap<u64, Seen>,
    pruned: Option<Timestamp>,
}

impl RecentEvents {
    /// What to write for the event with this key at `now`.
    pub fn next(&mut self, key: u64, now: Timestamp) -> NextWrite {
        self.prune(now);
        match self.by_key.get(&key) {
            Some(s) if s.last + SERIES_WINDOW > now => NextWrite::Series {
                name: s.name.clone(),
                count: s.count + 1,
            },
            _ => NextWrite::Create,
        }
    }

    /// The event `name` was written at `now` and counts `count`.
    pub fn record(&mut self, key: u64, name: String, count: i32, now: Timestamp) {
        self.by_key.insert(
            key,
            Seen {
                name,
                count,
                last: now,
            },
        );
    }

    fn prune(&mut self, now: Timestamp) {
        if self.pruned.is_some_and(|p| p + PRUNE_EVERY > now) {
            return;
        }
        self.pruned = Some(now);
        self.by_key.retain(|_, s| s.last + SERIES_WINDOW > now);
        self.by_key.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("aim.eai.amd.com/v1alpha1".into()),
            kind: Some("AIMServiceTemplate".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn event<'a>(
        controller: &'a str,
        reason: &'a str,
        note: &'a str,
        regarding: &'a ObjectReference,
    ) -> EventFields<'a> {
        EventFields {
            controller,
            type_: "Normal",
            action: "Reconcile",
            reason,
            note: Some(note),
            regarding,
            related: None,
        }
    }

    // T-31: an Event about an object with a name of 253 characters is a valid name too.
    #[test]
    fn event_names_stay_within_253_characters() {
        let now = at(0).as_nanosecond();
        assert_eq!(event_name("t", now), format!("t.{now:x}"));
        let long = format!("{}.b", "a".repeat(251));
        let n = event_name(&long, now);
        assert!(n.len() <= 253, "{}", n.len());
        assert!(n.ends_with(&format!(".{now:x}")), "{n}");
        assert_ne!(n, event_name(&format!("{}.c", "a".repeat(251)), now));
    }

    #[test]
    fn long_notes_are_clipped_to_the_api_limit() {
        assert_eq!(event_note("short"), "short");
        let n = event_note(&"é".repeat(2000));
        assert!(n.len() <= MAX_NOTE && n.ends_with('…'), "{}", n.len());
    }

    #[test]
    fn a_repeat_within_the_window_continues_the_series_and_a_late_one_starts_anew() {
        // T-31: a person sees "Ready (x2)", not two lines; an old series is not revived.
        let mut r = RecentEvents::default();
        let t = reference("t");
        let k = event_key(&event("aim-operator", "Ready", "ready", &t));
        assert_eq!(r.next(k, at(0)), NextWrite::Create);
        r.record(k, "t.1".into(), 1, at(0));
        assert_eq!(
            r.next(k, at(60)),
            NextWrite::Series {
                name: "t.1".into(),
                count: 2
            }
        );
        r.record(k, "t.1".into(), 2, at(60));
        // Six minutes after the last occurrence, not the first.
        assert_eq!(
            r.next(k, at(60 + 359)),
            NextWrite::Series {
                name: "t.1".into(),
                count: 3
            }
        );
        assert_eq!(r.next(k, at(60 + 360)), NextWrite::Create);
    }

    #[test]
    fn the_note_the_object_and_the_type_each_make_another_event() {
        let (t, u, m) = (reference("t"), reference("u"), reference("m"));
        let base = event_key(&event("c", "Ready", "a", &t));
        assert_ne!(base, event_key(&event("c", "Ready", "b", &t)));
        assert_ne!(base, event_key(&event("c", "Ready", "a", &u)));
        assert_ne!(base, event_key(&event("c2", "Ready", "a", &t)));
        let mut warning = event("c", "Ready", "a", &t);
        warning.type_ = "Warning";
        assert_ne!(base, event_key(&warning));
        let mut related = event("c", "Ready", "a", &t);
        related.related = Some(&m);
        assert_ne!(base, event_key(&related));
        assert_eq!(base, event_key(&event("c", "Ready", "a", &t)));
    }

    #[test]
    fn old_entries_are_pruned_so_the_table_does_not_grow_with_every_object_ever_seen() {
        let mut r = RecentEvents::default();
        for i in 0..1000u64 {
            r.record(i, format!("e{i}"), 1, at(0));
        }
        r.next(5000, at(1));
        assert_eq!(r.by_key.len(), 1000, "all recent");
        r.next(5000, at(400));
        assert!(r.by_key.is_empty(), "{}", r.by_key.len());
    }
}
