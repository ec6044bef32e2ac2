//! The model state machine (M-01…M-04): the model, the templates in its scope and (when asked for) the
//! registry's answer in; the status, the templates to write or delete, and the events out.

use super::metadata::{MetadataFailure, metadata_from_labels};
use super::templates::{DesiredTemplate, ModelRef, desired_templates};
use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions};
use crate::template::{backoff, human_duration};
use aim_api::conditions::{reasons, types};
use aim_api::{
    ImageMetadata, ModelCommon, ModelPhase, ModelStatus, ModelTemplateStatus,
    ObservedImageMetadata, RegistryReadStatus, ServiceTemplateCommon, TemplatePhase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The model being decided on (either kind).
#[derive(Debug, Clone)]
pub struct ModelView<'a> {
    /// `AIMModel` or `AIMClusterModel`.
    pub kind: &'a str,
    pub name: &'a str,
    /// `None` for an AIMClusterModel.
    pub namespace: Option<&'a str>,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a ModelCommon,
    pub status: Option<&'a ModelStatus>,
}

/// A template in the model's scope (the model's namespace for an AIMModel, cluster templates for an
/// AIMClusterModel), as observed.
#[derive(Debug, Clone)]
pub struct TemplateSeen<'a> {
    pub name: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// UID of its controller owner, if any.
    pub controller_uid: Option<&'a str>,
    pub spec: &'a ServiceTemplateCommon,
    /// `None` until the template has a status.
    pub phase: Option<TemplatePhase>,
}

/// The registry's answer, when the decision asked for it.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryRead {
    NotRead,
    /// The image config's labels and the digest of the manifest they came from.
    Read {
        digest: Option<String>,
        labels: BTreeMap<String, String>,
    },
    Failed(MetadataFailure),
}

#[derive(Debug, Clone)]
pub struct ModelObservation<'a> {
    pub model: ModelView<'a>,
    /// Every template in the model's scope (user-made ones included: they are never touched, but their
    /// names are).
    pub templates: Vec<TemplateSeen<'a>>,
    pub registry: RegistryRead,
    /// Where the pull secrets of an AIMClusterModel are read.
    pub operator_namespace: &'a str,
    /// First retry delay after a failed read (the discovery backoff: doubles per attempt up to an hour).
    pub backoff_base: Duration,
    pub now: jiff::Timestamp,
}

/// What the operator must fetch first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryNeed {
    pub image: String,
    /// Names of `kubernetes.io/dockerconfigjson` Secrets to take credentials from, in order.
    pub pull_secrets: Vec<String>,
    /// Where those Secrets live.
    pub secret_namespace: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelPlan {
    /// Written only when it differs from the current status.
    pub status: ModelStatus,
    /// Templates to create or update (server-side apply); only those missing or different.
    pub apply: Vec<DesiredTemplate>,
    /// Names of this model's templates that no deployment asks for any more.
    pub delete: Vec<String>,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
    /// Set when this decision read the registry (for metrics): the failure category, if it failed.
    pub registry_result: Option<Result<(), &'static str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelDecision {
    Need(RegistryNeed),
    Plan(Box<ModelPlan>),
}

