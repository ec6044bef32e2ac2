//! The model controller (M-01…M-04), both kinds: gather the templates in the model's scope from the
//! shared stores, read the registry when the decision asks, then write templates, status and events.

use crate::context::Context;
use crate::controller::{Written, action, current_status, key_of, publish, write_status};
use crate::error::{Error, is_namespace_terminating, is_not_found, refusal};
use crate::kinds::{ModelKind, controller_uid};
use crate::stores::in_namespace;
use aim_api::{AIMClusterServiceTemplate, AIMServiceTemplate, ServiceTemplateCommon};
use aim_resolve::model::{
    DesiredTemplate, ModelDecision, ModelObservation, ModelView, RegistryRead, TemplateSeen,
    decide_model,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

fn seen<'a>(
    meta: &'a ObjectMeta,
    spec: &'a ServiceTemplateCommon,
    status: Option<&'a aim_api::ServiceTemplateStatus>,
) -> TemplateSeen<'a> {
    TemplateSeen {
        name: meta.name.as_deref().unwrap_or_default(),
        labels: meta.labels.as_ref(),
        controller_uid: controller_uid(meta),
        spec,
        phase: status.map(|s| s.status),
    }
}

/// One reconcile of a model of either kind.
pub async fn reconcile<M: ModelKind>(obj: Arc<M>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (obj, ctx) = (obj.as_ref(), ctx.as_ref());
    let key = key_of(obj);
    let name = obj.name_any();
    let namespace = obj.namespace();
    let uid = obj.uid().unwrap_or_default();
    let status = current_status(ctx, obj);
    let s = &ctx.stores;

    // Every template in the model's scope: its own (the store is fresh when their change woke us) and
    // the others, whose names must not be taken over.
    let ns_templates = match namespace.as_deref() {
        Some(ns) => in_namespace(&s.templates, ns),
        None => Vec::new(),
    };
    let cl_templates = match namespace {
        Some(_) => Vec::new(),
        None => s.cluster_templates.state(),
    };
    let templates: Vec<TemplateSeen<'_>> = ns_templates
        .iter()
        .map(|t| seen(&t.metadata, &t.spec.common, t.status.as_ref()))
        .chain(
            cl_templates
                .iter()
                .map(|t| seen(&t.metadata, &t.spec.common, t.status.as_ref())),
        )
        .collect();

    let mut obs = ModelObservation {
        model: ModelView {
            kind: M::NAME,
            name: &name,
            namespace: namespace.as_deref(),
            uid: &uid,
            generation: obj.meta().generation,
            spec: obj.common(),
            status: status.as_ref(),
        },
        templates,
        registry: RegistryRead::NotRead,
        refused: BTreeMap::new(),
        operator_namespace: &ctx.settings.system_namespace,
        backoff_base: ctx.settings.backoff_base,
        now: jiff::Timestamp::now(),
    };
    let mut plan = loop {
        match decide_model(&obs) {
            ModelDecision::Plan(p) => break *p,
            ModelDecision::Need(need) => {
                tracing::info!(model = %key, image = %need.image, "reading image metadata from its registry");
                obs.registry =
                    crate::registry::read_labels(&ctx.client, &ctx.settings.registry, &need).await;
                obs.now = jiff::Timestamp::now();
            }
        }
    };
    if let Some(result) = plan.registry_result {
        ctx.metrics.registry_read(result.err());
    }

    match apply_templates(ctx, &key, &plan.apply).await {
        Ok(refused) if refused.is_empty() => {}
        // M-02: what the API server will not take reaches the model's status and a Warning; the
        // decision is taken again with the refusals (the registry's answer is kept: it is not read
        // twice), and what it still wants applied was applied above.
        Ok(refused) => {
            obs.refused = refused;
            obs.now = jiff::Timestamp::now();
            plan = match decide_model(&obs) {
                ModelDecision::Plan(p) => *p,
                ModelDecision::Need(_) => unreachable!("the registry was read in this reconcile"),
            };
        }
        Err(e) => {
            // A transient failure: the status (and the metadata just read) is written all the same,
            // so the retry does not read the registry again.
            if let Err(w) = write_status(ctx, obj, status.as_ref(), &plan.status).await {
                tracing::warn!(model = %key, error = %w, "status not written after a failed template apply");
            }
            return Err(e);
        }
    }
    delete_templates(ctx, &key, namespace.as_deref(), &plan.delete).await?;
    let written = write_status(ctx, obj, status.as_ref(), &plan.status).await?;
    if written == Written::Gone {
        return Ok(Action::await_change());
    }
    if written == Written::Applied {
        let templates: BTreeMap<&str, usize> =
            plan.status
                .templates
                .iter()
                .fold(BTreeMap::new(), |mut acc, t| {
                    *acc.entry(t.status.as_str()).or_default() += 1;
                    acc
                });
        tracing::info!(model = %key, status = %plan.status.status, ?templates, "model status written");
    }
    publish(ctx, obj, &plan.events).await;
    Ok(action(plan.requeue_after))
}

