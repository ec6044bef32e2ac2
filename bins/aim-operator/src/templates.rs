//! The template controller (T-01…T-32), both scopes: gather from the shared stores, decide in
//! `aim_resolve::decide` (reading a dry-run log or asking the discovery queue when the decision needs
//! it), apply discovery Jobs, report, then keep the template's own cache in step (T-26).

use crate::context::Context;
use crate::controller::{Written, action, current_status, key_of, publish, write_status};
use crate::error::{Error, is_not_found, refusal};
use crate::kinds::{TemplateKind, model_candidate};
use crate::logs::read_discovery_log;
use crate::stores::{config_candidate, events_about};
use aim_api::AIMTemplateCache;
use aim_hardware::Inventory;
use aim_resolve::cache::{CacheAction, ExistingCache, template_cache_action};
use aim_resolve::children::{TemplateRef, job_belongs_to, pod_of_any};
use aim_resolve::template::{LogRead, Observation, Slot, TemplateView};
use aim_resolve::{Decision, Need, Plan, SlotRequest};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// One reconcile of a template of either scope (T-01…T-32).
pub async fn reconcile<K: TemplateKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (obj, ctx) = (obj.as_ref(), ctx.as_ref());
    let name = obj.name_any();
    let namespace = obj.namespace();
    let key = key_of(obj);
    let status = current_status(ctx, obj);
    let s = &ctx.stores;
    let spec = obj.common();

    // Gather.
    let ns_model = namespace
        .as_deref()
        .and_then(|ns| s.models.get(&ObjectRef::new(&spec.model_name).within(ns)));
    let cl_model = s.cluster_models.get(&ObjectRef::new(&spec.model_name));
    let (ns_config, cl_config) = s.configs(namespace.as_deref(), &spec.runtime_config_name);
    let nodes = s.nodes.state();
    let inventory = Inventory::from_nodes(nodes.iter().map(|n| n.as_ref()));
    let me = TemplateRef::new(K::SCOPE, namespace.as_deref(), &name);
    let jobs: Vec<Arc<Job>> = s
        .jobs
        .state()
        .into_iter()
        .filter(|j| job_belongs_to(j, &me))
        .collect();
    let job_refs: Vec<&Job> = jobs.iter().map(|j| j.as_ref()).collect();
    let pods: Vec<Arc<Pod>> = s
        .pods
        .state()
        .into_iter()
        .filter(|p| pod_of_any(p, &job_refs))
        .collect();
    let job_uids: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.metadata.uid.as_deref())
        .collect();
    let events = events_about(&s.job_events, &job_uids);
    // T-27: the cache of the template's name (namespace templates only, T-28).
    let cache = match (K::SCOPE, namespace.as_deref()) {
        (aim_api::TemplateScope::Namespace, Some(ns)) => {
            s.caches.get(&ObjectRef::new(&name).within(ns))
        }
        _ => None,
    };
    let uid = obj.uid().unwrap_or_default();
    let created = obj
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let mut obs = Observation {
        template: TemplateView {
            scope: K::SCOPE,
            name: &name,
            namespace: namespace.as_deref(),
            uid: &uid,
            generation: obj.meta().generation,
            paused: obj
                .annotations()
                .get(aim_api::labels::RECONCILIATION_PAUSED)
                .is_some_and(|v| v == "true"),
            spec,
            env: obj.env(),
            caching_enabled: obj.caching_enabled(),
            labels: obj.meta().labels.as_ref(),
            status: status.as_ref(),
        },
        namespace_model: ns_model.as_deref().map(model_candidate),
        cluster_model: cl_model.as_deref().map(model_candidate),
        namespace_config: ns_config.as_deref().map(config_candidate),
        cluster_config: cl_config.as_deref().map(config_candidate),
        inventory: &inventory,
        jobs: job_refs.clone(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        job_events: events.iter().map(|e| e.as_ref()).collect(),
        job_refused: None,
        log: LogRead::NotRead,
        log_limit: ctx.settings.log_limit,
        slot: Slot::NotAsked,
        cache: aim_resolve::cache::cache_phase_for_template(&name, cache.as_deref()),
        operator_namespace: &ctx.settings.system_namespace,
        backoff_base: ctx.settings.backoff_base,
        now: jiff::Timestamp::now(),
    };

    let mut plan = decide(ctx, &me.key(), created, &mut obs).await;
    // T-24: Jobs of older inputs go before a new one may start.
    if let Err(e) = delete_jobs(ctx, &key, &plan.delete_jobs).await {
        if let Some(job) = &plan.create_job {
            ctx.release_slot(&job_key_of(job));
        }
        return Err(e);
    }
    if let Some(job) = plan.create_job.clone() {
        let job_key = job_key_of(&job);
        let api: Api<Job> = Api::namespaced(
            ctx.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let pp = PostParams {
            field_manager: Some(crate::client::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, &job).await {
            Ok(_) => {
                ctx.confirm_slot(&job_key);
                tracing::info!(template = %key, job = %job_key, "created discovery job");
            }
            Err(kube::Error::Api(s)) if s.code == 409 => ctx.confirm_slot(&job_key),
            Err(e) => {
                let Some(why) = refusal(&e) else {
                    // T-23: the Job may have been made although the request failed (a timeout, a lost
                    // answer): the slot stays held as if it had been. The retry of this template asks
                    // for the same Job and is answered from the slot; if the Job never appears, the
                    // template's next request or its deletion gives the slot back.
                    ctx.confirm_slot(&job_key);
                    tracing::warn!(template = %key, job = %job_key, error = %e, "discovery job create failed; its slot stays held until the job is seen or known absent");
                    return Err(e.into());
                };
                ctx.release_slot(&job_key);
                // The API server will not take this Job: a failed attempt, in status, with a Warning and
                // the usual backoff (never a retry every few seconds).
                tracing::warn!(template = %key, job = %job_key, error = %why, "discovery job refused");
                obs.job_refused = Some(why);
                obs.slot = Slot::NotAsked;
                obs.now = jiff::Timestamp::now();
                plan = decide(ctx, &me.key(), created, &mut obs).await;
            }
        }
    }
    let written = write_status(ctx, obj, status.as_ref(), &plan.status).await?;
    if written == Written::Gone {
        return Ok(Action::await_change());
    }
    if written == Written::Applied {
        tracing::info!(template = %key, status = %plan.status.status, "status written");
    }
    publish(ctx, obj, &plan.events).await;
    // T-26: the template's cache follows its caching settings (T-32: not while paused).
    if !obs.template.paused {
        sync_template_cache(ctx, obj, &key, &plan.status, cache.as_deref()).await?;
    }
    Ok(action(plan.requeue_after))
}

/// T-23: gives back the slots `queue_key`'s template holds for Jobs that do not exist (a create that
/// failed without making the Job), except `keep`'s.
pub(crate) fn release_absent(ctx: &Context, queue_key: &str, keep: Option<&str>) {
    let held = ctx.queue.lock().expect("queue lock").held_by(queue_key);
    for job in held {
        let (ns, name) = job.split_once('/').unwrap_or_default();
        if Some(job.as_str()) != keep
            && ctx
                .stores
                .jobs
                .get(&ObjectRef::new(name).within(ns))
                .is_none()
        {
            tracing::info!(template = %queue_key, job = %job, "slot of a discovery job that does not exist given back");
            ctx.release_slot(&job);
        }
    }
}

fn job_key_of(job: &Job) -> String {
    aim_resolve::children::job_key(job)
}

/// Decides, fetching what the decision asks for; `now` is taken again after each answer, so a failure
/// is timed from when it was seen (reading a large log takes a while).
/// `queue_key` names the template in the discovery queue.
async fn decide(ctx: &Context, queue_key: &str, created: i64, obs: &mut Observation<'_>) -> Plan {
    let plan = loop {
        match aim_resolve::decide(obs) {
            Decision::Plan(plan) => break *plan,
            Decision::Need(Need::Log { namespace, pod }) => {
                obs.log = read_discovery_log(ctx, &namespace, &pod).await;
            }
            Decision::Need(Need::Slot { namespace, job }) => {
                let job_key = format!("{namespace}/{job}");
                release_absent(ctx, queue_key, Some(&job_key));
                let answer = ctx.queue.lock().expect("queue lock").request(
                    queue_key,
                    created,
                    &job_key,
                    |k| ctx.template_exists(k),
                );
                obs.slot = match answer {
                    SlotRequest::Granted => Slot::Granted,
                    SlotRequest::Waiting { position, max } => Slot::Waiting { position, max },
                };
            }
        }
        obs.now = jiff::Timestamp::now();
    };
    if !plan.waiting_for_slot {
        ctx.queue.lock().expect("queue lock").forget(queue_key);
    }
    plan
}

async fn delete_jobs(ctx: &Context, key: &str, jobs: &[(String, String)]) -> Result<(), Error> {
    for (ns, name) in jobs {
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                tracing::info!(template = %key, job = %format!("{ns}/{name}"), "deleted discovery job")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.release_slot(&format!("{ns}/{name}"));
    }
    Ok(())
}

/// T-26: creates, updates or deletes the AIMTemplateCache of a template, from the status just decided.
/// `existing` is the cache of the template's name in its namespace, if any.
async fn sync_template_cache<K: TemplateKind>(
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
        controller_uid: crate::kinds::controller_uid(&c.metadata),
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
                &PatchParams::apply(crate::client::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            tracing::info!(template = %key, cache = %d.name, "template cache applied");
        }
        CacheAction::Delete => {
            let name = obj.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => tracing::info!(template = %key, cache = %name, "template cache deleted"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
