//! The template state machine (T-01…T-25, T-29…T-32): observations in, plan out.
//!
//! [`decide`] may first answer [`Decision::Need`]: the operator then reads a pod log or asks the
//! discovery queue for a slot, puts the answer in the observation, and decides again.

use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions, transition_events};
use crate::model::{ModelCandidate, ModelResolution, resolve_model};
use crate::runtime_config::{ConfigCandidate, ConfigResolution, resolve_runtime_config};
use aim_api::conditions::{reasons, types};
use aim_api::{
    CachePhase, DiscoveryStatus, JobReference, ServiceTemplateCommon, ServiceTemplateStatus,
    TemplatePhase, TemplateScope,
};
use aim_discovery::{ANNOTATION_INPUTS_HASH, discovery_job, inputs_hash, job_name, parse_dry_run};
use aim_hardware::{
    Availability, DiscoveredHardware, Inventory, availability, hardware_summary, resolve_hardware,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

mod inputs;
mod jobs;
mod results;

use inputs::discovery_inputs;
use jobs::{failed_job_message, image_pull_failure, job_has, pods_of};
use results::{discovered_hardware, static_profile, static_sources};

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
    pub status: Option<&'a ServiceTemplateStatus>,
}

/// The answer of the discovery queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    NotAsked,
    Granted,
    Waiting {
        position: usize,
        active: usize,
        max: usize,
    },
}

/// The log of the current discovery Job's succeeded pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRead {
    NotRead,
    Text(Vec<u8>),
    /// It could not be read (pod gone, …): the reason.
    Unavailable(String),
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
    pub log: LogRead,
    pub log_limit: usize,
    pub slot: Slot,
    /// Phase of the template's AIMTemplateCache, when caching is enabled and it exists (T-27).
    pub cache: Option<CachePhase>,
    /// Where cluster templates run discovery.
    pub operator_namespace: &'a str,
    /// First retry delay after a failed discovery (T-21: 60 s; tests shorten it).
    pub backoff_base: Duration,
    pub now: jiff::Timestamp,
}

/// What the operator must fetch before a plan can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The log of the succeeded pod of this Job (container `discovery`).
    Log { namespace: String, job: String },
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

/// Default first retry delay after a failed discovery (T-21).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Longest retry delay (T-21).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// T-21: the wait after the `attempts`-th failure: `base` × 2^(attempts−1), at most an hour.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 30) - 1).unwrap_or(0);
    base.saturating_mul(1u32 << exp.min(20)).min(MAX_BACKOFF)
}

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

fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Decides what a template's status and discovery Job must be.
pub fn decide(obs: &Observation) -> Decision {
    let t = &obs.template;
    let old = t.status.cloned().unwrap_or_default();
    if t.paused {
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
    let now = Time(obs.now);
    let mut st = old.clone();
    st.observed_generation = t.generation;
    st.discovery = old.discovery.clone();
    let mut conds: Vec<ConditionSpec> = Vec::new();
    let mut blockers = Blockers::default();
    let mut delete_jobs: Vec<(String, String)> = Vec::new();
    let mut create_job = None;
    let mut requeue_after = None;
    let mut waiting_for_slot = false;
    let all_jobs = |keep: Option<&str>| -> Vec<(String, String)> {
        obs.jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| j.metadata.name.as_deref() != keep)
            .map(|j| {
                (
                    j.metadata.namespace.clone().unwrap_or_default(),
                    j.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect()
    };

    // T-01/T-02: the model.
    let model = match resolve_model(
        t.scope,
        t.namespace,
        &t.spec.model_name,
        obs.namespace_model.clone(),
        obs.cluster_model.clone(),
    ) {
        ModelResolution::Found { model, reference } => {
            let what = match &reference.namespace {
                Some(ns) => format!("AIMModel {:?} in namespace {ns:?}", reference.name),
                None => format!("AIMClusterModel {:?}", reference.name),
            };
            conds.push(ConditionSpec::new(
                types::MODEL_FOUND,
                true,
                reasons::MODEL_FOUND,
                format!("{what}, image {}", model.spec.image),
            ));
            st.resolved_model = Some(reference);
            Some(model)
        }
        ModelResolution::NotFound { message } => {
            conds.push(ConditionSpec::new(
                types::MODEL_FOUND,
                false,
                reasons::MODEL_NOT_FOUND,
                message.clone(),
            ));
            blockers.add(TemplatePhase::Failed, reasons::MODEL_NOT_FOUND, message);
            st.resolved_model = None;
            None
        }
    };

    // T-03/T-04: the runtime config.
    let config = match resolve_runtime_config(
        t.scope,
        &t.spec.runtime_config_name,
        obs.namespace_config.clone(),
        obs.cluster_config.clone(),
    ) {
        ConfigResolution::Resolved {
            config,
            reference,
            reason,
            message,
        } => {
            conds.push(ConditionSpec::new(
                types::RUNTIME_CONFIG_READY,
                true,
                reason,
                message,
            ));
            st.resolved_runtime_config = reference;
            Some(config)
        }
        ConfigResolution::NotFound { message } => {
            conds.push(ConditionSpec::new(
                types::RUNTIME_CONFIG_READY,
                false,
                reasons::RUNTIME_CONFIG_NOT_FOUND,
                message.clone(),
            ));
            blockers.add(
                TemplatePhase::Failed,
                reasons::RUNTIME_CONFIG_NOT_FOUND,
                message,
            );
            st.resolved_runtime_config = None;
            None
        }
    };

    let static_mode = !t.spec.model_sources.is_empty();
    let mut events_extra: Vec<PlannedEvent> = Vec::new();

    // Discovery inputs and current results (T-22).
    let prepared = match (&model, &config) {
        (Some(m), Some(c)) if !static_mode => {
            let inputs = discovery_inputs(obs, m, c);
            let hash = inputs_hash(&inputs);
            Some((inputs, hash))
        }
        _ => None,
    };
    let target_changed = prepared.as_ref().is_some_and(|(_, h)| {
        old.discovery
            .as_ref()
            .and_then(|d| d.inputs_hash.as_deref())
            != Some(h.as_str())
    });
    let results_current = !static_mode
        && !target_changed
        && is_true(&old, types::DISCOVERED, reasons::DISCOVERY_COMPLETE);

    // Hardware: spec, overridden by current discovery results (T-10).
    let discovered = if static_mode {
        None
    } else if results_current {
        discovered_hardware(old.profile.as_ref())
    } else {
        None
    };
    let mut hardware_ok = true;
    let evaluate_hardware = |st: &mut ServiceTemplateStatus,
                             conds: &mut Vec<ConditionSpec>,
                             blockers: &mut Blockers,
                             discovered: Option<&DiscoveredHardware>| {
        let resolved = resolve_hardware(t.spec.hardware.as_ref(), discovered);
        st.hardware_summary = resolved.as_ref().map(hardware_summary);
        let verdict = availability(
            resolved.as_ref().and_then(|r| r.gpu.as_ref()),
            obs.inventory,
        );
        st.resolved_hardware = resolved;
        conds.retain(|c| c.type_ != types::HARDWARE_AVAILABLE);
        match verdict {
            Ok(Availability::Available {
                affinity, message, ..
            }) => {
                st.resolved_node_affinity = affinity;
                conds.push(ConditionSpec::new(
                    types::HARDWARE_AVAILABLE,
                    true,
                    reasons::HARDWARE_AVAILABLE,
                    message,
                ));
                true
            }
            Ok(Availability::NotAvailable { reason, message }) => {
                st.resolved_node_affinity = None;
                conds.push(ConditionSpec::new(
                    types::HARDWARE_AVAILABLE,
                    false,
                    reason,
                    message.clone(),
                ));
                blockers.add(TemplatePhase::NotAvailable, reason, message);
                false
            }
            Err(e) => {
                st.resolved_node_affinity = None;
                conds.push(ConditionSpec::new(
                    types::HARDWARE_AVAILABLE,
                    false,
                    e.reason(),
                    e.to_string(),
                ));
                blockers.add(TemplatePhase::Failed, e.reason(), e.to_string());
                false
            }
        }
    };
    hardware_ok &= evaluate_hardware(&mut st, &mut conds, &mut blockers, discovered.as_ref());

    let prerequisites_ok = model.is_some() && config.is_some();
    if static_mode {
        // T-12: static sources, no discovery ever.
        delete_jobs = all_jobs(None);
        st.discovery = None;
        match static_sources(t.spec) {
            Ok(sources) => {
                st.model_sources = sources;
                st.profile = Some(static_profile(t.spec));
                conds.push(ConditionSpec::new(
                    types::DISCOVERED,
                    true,
                    reasons::INLINE_MODEL_SOURCES,
                    format!(
                        "{} model source(s) given in the spec; no discovery runs",
                        t.spec.model_sources.len()
                    ),
                ));
            }
            Err(message) => {
                conds.push(ConditionSpec::new(
                    types::DISCOVERED,
                    false,
                    reasons::DISCOVERY_FAILED,
                    message.clone(),
                ));
                blockers.add(TemplatePhase::Failed, reasons::DISCOVERY_FAILED, message);
            }
        }
    } else if !prerequisites_ok || !hardware_ok {
        // T-02/T-04/T-06: no child objects while the model or config is missing or the hardware absent.
        delete_jobs = all_jobs(None);
        if results_current {
            conds.push(ConditionSpec::new(
                types::DISCOVERED,
                true,
                reasons::DISCOVERY_COMPLETE,
                discovered_message(&old),
            ));
        }
    } else if let Some((inputs, hash)) = &prepared {
        let has_results = old.profile.is_some() || !old.model_sources.is_empty();
        let job_ns = inputs.job_namespace.clone();
        let name = job_name(t.name, hash);
        // T-24: Jobs of older inputs go.
        delete_jobs = obs
            .jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| {
                j.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_INPUTS_HASH))
                    != Some(hash)
            })
            .map(|j| {
                (
                    j.metadata.namespace.clone().unwrap_or_default(),
                    j.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut disc = if target_changed {
            DiscoveryStatus {
                inputs_hash: Some(hash.clone()),
                ..Default::default()
            }
        } else {
            old.discovery.clone().unwrap_or_default()
        };
        disc.queue_position = None;
        let current = obs
            .jobs
            .iter()
            .copied()
            .find(|j| j.metadata.name.as_deref() == Some(name.as_str()));
        // While re-discovering with results in hand, the template stays usable (T-22).
        let pending_phase = |p: TemplatePhase| if has_results { TemplatePhase::Ready } else { p };
        let awaiting = |message: String,
                        phase: TemplatePhase,
                        conds: &mut Vec<ConditionSpec>,
                        blockers: &mut Blockers| {
            let message = if has_results {
                format!("inputs changed; re-discovery is running: {message}")
            } else {
                message
            };
            conds.push(ConditionSpec::new(
                types::DISCOVERED,
                false,
                reasons::AWAITING_DISCOVERY,
                message.clone(),
            ));
            blockers.add(pending_phase(phase), reasons::AWAITING_DISCOVERY, message);
        };
        let failure = |reason_text: String,
                       disc: &mut DiscoveryStatus,
                       conds: &mut Vec<ConditionSpec>,
                       blockers: &mut Blockers,
                       requeue: &mut Option<Duration>| {
            // T-19/T-20: record the failure once, then wait (T-21).
            disc.attempts += 1;
            disc.last_failure = Some(reason_text);
            disc.last_attempt_time = Some(now.clone());
            let wait = backoff(obs.backoff_base, disc.attempts);
            *requeue = Some(wait);
            failed_state(disc, wait, has_results, conds, blockers);
        };

        if results_current {
            conds.push(ConditionSpec::new(
                types::DISCOVERED,
                true,
                reasons::DISCOVERY_COMPLETE,
                discovered_message(&old),
            ));
        } else {
            match current {
                Some(job) if job.metadata.deletion_timestamp.is_some() => {
                    awaiting(
                        "waiting for the previous discovery job to be deleted".into(),
                        TemplatePhase::Pending,
                        &mut conds,
                        &mut blockers,
                    );
                }
                Some(job) if job_has(job, "Complete").is_some() => match &obs.log {
                    LogRead::NotRead => {
                        return Decision::Need(Need::Log {
                            namespace: job_ns,
                            job: name,
                        });
                    }
                    LogRead::Unavailable(why) => {
                        failure(
                            format!("the dry-run log could not be read: {why}"),
                            &mut disc,
                            &mut conds,
                            &mut blockers,
                            &mut requeue_after,
                        );
                        delete_jobs.push((job_ns.clone(), name.clone()));
                    }
                    LogRead::Text(log) => match parse_dry_run(log, obs.log_limit) {
                        Ok(result) => {
                            // T-18
                            st.model_sources = result.model_sources.clone();
                            st.profile = Some(result.profile.clone());
                            disc.attempts = 0;
                            disc.last_failure = None;
                            disc.job = Some(JobReference {
                                name: name.clone(),
                                namespace: job_ns.clone(),
                            });
                            let found = DiscoveredHardware {
                                gpu: result.metadata.gpu.clone(),
                                gpu_count: result.metadata.gpu_count,
                            };
                            blockers.0.retain(|b| b.0 != TemplatePhase::NotAvailable);
                            evaluate_hardware(&mut st, &mut conds, &mut blockers, Some(&found));
                            conds.push(ConditionSpec::new(
                                types::DISCOVERED,
                                true,
                                reasons::DISCOVERY_COMPLETE,
                                discovered_message(&st),
                            ));
                        }
                        Err(e) => {
                            failure(
                                e.to_string(),
                                &mut disc,
                                &mut conds,
                                &mut blockers,
                                &mut requeue_after,
                            );
                            delete_jobs.push((job_ns.clone(), name.clone()));
                        }
                    },
                },
                Some(job) if job_has(job, "Failed").is_some() => {
                    let pods = pods_of(job, &obs.pods);
                    let msg = failed_job_message(job, &pods, inputs.active_deadline_seconds);
                    failure(
                        msg,
                        &mut disc,
                        &mut conds,
                        &mut blockers,
                        &mut requeue_after,
                    );
                    delete_jobs.push((job_ns.clone(), name.clone()));
                }
                Some(job) => {
                    let pods = pods_of(job, &obs.pods);
                    if let Some(msg) = pods
                        .iter()
                        .find_map(|p| image_pull_failure(p, &inputs.image))
                    {
                        // T-20: a job stuck on its image is deleted, which frees its slot.
                        failure(
                            msg,
                            &mut disc,
                            &mut conds,
                            &mut blockers,
                            &mut requeue_after,
                        );
                        delete_jobs.push((job_ns.clone(), name.clone()));
                    } else if pods.iter().any(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    }) {
                        awaiting(
                            format!("dry-run running in job {name}"),
                            TemplatePhase::Progressing,
                            &mut conds,
                            &mut blockers,
                        );
                    } else {
                        awaiting(
                            format!("job {name} created; waiting for its pod to start"),
                            TemplatePhase::Pending,
                            &mut conds,
                            &mut blockers,
                        );
                    }
                }
                None => {
                    let retry_at = match (&disc.last_failure, &disc.last_attempt_time) {
                        (Some(_), Some(at)) if disc.attempts > 0 => {
                            let wait = backoff(obs.backoff_base, disc.attempts);
                            at.0.checked_add(jiff::SignedDuration::from_secs(wait.as_secs() as i64))
                                .ok()
                        }
                        _ => None,
                    };
                    match retry_at {
                        Some(at) if obs.now < at => {
                            failed_state(
                                &disc,
                                backoff(obs.backoff_base, disc.attempts),
                                has_results,
                                &mut conds,
                                &mut blockers,
                            );
                            let left = at.duration_since(obs.now).unsigned_abs();
                            requeue_after = Some(left.max(Duration::from_secs(1)));
                        }
                        _ => match obs.slot {
                            Slot::NotAsked => {
                                return Decision::Need(Need::Slot {
                                    namespace: job_ns,
                                    job: name,
                                });
                            }
                            Slot::Waiting {
                                position,
                                active,
                                max,
                            } => {
                                // T-23
                                waiting_for_slot = true;
                                disc.queue_position =
                                    Some(i32::try_from(position).unwrap_or(i32::MAX));
                                awaiting(
                                    format!(
                                        "waiting for a discovery slot: {active} of {max} running, position {position} in the queue"
                                    ),
                                    TemplatePhase::Pending,
                                    &mut conds,
                                    &mut blockers,
                                );
                            }
                            Slot::Granted => {
                                create_job = Some(discovery_job(inputs, hash));
                                disc.job = Some(JobReference {
                                    name: name.clone(),
                                    namespace: job_ns.clone(),
                                });
                                disc.last_attempt_time = Some(now.clone());
                                awaiting(
                                    format!("job {name} created; waiting for its pod to start"),
                                    TemplatePhase::Pending,
                                    &mut conds,
                                    &mut blockers,
                                );
                                events_extra.push(PlannedEvent {
                                    warning: false,
                                    reason: "DiscoveryStarted".into(),
                                    message: format!("created discovery job {job_ns}/{name}"),
                                });
                            }
                        },
                    }
                }
            }
        }
        st.discovery = Some(disc);
    }

    // T-27: the cache seam (namespace templates with caching).
    if t.caching_enabled && t.scope == TemplateScope::Namespace && !st.model_sources.is_empty() {
        let (ok, reason, phase, message) = match obs.cache {
            Some(CachePhase::Warm) => (
                true,
                reasons::CACHE_WARM,
                None,
                "the model sources are cached",
            ),
            Some(CachePhase::Degraded) => (
                false,
                reasons::CACHE_DEGRADED,
                Some(TemplatePhase::Degraded),
                "the cache is degraded",
            ),
            Some(CachePhase::Failed) => (
                false,
                reasons::CACHE_FAILED,
                Some(TemplatePhase::Degraded),
                "the cache failed",
            ),
            _ => (
                false,
                reasons::WAITING_FOR_CACHE,
                Some(TemplatePhase::Progressing),
                "waiting for the model sources to be cached",
            ),
        };
        conds.push(ConditionSpec::new(types::CACHE_READY, ok, reason, message));
        if let Some(p) = phase {
            blockers.add(p, reason, message);
        }
    }

    // T-29: the worst blocker decides; Ready is True exactly when nothing blocks.
    let (phase, ready) = match blockers.worst() {
        None | Some((TemplatePhase::Ready, _, _)) => (
            TemplatePhase::Ready,
            ConditionSpec::new(
                types::READY,
                true,
                reasons::READY,
                "the template is ready for services",
            ),
        ),
        Some((phase, reason, message)) => (
            *phase,
            ConditionSpec::new(types::READY, false, reason.clone(), message.clone()),
        ),
    };
    conds.push(ready);
    let order = [
        types::MODEL_FOUND,
        types::RUNTIME_CONFIG_READY,
        types::HARDWARE_AVAILABLE,
        types::DISCOVERED,
        types::CACHE_READY,
        types::READY,
    ];
    conds.sort_by_key(|c| order.iter().position(|o| *o == c.type_));
    st.status = phase;
    st.conditions = merge_conditions(&old.conditions, &conds, &now, t.generation);
    let mut events = transition_events(&old.conditions, &st.conditions);
    events.extend(events_extra);
    delete_jobs.sort();
    delete_jobs.dedup();
    Decision::Plan(Box::new(Plan {
        status: st,
        create_job,
        delete_jobs,
        requeue_after,
        events,
        waiting_for_slot,
    }))
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

fn failed_state(
    disc: &DiscoveryStatus,
    wait: Duration,
    has_results: bool,
    conds: &mut Vec<ConditionSpec>,
    blockers: &mut Blockers,
) {
    let at = disc
        .last_attempt_time
        .as_ref()
        .and_then(|t| {
            t.0.checked_add(jiff::SignedDuration::from_secs(wait.as_secs() as i64))
                .ok()
        })
        .map(ts)
        .unwrap_or_default();
    let message = format!(
        "{}; attempt {} failed, next attempt at {at} (after {}s){}",
        disc.last_failure.clone().unwrap_or_default(),
        disc.attempts,
        wait.as_secs(),
        if has_results {
            "; the previous results stay in use"
        } else {
            ""
        }
    );
    conds.push(ConditionSpec::new(
        types::DISCOVERED,
        false,
        reasons::DISCOVERY_FAILED,
        message.clone(),
    ));
    let phase = if has_results {
        TemplatePhase::Degraded
    } else {
        TemplatePhase::Failed
    };
    blockers.add(phase, reasons::DISCOVERY_FAILED, message);
}
