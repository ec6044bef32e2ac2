//! The template state machine (T-01…T-25, T-29…T-32): observations in, plan out.
//!
//! [`decide`] may first answer [`Decision::Need`]: the operator then reads a pod log or asks the
//! discovery queue for a slot, puts the answer in the observation, and decides again.

use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions};
use crate::model::{ModelCandidate, ModelResolution, resolve_model};
use crate::runtime_config::{
    ConfigCandidate, ConfigResolution, EffectiveConfig, resolve_runtime_config,
};
use aim_api::conditions::{reasons, types};
use aim_api::{
    CachePhase, DiscoveryStatus, JobReference, ServiceTemplateCommon, ServiceTemplateStatus,
    TemplatePhase, TemplateScope,
};
use aim_discovery::{
    ANNOTATION_INPUTS_HASH, DiscoveryInputs, discovery_job, inputs_hash, job_name,
    legacy_inputs_hash, parse_dry_run,
};
use aim_hardware::{
    Availability, DiscoveredHardware, Inventory, availability, hardware_summary, resolve_hardware,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::time::Duration;

mod events;
mod inputs;
mod jobs;
mod results;
mod steps;

pub use steps::job_ttl;

use crate::children::log_pod;
use crate::common::{
    backoff, container_config_wait, failed_create, human_duration, job_has, pod_phase, pods_of,
    unschedulable,
};
use inputs::discovery_inputs;
use jobs::{failed_job_message, image_pull_failure};
use results::{discovered_hardware, static_profile, static_sources};
use steps::Draft;

/// The template being decided on (either scope).
#[derive(Debug, Clone)]
pub struct TemplateView<'a> {
    pub scope: TemplateScope,
    pub name: &'a str,
    /// `None` for cluster templates.
    pub namespace: Option<&'a str>,
    pub uid: &'a str,
    pub generation: Option<i64>,
    /// The reconciliation-paused annotation is `"true"` (T-32).
    pub paused: bool,
    pub spec: &'a ServiceTemplateCommon,
    /// Namespace templates' `env` (empty for cluster templates).
    pub env: &'a [EnvVar],
    /// Namespace templates' `caching.enabled`.
    pub caching_enabled: bool,
    /// The template's labels; its `aim.eai.amd.com/*` ones are copied to its discovery Jobs.
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub status: Option<&'a ServiceTemplateStatus>,
}

/// The answer of the discovery queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    NotAsked,
    Granted,
    Waiting { position: usize, max: usize },
}

/// The log of the current discovery Job's succeeded pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRead {
    NotRead,
    Text(Vec<u8>),
    /// It cannot be read (the pod is gone, …): the reason. A failed attempt.
    Unavailable(String),
    /// Reading it failed for now (the API server answered 5xx, the connection broke): the reason.
    /// Not a failed attempt: the log is read again shortly.
    Transient(String),
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub template: TemplateView<'a>,
    pub namespace_model: Option<ModelCandidate<'a>>,
    pub cluster_model: Option<ModelCandidate<'a>>,
    pub namespace_config: Option<ConfigCandidate<'a>>,
    pub cluster_config: Option<ConfigCandidate<'a>>,
    pub inventory: &'a Inventory,
    /// Discovery Jobs labelled as this template's.
    pub jobs: Vec<&'a Job>,
    /// Pods of those Jobs.
    pub pods: Vec<&'a Pod>,
    /// `FailedCreate` Events of those Jobs (see [`crate::children::FAILED_CREATE_EVENT_SELECTOR`]).
    pub job_events: Vec<&'a Event>,
    /// The API server refused the discovery Job this decision asked for (quota, admission, RBAC): why.
    /// The operator sets it after a refused create and decides again.
    pub job_refused: Option<String>,
    pub log: LogRead,
    pub log_limit: usize,
    pub slot: Slot,
    /// Phase of the template's AIMTemplateCache, when caching is enabled and it exists (T-27).
    pub cache: Option<CachePhase>,
    /// Where cluster templates run discovery.
    pub operator_namespace: &'a str,
    /// First retry delay after a failed discovery (T-21: 60 s; tests shorten it).
    pub backoff_base: Duration,
    /// The time of the decision; the operator takes it again after each answer to a [`Need`] (reading a
    /// large log takes time, and a failure is timed from when it was seen).
    pub now: jiff::Timestamp,
}