/// M-04: the model's status from its templates' (a template not yet created counts as `Pending`).
pub fn aggregate(phases: &[Option<TemplatePhase>]) -> ModelPhase {
    use TemplatePhase as T;
    let count = |p: T| phases.iter().filter(|x| **x == Some(p)).count();
    let n = phases.len();
    let (ready, na, failed, degraded) = (
        count(T::Ready),
        count(T::NotAvailable),
        count(T::Failed),
        count(T::Degraded),
    );
    if n == 0 || ready == n || (ready > 0 && ready + na == n) {
        ModelPhase::Ready
    } else if na == n {
        ModelPhase::NotAvailable
    } else if failed == n {
        ModelPhase::Failed
    } else if failed + degraded > 0 {
        ModelPhase::Degraded
    } else {
        ModelPhase::Progressing
    }
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

enum Metadata {
    /// Known: from the spec, the cache or this read.
    Known(ImageMetadata),
    /// Extraction is off and no inline metadata.
    Disabled,
    /// The read failed (now or earlier, still backing off): the failure message.
    Failed,
}

/// Decides. May first answer [`ModelDecision::Need`]: the operator reads the registry, puts the answer in
/// `registry`, and decides again.
pub fn decide_model(obs: &ModelObservation<'_>) -> ModelDecision {
    let m = &obs.model;
    let old = m.status.cloned().unwrap_or_default();
    let mut st = old.clone();
    st.observed_generation = m.generation;
    let mut conds: Vec<ConditionSpec> = Vec::new();
    let mut events: Vec<PlannedEvent> = Vec::new();
    let mut requeue_after = None;
    let mut registry_result = None;
    let image = m.spec.image.as_str();

    // M-01: where the metadata comes from.
    let metadata = if let Some(inline) = &m.spec.image_metadata {
        st.image_metadata = None;
        st.registry = None;
        conds.push(ConditionSpec::new(
            types::METADATA_EXTRACTED,
            true,
            reasons::INLINE_METADATA,
            "spec.imageMetadata is set; the registry is not contacted",
        ));
        Metadata::Known(inline.clone())
    } else if !m.spec.discovery.extract_metadata {
        st.image_metadata = None;
        st.registry = None;
        Metadata::Disabled
    } else if let Some(cached) = old.image_metadata.as_ref().filter(|c| c.image == image) {
        conds.push(read_condition(image, cached.digest.as_deref()));
        st.registry = None;
        Metadata::Known(cached.metadata.clone())
    } else {
        // Still backing off from a failure for this image and this spec?
        let prior = old.registry.as_ref().filter(|r| r.image == image);
        let due = prior
            .and_then(|r| r.next_attempt_time.as_ref())
            .map(|t| t.0)
            .filter(|_| old.observed_generation == m.generation);
        match (&obs.registry, due) {
            (RegistryRead::NotRead, Some(at)) if at > obs.now => {
                let r = prior.expect("due implies prior");
                conds.push(failed_condition(&old, r));
                requeue_after = Some(Duration::from_secs(
                    (at - obs.now)
                        .total(jiff::Unit::Second)
                        .map(|s| s.ceil().max(1.0) as u64)
                        .unwrap_or(1),
                ));
                Metadata::Failed
            }
            (RegistryRead::NotRead, _) => {
                return ModelDecision::Need(RegistryNeed {
                    image: image.to_string(),
                    pull_secrets: m
                        .spec
                        .image_pull_secrets
                        .iter()
                        .map(|s| s.name.clone())
                        .filter(|n| !n.is_empty())
                        .collect(),
                    secret_namespace: m.namespace.unwrap_or(obs.operator_namespace).to_string(),
                });
            }
            (RegistryRead::Read { digest, labels }, _) => {
                match metadata_from_labels(image, labels) {
                    Ok(meta) => {
                        registry_result = Some(Ok(()));
                        st.image_metadata = Some(ObservedImageMetadata {
                            image: image.to_string(),
                            digest: digest.clone(),
                            metadata: meta.clone(),
                        });
                        st.registry = None;
                        conds.push(read_condition(image, digest.as_deref()));
                        Metadata::Known(meta)
                    }
                    Err(f) => {
                        registry_result = Some(Err(f.category()));
                        record_failure(obs, prior, &f, &mut st, &mut conds, &mut events);
                        requeue_after = Some(retry_wait(obs, &st));
                        Metadata::Failed
                    }
                }
            }
            (RegistryRead::Failed(f), _) => {
                registry_result = Some(Err(f.category()));
                record_failure(obs, prior, f, &mut st, &mut conds, &mut events);
                requeue_after = Some(retry_wait(obs, &st));
                Metadata::Failed
            }
        }
    };

    // M-02/M-03: which templates must exist; ours are those the model controls.
    let model_ref = ModelRef {
        kind: m.kind,
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
    };
    let ours: BTreeMap<&str, &TemplateSeen<'_>> = obs
        .templates
        .iter()
        .filter(|t| t.controller_uid == Some(m.uid))
        .map(|t| (t.name, t))
        .collect();
    let by_name: BTreeMap<&str, &TemplateSeen<'_>> =
        obs.templates.iter().map(|t| (t.name, t)).collect();
    let mut apply = Vec::new();
    let mut delete = Vec::new();
    // Names this model expects, and whether each exists as ours.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut taken: Vec<String> = Vec::new();
    let creating = m.spec.discovery.create_service_templates;
    match (&metadata, creating) {
        (Metadata::Known(meta), true) => {
            let (want, skipped) = desired_templates(&model_ref, &meta.recommended_deployments);
            for d in want {
                match by_name.get(d.name.as_str()) {
                    Some(t) if t.controller_uid != Some(m.uid) => {
                        taken.push(d.name.clone());
                        continue;
                    }
                    Some(t) if up_to_date(t, &d) => {}
                    _ => apply.push(d.clone()),
                }
                expected.insert(d.name);
            }
            for name in ours.keys() {
                if !expected.contains(*name) {
                    delete.push(name.to_string());
                }
            }
            let mut message = match expected.len() {
                0 => "the image recommends no deployments".to_string(),
                1 => "1 template for the recommended deployment".to_string(),
                n => format!("{n} templates for the recommended deployments"),
            };
            if !skipped.is_empty() {
                message.push_str(&format!(
                    "; deployment(s) {} have no gpuModel and were skipped",
                    join(skipped.iter().map(|i| i.to_string()))
                ));
            }
            if taken.is_empty() {
                conds.push(ConditionSpec::new(
                    types::TEMPLATES_CREATED,
                    true,
                    reasons::TEMPLATES_CREATED,
                    message,
                ));
            } else {
                conds.push(ConditionSpec::new(
                    types::TEMPLATES_CREATED,
                    false,
                    reasons::TEMPLATE_NAME_TAKEN,
                    format!(
                        "{message}; not created because a template of that name exists and was not \
                         made by this model (rename or delete it): {}",
                        join(taken.iter().cloned())
                    ),
                ));
            }
        }
        (Metadata::Known(_) | Metadata::Disabled, false) | (Metadata::Disabled, true) => {
            // Templates this model made earlier go once creation is off.
            delete.extend(ours.keys().map(|n| n.to_string()));
        }
        (Metadata::Failed, _) => {
            // Keep what exists until the metadata is known again.
            expected.extend(ours.keys().map(|n| n.to_string()));
        }
    }
    delete.sort();

    // M-04
    st.templates = expected
        .iter()
        .map(|n| ModelTemplateStatus {
            name: n.clone(),
            status: ours
                .get(n.as_str())
                .and_then(|t| t.phase)
                .unwrap_or_default(),
        })
        .collect();
    let phases: Vec<Option<TemplatePhase>> = expected
        .iter()
        .map(|n| ours.get(n.as_str()).and_then(|t| t.phase))
        .collect();
    let (phase, ready) = match &metadata {
        Metadata::Failed => {
            let r = st.registry.as_ref();
            let reason = failure_reason(&conds);
            (
                ModelPhase::Failed,
                ConditionSpec::new(
                    types::READY,
                    false,
                    reason,
                    format!(
                        "the image's metadata cannot be read: {}",
                        r.and_then(|r| r.last_failure.clone()).unwrap_or_default()
                    ),
                ),
            )
        }
        _ => {
            let phase = aggregate(&phases);
            let summary = summary(&phases);
            let text = match (&metadata, creating) {
                (Metadata::Disabled, _) => {
                    "metadata extraction is off (spec.discovery.extractMetadata: false); no templates \
                     are created"
                        .to_string()
                }
                (_, false) => {
                    "template creation is off (spec.discovery.createServiceTemplates: false)"
                        .to_string()
                }
                _ if phases.is_empty() => "no templates expected".to_string(),
                _ => summary,
            };
            let ok = phase == ModelPhase::Ready;
            (
                phase,
                ConditionSpec::new(
                    types::READY,
                    ok,
                    if ok { reasons::READY } else { phase.as_str() },
                    text,
                ),
            )
        }
    };
    st.status = phase;
    conds.push(ready);
    let order = [
        types::METADATA_EXTRACTED,
        types::TEMPLATES_CREATED,
        types::READY,
    ];
    conds.sort_by_key(|c| order.iter().position(|o| *o == c.type_));
    st.conditions = merge_conditions(&old.conditions, &conds, &time(obs.now), m.generation);

    // Events: templates created/removed, and a change of the model's status (T-31's rule for models).
    let created: Vec<String> = apply
        .iter()
        .filter(|d| !by_name.contains_key(d.name.as_str()))
        .map(|d| d.name.clone())
        .collect();
    if !created.is_empty() {
        events.push(PlannedEvent {
            warning: false,
            reason: "TemplatesCreated".into(),
            message: format!("created {}", join(created.into_iter())),
        });
    }
    if !delete.is_empty() {
        events.push(PlannedEvent {
            warning: false,
            reason: "TemplatesDeleted".into(),
            message: format!(
                "deleted {} (no longer recommended)",
                join(delete.iter().cloned())
            ),
        });
    }
    let old_reason = old
        .conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .map(|c| c.reason.clone());
    let new_ready = st.conditions.iter().find(|c| c.type_ == types::READY);
    if m.status.is_none()
        || old.status != st.status
        || old_reason != new_ready.map(|c| c.reason.clone())
    {
        let warning = matches!(
            st.status,
            ModelPhase::Failed | ModelPhase::Degraded | ModelPhase::NotAvailable
        );
        // A failed read already has its own Warning.
        if !(st.status == ModelPhase::Failed && registry_result.is_some())
            && let Some(c) = new_ready
        {
            events.push(PlannedEvent {
                warning,
                reason: st.status.as_str().into(),
                message: c.message.clone(),
            });
        }
    }

    ModelDecision::Plan(Box::new(ModelPlan {
        status: st,
        apply,
        delete,
        events,
        requeue_after,
        registry_result,
    }))
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn summary(phases: &[Option<TemplatePhase>]) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for p in phases {
        *counts.entry(p.unwrap_or_default().as_str()).or_default() += 1;
    }
    let parts = counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = phases.len();
    format!("{n} template{}: {parts}", if n == 1 { "" } else { "s" })
}

fn up_to_date(seen: &TemplateSeen<'_>, want: &DesiredTemplate) -> bool {
    seen.spec == &want.spec
        && want
            .labels
            .iter()
            .all(|(k, v)| seen.labels.and_then(|l| l.get(k)) == Some(v))
}

fn read_condition(image: &str, digest: Option<&str>) -> ConditionSpec {
    ConditionSpec::new(
        types::METADATA_EXTRACTED,
        true,
        reasons::METADATA_READ,
        match digest {
            Some(d) => format!("labels of {image} read from its registry ({d})"),
            None => format!("labels of {image} read from its registry"),
        },
    )
}

fn failure_reason(conds: &[ConditionSpec]) -> String {
    conds
        .iter()
        .find(|c| c.type_ == types::METADATA_EXTRACTED)
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| reasons::REGISTRY_ERROR.into())
}

