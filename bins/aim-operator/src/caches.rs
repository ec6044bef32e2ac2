//! The template cache controller (C-01…C-03): gather the template, its runtime config and what caches
//! made in the namespace from the shared stores, decide in `aim_resolve::cache`, apply, report.

use crate::context::Context;
use crate::controller::{Written, action, current_status, key_of, publish, write_status};
use crate::error::{Error, is_not_found, refusal};
use crate::stores::{config_candidate, events_about, in_namespace};
use aim_api::AIMTemplateCache;
use aim_resolve::cache::{
    CacheObservation, CachePlan, CacheView, CachedTemplate, ChildChange, ChildKind, cache_owner,
    decide_cache, field_manager,
};
use aim_resolve::wake::cache_config_name;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// One reconcile of an AIMTemplateCache.
pub async fn reconcile(obj: Arc<AIMTemplateCache>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (obj, ctx) = (obj.as_ref(), ctx.as_ref());
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
    let config_name = cache_config_name(
        obj.spec.template_scope,
        ns_template.as_deref().map(|t| &t.spec.common),
        cl_template.as_deref().map(|t| &t.spec.common),
    );
    let (ns_config, cl_config) = s.configs(Some(&ns), config_name);
    let volumes = in_namespace(&s.cache_volumes, &ns);
    let jobs = in_namespace(&s.download_jobs, &ns);
    let pods = in_namespace(&s.download_pods, &ns);
    let volume_uids: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v.metadata.uid.as_deref())
        .collect();
    let events = events_about(&s.volume_events, &volume_uids);

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
        namespace_config: ns_config.as_deref().map(config_candidate),
        cluster_config: cl_config.as_deref().map(config_candidate),
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
    let written = write_status(ctx, obj, status.as_ref(), &plan.status).await?;
    if written == Written::Gone {
        return Ok(Action::await_change());
    }
    if written == Written::Applied {
        tracing::info!(cache = %key, status = %plan.status.status, "cache status written");
    }
    if plan.download_failures > 0 {
        ctx.metrics
            .cache_download_failures
            .inc_by(plan.download_failures as u64);
    }
    publish(ctx, obj, &plan.events).await;
    Ok(action(plan.requeue_after))
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
    let refused = |n: &str, e: kube::Error| match refusal(&e) {
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
            Err(e) if is_not_found(&e) => {}
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
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
