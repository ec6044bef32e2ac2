//! One reconcile of an AIMService (S-01…S-06): gather models, templates and the workload, decide in
//! `aim_resolve::serving`, then create the model, apply the workload and write the status.

use crate::context::Context;
use crate::error::Error;
use aim_api::{
    AIMClusterModel, AIMClusterServiceTemplate, AIMModel, AIMService, AIMServiceTemplate,
    AIMTemplateCache, ServiceStatus, TemplateScope,
};
use aim_hardware::Inventory;
use aim_resolve::serving::{ServiceObservation, ServiceView, TemplateDetail, decide_service};
use aim_resolve::workload::SERVICE_LABEL;
use aim_resolve::{ConfigCandidate, ConfigResolution, ModelCandidate, resolve_runtime_config};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Labels on the inference workloads.
const WORKLOAD_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=inference";

const CONTROLLER: &str = "AIMService";

/// The service controller, ready to run.
pub fn controller(
    client: kube::Client,
    config: kube::runtime::controller::Config,
) -> Controller<AIMService> {
    let wc = watcher::Config::default().any_semantic();
    let workload = wc.clone().labels(WORKLOAD_SELECTOR);
    let ctrl = Controller::new(Api::<AIMService>::all(client.clone()), wc.clone())
        .with_config(config)
        .owns(Api::<Deployment>::all(client.clone()), workload.clone())
        .owns(Api::<Service>::all(client.clone()), workload.clone());
    let services = ctrl.store();
    // Templates and models change which template a service runs (S-03, S-06): a change in a namespace wakes
    // that namespace's services, a cluster-wide one every service. Metadata is enough to know something
    // changed (a status write changes the resourceVersion).
    let in_namespace = |store: Store<AIMService>| {
        move |ns: Option<String>| {
            store
                .state()
                .iter()
                .filter(|s| ns.is_none() || s.namespace() == ns)
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let f = in_namespace(services.clone());
    let ctrl = ctrl.watches_stream(
        watcher(
            Api::<PartialObjectMeta<AIMServiceTemplate>>::all(client.clone()),
            wc.clone(),
        )
        .default_backoff()
        .touched_objects(),
        move |t| f(t.namespace()),
    );
    let f = in_namespace(services.clone());
    let ctrl = ctrl.watches_stream(
        watcher(
            Api::<PartialObjectMeta<AIMClusterServiceTemplate>>::all(client.clone()),
            wc.clone(),
        )
        .default_backoff()
        .touched_objects(),
        move |_| f(None),
    );
    let f = in_namespace(services.clone());
    let ctrl = ctrl.watches_stream(
        watcher(
            Api::<PartialObjectMeta<AIMModel>>::all(client.clone()),
            wc.clone(),
        )
        .default_backoff()
        .touched_objects(),
        move |m| f(m.namespace()),
    );
    // A cache turning Warm (or changing its volumes) changes what the workload mounts.
    let f = in_namespace(services.clone());
    let ctrl = ctrl.watches_stream(
        watcher(
            Api::<PartialObjectMeta<AIMTemplateCache>>::all(client.clone()),
            wc.clone(),
        )
        .default_backoff()
        .touched_objects(),
        move |c| f(c.namespace()),
    );
    let f = in_namespace(services);
    let ctrl = ctrl.watches_stream(
        watcher(
            Api::<PartialObjectMeta<AIMClusterModel>>::all(client.clone()),
            wc.clone(),
        )
        .default_backoff()
        .touched_objects(),
        move |_| f(None),
    );
    // A pod that cannot be scheduled says why in its service within seconds.
    ctrl.watches(Api::<Pod>::all(client), workload, |p| {
        let name = p.labels().get(SERVICE_LABEL).cloned();
        let ns = p.namespace().unwrap_or_default();
        name.map(|n| ObjectRef::new(&n).within(&ns))
    })
}

/// Runs the service controller until `stop` resolves.
pub async fn run(
    ctrl: Controller<AIMService>,
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    ctrl.graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "service reconcile");
            }
        })
        .await;
}