/// The backoff's condition, as written when the failure was recorded.
fn failed_condition(old: &ModelStatus, r: &RegistryReadStatus) -> ConditionSpec {
    match old
        .conditions
        .iter()
        .find(|c| c.type_ == types::METADATA_EXTRACTED)
    {
        Some(c) => ConditionSpec::new(
            types::METADATA_EXTRACTED,
            false,
            c.reason.clone(),
            c.message.clone(),
        ),
        None => ConditionSpec::new(
            types::METADATA_EXTRACTED,
            false,
            reasons::REGISTRY_ERROR,
            r.last_failure.clone().unwrap_or_default(),
        ),
    }
}

fn record_failure(
    obs: &ModelObservation<'_>,
    prior: Option<&RegistryReadStatus>,
    f: &MetadataFailure,
    st: &mut ModelStatus,
    conds: &mut Vec<ConditionSpec>,
    events: &mut Vec<PlannedEvent>,
) {
    // A changed spec (new pull secret, say) starts the count again.
    let same_spec = obs.model.status.and_then(|s| s.observed_generation) == obs.model.generation;
    let attempts = match prior {
        Some(p) if same_spec => p.attempts + 1,
        _ => 1,
    };
    let wait = backoff(obs.backoff_base, attempts);
    let next = obs
        .now
        .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
        .unwrap_or(obs.now);
    st.registry = Some(RegistryReadStatus {
        image: obs.model.spec.image.clone(),
        attempts,
        last_attempt_time: Some(time(obs.now)),
        next_attempt_time: Some(time(next)),
        last_failure: Some(f.message().to_string()),
    });
    let message = format!(
        "{}; attempt {attempts} failed, retry after a {} backoff",
        f.message(),
        human_duration(wait)
    );
    conds.push(ConditionSpec::new(
        types::METADATA_EXTRACTED,
        false,
        f.reason(),
        message.clone(),
    ));
    events.push(PlannedEvent {
        warning: true,
        reason: "MetadataFailed".into(),
        message,
    });
}

fn retry_wait(obs: &ModelObservation<'_>, st: &ModelStatus) -> Duration {
    st.registry
        .as_ref()
        .and_then(|r| r.next_attempt_time.as_ref())
        .and_then(|t| (t.0 - obs.now).total(jiff::Unit::Second).ok())
        .map(|s| Duration::from_secs(s.ceil().max(1.0) as u64))
        .unwrap_or(obs.backoff_base)
}
