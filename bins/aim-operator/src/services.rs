//! The service controller (S-01…S-06): gather the models, templates, runtime configs, caches and the
//! service's own workload (Deployment, Service, pods) from the shared stores, decide in
//! `aim_resolve::service`, then create the model, apply the workload and report.

use crate::context::Context;
use crate::controller::{Kind, Written, action, current_status, key_of, publish, write_status};
use crate::error::Error;
use crate::kinds::{controller_uid, model_candidate};
use crate::stores::{config_candidate, in_namespace};
use aim_api::{AIMModel, AIMService, TemplateScope};
use aim_hardware::Inventory;
use aim_resolve::service::{
    SERVICE_LABEL, ServiceObservation, ServiceView, TemplateDetail, decide_service,
    service_label_value, workload_name,
};
use aim_resolve::{ConfigResolution, resolve_runtime_config};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Service};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// The env of the runtime config `name` as a template of `scope` used by a service in `namespace`
/// resolves it (T-03/T-04: namespace over cluster; a cluster template reads only the cluster's).
fn runtime_env(ctx: &Context, scope: TemplateScope, namespace: &str, name: &str) -> Vec<EnvVar> {
    let (ns_config, cl_config) = ctx.stores.configs(Some(namespace), name);
    match resolve_runtime_config(
        scope,
        name,
        ns_config.as_deref().map(config_candidate),
        cl_config.as_deref().map(config_candidate),
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

fn detail<'a>(
    ctx: &Context,
    ns: &str,
    scope: TemplateScope,
    meta: &'a ObjectMeta,
    spec: &'a aim_api::ServiceTemplateCommon,
    env: &'a [EnvVar],
    status: Option<&'a aim_api::ServiceTemplateStatus>,
) -> TemplateDetail<'a> {
    TemplateDetail {
        scope,
        name: meta.name.as_deref().unwrap_or_default(),
        spec,
        env,
        status,
        runtime_env: runtime_env(ctx, scope, ns, &spec.runtime_config_name),
        cache_volumes: cache_volumes(ctx, ns, scope, meta.name.as_deref()),
    }
}

/// Whether the AIMService of `uid` controls the object.
fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_uid(meta) == Some(uid)
}

