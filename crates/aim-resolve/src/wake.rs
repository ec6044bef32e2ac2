//! Wake rules: which templates, caches and services a change of another object must reconcile again.
//!
//! Each rule mirrors a resolution rule of this crate and must agree with it: a change that can alter
//! what a decision reads wakes that decision, and nothing else does (the table tests in
//! `tests/wake.rs` pair each rule with the resolution it mirrors). The operator only iterates its
//! stores and asks these functions.
//!
//! | change of | wakes | mirrors |
//! |---|---|---|
//! | AIMModel / AIMClusterModel | templates naming it in scope ([`model_wakes_template`]) | [`crate::resolve_model`] (T-02) |
//! | AIMRuntimeConfig / AIMClusterRuntimeConfig | templates naming it in scope ([`config_wakes_template`]) | [`crate::resolve_runtime_config`] (T-03, T-04) |
//! | a runtime config | caches whose template names it ([`config_wakes_cache`]) | [`cache_config_name`] and the cache plan (C-02) |
//! | a template | caches naming it ([`template_wakes_cache`]) | the cache's template lookup (C-01, T-28) |
//! | a volume, download Job or pod | caches owning or listing it ([`child_wakes_cache`]) | the cache plan's children (C-02, C-03) |
//! | a Node | templates that need a GPU, when the GPU inventory changed ([`node_wakes_template`]) | availability (T-11) |
//! | a model, template, config or cache | services in its namespace, every service for a cluster kind ([`wakes_service`]) | service gather (S-01…S-06) |

use aim_api::{ServiceTemplateCommon, ServiceTemplateStatus, TemplateScope};

/// An object that changed, by namespace (`None`: a cluster-scoped kind) and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed<'a> {
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

impl<'a> Changed<'a> {
    pub fn new(namespace: Option<&'a str>, name: &'a str) -> Self {
        Self { namespace, name }
    }
}

/// The lookup rule shared by models and runtime configs: a namespace template reads the object of
/// that name in its own namespace and the cluster object of that name; a cluster template only the
/// cluster object.
fn read_in_scope(
    changed: Changed<'_>,
    scope: TemplateScope,
    namespace: Option<&str>,
    wanted: &str,
) -> bool {
    changed.name == wanted
        && match (changed.namespace, scope) {
            (None, _) => true,
            (Some(ns), TemplateScope::Namespace) => namespace == Some(ns),
            (Some(_), TemplateScope::Cluster) => false,
        }
}

/// T-02: a model change wakes the templates whose `modelName` may resolve to it.
pub fn model_wakes_template(
    model: Changed<'_>,
    scope: TemplateScope,
    template_namespace: Option<&str>,
    template: &ServiceTemplateCommon,
) -> bool {
    read_in_scope(model, scope, template_namespace, &template.model_name)
}

/// T-03/T-04: a runtime config change wakes the templates whose `runtimeConfigName` may resolve to it.
pub fn config_wakes_template(
    config: Changed<'_>,
    scope: TemplateScope,
    template_namespace: Option<&str>,
    template: &ServiceTemplateCommon,
) -> bool {
    read_in_scope(
        config,
        scope,
        template_namespace,
        &template.runtime_config_name,
    )
}

/// T-11: a Node change wakes the templates that need a GPU (by spec or as resolved), and only when it
/// altered the GPU inventory (`inventory_changed`, from [`aim_hardware::alters_gpu_inventory`]).
pub fn node_wakes_template(
    inventory_changed: bool,
    spec: &ServiceTemplateCommon,
    status: Option<&ServiceTemplateStatus>,
) -> bool {
    inventory_changed && crate::children::wakes_on_gpu_change(spec, status)
}

/// The runtime config a cache reads (C-02): the one its template names, from the template of the
/// cache's scope; the default config's name while that template is missing.
pub fn cache_config_name<'a>(
    scope: TemplateScope,
    namespace_template: Option<&'a ServiceTemplateCommon>,
    cluster_template: Option<&'a ServiceTemplateCommon>,
) -> &'a str {
    match scope {
        TemplateScope::Namespace => namespace_template,
        TemplateScope::Cluster => cluster_template,
    }
    .map(|t| t.runtime_config_name.as_str())
    .unwrap_or(aim_api::DEFAULT_RUNTIME_CONFIG_NAME)
}

/// C-02: a runtime config change wakes a cache (in `cache_namespace`) whose template names it
/// (`config_name`, from [`cache_config_name`]). A cache lives in a namespace, so its team's config
/// counts, merged over the cluster's, whatever the template's scope.
pub fn config_wakes_cache(config: Changed<'_>, cache_namespace: &str, config_name: &str) -> bool {
    read_in_scope(
        config,
        TemplateScope::Namespace,
        Some(cache_namespace),
        config_name,
    )
}

/// C-01/T-28: a template change wakes the caches that name it: a cache reads the template of its
/// `templateName` in its own namespace and the cluster template of that name (and says so when the
/// scope it asks for is the other one).
pub fn template_wakes_cache(
    template_scope: TemplateScope,
    template_namespace: Option<&str>,
    template_name: &str,
    cache_namespace: &str,
    cache_template_name: &str,
) -> bool {
    template_name == cache_template_name
        && match template_scope {
            TemplateScope::Cluster => true,
            TemplateScope::Namespace => template_namespace == Some(cache_namespace),
        }
}

/// C-02/C-03: a volume, download Job or download pod (in `namespace`) wakes the caches of that
/// namespace that own it (`owner_uids`: the UIDs of its AIMTemplateCache owners) or list its volume
/// (`volume`) among their sources (`cache_volumes`).
pub fn child_wakes_cache<'v>(
    namespace: &str,
    owner_uids: &[&str],
    volume: Option<&str>,
    cache_namespace: &str,
    cache_uid: Option<&str>,
    mut cache_volumes: impl Iterator<Item = &'v str>,
) -> bool {
    namespace == cache_namespace
        && (cache_uid.is_some_and(|u| owner_uids.contains(&u))
            || volume.is_some_and(|v| cache_volumes.any(|c| c == v)))
}

/// S-01…S-06: a service reads the models, templates, runtime configs and caches of its own namespace
/// and every cluster-scoped one; a change of any of them wakes the services that read it.
pub fn wakes_service(changed_namespace: Option<&str>, service_namespace: &str) -> bool {
    changed_namespace.is_none_or(|ns| ns == service_namespace)
}
