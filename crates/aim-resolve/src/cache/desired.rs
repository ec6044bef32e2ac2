//! T-26…T-28, the template's side: which AIMTemplateCache a namespace template owns, what to do about
//! the one that exists, and what its phase means for the template.

use aim_api::{
    AIMServiceTemplateSpec, AIMTemplateCache, AIMTemplateCacheSpec, CachePhase,
    ServiceTemplateStatus, TemplateScope, labels,
};
use aim_discovery::TEMPLATE_API_VERSION;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;

/// The AIMTemplateCache a template with caching owns.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredCache {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Controller owner reference to the template (deleting the template deletes the cache).
    pub owner: OwnerReference,
    pub spec: AIMTemplateCacheSpec,
}

/// T-26: the cache a namespace template owns: of the template's name, scope `Namespace`, env =
/// `caching.env` when set, else the template's `env`; `None` unless caching is enabled and the model
/// sources are known (`status` is the one just decided). Cluster templates have no such function (T-28):
/// they never own a cache.
pub fn desired_cache(
    name: &str,
    namespace: &str,
    uid: &str,
    spec: &AIMServiceTemplateSpec,
    status: &ServiceTemplateStatus,
) -> Option<DesiredCache> {
    let caching = spec.caching.as_ref().filter(|c| c.enabled)?;
    if status.model_sources.is_empty() {
        return None;
    }
    let env = caching.env.clone().unwrap_or_else(|| spec.env.clone());
    Some(DesiredCache {
        name: name.to_string(),
        namespace: namespace.to_string(),
        labels: BTreeMap::from([
            (labels::TEMPLATE.to_string(), template_label(name)),
            (
                labels::MANAGED_BY.to_string(),
                labels::MANAGED_BY_VALUE.to_string(),
            ),
        ]),
        owner: OwnerReference {
            api_version: TEMPLATE_API_VERSION.to_string(),
            kind: "AIMServiceTemplate".into(),
            name: name.to_string(),
            uid: uid.to_string(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        spec: AIMTemplateCacheSpec {
            template_name: name.to_string(),
            template_scope: TemplateScope::Namespace,
            env,
            storage_class_name: None,
        },
    })
}

fn template_label(name: &str) -> String {
    aim_discovery::template_label_value(name)
}

/// The cache of the template's name as it exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExistingCache<'a> {
    /// UID of its controller owner, if any.
    pub controller_uid: Option<&'a str>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub spec: &'a AIMTemplateCacheSpec,
}

/// What the template controller does about its cache.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheAction {
    /// Nothing: it is as it should be, or it is someone else's.
    Keep,
    /// Create or update it (server-side apply).
    Apply(Box<DesiredCache>),
    /// Delete the cache of the template's name: the template controls it and no longer wants it.
    Delete,
}

/// T-26: apply the desired cache when it is missing or differs (a later edit of `caching.env` reaches
/// it), delete the one the template controls when none is desired (caching turned off), and never touch
/// a cache of that name that the template does not control (someone made it by hand).
pub fn template_cache_action(
    template_uid: &str,
    desired: Option<DesiredCache>,
    existing: Option<ExistingCache<'_>>,
) -> CacheAction {
    match (desired, existing) {
        (Some(_), Some(e)) if e.controller_uid != Some(template_uid) => CacheAction::Keep,
        // Only what the template sets counts: a storage class someone gave the cache stays.
        (Some(d), Some(e))
            if e.spec.template_name == d.spec.template_name
                && e.spec.template_scope == d.spec.template_scope
                && e.spec.env == d.spec.env
                && d.labels
                    .iter()
                    .all(|(k, v)| e.labels.and_then(|l| l.get(k)) == Some(v)) =>
        {
            CacheAction::Keep
        }
        (Some(d), _) => CacheAction::Apply(Box::new(d)),
        (None, Some(e)) if e.controller_uid == Some(template_uid) => CacheAction::Delete,
        (None, _) => CacheAction::Keep,
    }
}

/// T-27: the phase the template mirrors: that of the cache of its name in its namespace, when that cache
/// caches this template (scope `Namespace`, same name) and has a status.
pub fn cache_phase_for_template(
    template_name: &str,
    cache: Option<&AIMTemplateCache>,
) -> Option<CachePhase> {
    let c = cache?;
    (c.spec.template_scope == TemplateScope::Namespace && c.spec.template_name == template_name)
        .then(|| c.status.as_ref().map(|s| s.status))
        .flatten()
}
