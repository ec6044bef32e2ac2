//! The cache state machine (C-01…C-03, T-28): observations in, plan out.

use super::sources::Draft;
use super::status::{aggregate, downloads_condition, events, ready_condition, volumes_condition};
use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions};
use crate::runtime_config::{ConfigCandidate, ConfigResolution, resolve_runtime_config};
use aim_api::conditions::{reasons, types};
use aim_api::{
    AIMTemplateCacheSpec, CachePhase, CacheSourceState, DEFAULT_HEADROOM_PERCENT,
    ModelSourceStatus, ServiceTemplateCommon, ServiceTemplateStatus, TemplateCacheStatus,
    TemplatePhase, TemplateScope,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The cache being decided on.
#[derive(Debug, Clone)]
pub struct CacheView<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a AIMTemplateCacheSpec,
    pub status: Option<&'a TemplateCacheStatus>,
}

/// A template the cache may refer to, as observed.
#[derive(Debug, Clone)]
pub struct CachedTemplate<'a> {
    pub name: &'a str,
    pub spec: &'a ServiceTemplateCommon,
    pub status: Option<&'a ServiceTemplateStatus>,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct CacheObservation<'a> {
    pub cache: CacheView<'a>,
    /// The AIMServiceTemplate named `spec.templateName` in the cache's namespace.
    pub namespace_template: Option<CachedTemplate<'a>>,
    /// The AIMClusterServiceTemplate of that name.
    pub cluster_template: Option<CachedTemplate<'a>>,
    /// The runtime config the template names, in the cache's namespace and cluster-wide: the volumes
    /// live in the cache's namespace, so its team's config counts, merged over the cluster's.
    pub namespace_config: Option<ConfigCandidate<'a>>,
    pub cluster_config: Option<ConfigCandidate<'a>>,
    /// Cache volumes in the cache's namespace.
    pub volumes: Vec<&'a PersistentVolumeClaim>,
    /// Download Jobs in the cache's namespace, and their pods.
    pub jobs: Vec<&'a Job>,
    pub pods: Vec<&'a Pod>,
    /// Events about those volumes (why a claim does not bind).
    pub volume_events: Vec<&'a Event>,
    /// Volumes and download Jobs (by name) the API server refused to create (quota, admission): why. The
    /// operator sets it after a refused create and decides again.
    pub refused: BTreeMap<String, String>,
    /// `--cache-download-image`.
    pub download_image: &'a str,
    /// First retry delay after a failed download (the discovery backoff: doubles, at most an hour).
    pub backoff_base: Duration,
    pub now: jiff::Timestamp,
}

/// Volumes and Jobs are the two kinds of children a cache shares with other caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKind {
    Volume,
    Job,
}

/// A change of a shared child's owners.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildChange {
    /// Add this cache's owner reference: server-side apply of only that reference with the cache's own
    /// field manager ([`field_manager`]), so no cache removes another's (owner references are a list
    /// keyed by uid).
    Adopt { kind: ChildKind, name: String },
    /// Remove this cache's owner reference, which is at `index` (a JSON patch that first tests the uid
    /// there): the cache no longer needs the child, another cache still does.
    Release {
        kind: ChildKind,
        name: String,
        index: usize,
    },
    /// Delete the child: the cache no longer needs it and is its last owner.
    Delete { kind: ChildKind, name: String },
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePlan {
    /// Written only when it differs from the current status.
    pub status: TemplateCacheStatus,
    /// Volumes to create (server-side apply with the cache's field manager).
    pub create_volumes: Vec<PersistentVolumeClaim>,
    /// Download Jobs to create (the same way).
    pub create_jobs: Vec<Job>,
    /// Download Jobs to delete first: a failed one whose retry is due, one stuck on its image.
    pub delete_jobs: Vec<String>,
    pub children: Vec<ChildChange>,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
    /// Failed download attempts counted by this decision (for metrics).
    pub download_failures: usize,
}

/// The field manager of a cache's writes to shared volumes and Jobs: one per cache.
pub fn field_manager(cache_uid: &str) -> String {
    format!("aim-operator-cache-{cache_uid}")
}

