//! The steps of a service decision, each adding to the plan being built: the model (S-01), the template
//! (S-02/S-03/S-06), the workload (S-05), then `Ready` and the events.

use super::workload::{WorkloadInputs, deployment, service};
use super::{
    Candidate, Selection, SelectionInput, ServiceObservation, ServicePlan, ServiceView,
    TemplateDetail, WORKLOAD_HASH, model_name_for_image, select,
};
use crate::common::{sha256_hex, unscheduled};
use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions};
use crate::model::{ModelCandidate, ModelResolution, resolve_model};
use aim_api::conditions::{reasons, types};
use aim_api::{ServicePhase, ServiceStatus, TemplatePhase, TemplateScope};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;

/// Where the service stands after the last step that could run: its phase, and the reason and message
/// of its `Ready` condition.
pub(super) struct Verdict {
    phase: ServicePhase,
    reason: String,
    message: String,
}

impl Verdict {
    fn new(phase: ServicePhase, reason: &str, message: String) -> Self {
        Self {
            phase,
            reason: reason.to_string(),
            message,
        }
    }
}

/// The plan being built: what each step adds.
pub(super) struct ServiceDraft<'o, 'a> {
    obs: &'o ServiceObservation<'a>,
    old: ServiceStatus,
    st: ServiceStatus,
    conds: Vec<ConditionSpec>,
    create_model: Option<(String, String)>,
    apply_deployment: Option<Deployment>,
    apply_service: Option<Service>,
    events: Vec<PlannedEvent>,
    requeue_after: Option<std::time::Duration>,
}

impl<'o, 'a> ServiceDraft<'o, 'a> {
    pub(super) fn new(obs: &'o ServiceObservation<'a>) -> Self {
        let old = obs.service.status.cloned().unwrap_or_default();
        let mut st = old.clone();
        st.observed_generation = obs.service.generation;
        Self {
            obs,
            old,
            st,
            conds: Vec::new(),
            create_model: None,
            apply_deployment: None,
            apply_service: None,
            events: Vec::new(),
            requeue_after: None,
        }
    }

