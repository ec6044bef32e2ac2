//! The model state machine (M-01…M-04): the model, the templates in its scope and (when asked for) the
//! registry's answer in; the status, the templates to write or delete, and the events out. The steps
//! of [`super::decide_model`] are in `steps.rs`.

use super::metadata::MetadataFailure;
use super::templates::DesiredTemplate;
use crate::conditions::PlannedEvent;
use aim_api::{ModelCommon, ModelPhase, ModelStatus, ServiceTemplateCommon, TemplatePhase};
use std::collections::BTreeMap;
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
    /// Templates of an earlier plan that the API server refused to take (a 4xx other than conflict or
    /// throttling), by name, with its message. The operator fills it after a refused apply and decides
    /// again: the refusal then reaches the model's status (`TemplatesCreated=False/TemplateRefused`)
    /// and a Warning, instead of an endless error retry with nothing said.
    pub refused: BTreeMap<String, String>,
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