/// The owner reference a cache puts on its volumes and download Jobs: not a controller (several caches
/// share them) and without `blockOwnerDeletion` (nothing waits for them).
pub fn cache_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "aim.eai.amd.com/v1alpha1".into(),
        kind: "AIMTemplateCache".into(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// Which template the cache refers to, and whether its sources can be cached.
enum TemplateUse<'o, 'a> {
    Usable(&'o CachedTemplate<'a>, &'o [ModelSourceStatus]),
    /// Pending: it exists but is not Ready.
    NotReady(String),
    /// Failed: missing, or only in the other scope.
    Missing(&'static str, String),
}

fn kind_of(scope: TemplateScope) -> &'static str {
    match scope {
        TemplateScope::Namespace => "AIMServiceTemplate",
        TemplateScope::Cluster => "AIMClusterServiceTemplate",
    }
}

/// C-01: the template must be Ready. A template that waits only for its own cache (caching enabled:
/// `Progressing` with `WaitingForCache`, `Degraded` with a cache reason) counts as Ready here, or neither
/// could ever become Ready.
fn template_use<'o, 'a>(obs: &'o CacheObservation<'a>) -> TemplateUse<'o, 'a> {
    let spec = obs.cache.spec;
    let name = spec.template_name.as_str();
    let (wanted, other) = match spec.template_scope {
        TemplateScope::Namespace => (&obs.namespace_template, &obs.cluster_template),
        TemplateScope::Cluster => (&obs.cluster_template, &obs.namespace_template),
    };
    let scope = spec.template_scope;
    let Some(t) = wanted else {
        let wanted_where = match scope {
            TemplateScope::Namespace => format!(
                "no AIMServiceTemplate {name:?} in namespace {:?}",
                obs.cache.namespace
            ),
            TemplateScope::Cluster => format!("no AIMClusterServiceTemplate {name:?}"),
        };
        return match other {
            Some(_) => {
                let (other_kind, other_scope) = match scope {
                    TemplateScope::Namespace => ("an AIMClusterServiceTemplate", "Cluster"),
                    TemplateScope::Cluster => {
                        ("an AIMServiceTemplate in this namespace", "Namespace")
                    }
                };
                TemplateUse::Missing(
                    reasons::WRONG_TEMPLATE_SCOPE,
                    format!(
                        "{wanted_where}, but {other_kind} of that name exists: set spec.templateScope to {other_scope} to cache it"
                    ),
                )
            }
            None => TemplateUse::Missing(reasons::CACHE_TEMPLATE_NOT_FOUND, wanted_where),
        };
    };
    let what = format!("{} {name:?}", kind_of(scope));
    let Some(st) = t.status else {
        return TemplateUse::NotReady(format!("{what} has no status yet"));
    };
    let ready = st.conditions.iter().find(|c| c.type_ == types::READY);
    let waits_for_cache = ready.is_some_and(|c| {
        [
            reasons::WAITING_FOR_CACHE,
            reasons::CACHE_DEGRADED,
            reasons::CACHE_FAILED,
        ]
        .contains(&c.reason.as_str())
    });
    let usable = st.status == TemplatePhase::Ready
        || (waits_for_cache
            && matches!(
                st.status,
                TemplatePhase::Progressing | TemplatePhase::Degraded
            ));
    if usable {
        TemplateUse::Usable(t, &st.model_sources)
    } else {
        TemplateUse::NotReady(format!(
            "{what} is {}{}; its model sources are cached once it is Ready",
            st.status,
            ready
                .filter(|c| !c.message.is_empty())
                .map(|c| format!(" ({}: {})", c.reason, c.message))
                .unwrap_or_default()
        ))
    }
}

/// Decides what a cache's volumes, download Jobs and status must be.
pub fn decide_cache(obs: &CacheObservation<'_>) -> CachePlan {
    let c = &obs.cache;
    let old = c.status;
    let mut st = old.cloned().unwrap_or_default();
    st.observed_generation = c.generation;
    let mut d = Draft::new(obs, cache_owner(c.name, c.uid));
    let mut conds: Vec<ConditionSpec> = Vec::new();
    let phase = match template_use(obs) {
        TemplateUse::Missing(reason, message) => {
            conds.push(ConditionSpec::new(
                types::TEMPLATE_READY,
                false,
                reason,
                message,
            ));
            CachePhase::Failed
        }
        TemplateUse::NotReady(message) => {
            conds.push(ConditionSpec::new(
                types::TEMPLATE_READY,
                false,
                reasons::TEMPLATE_NOT_READY,
                message,
            ));
            CachePhase::Pending
        }
        TemplateUse::Usable(t, sources) => {
            let kind = kind_of(c.spec.template_scope);
            conds.push(ConditionSpec::new(
                types::TEMPLATE_READY,
                true,
                reasons::TEMPLATE_READY,
                format!(
                    "{kind} {:?} is Ready with {} model source(s)",
                    t.name,
                    sources.len()
                ),
            ));
            let config = match resolve_runtime_config(
                TemplateScope::Namespace,
                &t.spec.runtime_config_name,
                obs.namespace_config.clone(),
                obs.cluster_config.clone(),
            ) {
                ConfigResolution::Resolved { config, .. } => Some(config),
                ConfigResolution::NotFound { .. } => None,
            };
            // C-02: the cache's class, else the runtime config's, else none (the cluster default).
            let storage_class = c
                .spec
                .storage_class_name
                .as_deref()
                .filter(|s| !s.is_empty())
                .or_else(|| {
                    config
                        .as_ref()
                        .and_then(|c| c.storage_class_name.as_deref())
                });
            let headroom = config
                .as_ref()
                .map_or(DEFAULT_HEADROOM_PERCENT, |c| c.headroom_percent);
            let mut out = Vec::with_capacity(sources.len());
            for src in sources {
                let prior = old.and_then(|o| o.sources.iter().find(|s| s.source == src.source));
                out.push(d.source(t, src, prior, &c.spec.env, storage_class, headroom));
            }
            let needed: BTreeSet<String> = sources
                .iter()
                .filter(|s| s.size_bytes.is_some())
                .map(|s| super::volume::source_hash(&s.source))
                .collect();
            d.release_unneeded(&needed);
            st.sources = out;
            conds.push(volumes_condition(&d.volumes));
            conds.push(downloads_condition(&st.sources));
            let states: Vec<CacheSourceState> = st.sources.iter().map(|s| s.state).collect();
            aggregate(&states)
        }
    };
    st.status = phase;
    conds.push(ready_condition(phase, &conds));
    let now = Time(obs.now);
    st.conditions = merge_conditions(
        old.map(|o| o.conditions.as_slice()).unwrap_or_default(),
        &conds,
        &now,
        c.generation,
    );
    let events = events(old, &st, &d.started, &d.failures);
    d.delete_jobs.sort();
    d.delete_jobs.dedup();
    CachePlan {
        status: st,
        create_volumes: d.create_volumes,
        create_jobs: d.create_jobs,
        delete_jobs: d.delete_jobs,
        children: d.children.into_iter().collect(),
        events,
        requeue_after: d.requeue_after,
        download_failures: d.failures.len(),
    }
}
