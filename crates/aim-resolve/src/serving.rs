//! The service state machine (S-01…S-06): the service, the models and templates it may use, its workload as
//! observed in; status, a model to create, the workload to apply and events out.

use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions};
use crate::model::{ModelCandidate, ModelResolution, resolve_model};
use crate::service::{Candidate, Selection, SelectionInput, select};
use crate::workload::{WorkloadInputs, deployment, service};
use aim_api::conditions::{reasons, types};
use aim_api::{
    AIMServiceSpec, ServicePhase, ServiceStatus, ServiceTemplateCommon, ServiceTemplateStatus,
    TemplatePhase, TemplateScope,
};
use aim_hardware::Inventory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Annotation holding the hash of the workload as last applied; unchanged hash → no write.
pub const WORKLOAD_HASH: &str = "aim.eai.amd.com/workload-hash";

/// What a candidate template brings to the workload besides what selection looks at.
#[derive(Debug, Clone)]
pub struct TemplateDetail<'a> {
    pub scope: TemplateScope,
    pub name: &'a str,
    pub spec: &'a ServiceTemplateCommon,
    /// Namespace templates' env.
    pub env: &'a [EnvVar],
    pub status: Option<&'a ServiceTemplateStatus>,
    /// The runtime config env this template resolves to.
    pub runtime_env: Vec<EnvVar>,
    /// Volumes of this template's Warm AIMTemplateCache in the service's namespace: (source name, claim).
    pub cache_volumes: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ServiceView<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a AIMServiceSpec,
    pub status: Option<&'a ServiceStatus>,
}

#[derive(Debug, Clone)]
pub struct ServiceObservation<'a> {
    pub service: ServiceView<'a>,
    /// AIMModels in the service's namespace.
    pub namespace_models: Vec<ModelCandidate<'a>>,
    /// AIMClusterModels.
    pub cluster_models: Vec<ModelCandidate<'a>>,
    /// Templates in the service's namespace and cluster templates.
    pub templates: Vec<TemplateDetail<'a>>,
    pub inventory: &'a Inventory,
    pub deployment: Option<&'a Deployment>,
    pub service_object: Option<&'a Service>,
    /// Pods of the workload.
    pub pods: Vec<&'a Pod>,
    pub now: jiff::Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    pub status: ServiceStatus,
    /// S-01: an AIMModel to create for `spec.model.image` (name, image).
    pub create_model: Option<(String, String)>,
    /// Written only when missing or its hash changed.
    pub apply_deployment: Option<Deployment>,
    pub apply_service: Option<Service>,
    pub events: Vec<PlannedEvent>,
}

fn hash_of(v: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// S-01: the AIMModel name for an image nobody registered: its repository's last part and a hash of
/// the whole reference, at most 63 characters.
pub fn model_name_for_image(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let mut base = String::new();
    for c in last.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            base.push(c);
        } else if !base.ends_with('-') {
            base.push('-');
        }
    }
    let base: String = base.trim_matches('-').chars().take(54).collect();
    let hash: String = Sha256::digest(image.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let base = base.trim_end_matches('-');
    if base.is_empty() {
        format!("aim-{hash}")
    } else {
        format!("{base}-{hash}")
    }
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The scheduler's reason when a pod of the workload cannot be placed.
fn unschedulable(pods: &[&Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        p.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find_map(|c| {
                (c.type_ == "PodScheduled" && c.status == "False").then(|| {
                    c.message
                        .clone()
                        .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
                })
            })
    })
}