fn key_of(s: &AIMService) -> String {
    format!(
        "AIMService/{}/{}",
        s.namespace().unwrap_or_default(),
        s.name_any()
    )
}

pub async fn reconcile(obj: Arc<AIMService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.backoff_reset(&key_of(&obj));
    }
    result
}

fn model_candidate<'a>(
    meta: &'a kube::api::ObjectMeta,
    spec: &'a aim_api::ModelCommon,
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

fn runtime_env(ctx: &Context, scope: TemplateScope, ns: &str, name: &str) -> Vec<EnvVar> {
    let s = &ctx.stores;
    let ns_config = s.configs.get(&ObjectRef::new(name).within(ns));
    let cl_config = s.cluster_configs.get(&ObjectRef::new(name));
    fn cand<'a>(
        meta: &'a kube::api::ObjectMeta,
        spec: &'a aim_api::RuntimeConfigCommon,
    ) -> ConfigCandidate<'a> {
        ConfigCandidate {
            name: meta.name.as_deref().unwrap_or_default(),
            namespace: meta.namespace.as_deref(),
            uid: meta.uid.as_deref(),
            spec,
        }
    }
    match resolve_runtime_config(
        scope,
        name,
        ns_config
            .as_deref()
            .map(|c| cand(&c.metadata, &c.spec.common)),
        cl_config
            .as_deref()
            .map(|c| cand(&c.metadata, &c.spec.common)),
    ) {
        ConfigResolution::Resolved { config, .. } => config.env,
        ConfigResolution::NotFound { .. } => Vec::new(),
    }
}

