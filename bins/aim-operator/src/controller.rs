//! The one controller skeleton every kind runs on. A kind brings its gather/decide/apply as one async
//! function; the skeleton wires it to the shared stores and wakers, times it, retries it with a
//! capped per-object backoff, and gives it one status writer (with the stale-status guard) and one
//! event path. One key format names an object in logs and in the retry counts: `Kind/namespace/name`,
//! or `Kind/name` for a cluster-scoped kind.

use crate::context::Context;
use crate::error::Error;
use aim_resolve::PlannedEvent;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A kind with a controller: its name in logs and metrics, its status, and where to write it.
pub trait Kind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The controller's name in logs, metrics and keys: the kind.
    const NAME: &'static str;
    type Status: Clone + PartialEq + Serialize + Send + Sync + 'static;
    fn status(&self) -> Option<&Self::Status>;
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
}

/// The key of an object in logs and retry counts.
pub fn key_of<K: Kind>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{}/{ns}/{}", K::NAME, obj.name_any()),
        None => format!("{}/{}", K::NAME, obj.name_any()),
    }
}

/// Retry counts are kept by UID, so that they go with the object ([`Context::forget`]).
fn retry_key<K: Kind>(obj: &K) -> String {
    obj.uid().unwrap_or_else(|| key_of(obj))
}

/// First and longest retry delay of a failed reconcile.
pub const ERROR_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Runs the controller of `K` until `stop` resolves: reconciles each object the waker names (the
/// watches wake an object after its store took the change), never two at once for one object.
pub async fn run<K, F, Fut>(
    ctx: Arc<Context>,
    store: Store<K>,
    triggers: UnboundedReceiver<ObjectRef<K>>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
    reconcile: F,
) where
    K: Kind,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_millis(100))
        .concurrency(ctx.settings.max_concurrent_reconciles.max(1));
    let reconcile = Arc::new(reconcile);
    Controller::for_stream(
        futures::stream::pending::<Result<K, watcher::Error>>(),
        store,
    )
    .with_config(config)
    .reconcile_on(triggers)
    .graceful_shutdown_on(stop)
    .run(
        move |obj: Arc<K>, ctx: Arc<Context>| {
            let fut = reconcile(obj.clone(), ctx.clone());
            async move {
                let started = Instant::now();
                let result = match fut.await {
                    // Its namespace is being deleted, and the object with it: not a failure, and
                    // nothing to retry (the watch's delete event forgets it).
                    Err(e) if e.namespace_terminating() => {
                        tracing::debug!(object = %key_of(obj.as_ref()), error = %e, "namespace terminating; not retried");
                        Ok(Action::await_change())
                    }
                    other => other,
                };
                ctx.metrics.reconciled(K::NAME, started.elapsed());
                if result.is_ok() {
                    ctx.backoff_reset(&key_of(obj.as_ref()));
                }
                result
            }
        },
        error_policy::<K>,
        ctx,
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(controller = K::NAME, error = %e, "reconcile");
        }
    })
    .await;
}

/// A failed reconcile (the API server unreachable, a conflict) is retried per object with a capped
/// exponential delay that resets on success; an object of someone else in the way is looked at again
/// now and then.
fn error_policy<K: Kind>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(obj.as_ref());
    ctx.metrics.failed(K::NAME, error.category());
    let delay = error
        .retry_after()
        .unwrap_or_else(|| ctx.backoff_next(&retry_key(obj.as_ref()), ERROR_BACKOFF));
    tracing::warn!(object = %key, category = error.category(), error = %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// What a plan asks of the controller after this reconcile.
pub fn action(requeue_after: Option<Duration>) -> Action {
    match requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

/// The status to decide from: the store's, unless our own newer write has not reached the store yet.
pub fn current_status<K: Kind>(ctx: &Context, obj: &K) -> Option<K::Status> {
    let Some(uid) = obj.uid() else {
        return obj.status().cloned();
    };
    let stored_rv = obj
        .resource_version()
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    ctx.written.current(&uid, stored_rv, obj.status())
}

/// What [`write_status`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The status was already `new`.
    Unchanged,
    /// `new` was written.
    Applied,
    /// The object is gone: the reconcile has nothing left to do.
    Gone,
}

/// Writes `new` as the object's status (server-side apply on the status subresource) unless it equals
/// `old`; remembers what it wrote until the store shows it.
pub async fn write_status<K: Kind>(
    ctx: &Context,
    obj: &K,
    old: Option<&K::Status>,
    new: &K::Status,
) -> Result<Written, Error> {
    if old == Some(new) {
        return Ok(Written::Unchanged);
    }
    let api = K::api(ctx.client.clone(), obj.namespace().as_deref());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    let written = match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(crate::client::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(written) => written,
        // Deleted since the store showed it (its namespace going away, say): nothing left to
        // explain, and nothing to retry. The watch's delete event forgets it.
        Err(e) if crate::error::is_not_found(&e) => {
            tracing::debug!(object = %key_of(obj), "gone before its status was written");
            return Ok(Written::Gone);
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some(uid), Some(rv)) = (
        written.uid(),
        written
            .resource_version()
            .and_then(|rv| rv.parse::<u64>().ok()),
    ) {
        ctx.written.record(uid, rv, new.clone());
    }
    Ok(Written::Applied)
}

/// Publishes a plan's events about `obj`.
pub async fn publish<K: Kind>(ctx: &Context, obj: &K, events: &[PlannedEvent]) {
    for e in events {
        let ev = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(e.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        match ctx.events.publish(&ev, &obj.object_ref(&())).await {
            Ok(()) => {}
            Err(err) if crate::error::is_namespace_terminating(&err) => {
                tracing::debug!(object = %key_of(obj), "namespace terminating; event not recorded");
            }
            Err(err) => tracing::warn!(object = %key_of(obj), error = %err, "cannot record event"),
        }
    }
}
