//! Template caches: one reconcile of an AIMTemplateCache (gather, decide in `aim_resolve::cache`, apply,
//! report; C-01…C-03), and the template's side, its own cache made, updated or deleted (T-26).

use crate::context::Context;
use crate::error::Error;
use crate::kinds::TemplateKind;
use aim_api::{AIMTemplateCache, TemplateCacheStatus, TemplateScope};
use aim_resolve::ConfigCandidate;
use aim_resolve::cache::{
    CacheAction, CacheObservation, CachePlan, CacheView, CachedTemplate, ChildChange, ChildKind,
    ExistingCache, cache_owner, decide_cache, field_manager, template_cache_action,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The controller's name in logs and metrics.
pub const CONTROLLER: &str = "AIMTemplateCache";

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// T-26: creates, updates or deletes the AIMTemplateCache of a template, from the status just decided.
/// `existing` is the cache of the template's name in its namespace, if any.
pub async fn sync_template_cache<K: TemplateKind>(
    ctx: &Context,
    obj: &K,
    key: &str,
    status: &aim_api::ServiceTemplateStatus,
    existing: Option<&AIMTemplateCache>,
) -> Result<(), Error> {
    let Some(ns) = obj.namespace() else {
        return Ok(());
    };
    let uid = obj.uid().unwrap_or_default();
    let found = existing.map(|c| ExistingCache {
        controller_uid: controller_uid(&c.metadata),
        labels: c.metadata.labels.as_ref(),
        spec: &c.spec,
    });
    let api: Api<AIMTemplateCache> = Api::namespaced(ctx.client.clone(), &ns);
    match template_cache_action(&uid, obj.desired_cache(status), found) {
        CacheAction::Keep => {}
        CacheAction::Apply(d) => {
            let body = serde_json::json!({
                "apiVersion": AIMTemplateCache::api_version(&()),
                "kind": AIMTemplateCache::kind(&()),
                "metadata": {
                    "name": d.name,
                    "namespace": d.namespace,
                    "labels": d.labels,
                    "ownerReferences": [d.owner],
                },
                "spec": d.spec,
            });
            api.patch(
                &d.name,
                &PatchParams::apply(crate::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            tracing::info!(template = %key, cache = %d.name, "template cache applied");
        }
        CacheAction::Delete => {
            let name = obj.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(template = %key, cache = %name, "template cache deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn key_of(c: &AIMTemplateCache) -> String {
    format!(
        "{CONTROLLER}/{}/{}",
        c.namespace().unwrap_or_default(),
        c.name_any()
    )
}

/// The status to decide from: the store's, unless our own newer write has not reached it yet (a failed
/// download would otherwise be counted twice).
fn current_status(ctx: &Context, obj: &AIMTemplateCache) -> Option<TemplateCacheStatus> {
    let uid = obj.uid()?;
    let store_rv = obj
        .resource_version()
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let mut written = ctx.cache_written.lock().expect("written lock");
    match written.get(&uid) {
        Some((rv, status)) if *rv > store_rv => Some(status.clone()),
        Some(_) => {
            written.remove(&uid);
            obj.status.clone()
        }
        None => obj.status.clone(),
    }
}

fn config<'a>(meta: &'a ObjectMeta, spec: &'a aim_api::RuntimeConfigCommon) -> ConfigCandidate<'a> {
    ConfigCandidate {
        name: meta.name.as_deref().unwrap_or_default(),
        namespace: meta.namespace.as_deref(),
        uid: meta.uid.as_deref(),
        spec,
    }
}

pub async fn reconcile(obj: Arc<AIMTemplateCache>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.backoff_reset(&key_of(&obj));
    }
    result
}

async fn reconcile_inner(obj: &AIMTemplateCache, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let uid = obj.uid().unwrap_or_default();
    let status = current_status(ctx, obj);
    let s = &ctx.stores;

    // Gather: the template in either scope (a wrong scope is reported), the runtime config it names
    // (in the cache's namespace over the cluster's), and what caches made in this namespace.
    let template_name = &obj.spec.template_name;
    let ns_template = s.templates.get(&ObjectRef::new(template_name).within(&ns));
    let cl_template = s.cluster_templates.get(&ObjectRef::new(template_name));
    let config_name = match obj.spec.template_scope {
        TemplateScope::Namespace => ns_template
            .as_ref()
            .map(|t| t.spec.common.runtime_config_name.clone()),
        TemplateScope::Cluster => cl_template
            .as_ref()
            .map(|t| t.spec.common.runtime_config_name.clone()),
    }
    .unwrap_or_else(|| aim_api::DEFAULT_RUNTIME_CONFIG_NAME.to_string());
    let ns_config = s.configs.get(&ObjectRef::new(&config_name).within(&ns));
    let cl_config = s.cluster_configs.get(&ObjectRef::new(&config_name));
    let in_ns = |m: &ObjectMeta| m.namespace.as_deref() == Some(ns.as_str());
    let volumes: Vec<Arc<PersistentVolumeClaim>> = s
        .cache_volumes
        .state()
        .into_iter()
        .filter(|v| in_ns(&v.metadata))
        .collect();
    let jobs: Vec<Arc<Job>> = s
        .download_jobs
        .state()
        .into_iter()
        .filter(|j| in_ns(&j.metadata))
        .collect();
    let pods: Vec<Arc<Pod>> = s
        .download_pods
        .state()
        .into_iter()
        .filter(|p| in_ns(&p.metadata))
        .collect();
    let volume_uids: BTreeSet<&str> = volumes
        .iter()
        .filter_map(|v| v.metadata.uid.as_deref())
        .collect();
    let events: Vec<Arc<CoreEvent>> = s
        .volume_events
        .state()
        .into_iter()
        .filter(|e| {
            e.involved_object
                .uid
                .as_deref()
                .is_some_and(|u| volume_uids.contains(u))
        })
        .collect();

    let mut obs = CacheObservation {
        cache: CacheView {
            name: &name,
            namespace: &ns,
            uid: &uid,
            generation: obj.meta().generation,
            spec: &obj.spec,
            status: status.as_ref(),
        },
        namespace_template: ns_template.as_deref().map(|t| CachedTemplate {
            name: template_name,
            spec: &t.spec.common,
            status: t.status.as_ref(),
        }),
        cluster_template: cl_template.as_deref().map(|t| CachedTemplate {
            name: template_name,
            spec: &t.spec.common,
            status: t.status.as_ref(),
        }),
        namespace_config: ns_config
            .as_deref()
            .map(|c| config(&c.metadata, &c.spec.common)),
        cluster_config: cl_config
            .as_deref()
            .map(|c| config(&c.metadata, &c.spec.common)),
        volumes: volumes.iter().map(|v| v.as_ref()).collect(),
        jobs: jobs.iter().map(|j| j.as_ref()).collect(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        volume_events: events.iter().map(|e| e.as_ref()).collect(),
        refused: Default::default(),
        download_image: &ctx.settings.cache_download_image,
        backoff_base: ctx.settings.backoff_base,
        now: jiff::Timestamp::now(),
    };
    // A volume or Job the API server refuses (quota, admission) is a failed attempt of its source: decide
    // again knowing that, and apply what remains (creates are idempotent, nothing else was applied yet).
    let plan = loop {
        let plan = decide_cache(&obs);
        match apply(ctx, &key, &ns, &name, &uid, &plan).await? {
            None => break plan,
            Some((object, why)) if !obs.refused.contains_key(&object) => {
                tracing::warn!(cache = %key, object = %object, error = %why, "the API server refused a cache object");
                obs.refused.insert(object, why);
                obs.now = jiff::Timestamp::now();
            }
            Some((object, why)) => {
                return Err(Error::Conflict(format!("{object} refused again: {why}")));
            }
        }
    };
    write_status(ctx, obj, &key, status.as_ref(), &plan).await?;
    if plan.download_failures > 0 {
        ctx.metrics
            .cache_download_failures
            .inc_by(plan.download_failures as u64);
    }
    for e in &plan.events {
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
        if let Err(err) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(cache = %key, error = %err, "cannot record event");
        }
    }
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Deletes, creates and shares what the plan says: failed Jobs first, then volumes before the Jobs that
/// mount them, then owner references. Shared objects are written with the cache's own field manager.
/// Stops at the first create the API server refuses for good: `(its name, why)`.
async fn apply(
    ctx: &Context,
    key: &str,
    ns: &str,
    name: &str,
    uid: &str,
    plan: &CachePlan,
) -> Result<Option<(String, String)>, Error> {
    let refused = |n: &str, e: kube::Error| match crate::reconcile::refusal(&e) {
        Some(why) => Ok(Some((n.to_string(), why))),
        None => Err(Error::from(e)),
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let volumes: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let manager = field_manager(uid);
    let pp = PatchParams::apply(&manager);
    for job in &plan.delete_jobs {
        match jobs.delete(job, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(cache = %key, job = %job, "deleted download job"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for v in &plan.create_volumes {
        let n = v.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = volumes.patch(n, &pp, &Patch::Apply(v)).await {
            return refused(n, e);
        }
        tracing::info!(cache = %key, volume = %n, "created cache volume");
    }
    for j in &plan.create_jobs {
        let n = j.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = jobs.patch(n, &pp, &Patch::Apply(j)).await {
            return refused(n, e);
        }
        tracing::info!(cache = %key, job = %n, "created download job");
    }
    let owner = cache_owner(name, uid);
    for change in &plan.children {
        let result = match change {
            ChildChange::Adopt { kind, name: child } => {
                let body = |api_version: &str, kind: &str| {
                    serde_json::json!({
                        "apiVersion": api_version,
                        "kind": kind,
                        "metadata": { "name": child, "namespace": ns, "ownerReferences": [owner] },
                    })
                };
                match kind {
                    ChildKind::Volume => volumes
                        .patch(
                            child,
                            &pp,
                            &Patch::Apply(body("v1", "PersistentVolumeClaim")),
                        )
                        .await
                        .map(|_| ()),
                    ChildKind::Job => jobs
                        .patch(child, &pp, &Patch::Apply(body("batch/v1", "Job")))
                        .await
                        .map(|_| ()),
                }
            }
            ChildChange::Release {
                kind,
                name: child,
                index,
            } => {
                // Only if our reference is still where we saw it (the test fails otherwise: retried).
                let patch: Patch<()> = Patch::Json(serde_json::from_value(serde_json::json!([
                    { "op": "test", "path": format!("/metadata/ownerReferences/{index}/uid"), "value": uid },
                    { "op": "remove", "path": format!("/metadata/ownerReferences/{index}") },
                ]))?);
                let pp = PatchParams::default();
                match kind {
                    ChildKind::Volume => volumes.patch(child, &pp, &patch).await.map(|_| ()),
                    ChildKind::Job => jobs.patch(child, &pp, &patch).await.map(|_| ()),
                }
            }
            ChildChange::Delete { kind, name: child } => {
                let dp = DeleteParams::background();
                match kind {
                    ChildKind::Volume => volumes.delete(child, &dp).await.map(|_| ()),
                    ChildKind::Job => jobs.delete(child, &dp).await.map(|_| ()),
                }
            }
        };
        match result {
            Ok(()) => tracing::info!(cache = %key, change = ?change, "shared cache object updated"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Writes the status only when it changed (server-side apply on the status subresource).
async fn write_status(
    ctx: &Context,
    obj: &AIMTemplateCache,
    key: &str,
    old: Option<&TemplateCacheStatus>,
    plan: &CachePlan,
) -> Result<(), Error> {
    if old == Some(&plan.status) {
        return Ok(());
    }
    let api: Api<AIMTemplateCache> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": AIMTemplateCache::api_version(&()),
        "kind": AIMTemplateCache::kind(&()),
        "status": plan.status,
    });
    let written = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(crate::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    if let (Some(uid), Some(rv)) = (
        written.uid(),
        written
            .resource_version()
            .and_then(|rv| rv.parse::<u64>().ok()),
    ) {
        ctx.cache_written
            .lock()
            .expect("written lock")
            .insert(uid, (rv, plan.status.clone()));
    }
    tracing::info!(cache = %key, status = %plan.status.status, "cache status written");
    Ok(())
}

/// A failed reconcile is retried per cache with a capped exponential delay that resets on success.
pub fn error_policy(obj: Arc<AIMTemplateCache>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(&obj);
    ctx.metrics.failed(CONTROLLER, error.category());
    let delay = ctx.backoff_next(&key);
    tracing::warn!(cache = %key, category = error.category(), error = %error, retry_in = ?delay, "cache reconcile failed; retrying");
    Action::requeue(delay)
}
