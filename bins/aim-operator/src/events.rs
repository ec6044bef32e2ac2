//! Events (`events.k8s.io/v1`) about the operator's objects: a new Event object, or the series of an
//! earlier one continued, as [`aim_resolve::events`] decides.
//!
//! Why not kube's `Recorder`: it keeps a whole Event object and a copy of its key, about 2 KB inline,
//! for each recent event, and scans all of them on every publish. At 5,000 templates that table peaked
//! at 17.7 MB of heap (heaptrack), the largest single allocation in the operator. Its key also leaves
//! out the note, so a repeat with a new note was shown under the old one.

use aim_resolve::events::{
    EventFields, NextWrite, RecentEvents, event_key, event_name, event_note,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use std::sync::Mutex;

/// Publishes events for one controller (`reportingController`) and instance.
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<RecentEvents>,
}

impl EventPublisher {
    /// `instance` defaults to the controller's name (the API requires one).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.unwrap_or_else(|| controller.into()),
            recent: Mutex::new(RecentEvents::default()),
        }
    }

    /// Creates the event, or continues its series when the same one happened within
    /// [`aim_resolve::events::SERIES_WINDOW`]. The event lives in the object's namespace (`default` for cluster objects).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = event_key(&EventFields {
            controller: &self.controller,
            type_: type_name(ev.type_),
            action: &ev.action,
            reason: &ev.reason,
            note: ev.note.as_deref(),
            regarding,
            related: ev.secondary.as_ref(),
        });
        let now = Timestamp::now();
        let api: Api<K8sEvent> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        let next = self.recent.lock().expect("events lock").next(key, now);
        if let NextWrite::Series { name, count } = next {
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
        let name = event_name(
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond(),
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.as_deref().map(event_note),
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