/// The workload object of the service's name, as the store has it; when the store has none, the API
/// server is asked once (the object may be someone else's, which the store does not select, or our
/// own, created just now and not yet seen). Someone else's Deployment is never overwritten.
async fn workload_object<K>(
    ctx: &Context,
    store: &Store<K>,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    if let Some(o) = store.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(o));
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// One reconcile of an AIMService.
pub async fn reconcile(obj: Arc<AIMService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (obj, ctx) = (obj.as_ref(), ctx.as_ref());
    let key = key_of(obj);
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let status = current_status(ctx, obj);
    let s = &ctx.stores;

    // Gather: the models and templates in reach, each template with the runtime config env and cache
    // volumes it brings, the GPU inventory, and the workload as it is.
    let ns_models = in_namespace(&s.models, &ns);
    let cl_models = s.cluster_models.state();
    let ns_templates = in_namespace(&s.templates, &ns);
    let cl_templates = s.cluster_templates.state();
    let templates: Vec<TemplateDetail<'_>> = ns_templates
        .iter()
        .map(|t| {
            let (m, sp) = (&t.metadata, &t.spec);
            detail(
                ctx,
                &ns,
                TemplateScope::Namespace,
                m,
                &sp.common,
                &sp.env,
                t.status.as_ref(),
            )
        })
        .chain(cl_templates.iter().map(|t| {
            let (m, sp) = (&t.metadata, &t.spec);
            detail(
                ctx,
                &ns,
                TemplateScope::Cluster,
                m,
                &sp.common,
                &[],
                t.status.as_ref(),
            )
        }))
        .collect();
    let nodes = s.nodes.state();
    let inventory = Inventory::from_nodes(nodes.iter().map(|n| n.as_ref()));
    // S-05: the workload's objects are named from the service (a DNS label of at most 63 characters)
    // and its pods carry the service's name as a label value of at most 63.
    let workload = workload_name(&name);
    let label = service_label_value(&name);
    let mut deployment = s.deployments.get(&ObjectRef::new(&workload).within(&ns));
    let mut service_object = s
        .workload_services
        .get(&ObjectRef::new(&workload).within(&ns));
    let pods: Vec<_> = in_namespace(&s.workload_pods, &ns)
        .into_iter()
        .filter(|p| p.labels().get(SERVICE_LABEL) == Some(&label))
        .collect();

    let decide = |deployment: Option<&Deployment>,
                  service_object: Option<&Service>,
                  workload_refused: Option<String>| {
        decide_service(&ServiceObservation {
            service: ServiceView {
                name: &name,
                namespace: &ns,
                uid: &uid,
                generation: obj.meta().generation,
                spec: &obj.spec,
                status: status.as_ref(),
            },
            namespace_models: ns_models
                .iter()
                .map(|m| model_candidate(m.as_ref()))
                .collect(),
            cluster_models: cl_models
                .iter()
                .map(|m| model_candidate(m.as_ref()))
                .collect(),
            templates: templates.clone(),
            inventory: &inventory,
            deployment,
            service_object: service_object.filter(|s| owned_by(&s.metadata, &uid)),
            pods: pods.iter().map(|p| p.as_ref()).collect(),
            workload_refused,
            retry_after: ctx.settings.backoff_base,
            now: jiff::Timestamp::now(),
        })
    };
    let mut plan = decide(deployment.as_deref(), service_object.as_deref(), None);
    // The workload is to be written but the store has none: ask the API server once, and decide again
    // with what it has (our own object not seen yet, or someone else's in the way).
    if (plan.apply_deployment.is_some() && deployment.is_none())
        || (plan.apply_service.is_some() && service_object.is_none())
    {
        if deployment.is_none() {
            deployment = workload_object(ctx, &s.deployments, &ns, &workload).await?;
        }
        if service_object.is_none() {
            service_object = workload_object(ctx, &s.workload_services, &ns, &workload).await?;
        }
        plan = decide(deployment.as_deref(), service_object.as_deref(), None);
    }
    // Only our own workload counts: a Deployment of the same name made by someone else is not
    // overwritten.
    if let Some(d) = &deployment
        && !owned_by(&d.metadata, &uid)
    {
        return Err(Error::Foreign(format!(
            "Deployment {ns}/{workload} exists and does not belong to AIMService {name}"
        )));
    }

    let pp = PatchParams::apply(crate::client::FIELD_MANAGER).force();
    if let Some((model, image)) = &plan.create_model {
        let body = serde_json::json!({
            "apiVersion": AIMModel::api_version(&()), "kind": AIMModel::kind(&()),
            "metadata": { "name": model, "namespace": ns,
                "labels": { aim_api::labels::MANAGED_BY: aim_api::labels::MANAGED_BY_VALUE } },
            "spec": { "image": image },
        });
        AIMModel::api(ctx.client.clone(), Some(&ns))
            .patch(model, &pp, &Patch::Apply(&body))
            .await?;
        tracing::info!(service = %key, model = %model, "created a model for the service's image");
    }
    // S-05: a workload write the API server refuses for good reaches status with its message (the
    // decision is taken again with the refusal), instead of an error retried with nothing said.
    let mut refused = None;
    if let Some(d) = &plan.apply_deployment {
        match Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch(&workload, &pp, &Patch::Apply(d))
            .await
        {
            Ok(_) => tracing::info!(service = %key, "deployment applied"),
            Err(e) => refused = Some(workload_refusal(e, "Deployment", &ns, &workload)?),
        }
    }
    if let (Some(svc), None) = (&plan.apply_service, &refused)
        && let Err(e) = Api::<Service>::namespaced(ctx.client.clone(), &ns)
            .patch(&workload, &pp, &Patch::Apply(svc))
            .await
    {
        refused = Some(workload_refusal(e, "Service", &ns, &workload)?);
    }
    if let Some(why) = refused {
        tracing::warn!(service = %key, error = %why, "workload refused");
        plan = decide(deployment.as_deref(), service_object.as_deref(), Some(why));
    }
    let written = write_status(ctx, obj, status.as_ref(), &plan.status).await?;
    if written == Written::Gone {
        return Ok(Action::await_change());
    }
    if written == Written::Applied {
        tracing::info!(service = %key, status = %plan.status.status, "service status written");
    }
    publish(ctx, obj, &plan.events).await;
    Ok(action(plan.requeue_after))
}

/// The API server's message when it refused a workload object for good, naming the object; any other
/// failure (transport, 5xx, conflict, throttling, a namespace being deleted) stays an error.
fn workload_refusal(e: kube::Error, kind: &str, ns: &str, name: &str) -> Result<String, Error> {
    match crate::error::refusal(&e) {
        Some(why) if !crate::error::is_namespace_terminating(&e) => {
            Ok(format!("{kind} {ns}/{name}: {why}"))
        }
        _ => Err(e.into()),
    }
}
