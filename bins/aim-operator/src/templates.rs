//! One reconcile of a template: gather, decide (in `aim-resolve`), apply, report.

use crate::context::Context;
use crate::error::Error;
use crate::kinds::{TemplateKind, key_of};
use crate::logs::read_discovery_log;
use aim_api::{ModelCommon, RuntimeConfigCommon, ServiceTemplateStatus};
use aim_hardware::Inventory;
use aim_resolve::children::{TemplateRef, job_belongs_to, pod_of_any};
use aim_resolve::template::{LogRead, Observation, Slot, TemplateView};
use aim_resolve::{ConfigCandidate, Decision, ModelCandidate, Need, Plan, SlotRequest};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// The status to decide from: the store's, unless our own newer write has not reached the store yet.
fn current_status<K: TemplateKind>(ctx: &Context, obj: &K) -> Option<ServiceTemplateStatus> {
    let uid = obj.uid()?;
    let store_rv = obj
        .resource_version()
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let mut written = ctx.written.lock().expect("written lock");
    match written.get(&uid) {
        Some((rv, status)) if *rv > store_rv => Some(status.clone()),
        Some(_) => {
            // The store caught up with our write: forget it, so the map stays small.
            written.remove(&uid);
            obj.status().cloned()
        }
        None => obj.status().cloned(),
    }
}

fn model_candidate<'a>(
    meta: &'a ObjectMeta,
    spec: &'a ModelCommon,
    status: Option<&'a aim_api::ModelStatus>,
) -> ModelCandidate<'a> {
    ModelCandidate {
        name: meta.name.as_deref().unwrap_or_default(),
        namespace: meta.namespace.as_deref(),
        uid: meta.uid.as_deref(),
        spec,
        failure: crate::kinds::model_failure(status),
    }
}

fn config_candidate<'a>(
    meta: &'a ObjectMeta,
    spec: &'a RuntimeConfigCommon,
) -> ConfigCandidate<'a> {
    ConfigCandidate {
        name: meta.name.as_deref().unwrap_or_default(),
        namespace: meta.namespace.as_deref(),
        uid: meta.uid.as_deref(),
        spec,
    }
}

/// Why a create was refused for good (quota, admission, RBAC, an invalid object), as opposed to a
/// transient failure worth an ordinary retry.
pub(crate) fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            Some(s.message.clone())
        }
        _ => None,
    }
}

pub async fn reconcile<K: TemplateKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(obj.as_ref(), &ctx).await;
    ctx.metrics.reconciled(K::CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.backoff_reset(&key_of(obj.as_ref()));
    }
    result
}

async fn reconcile_inner<K: TemplateKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
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
    let ns_config = namespace.as_deref().and_then(|ns| {
        s.configs
            .get(&ObjectRef::new(&spec.runtime_config_name).within(ns))
    });
    let cl_config = s
        .cluster_configs
        .get(&ObjectRef::new(&spec.runtime_config_name));
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
    let events: Vec<Arc<CoreEvent>> = s
        .job_events
        .state()
        .into_iter()
        .filter(|e| {
            e.involved_object
                .uid
                .as_deref()
                .is_some_and(|u| job_uids.contains(&u))
        })
        .collect();
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
        namespace_model: ns_model
            .as_deref()
            .map(|m| model_candidate(&m.metadata, &m.spec.common, m.status.as_ref())),
        cluster_model: cl_model
            .as_deref()
            .map(|m| model_candidate(&m.metadata, &m.spec.common, m.status.as_ref())),
        namespace_config: ns_config
            .as_deref()
            .map(|c| config_candidate(&c.metadata, &c.spec.common)),
        cluster_config: cl_config
            .as_deref()
            .map(|c| config_candidate(&c.metadata, &c.spec.common)),
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

    let mut plan = decide(ctx, &key, created, &mut obs).await;
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
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, &job).await {
            Ok(_) => {
                ctx.confirm_slot(&job_key);
                tracing::info!(template = %key, job = %job_key, "created discovery job");
            }
            Err(kube::Error::Api(s)) if s.code == 409 => ctx.confirm_slot(&job_key),
            Err(e) => {
                ctx.release_slot(&job_key);
                let Some(why) = refusal(&e) else {
                    return Err(e.into());
                };
                // The API server will not take this Job: a failed attempt, in status, with a Warning and
                // the usual backoff (never a retry every few seconds).
                tracing::warn!(template = %key, job = %job_key, error = %why, "discovery job refused");
                obs.job_refused = Some(why);
                obs.slot = Slot::NotAsked;
                obs.now = jiff::Timestamp::now();
                plan = decide(ctx, &key, created, &mut obs).await;
            }
        }
    }
    write_status(ctx, obj, &key, status.as_ref(), &plan).await?;
    publish_events(ctx, obj, &key, &plan).await;
    // T-26: the template's cache follows its caching settings (T-32: not while paused).
    if !obs.template.paused {
        crate::caches::sync_template_cache(ctx, obj, &key, &plan.status, cache.as_deref()).await?;
    }
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

fn job_key_of(job: &Job) -> String {
    aim_resolve::children::job_key(job)
}

/// Decides, fetching what the decision asks for; `now` is taken again after each answer, so a failure
/// is timed from when it was seen (reading a large log takes a while).
async fn decide(ctx: &Context, key: &str, created: i64, obs: &mut Observation<'_>) -> Plan {
    let plan = loop {
        match aim_resolve::decide(obs) {
            Decision::Plan(plan) => break *plan,
            Decision::Need(Need::Log { namespace, pod }) => {
                obs.log = read_discovery_log(ctx, &namespace, &pod).await;
            }
            Decision::Need(Need::Slot { namespace, job }) => {
                let job_key = format!("{namespace}/{job}");
                let answer =
                    ctx.queue
                        .lock()
                        .expect("queue lock")
                        .request(key, created, &job_key, |k| ctx.template_exists(k));
                obs.slot = match answer {
                    SlotRequest::Granted => Slot::Granted,
                    SlotRequest::Waiting { position, max } => Slot::Waiting { position, max },
                };
            }
        }
        obs.now = jiff::Timestamp::now();
    };
    if !plan.waiting_for_slot {
        ctx.queue.lock().expect("queue lock").forget(key);
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
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.release_slot(&format!("{ns}/{name}"));
    }
    Ok(())
}

/// T-30: writes the status only when it changed.
async fn write_status<K: TemplateKind>(
    ctx: &Context,
    obj: &K,
    key: &str,
    old: Option<&ServiceTemplateStatus>,
    plan: &Plan,
) -> Result<(), Error> {
    if old == Some(&plan.status) {
        return Ok(());
    }
    let api = K::api(ctx.client.clone(), obj.namespace().as_deref());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
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
        ctx.written
            .lock()
            .expect("written lock")
            .insert(uid, (rv, plan.status.clone()));
    }
    tracing::info!(template = %key, status = %plan.status.status, "status written");
    Ok(())
}

/// T-31: the plan's events (at most one per decision).
async fn publish_events<K: TemplateKind>(ctx: &Context, obj: &K, key: &str, plan: &Plan) {
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
            tracing::warn!(template = %key, error = %err, "cannot record event");
        }
    }
}

/// A failed reconcile (the API server unreachable, a conflict) is retried per template with a capped
/// exponential delay that resets on success.
pub fn error_policy<K: TemplateKind>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(obj.as_ref());
    ctx.metrics.failed(K::CONTROLLER, error.category());
    let delay = ctx.backoff_next(&key);
    tracing::warn!(template = %key, category = error.category(), error = %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// First and longest retry delay of a failed reconcile.
pub const ERROR_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
