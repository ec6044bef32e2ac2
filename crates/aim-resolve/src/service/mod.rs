//! The service state machine (S-01…S-06): the service, the models and templates it may use, its workload as
//! observed in; status, a model to create, the workload to apply and events out.
//!
//! [`decide_service`] runs the steps in `steps.rs`: which model (S-01), which template (`selection.rs`:
//! S-02/S-03/S-04/S-06), its workload (S-05, the documents in [`workload`]), then `Ready` and the events.

mod selection;
mod steps;
pub mod workload;

pub use selection::{Candidate, Selection, SelectionInput, SelectionResult, select};
pub use workload::{SERVICE_LABEL, service_label_value, service_of, workload_name};

use crate::common::sha256_hex;
use crate::conditions::PlannedEvent;
use crate::model::ModelCandidate;
use aim_api::{
    AIMServiceSpec, ServiceStatus, ServiceTemplateCommon, ServiceTemplateStatus, TemplateScope,
};
use aim_hardware::Inventory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};
use steps::ServiceDraft;

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
    /// What the API server answered when it refused the workload of an earlier plan (a 4xx other than
    /// conflict or throttling), naming the object: the operator fills it and decides again, so the
    /// refusal reaches status (S-05: `WorkloadReady=False/WorkloadRefused`, `Failed`, a Warning).
    pub workload_refused: Option<String>,
    /// How long to wait before trying a refused workload again.
    pub retry_after: std::time::Duration,
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
    /// Set when the workload was refused: when to try again (an admission rule or quota may change).
    pub requeue_after: Option<std::time::Duration>,
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
    let hash = sha256_hex(image.as_bytes(), 4);
    let base = base.trim_end_matches('-');
    if base.is_empty() {
        format!("aim-{hash}")
    } else {
        format!("{base}-{hash}")
    }
}

/// Decides what a service's status and workload must be: resolve its model (S-01), select a template
/// (S-02/S-03/S-06), build the workload (S-05); the first that cannot go on gives the verdict, which
/// `Ready` and the events report.
pub fn decide_service(obs: &ServiceObservation<'_>) -> ServicePlan {
    let mut d = ServiceDraft::new(obs);
    let verdict = match d.resolve_model() {
        Err(verdict) => verdict,
        Ok(model) => match d.select_template(&model) {
            Err(verdict) => verdict,
            Ok(template) => d.workload(&model, template),
        },
    };
    d.ready(verdict);
    d.events();
    d.finish()
}