/// What the operator must fetch before a plan can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The log of this pod (container `discovery`): the discovery Job's succeeded pod.
    Log { namespace: String, pod: String },
    /// A discovery slot for this Job.
    Slot { namespace: String, job: String },
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The status to write (written only when it differs from the current one).
    pub status: ServiceTemplateStatus,
    pub create_job: Option<Job>,
    /// Jobs to delete: (namespace, name).
    pub delete_jobs: Vec<(String, String)>,
    pub requeue_after: Option<Duration>,
    pub events: Vec<PlannedEvent>,
    /// The template waits in the discovery queue.
    pub waiting_for_slot: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Need(Need),
    Plan(Box<Plan>),
}

/// How soon a log read that failed for now is tried again.
pub const LOG_RETRY: Duration = Duration::from_secs(5);

/// Default first retry delay after a failed discovery (T-21).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(60);

fn rank(p: TemplatePhase) -> u8 {
    match p {
        TemplatePhase::Failed => 6,
        TemplatePhase::NotAvailable => 5,
        TemplatePhase::Degraded => 4,
        TemplatePhase::Pending => 3,
        TemplatePhase::Progressing => 2,
        TemplatePhase::Ready => 1,
    }
}

/// Collects what holds the template back; the worst wins (T-29).
#[derive(Default)]
struct Blockers(Vec<(TemplatePhase, String, String)>);

impl Blockers {
    fn add(&mut self, phase: TemplatePhase, reason: &str, message: impl Into<String>) {
        self.0.push((phase, reason.to_string(), message.into()));
    }

    fn worst(&self) -> Option<&(TemplatePhase, String, String)> {
        self.0.iter().fold(
            None,
            |acc: Option<&(TemplatePhase, String, String)>, b| match acc {
                Some(a) if rank(a.0) >= rank(b.0) => Some(a),
                _ => Some(b),
            },
        )
    }
}

fn is_true(status: &ServiceTemplateStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True" && c.reason == reason)
}

fn job_ref(j: &Job) -> (String, String) {
    (
        j.metadata.namespace.clone().unwrap_or_default(),
        j.metadata.name.clone().unwrap_or_default(),
    )
}

/// Decides what a template's status and discovery Job must be: resolve the model and the runtime config,
/// judge the hardware, then take the static or the discovery path, then the cache, then the verdict.
pub fn decide(obs: &Observation) -> Decision {
    let old = obs.template.status.cloned().unwrap_or_default();
    if obs.template.paused {
        // T-32: status and children frozen.
        return Decision::Plan(Box::new(Plan {
            status: old,
            create_job: None,
            delete_jobs: Vec::new(),
            requeue_after: None,
            events: Vec::new(),
            waiting_for_slot: false,
        }));
    }
    let mut d = Draft::new(obs, old);
    let model = d.resolve_model();
    let config = d.resolve_config();
    let prepared = match (&model, &config) {
        (Some(m), Some(c)) if !d.static_sources() => {
            let inputs = discovery_inputs(obs, m, c);
            let hash = inputs_hash(&inputs);
            d.adopt_legacy_hash(&legacy_inputs_hash(&inputs), &hash);
            Some((inputs, hash))
        }
        _ => None,
    };
    let results_current = d.results_current(prepared.as_ref().map(|(_, h)| h.as_str()));
    // T-10/T-22: while earlier results stay in use (re-discovery running or failed), so does the
    // hardware they were found for: a service must get the affinity of the profile it runs.
    let discovered = if d.static_sources() {
        None
    } else {
        discovered_hardware(d.old.profile.as_ref())
    };
    let hardware_ok = d.judge_hardware(discovered.as_ref());
    match prepared {
        _ if d.static_sources() => d.static_path(),
        Some((inputs, hash)) if hardware_ok => {
            if let Some(need) = d.discovery_path(&inputs, &hash, results_current) {
                return Decision::Need(need);
            }
        }
        _ => d.blocked_path(results_current),
    }
    d.cache();
    d.override_type();
    Decision::Plan(Box::new(d.finish()))
}

fn discovered_message(st: &ServiceTemplateStatus) -> String {
    let profile = st
        .profile
        .as_ref()
        .and_then(|p| p.get("metadata"))
        .map(|m| {
            ["engine", "gpu", "precision", "metric"]
                .iter()
                .filter_map(|k| m.get(*k).and_then(|v| v.as_str()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "discovery found {} model source(s); profile: {}",
        st.model_sources.len(),
        if profile.is_empty() { "-" } else { &profile }
    )
}