    /// S-01: the model `spec.model.name` names, or the one whose image is `spec.model.image` (the
    /// namespace's first, then the cluster's, the first by name), else an AIMModel to create for the
    /// image. Without a model the service waits for the one it creates (`Starting`) or is `Failed`.
    pub(super) fn resolve_model(&mut self) -> Result<ModelCandidate<'a>, Verdict> {
        let obs = self.obs;
        let model = &obs.service.spec.model;
        let found = match (&model.name, &model.image) {
            (Some(name), _) => self.model_named(name),
            (None, Some(image)) => match self.model_of_image(image) {
                Some(name) => self.model_named(name),
                None => Err(self.create_model(image)),
            },
            (None, None) => Err((
                reasons::MODEL_NOT_FOUND,
                "spec.model names neither a model nor an image".into(),
            )),
        };
        match found {
            Ok(m) => {
                self.conds.push(ConditionSpec::new(
                    types::MODEL_RESOLVED,
                    true,
                    reasons::MODEL_FOUND,
                    format!("{}, image {}", m.name, m.spec.image),
                ));
                Ok(m)
            }
            Err((reason, message)) => {
                self.conds.push(ConditionSpec::new(
                    types::MODEL_RESOLVED,
                    false,
                    reason,
                    message.clone(),
                ));
                self.st.resolved_model = None;
                self.st.template_candidates.clear();
                let phase = if self.create_model.is_some() {
                    ServicePhase::Starting
                } else {
                    ServicePhase::Failed
                };
                Err(Verdict::new(phase, reason, message))
            }
        }
    }

    /// The AIMModel of that name in the service's namespace, else the AIMClusterModel.
    fn model_named(&mut self, name: &str) -> Result<ModelCandidate<'a>, (&'static str, String)> {
        let obs = self.obs;
        let in_namespace = obs.namespace_models.iter().find(|m| m.name == name);
        let in_cluster = obs.cluster_models.iter().find(|m| m.name == name);
        match resolve_model(
            TemplateScope::Namespace,
            Some(obs.service.namespace),
            name,
            in_namespace.cloned(),
            in_cluster.cloned(),
        ) {
            ModelResolution::Found { model, reference } => {
                self.st.resolved_model = Some(reference);
                Ok(model)
            }
            ModelResolution::NotFound { message } => Err((reasons::MODEL_NOT_FOUND, message)),
        }
    }

    /// The name of the model using this image: the namespace's first, then the cluster's.
    fn model_of_image(&self, image: &str) -> Option<&'a str> {
        let first = |models: &'o [ModelCandidate<'a>]| {
            models
                .iter()
                .filter(|m| m.spec.image == image)
                .min_by_key(|m| m.name)
        };
        let obs = self.obs;
        first(&obs.namespace_models)
            .or_else(|| first(&obs.cluster_models))
            .map(|m| m.name)
    }

    /// An AIMModel for an image nobody registered; its templates come from M-02.
    fn create_model(&mut self, image: &str) -> (&'static str, String) {
        let name = model_name_for_image(image);
        let message = format!(
            "created AIMModel {name:?} for image {image}; its templates come from the image's labels"
        );
        self.create_model = Some((name, image.to_string()));
        (reasons::MODEL_CREATED, message)
    }

    /// S-02/S-03/S-06: the template to run, with a verdict per candidate in status.
    pub(super) fn select_template(
        &mut self,
        model: &ModelCandidate<'_>,
    ) -> Result<&'o TemplateDetail<'a>, Verdict> {
        let obs = self.obs;
        let s = &obs.service;
        let result = select(&SelectionInput {
            service_namespace: s.namespace,
            model_name: model.name,
            template_name: s.spec.template.as_ref().map(|t| t.name.as_str()),
            current: self.old.resolved_template.as_ref(),
            candidates: obs
                .templates
                .iter()
                .map(|t| candidate(t, s.namespace))
                .collect(),
            inventory: obs.inventory,
        });
        self.st.template_candidates = result.candidates;
        match result.selection {
            Selection::Selected { template, message } => {
                self.conds.push(ConditionSpec::new(
                    types::TEMPLATE_SELECTED,
                    true,
                    reasons::TEMPLATE_SELECTED,
                    message,
                ));
                let detail = obs
                    .templates
                    .iter()
                    .find(|t| {
                        t.name == template.name
                            && (t.scope == TemplateScope::Namespace)
                                == (template.namespace.is_some())
                    })
                    .expect("the selected template is a candidate");
                self.st.resolved_template = Some(template);
                Ok(detail)
            }
            other => Err(self.not_selected(other)),
        }
    }

    /// No template to run: `Starting` while one may still become usable (S-04), `NotAvailable` when
    /// only the hardware stands in the way, else `Failed`.
    fn not_selected(&mut self, selection: Selection) -> Verdict {
        let (phase, reason, message) = match selection {
            Selection::Waiting { message } => (
                ServicePhase::Starting,
                reasons::WAITING_FOR_TEMPLATE,
                message,
            ),
            Selection::NotFound { message } => {
                (ServicePhase::Failed, reasons::TEMPLATE_NOT_FOUND, message)
            }
            Selection::Ambiguous { message, .. } => {
                (ServicePhase::Failed, reasons::AMBIGUOUS_SELECTION, message)
            }
            Selection::NoneUsable { message } if self.hardware_only() => (
                ServicePhase::NotAvailable,
                reasons::NO_USABLE_TEMPLATE,
                message,
            ),
            Selection::NoneUsable { message } => {
                (ServicePhase::Failed, reasons::NO_USABLE_TEMPLATE, message)
            }
            Selection::Selected { .. } => unreachable!("a selected template has a workload"),
        };
        // A workload already running from an earlier selection is left alone (S-06: it is replaced
        // only once another template is selected).
        self.st.resolved_template = None;
        self.conds.push(ConditionSpec::new(
            types::TEMPLATE_SELECTED,
            false,
            reason,
            message.clone(),
        ));
        Verdict::new(phase, reason, message)
    }

    /// Nothing runs here because of the hardware alone.
    fn hardware_only(&self) -> bool {
        let candidates = &self.st.template_candidates;
        !candidates.is_empty()
            && candidates.iter().all(|c| {
                c.status == Some(TemplatePhase::NotAvailable)
                    || c.reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("its GPU is not in the cluster"))
            })
    }

    /// S-05: the workload of the selected template (written only when its hash changed) and the phase
    /// it gives the service.
    pub(super) fn workload(
        &mut self,
        model: &ModelCandidate<'_>,
        template: &TemplateDetail<'_>,
    ) -> Verdict {
        let obs = self.obs;
        let inputs = workload_inputs(&obs.service, model, template);
        self.apply_deployment = unless_applied(deployment(&inputs), obs.deployment);
        self.apply_service = unless_applied(service(&inputs), obs.service_object);
        let verdict = match &obs.workload_refused {
            // S-05: a refused write is not tried again in this reconcile; status says why.
            Some(why) => {
                self.apply_deployment = None;
                self.apply_service = None;
                self.requeue_after = Some(obs.retry_after);
                Verdict::new(
                    ServicePhase::Failed,
                    reasons::WORKLOAD_REFUSED,
                    format!(
                        "the API server refused the workload of template {}: {why}",
                        template.name
                    ),
                )
            }
            None => self.rollout(template.name),
        };
        self.conds.push(ConditionSpec::new(
            types::WORKLOAD_READY,
            verdict.phase == ServicePhase::Running,
            verdict.reason.clone(),
            verdict.message.clone(),
        ));
        verdict
    }

    /// How far the Deployment as applied has come: `Running` once every replica is available,
    /// `Pending` while a pod cannot be scheduled, else `Starting`.
    fn rollout(&self, template: &str) -> Verdict {
        let obs = self.obs;
        let wanted = obs.service.spec.replicas;
        let Some(dep) = obs.deployment.filter(|_| self.apply_deployment.is_none()) else {
            return Verdict::new(
                ServicePhase::Starting,
                reasons::WORKLOAD_PROGRESSING,
                format!("applying the Deployment for template {template}"),
            );
        };
        let current = dep.metadata.generation.is_some()
            && dep.status.as_ref().and_then(|x| x.observed_generation) == dep.metadata.generation;
        let available = dep
            .status
            .as_ref()
            .and_then(|x| x.available_replicas)
            .unwrap_or(0);
        let progress = format!("{available}/{wanted} replicas available, template {template}");
        if current && available >= wanted {
            Verdict::new(ServicePhase::Running, reasons::WORKLOAD_AVAILABLE, progress)
        } else if let Some(why) = scheduler_says(&obs.pods) {
            Verdict::new(
                ServicePhase::Pending,
                reasons::UNSCHEDULABLE,
                format!(
                    "{available}/{wanted} replicas available; a pod cannot be scheduled: {why}"
                ),
            )
        } else {
            Verdict::new(
                ServicePhase::Starting,
                reasons::WORKLOAD_PROGRESSING,
                progress,
            )
        }
    }

    /// `Ready` is True exactly when the service runs; the status is the verdict's phase.
    pub(super) fn ready(&mut self, verdict: Verdict) {
        let running = verdict.phase == ServicePhase::Running;
        let reason = if running {
            reasons::READY.to_string()
        } else {
            verdict.reason
        };
        self.conds.push(ConditionSpec::new(
            types::READY,
            running,
            reason,
            verdict.message,
        ));
        self.st.status = verdict.phase;
        self.st.conditions = merge_conditions(
            &self.old.conditions,
            &self.conds,
            &Time(self.obs.now),
            self.obs.service.generation,
        );
    }

    /// Events: the model created, a template newly selected, and a change of the status or its `Ready`
    /// reason.
    pub(super) fn events(&mut self) {
        if let Some((name, image)) = &self.create_model {
            self.events.push(PlannedEvent {
                warning: false,
                reason: "ModelCreated".into(),
                message: format!("created AIMModel {name} for image {image}"),
            });
        }
        let selected = |st: &ServiceStatus| st.resolved_template.as_ref().map(|t| t.name.clone());
        if selected(&self.st) != selected(&self.old)
            && let Some(name) = selected(&self.st)
        {
            self.events.push(PlannedEvent {
                warning: false,
                reason: "TemplateSelected".into(),
                message: format!("selected template {name}"),
            });
        }
        if let Some(e) = self.status_event() {
            self.events.push(e);
        }
    }

    /// The event of a new status or `Ready` reason: a Warning for trouble and for a pod that cannot be
    /// scheduled.
    fn status_event(&self) -> Option<PlannedEvent> {
        let reason_of = |st: &ServiceStatus| {
            st.conditions
                .iter()
                .find(|c| c.type_ == types::READY)
                .map(|c| c.reason.clone())
        };
        let (old, st) = (&self.old, &self.st);
        let changed = self.obs.service.status.is_none()
            || old.status != st.status
            || reason_of(old) != reason_of(st);
        if !changed {
            return None;
        }
        let warning = matches!(
            st.status,
            ServicePhase::Failed | ServicePhase::Degraded | ServicePhase::NotAvailable
        ) || (st.status == ServicePhase::Pending
            && reason_of(st).as_deref() == Some(reasons::UNSCHEDULABLE));
        let ready = st.conditions.iter().find(|c| c.type_ == types::READY)?;
        Some(PlannedEvent {
            warning,
            reason: st.status.as_str().into(),
            message: ready.message.clone(),
        })
    }

    pub(super) fn finish(self) -> ServicePlan {
        ServicePlan {
            status: self.st,
            create_model: self.create_model,
            apply_deployment: self.apply_deployment,
            apply_service: self.apply_service,
            events: self.events,
            requeue_after: self.requeue_after,
        }
    }
}