/// The volumes of a Warm AIMTemplateCache of this template in the service's namespace (T-26, T-28):
/// (source name, claim), mounted read-only by the workload (S-05).
fn cache_volumes(
    ctx: &Context,
    ns: &str,
    scope: TemplateScope,
    template: Option<&str>,
) -> Vec<(String, String)> {
    let Some(template) = template else {
        return Vec::new();
    };
    let mut caches: Vec<_> = ctx
        .stores
        .caches
        .state()
        .into_iter()
        .filter(|c| {
            c.namespace().as_deref() == Some(ns)
                && c.spec.template_name == template
                && c.spec.template_scope == scope
                && c.status
                    .as_ref()
                    .is_some_and(|s| s.status == aim_api::CachePhase::Warm)
        })
        .collect();
    // The cache named like the template first (the template's own), then by name.
    caches.sort_by_key(|c| (c.name_any() != template, c.name_any()));
    caches
        .first()
        .and_then(|c| c.status.as_ref())
        .map(|s| {
            s.sources
                .iter()
                .filter_map(|src| Some((src.name.clone(), src.volume.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

async fn reconcile_inner(obj: &AIMService, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(obj);
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let s = &ctx.stores;

    let ns_models: Vec<Arc<AIMModel>> = s
        .models
        .state()
        .into_iter()
        .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let cl_models = s.cluster_models.state();
    let ns_templates: Vec<Arc<AIMServiceTemplate>> = s
        .templates
        .state()
        .into_iter()
        .filter(|t| t.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let cl_templates = s.cluster_templates.state();
    let mut templates: Vec<TemplateDetail<'_>> = Vec::new();
    for t in &ns_templates {
        templates.push(TemplateDetail {
            scope: TemplateScope::Namespace,
            name: t.metadata.name.as_deref().unwrap_or_default(),
            spec: &t.spec.common,
            env: &t.spec.env,
            status: t.status.as_ref(),
            runtime_env: runtime_env(
                ctx,
                TemplateScope::Namespace,
                &ns,
                &t.spec.common.runtime_config_name,
            ),
            cache_volumes: cache_volumes(
                ctx,
                &ns,
                TemplateScope::Namespace,
                t.metadata.name.as_deref(),
            ),
        });
    }
    for t in &cl_templates {
        templates.push(TemplateDetail {
            scope: TemplateScope::Cluster,
            name: t.metadata.name.as_deref().unwrap_or_default(),
            spec: &t.spec.common,
            env: &[],
            status: t.status.as_ref(),
            runtime_env: runtime_env(
                ctx,
                TemplateScope::Cluster,
                &ns,
                &t.spec.common.runtime_config_name,
            ),
            cache_volumes: cache_volumes(
                ctx,
                &ns,
                TemplateScope::Cluster,
                t.metadata.name.as_deref(),
            ),
        });
    }
    let nodes = s.nodes.state();
    let inventory = Inventory::from_nodes(nodes.iter().map(|n| n.as_ref()));
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let deployment = deployments.get_opt(&name).await?;
    let service_object = services.get_opt(&name).await?;
    let pods = pods_api
        .list(&ListParams::default().labels(&format!("{SERVICE_LABEL}={name}")))
        .await?
        .items;
    // Only our own workload counts: an object of the same name made by someone else is not overwritten.
    let ours = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
    };
    if let Some(d) = &deployment
        && !ours(&d.metadata)
    {
        return Err(Error::Conflict(format!(
            "Deployment {ns}/{name} exists and does not belong to AIMService {name}"
        )));
    }

    let plan = decide_service(&ServiceObservation {
        service: ServiceView {
            name: &name,
            namespace: &ns,
            uid: &uid,
            generation: obj.meta().generation,
            spec: &obj.spec,
            status: obj.status.as_ref(),
        },
        namespace_models: ns_models
            .iter()
            .map(|m| model_candidate(&m.metadata, &m.spec.common, m.status.as_ref()))
            .collect(),
        cluster_models: cl_models
            .iter()
            .map(|m| model_candidate(&m.metadata, &m.spec.common, m.status.as_ref()))
            .collect(),
        templates,
        inventory: &inventory,
        deployment: deployment.as_ref(),
        service_object: service_object.as_ref().filter(|s| ours(&s.metadata)),
        pods: pods.iter().collect(),
        now: jiff::Timestamp::now(),
    });

    let pp = PatchParams::apply(crate::FIELD_MANAGER).force();
    if let Some((model, image)) = &plan.create_model {
        let body = serde_json::json!({
            "apiVersion": AIMModel::api_version(&()), "kind": AIMModel::kind(&()),
            "metadata": { "name": model, "namespace": ns,
                "labels": { aim_api::labels::MANAGED_BY: aim_api::labels::MANAGED_BY_VALUE } },
            "spec": { "image": image },
        });
        Api::<AIMModel>::namespaced(ctx.client.clone(), &ns)
            .patch(model, &pp, &Patch::Apply(&body))
            .await?;
        tracing::info!(service = %key, model = %model, "created a model for the service's image");
    }
    if let Some(d) = &plan.apply_deployment {
        deployments.patch(&name, &pp, &Patch::Apply(d)).await?;
        tracing::info!(service = %key, "deployment applied");
    }
    if let Some(svc) = &plan.apply_service {
        services.patch(&name, &pp, &Patch::Apply(svc)).await?;
    }
    if obj.status.as_ref() != Some(&plan.status) {
        write_status(ctx, obj, &plan.status).await?;
        tracing::info!(service = %key, status = %plan.status.status, "service status written");
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
            tracing::warn!(service = %key, error = %err, "cannot record event");
        }
    }
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    obj: &AIMService,
    status: &ServiceStatus,
) -> Result<(), Error> {
    let api: Api<AIMService> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": AIMService::api_version(&()),
        "kind": AIMService::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

pub fn error_policy(obj: Arc<AIMService>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(&obj);
    ctx.metrics.failed(CONTROLLER, error.category());
    let delay = match error {
        // Somebody else's object in the way: a person must act; look again now and then.
        Error::Conflict(_) => Duration::from_secs(60),
        _ => ctx.backoff_next(&key),
    };
    tracing::warn!(service = %key, category = error.category(), error = %error, retry_in = ?delay, "service reconcile failed; retrying");
    Action::requeue(delay)
}