/// M-02: server-side apply of each template that is missing or differs. Templates the API server
/// refuses for good (a 4xx other than conflict or throttling, [`refusal`]) are returned by name with its
/// message, and the others are still applied; any other failure stops the reconcile.
async fn apply_templates(
    ctx: &Context,
    key: &str,
    apply: &[DesiredTemplate],
) -> Result<BTreeMap<String, String>, Error> {
    let mut refused = BTreeMap::new();
    for d in apply {
        let (api_version, kind) = match d.namespace {
            Some(_) => (
                AIMServiceTemplate::api_version(&()).to_string(),
                AIMServiceTemplate::kind(&()).to_string(),
            ),
            None => (
                AIMClusterServiceTemplate::api_version(&()).to_string(),
                AIMClusterServiceTemplate::kind(&()).to_string(),
            ),
        };
        let mut metadata = serde_json::json!({
            "name": d.name,
            "labels": d.labels,
            "ownerReferences": [d.owner],
        });
        if !d.annotations.is_empty() {
            metadata["annotations"] = serde_json::json!(d.annotations);
        }
        if let Some(ns) = &d.namespace {
            metadata["namespace"] = serde_json::json!(ns);
        }
        let body = serde_json::json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": metadata,
            "spec": d.spec,
        });
        let pp = PatchParams::apply(crate::client::FIELD_MANAGER).force();
        let result = match &d.namespace {
            Some(ns) => Api::<AIMServiceTemplate>::namespaced(ctx.client.clone(), ns)
                .patch(&d.name, &pp, &Patch::Apply(&body))
                .await
                .map(|_| ()),
            None => Api::<AIMClusterServiceTemplate>::all(ctx.client.clone())
                .patch(&d.name, &pp, &Patch::Apply(&body))
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => tracing::info!(model = %key, template = %d.name, "template applied"),
            Err(e) => match refusal(&e) {
                Some(why) if !is_namespace_terminating(&e) => {
                    tracing::warn!(model = %key, template = %d.name, error = %why, "template refused");
                    refused.insert(d.name.clone(), why);
                }
                _ => return Err(e.into()),
            },
        }
    }
    Ok(refused)
}

/// M-03: deletes templates no deployment asks for any more.
async fn delete_templates(
    ctx: &Context,
    key: &str,
    namespace: Option<&str>,
    names: &[String],
) -> Result<(), Error> {
    for name in names {
        let result = match namespace {
            Some(ns) => Api::<AIMServiceTemplate>::namespaced(ctx.client.clone(), ns)
                .delete(name, &DeleteParams::background())
                .await
                .map(|_| ()),
            None => Api::<AIMClusterServiceTemplate>::all(ctx.client.clone())
                .delete(name, &DeleteParams::background())
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => tracing::info!(model = %key, template = %name, "template deleted"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