/// What selection looks at of a template.
fn candidate<'x>(t: &'x TemplateDetail<'_>, service_namespace: &'x str) -> Candidate<'x> {
    Candidate {
        scope: t.scope,
        name: t.name,
        namespace: (t.scope == TemplateScope::Namespace).then_some(service_namespace),
        uid: None,
        model_name: &t.spec.model_name,
        phase: t.status.map(|x| x.status),
        ready_message: t.status.and_then(|x| {
            x.conditions
                .iter()
                .find(|c| c.type_ == types::READY)
                .map(|c| c.message.as_str())
        }),
        resolved_hardware: t.status.and_then(|x| x.resolved_hardware.as_ref()),
    }
}

/// S-05: what the workload is built from: the model's image, the template's resolved hardware and
/// profile, env from the runtime config, the template, the profile and the service, the template's
/// (else the model's) pull secrets and service account, then the service's pull secrets.
fn workload_inputs<'x>(
    s: &'x ServiceView<'_>,
    model: &'x ModelCandidate<'_>,
    t: &'x TemplateDetail<'_>,
) -> WorkloadInputs<'x> {
    let status = t.status;
    let profile_env: BTreeMap<String, String> = status
        .and_then(|x| x.profile.as_ref())
        .and_then(|p| p.get("env_vars"))
        .and_then(|e| e.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut pull = if t.spec.image_pull_secrets.is_empty() {
        model.spec.image_pull_secrets.clone()
    } else {
        t.spec.image_pull_secrets.clone()
    };
    for p in &s.spec.image_pull_secrets {
        if !pull.contains(p) {
            pull.push(p.clone());
        }
    }
    let service_account = t
        .spec
        .service_account_name
        .as_deref()
        .or(model.spec.service_account_name.as_deref());
    WorkloadInputs {
        service_name: s.name,
        namespace: s.namespace,
        service_uid: s.uid,
        replicas: s.spec.replicas,
        image: &model.spec.image,
        template_name: t.name,
        runtime_env: &t.runtime_env,
        template_env: t.env,
        profile_env,
        service_env: &s.spec.env,
        metric: t.spec.metric,
        precision: t.spec.precision,
        profile_id: t.spec.profile_id.as_deref(),
        hardware: status.and_then(|x| x.resolved_hardware.as_ref()),
        node_affinity: status.and_then(|x| x.resolved_node_affinity.as_ref()),
        image_pull_secrets: pull,
        service_account_name: service_account,
        resources: s.spec.resources.as_ref().or(t.spec.resources.as_ref()),
        cache_volumes: t.cache_volumes.clone(),
    }
}

/// The document, stamped with the hash of its content under [`WORKLOAD_HASH`], unless the object as
/// observed already carries that hash (then there is nothing to write).
fn unless_applied<T>(mut doc: T, existing: Option<&T>) -> Option<T>
where
    T: k8s_openapi::Metadata<Ty = ObjectMeta> + serde::Serialize,
{
    let hash = sha256_hex(&serde_json::to_vec(&doc).unwrap_or_default(), 8);
    let applied = existing.is_some_and(|e| {
        e.metadata()
            .annotations
            .as_ref()
            .and_then(|a| a.get(WORKLOAD_HASH))
            == Some(&hash)
    });
    doc.metadata_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(WORKLOAD_HASH.into(), hash);
    (!applied).then_some(doc)
}

/// The scheduler's reason when a pod of the workload cannot be placed.
fn scheduler_says(pods: &[&Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        unscheduled(p).map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
        })
    })
}
