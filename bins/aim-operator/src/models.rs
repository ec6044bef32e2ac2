//! One reconcile of a model (M-01…M-04): gather its templates, read the registry when the decision asks,
//! then write templates, status and events.

use crate::context::Context;
use crate::error::Error;
use crate::kinds::ModelKind;
use aim_api::{AIMClusterServiceTemplate, AIMServiceTemplate, ModelStatus, ServiceTemplateCommon};
use aim_resolve::model::{
    DesiredTemplate, ModelDecision, ModelObservation, ModelPlan, ModelView, RegistryRead,
    TemplateSeen, decide_model,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

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

/// The status to decide from: the store's, unless our own newer write has not reached it yet (a second
/// registry read for the same image would otherwise be possible).
fn current_status<M: ModelKind>(ctx: &Context, obj: &M) -> Option<ModelStatus> {
    let uid = obj.uid()?;
    let store_rv = obj
        .resource_version()
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let mut written = ctx.model_written.lock().expect("written lock");
    match written.get(&uid) {
        Some((rv, status)) if *rv > store_rv => Some(status.clone()),
        Some(_) => {
            written.remove(&uid);
            obj.status().cloned()
        }
        None => obj.status().cloned(),
    }
}

pub async fn reconcile<M: ModelKind>(obj: Arc<M>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(obj.as_ref(), &ctx).await;
    ctx.metrics.reconciled(M::KIND, started.elapsed());
    if result.is_ok() {
        ctx.backoff_reset(&key_of(obj.as_ref()));
    }
    result
}

fn key_of<M: ModelKind>(m: &M) -> String {
    match m.namespace() {
        Some(ns) => format!("{}/{ns}/{}", M::KIND, m.name_any()),
        None => format!("{}/{}", M::KIND, m.name_any()),
    }
}

async fn reconcile_inner<M: ModelKind>(obj: &M, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(obj);
    let name = obj.name_any();
    let namespace = obj.namespace();
    let uid = obj.uid().unwrap_or_default();
    let status = current_status(ctx, obj);
    let s = &ctx.stores;

    // Templates in the model's scope: its own from the auto-generated store (fresh when their change
    // woke us), every other one from the main store (their names must not be taken over).
    let (ns_all, ns_auto, cl_all, cl_auto) = match namespace.as_deref() {
        Some(ns) => (
            s.templates
                .state()
                .into_iter()
                .filter(|t| t.namespace().as_deref() == Some(ns))
                .collect::<Vec<_>>(),
            s.auto_templates
                .state()
                .into_iter()
                .filter(|t| t.namespace().as_deref() == Some(ns))
                .collect::<Vec<_>>(),
            Vec::new(),
            Vec::new(),
        ),
        None => (
            Vec::new(),
            Vec::new(),
            s.cluster_templates.state(),
            s.auto_cluster_templates.state(),
        ),
    };
    let mine = |meta: &ObjectMeta| controller_uid(meta) == Some(uid.as_str());
    let mut templates: Vec<TemplateSeen<'_>> = Vec::new();
    for t in &ns_auto {
        if mine(&t.metadata) {
            templates.push(seen(&t.metadata, &t.spec.common, t.status.as_ref()));
        }
    }
    for t in &cl_auto {
        if mine(&t.metadata) {
            templates.push(seen(&t.metadata, &t.spec.common, t.status.as_ref()));
        }
    }
    for t in &ns_all {
        if !mine(&t.metadata) {
            templates.push(seen(&t.metadata, &t.spec.common, t.status.as_ref()));
        }
    }
    for t in &cl_all {
        if !mine(&t.metadata) {
            templates.push(seen(&t.metadata, &t.spec.common, t.status.as_ref()));
        }
    }

    let mut obs = ModelObservation {
        model: ModelView {
            kind: M::KIND,
            name: &name,
            namespace: namespace.as_deref(),
            uid: &uid,
            generation: obj.meta().generation,
            spec: obj.common(),
            status: status.as_ref(),
        },
        templates,
        registry: RegistryRead::NotRead,
        operator_namespace: &ctx.settings.system_namespace,
        backoff_base: ctx.settings.backoff_base,
        now: jiff::Timestamp::now(),
    };
    let plan = loop {
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

    apply_templates(ctx, &key, &plan.apply).await?;
    delete_templates(ctx, &key, namespace.as_deref(), &plan.delete).await?;
    write_status(ctx, obj, &key, status.as_ref(), &plan).await?;
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
            tracing::warn!(model = %key, error = %err, "cannot record event");
        }
    }
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// M-02: server-side apply of each template that is missing or differs.
async fn apply_templates(ctx: &Context, key: &str, apply: &[DesiredTemplate]) -> Result<(), Error> {
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
        if let Some(ns) = &d.namespace {
            metadata["namespace"] = serde_json::json!(ns);
        }
        let body = serde_json::json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": metadata,
            "spec": d.spec,
        });
        let pp = PatchParams::apply(crate::FIELD_MANAGER).force();
        match &d.namespace {
            Some(ns) => {
                Api::<AIMServiceTemplate>::namespaced(ctx.client.clone(), ns)
                    .patch(&d.name, &pp, &Patch::Apply(&body))
                    .await?;
            }
            None => {
                Api::<AIMClusterServiceTemplate>::all(ctx.client.clone())
                    .patch(&d.name, &pp, &Patch::Apply(&body))
                    .await?;
            }
        }
        tracing::info!(model = %key, template = %d.name, "template applied");
    }
    Ok(())
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
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes the model's status only when it changed.
async fn write_status<M: ModelKind>(
    ctx: &Context,
    obj: &M,
    key: &str,
    old: Option<&ModelStatus>,
    plan: &ModelPlan,
) -> Result<(), Error> {
    if old == Some(&plan.status) {
        return Ok(());
    }
    let api = M::api(ctx.client.clone(), obj.namespace().as_deref());
    let patch = serde_json::json!({
        "apiVersion": M::api_version(&()),
        "kind": M::kind(&()),
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
        ctx.model_written
            .lock()
            .expect("written lock")
            .insert(uid, (rv, plan.status.clone()));
    }
    let templates: BTreeMap<&str, usize> =
        plan.status
            .templates
            .iter()
            .fold(BTreeMap::new(), |mut acc, t| {
                *acc.entry(t.status.as_str()).or_default() += 1;
                acc
            });
    tracing::info!(model = %key, status = %plan.status.status, ?templates, "model status written");
    Ok(())
}

pub fn error_policy<M: ModelKind>(obj: Arc<M>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(obj.as_ref());
    ctx.metrics.failed(M::KIND, error.category());
    let delay = ctx.backoff_next(&key);
    tracing::warn!(model = %key, category = error.category(), error = %error, retry_in = ?delay, "model reconcile failed; retrying");
    Action::requeue(delay)
}
