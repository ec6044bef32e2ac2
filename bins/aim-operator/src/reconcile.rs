//! One reconcile of a template: gather, decide (in `aim-resolve`), apply, report.

use crate::context::Context;
use crate::error::Error;
use crate::kinds::{TemplateKind, key_of};
use crate::logs::read_discovery_log;
use aim_api::{ModelCommon, RuntimeConfigCommon, ServiceTemplateStatus, TemplateScope};
use aim_hardware::Inventory;
use aim_resolve::template::{LogRead, Observation, Slot, TemplateView};
use aim_resolve::{ConfigCandidate, Decision, ModelCandidate, Need, Plan, SlotRequest};
use k8s_openapi::api::batch::v1::Job;
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

fn model_candidate<'a>(meta: &'a ObjectMeta, spec: &'a ModelCommon) -> ModelCandidate<'a> {
    ModelCandidate {
        name: meta.name.as_deref().unwrap_or_default(),
        namespace: meta.namespace.as_deref(),
        uid: meta.uid.as_deref(),
        spec,
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

pub async fn reconcile<K: TemplateKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = obj.name_any();
    let namespace = obj.namespace();
    let key = key_of(obj.as_ref());
    let status = current_status(&ctx, obj.as_ref());
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
    let scope_label = K::SCOPE.as_str();
    let jobs: Vec<Arc<Job>> = s
        .jobs
        .state()
        .into_iter()
        .filter(|j| {
            let a = j.annotations();
            let l = j.labels();
            a.get(aim_discovery::ANNOTATION_TEMPLATE_NAME) == Some(&name)
                && l.get(aim_api::labels::TEMPLATE_SCOPE).map(String::as_str) == Some(scope_label)
                && (K::SCOPE == TemplateScope::Cluster || j.namespace() == namespace)
        })
        .collect();
    let job_uids: Vec<String> = jobs.iter().filter_map(|j| j.uid()).collect();
    let pods: Vec<_> = s
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| job_uids.contains(&o.uid))
        })
        .collect();
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
            status: status.as_ref(),
        },
        namespace_model: ns_model
            .as_deref()
            .map(|m| model_candidate(&m.metadata, &m.spec.common)),
        cluster_model: cl_model
            .as_deref()
            .map(|m| model_candidate(&m.metadata, &m.spec.common)),
        namespace_config: ns_config
            .as_deref()
            .map(|c| config_candidate(&c.metadata, &c.spec.common)),
        cluster_config: cl_config
            .as_deref()
            .map(|c| config_candidate(&c.metadata, &c.spec.common)),
        inventory: &inventory,
        jobs: jobs.iter().map(|j| j.as_ref()).collect(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        log: LogRead::NotRead,
        log_limit: ctx.settings.log_limit,
        slot: Slot::NotAsked,
        cache: None,
        operator_namespace: &ctx.settings.system_namespace,
        backoff_base: ctx.settings.backoff_base,
        now: jiff::Timestamp::now(),
    };

    // Decide, fetching what the decision asks for.
    let plan = loop {
        match aim_resolve::decide(&obs) {
            Decision::Plan(plan) => break *plan,
            Decision::Need(Need::Log { namespace, job }) => {
                obs.log = read_discovery_log(&ctx, &namespace, &job).await
            }
            Decision::Need(Need::Slot { namespace, job }) => {
                let job_key = format!("{namespace}/{job}");
                let answer =
                    ctx.queue
                        .lock()
                        .expect("queue lock")
                        .request(&key, created, &job_key, |k| ctx.template_exists(k));
                obs.slot = match answer {
                    SlotRequest::Granted => Slot::Granted,
                    SlotRequest::Waiting {
                        position,
                        active,
                        max,
                    } => Slot::Waiting {
                        position,
                        active,
                        max,
                    },
                };
            }
        }
    };
    apply(&ctx, obj.as_ref(), &key, status.as_ref(), plan).await
}

async fn apply<K: TemplateKind>(
    ctx: &Context,
    obj: &K,
    key: &str,
    old: Option<&ServiceTemplateStatus>,
    plan: Plan,
) -> Result<Action, Error> {
    if !plan.waiting_for_slot {
        ctx.queue.lock().expect("queue lock").forget(key);
    }
    for (ns, name) in &plan.delete_jobs {
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
    if let Some(job) = &plan.create_job {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .create(
                &PostParams {
                    field_manager: Some(crate::FIELD_MANAGER.into()),
                    ..Default::default()
                },
                job,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(template = %key, job = %format!("{ns}/{name}"), "created discovery job")
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                ctx.release_slot(&format!("{ns}/{name}"));
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "DiscoveryJobFailed".into(),
                    note: Some(format!("cannot create discovery job {ns}/{name}: {e}")),
                    action: "CreateJob".into(),
                    secondary: None,
                };
                let _ = ctx.recorder.publish(&ev, &obj.object_ref(&())).await;
                return Err(e.into());
            }
        }
    }
    // T-30: write only what changed.
    if old != Some(&plan.status) {
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
    }
    // T-31: one event per transition.
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
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

pub fn error_policy<K: TemplateKind>(obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(template = %key_of(obj.as_ref()), category = error.category(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
