//! The cache decision (C-01…C-03, T-28): which template the cache refers to, then the steps of
//! [`Draft`] from its sources to the plan.

use super::plan::{CacheObservation, CachePlan, CachedTemplate, cache_owner};
use super::sources::Draft;
use super::status::{aggregate, downloads_condition, events, ready_condition, volumes_condition};
use crate::conditions::{ConditionSpec, merge_conditions};
use crate::runtime_config::{ConfigResolution, resolve_runtime_config};
use aim_api::conditions::{reasons, types};
use aim_api::{
    CachePhase, CacheSourceState, DEFAULT_HEADROOM_PERCENT, ModelSourceStatus, TemplatePhase,
    TemplateScope,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeSet;

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