pub fn decide_service(obs: &ServiceObservation<'_>) -> ServicePlan {
    let s = &obs.service;
    let old = s.status.cloned().unwrap_or_default();
    let mut st = old.clone();
    st.observed_generation = s.generation;
    let mut conds: Vec<ConditionSpec> = Vec::new();
    let mut create_model = None;
    let mut apply_deployment = None;
    let mut apply_service = None;

    // S-01: which model.
    let model = match (&s.spec.model.name, &s.spec.model.image) {
        (Some(name), _) => {
            let ns = obs
                .namespace_models
                .iter()
                .find(|m| m.name == name)
                .cloned();
            let cl = obs.cluster_models.iter().find(|m| m.name == name).cloned();
            match resolve_model(TemplateScope::Namespace, Some(s.namespace), name, ns, cl) {
                ModelResolution::Found { model, reference } => {
                    st.resolved_model = Some(reference);
                    Ok(model)
                }
                ModelResolution::NotFound { message } => Err((reasons::MODEL_NOT_FOUND, message)),
            }
        }
        (None, Some(image)) => {
            let found = obs
                .namespace_models
                .iter()
                .filter(|m| m.spec.image == *image)
                .min_by_key(|m| m.name)
                .or_else(|| {
                    obs.cluster_models
                        .iter()
                        .filter(|m| m.spec.image == *image)
                        .min_by_key(|m| m.name)
                });
            match found {
                Some(m) => {
                    match resolve_model(
                        TemplateScope::Namespace,
                        Some(s.namespace),
                        m.name,
                        obs.namespace_models
                            .iter()
                            .find(|x| x.name == m.name)
                            .cloned(),
                        obs.cluster_models
                            .iter()
                            .find(|x| x.name == m.name)
                            .cloned(),
                    ) {
                        ModelResolution::Found { model, reference } => {
                            st.resolved_model = Some(reference);
                            Ok(model)
                        }
                        ModelResolution::NotFound { message } => {
                            Err((reasons::MODEL_NOT_FOUND, message))
                        }
                    }
                }
                None => {
                    let name = model_name_for_image(image);
                    create_model = Some((name.clone(), image.clone()));
                    Err((
                        reasons::MODEL_CREATED,
                        format!(
                            "created AIMModel {name:?} for image {image}; its templates come from the image's labels"
                        ),
                    ))
                }
            }
        }
        (None, None) => Err((
            reasons::MODEL_NOT_FOUND,
            "spec.model names neither a model nor an image".into(),
        )),
    };
    let model = match model {
        Ok(m) => {
            conds.push(ConditionSpec::new(
                types::MODEL_RESOLVED,
                true,
                reasons::MODEL_FOUND,
                format!("{}, image {}", m.name, m.spec.image),
            ));
            Some(m)
        }
        Err((reason, message)) => {
            conds.push(ConditionSpec::new(
                types::MODEL_RESOLVED,
                false,
                reason,
                message,
            ));
            st.resolved_model = None;
            None
        }
    };

    // S-02/S-03/S-06: which template.
    let phase;
    let mut ready_reason;
    let ready_message;
    match &model {
        None => {
            let created = create_model.is_some();
            phase = if created {
                ServicePhase::Starting
            } else {
                ServicePhase::Failed
            };
            let c = conds.last().expect("model condition");
            ready_reason = c.reason.clone();
            ready_message = c.message.clone();
            st.template_candidates.clear();
        }
        Some(m) => {
            let candidates: Vec<Candidate<'_>> = obs
                .templates
                .iter()
                .map(|t| Candidate {
                    scope: t.scope,
                    name: t.name,
                    namespace: (t.scope == TemplateScope::Namespace).then_some(s.namespace),
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
                })
                .collect();
            let result = select(&SelectionInput {
                service_namespace: s.namespace,
                model_name: m.name,
                template_name: s.spec.template.as_ref().map(|t| t.name.as_str()),
                current: old.resolved_template.as_ref(),
                candidates,
                inventory: obs.inventory,
            });
            st.template_candidates = result.candidates;
            match result.selection {
                Selection::Selected { template, message } => {
                    conds.push(ConditionSpec::new(
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
                    st.resolved_template = Some(template);
                    let (p, reason, message, d, svc) = workload(obs, m, detail);
                    phase = p;
                    ready_reason = reason.to_string();
                    ready_message = message.clone();
                    conds.push(ConditionSpec::new(
                        types::WORKLOAD_READY,
                        p == ServicePhase::Running,
                        reason,
                        message,
                    ));
                    apply_deployment = d;
                    apply_service = svc;
                }
                other => {
                    let (p, reason, message) = match other {
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
                        Selection::NoneUsable { message } => {
                            // Nothing runs here because of the hardware alone → NotAvailable.
                            let hardware_only = !st.template_candidates.is_empty()
                                && st.template_candidates.iter().all(|c| {
                                    c.status == Some(TemplatePhase::NotAvailable)
                                        || c.reason.as_deref().is_some_and(|r| {
                                            r.starts_with("its GPU is not in the cluster")
                                        })
                                });
                            if hardware_only {
                                (
                                    ServicePhase::NotAvailable,
                                    reasons::NO_USABLE_TEMPLATE,
                                    message,
                                )
                            } else {
                                (ServicePhase::Failed, reasons::NO_USABLE_TEMPLATE, message)
                            }
                        }
                        Selection::Selected { .. } => unreachable!(),
                    };
                    // A workload already running from an earlier selection is left alone (S-06: it is
                    // replaced only once another template is selected).
                    st.resolved_template = None;
                    conds.push(ConditionSpec::new(
                        types::TEMPLATE_SELECTED,
                        false,
                        reason,
                        message.clone(),
                    ));
                    phase = p;
                    ready_reason = reason.to_string();
                    ready_message = message;
                }
            }
        }
    }
    if phase == ServicePhase::Running {
        ready_reason = reasons::READY.into();
    }
    conds.push(ConditionSpec::new(
        types::READY,
        phase == ServicePhase::Running,
        ready_reason,
        ready_message,
    ));
    st.status = phase;
    st.conditions = merge_conditions(&old.conditions, &conds, &Time(obs.now), s.generation);

    let mut events = Vec::new();
    if let Some((name, image)) = &create_model {
        events.push(PlannedEvent {
            warning: false,
            reason: "ModelCreated".into(),
            message: format!("created AIMModel {name} for image {image}"),
        });
    }
    let selected = |st: &ServiceStatus| st.resolved_template.as_ref().map(|t| t.name.clone());
    if selected(&st) != selected(&old)
        && let Some(name) = selected(&st)
    {
        events.push(PlannedEvent {
            warning: false,
            reason: "TemplateSelected".into(),
            message: format!("selected template {name}"),
        });
    }
    let reason_of = |st: &ServiceStatus| {
        st.conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map(|c| c.reason.clone())
    };
    if s.status.is_none() || old.status != st.status || reason_of(&old) != reason_of(&st) {
        let warning = matches!(
            st.status,
            ServicePhase::Failed | ServicePhase::Degraded | ServicePhase::NotAvailable
        ) || (st.status == ServicePhase::Pending
            && reason_of(&st).as_deref() == Some(reasons::UNSCHEDULABLE));
        if let Some(c) = st.conditions.iter().find(|c| c.type_ == types::READY) {
            events.push(PlannedEvent {
                warning,
                reason: st.status.as_str().into(),
                message: c.message.clone(),
            });
        }
    }
    ServicePlan {
        status: st,
        create_model,
        apply_deployment,
        apply_service,
        events,
    }
}

/// S-05: the workload of the selected template, whether it must be written, and the service's phase.
fn workload(
    obs: &ServiceObservation<'_>,
    model: &ModelCandidate<'_>,
    t: &TemplateDetail<'_>,
) -> (
    ServicePhase,
    &'static str,
    String,
    Option<Deployment>,
    Option<Service>,
) {
    let s = &obs.service;
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
    let inputs = WorkloadInputs {
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
    };
    let mut d = deployment(&inputs);
    let mut svc = service(&inputs);
    let dh = hash_of(&d);
    let sh = hash_of(&svc);
    d.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(WORKLOAD_HASH.into(), dh.clone());
    svc.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(WORKLOAD_HASH.into(), sh.clone());
    let apply_d = match obs.deployment {
        Some(existing) if annotation(&existing.metadata, WORKLOAD_HASH) == Some(dh.as_str()) => {
            None
        }
        _ => Some(d),
    };
    let apply_s = match obs.service_object {
        Some(existing) if annotation(&existing.metadata, WORKLOAD_HASH) == Some(sh.as_str()) => {
            None
        }
        _ => Some(svc),
    };
    let wanted = s.spec.replicas;
    let (phase, reason, message) = match obs.deployment.filter(|_| apply_d.is_none()) {
        None => (
            ServicePhase::Starting,
            reasons::WORKLOAD_PROGRESSING,
            format!("applying the Deployment for template {}", t.name),
        ),
        Some(dep) => {
            let current = dep.metadata.generation.is_some()
                && dep.status.as_ref().and_then(|x| x.observed_generation)
                    == dep.metadata.generation;
            let available = dep
                .status
                .as_ref()
                .and_then(|x| x.available_replicas)
                .unwrap_or(0);
            if current && available >= wanted {
                (
                    ServicePhase::Running,
                    reasons::WORKLOAD_AVAILABLE,
                    format!(
                        "{available}/{wanted} replicas available, template {}",
                        t.name
                    ),
                )
            } else if let Some(why) = unschedulable(&obs.pods) {
                (
                    ServicePhase::Pending,
                    reasons::UNSCHEDULABLE,
                    format!(
                        "{available}/{wanted} replicas available; a pod cannot be scheduled: {why}"
                    ),
                )
            } else {
                (
                    ServicePhase::Starting,
                    reasons::WORKLOAD_PROGRESSING,
                    format!(
                        "{available}/{wanted} replicas available, template {}",
                        t.name
                    ),
                )
            }
        }
    };
    (phase, reason, message, apply_d, apply_s)
}
