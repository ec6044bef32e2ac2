//! Events (`events.k8s.io/v1`) about the operator's objects. A repeat of the same event (type, action,
//! reason, note, regarding and related object, from this controller) within six minutes of the last one
//! is folded into the first as a series (`series.count`, `series.lastObservedTime`), as client-go's
//! recorder does, instead of creating another object.
//!
//! Why not kube's `Recorder`: it keeps a whole Event object and a copy of its key, about 2 KB inline,
//! for each recent event, and scans all of them on every publish. At 5,000 templates that table peaked
//! at 17.7 MB of heap (heaptrack), the largest single allocation in the operator. Here a recent event
//! costs its key's 64-bit hash, its name and count. Its key also leaves out the note, so a repeat
//! with a new note was shown under the old one.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// How long after its last occurrence an event is still continued as a series.
pub(crate) const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often the recent events are pruned (at most).
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// Publishes events for one controller (`reportingController`) and instance.
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

impl EventPublisher {
    /// `instance` defaults to the controller's name (the API requires one).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.unwrap_or_else(|| controller.into()),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Creates the event, or continues its series when the same one happened within
    /// [`SERIES_WINDOW`]. The event lives in the object's namespace (`default` for cluster objects).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = event_key(&self.controller, ev, regarding);
        let now = Timestamp::now();
        let api: Api<K8sEvent> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        let next = self.recent.lock().expect("events lock").next(key, now);
        if let Next::Series { name, count } = next {
            let patch = serde_json::json!({
                "series": { "count": count, "lastObservedTime": MicroTime(now) },
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.recent
                        .lock()
                        .expect("events lock")
                        .record(key, name, count, now);
                    return Ok(());
                }
                // The API server dropped it already (its event TTL): start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(type_name(ev.type_).into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.recent
            .lock()
            .expect("events lock")
            .record(key, name, 1, now);
        Ok(())
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events the same occurrence: the fields client-go's recorder compares.
fn event_key(controller: &str, ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    controller.hash(&mut h);
    type_name(ev.type_).hash(&mut h);
    ev.action.hash(&mut h);
    ev.reason.hash(&mut h);
    ev.note.hash(&mut h);
    let object = |r: &ObjectReference, h: &mut DefaultHasher| {
        r.api_version.hash(h);
        r.kind.hash(h);
        r.namespace.hash(h);
        r.name.hash(h);
        r.uid.hash(h);
    };
    object(regarding, &mut h);
    ev.secondary.is_some().hash(&mut h);
    if let Some(r) = &ev.secondary {
        object(r, &mut h);
    }
    h.finish()
}

/// What to write for an event.
#[derive(Debug, PartialEq)]
enum Next {
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
struct Recent {
    by_key: HashMap<u64, Seen>,
    pruned: Option<Timestamp>,
}

impl Recent {
    fn next(&mut self, key: u64, now: Timestamp) -> Next {
        self.prune(now);
        match self.by_key.get(&key) {
            Some(s) if s.last + SERIES_WINDOW > now => Next::Series {
                name: s.name.clone(),
                count: s.count + 1,
            },
            _ => Next::Create,
        }
    }

    fn record(&mut self, key: u64, name: String, count: i32, now: Timestamp) {
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

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[test]
    fn a_repeat_within_the_window_continues_the_series_and_a_late_one_starts_anew() {
        // T-31: a person sees "Ready (x2)", not two lines; an old series is not revived.
        let mut r = Recent::default();
        let k = event_key("aim-operator", &event("Ready", "ready"), &reference("t"));
        assert_eq!(r.next(k, at(0)), Next::Create);
        r.record(k, "t.1".into(), 1, at(0));
        assert_eq!(
            r.next(k, at(60)),
            Next::Series {
                name: "t.1".into(),
                count: 2
            }
        );
        r.record(k, "t.1".into(), 2, at(60));
        // Six minutes after the last occurrence, not the first.
        assert_eq!(
            r.next(k, at(60 + 359)),
            Next::Series {
                name: "t.1".into(),
                count: 3
            }
        );
        assert_eq!(r.next(k, at(60 + 360)), Next::Create);
    }

    #[test]
    fn the_note_the_object_and_the_type_each_make_another_event() {
        let base = event_key("c", &event("Ready", "a"), &reference("t"));
        assert_ne!(base, event_key("c", &event("Ready", "b"), &reference("t")));
        assert_ne!(base, event_key("c", &event("Ready", "a"), &reference("u")));
        assert_ne!(base, event_key("c2", &event("Ready", "a"), &reference("t")));
        let mut warning = event("Ready", "a");
        warning.type_ = EventType::Warning;
        assert_ne!(base, event_key("c", &warning, &reference("t")));
        let mut related = event("Ready", "a");
        related.secondary = Some(reference("m"));
        assert_ne!(base, event_key("c", &related, &reference("t")));
        assert_eq!(base, event_key("c", &event("Ready", "a"), &reference("t")));
    }

    #[test]
    fn old_entries_are_pruned_so_the_table_does_not_grow_with_every_object_ever_seen() {
        let mut r = Recent::default();
        for i in 0..1000u64 {
            r.record(i, format!("e{i}"), 1, at(0));
        }
        r.next(5000, at(1));
        assert_eq!(r.by_key.len(), 1000, "all recent");
        r.next(5000, at(400));
        assert!(r.by_key.is_empty(), "{}", r.by_key.len());
    }
}
