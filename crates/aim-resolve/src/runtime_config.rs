//! T-03/T-04: the runtime config a template uses, merged namespace-over-cluster.

use aim_api::{
    DEFAULT_DISCOVERY_DEADLINE_SECONDS, DEFAULT_HEADROOM_PERCENT, DEFAULT_RUNTIME_CONFIG_NAME,
    ReferenceScope, ResolvedReference, RuntimeConfigCommon, TemplateScope,
};
use k8s_openapi::api::core::v1::EnvVar;

/// A runtime config object as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCandidate<'a> {
    pub name: &'a str,
    /// `Some` for an AIMRuntimeConfig, `None` for an AIMClusterRuntimeConfig.
    pub namespace: Option<&'a str>,
    pub uid: Option<&'a str>,
    pub spec: &'a RuntimeConfigCommon,
}

/// The effective runtime settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveConfig {
    /// Cluster env, overridden by namespace env of the same name (namespace order after cluster order).
    pub env: Vec<EnvVar>,
    pub storage_class_name: Option<String>,
    pub headroom_percent: i32,
    pub discovery_deadline_seconds: i64,
    /// Resources of the dry-run pod; `None`: the discovery crate's default.
    pub discovery_resources: Option<Box<k8s_openapi::api::core::v1::ResourceRequirements>>,
}

/// The outcome of runtime-config resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigResolution {
    /// Found (reference set) or the default is absent (reference `None`, built-in defaults).
    Resolved {
        config: EffectiveConfig,
        reference: Option<ResolvedReference>,
        reason: &'static str,
        message: String,
    },
    /// A named config that does not exist.
    NotFound { message: String },
}

fn merge_env(base: &[EnvVar], over: &[EnvVar]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = base
        .iter()
        .filter(|e| !over.iter().any(|o| o.name == e.name))
        .cloned()
        .collect();
    out.extend(over.iter().cloned());
    out
}

/// Namespace template: AIMRuntimeConfig in its namespace merged over the AIMClusterRuntimeConfig of the same
/// name (namespace wins, env merged by name). Cluster template: only the AIMClusterRuntimeConfig.
pub fn resolve_runtime_config(
    scope: TemplateScope,
    name: &str,
    namespace_config: Option<ConfigCandidate<'_>>,
    cluster_config: Option<ConfigCandidate<'_>>,
) -> ConfigResolution {
    let namespace_config = if scope == TemplateScope::Namespace {
        namespace_config
    } else {
        None
    };
    let mut config = EffectiveConfig {
        env: Vec::new(),
        storage_class_name: None,
        headroom_percent: DEFAULT_HEADROOM_PERCENT,
        discovery_deadline_seconds: DEFAULT_DISCOVERY_DEADLINE_SECONDS,
        discovery_resources: None,
    };
    for c in cluster_config.iter().chain(namespace_config.iter()) {
        config.env = merge_env(&config.env, &c.spec.env);
        if let Some(s) = &c.spec.storage {
            if let Some(class) = &s.storage_class_name {
                config.storage_class_name = Some(class.clone());
            }
            if let Some(h) = s.headroom_percent {
                config.headroom_percent = h;
            }
        }
        if let Some(d) = c
            .spec
            .discovery
            .as_ref()
            .and_then(|d| d.active_deadline_seconds)
        {
            config.discovery_deadline_seconds = d;
        }
        if let Some(r) = c.spec.discovery.as_ref().and_then(|d| d.resources.as_ref()) {
            config.discovery_resources = Some(Box::new(r.clone()));
        }
    }
    let reference = match (&namespace_config, &cluster_config) {
        (Some(ns), cluster) => Some(ResolvedReference {
            name: name.to_string(),
            namespace: ns.namespace.map(str::to_string),
            scope: if cluster.is_some() {
                ReferenceScope::Merged
            } else {
                ReferenceScope::Namespace
            },
            kind: "AIMRuntimeConfig".into(),
            uid: ns.uid.map(str::to_string),
        }),
        (None, Some(c)) => Some(ResolvedReference {
            name: name.to_string(),
            namespace: None,
            scope: ReferenceScope::Cluster,
            kind: "AIMClusterRuntimeConfig".into(),
            uid: c.uid.map(str::to_string),
        }),
        (None, None) => None,
    };
    match (&namespace_config, &cluster_config) {
        (Some(ns), Some(_)) => ConfigResolution::Resolved {
            config,
            reference,
            reason: aim_api::conditions::reasons::RUNTIME_CONFIG_FOUND,
            message: format!(
                "AIMRuntimeConfig {name:?} of namespace {:?} merged over AIMClusterRuntimeConfig {name:?}",
                ns.namespace.unwrap_or_default()
            ),
        },
        (Some(ns), None) => ConfigResolution::Resolved {
            config,
            reference,
            reason: aim_api::conditions::reasons::RUNTIME_CONFIG_FOUND,
            message: format!(
                "AIMRuntimeConfig {name:?} of namespace {:?}",
                ns.namespace.unwrap_or_default()
            ),
        },
        (None, Some(_)) => ConfigResolution::Resolved {
            config,
            reference,
            reason: aim_api::conditions::reasons::RUNTIME_CONFIG_FOUND,
            message: format!("AIMClusterRuntimeConfig {name:?}"),
        },
        (None, None) if name == DEFAULT_RUNTIME_CONFIG_NAME => ConfigResolution::Resolved {
            config,
            reference: None,
            reason: aim_api::conditions::reasons::DEFAULT_CONFIG_NOT_FOUND,
            message: "no runtime config named \"default\"; built-in defaults apply".into(),
        },
        (None, None) => ConfigResolution::NotFound {
            message: match scope {
                TemplateScope::Namespace => {
                    format!(
                        "no AIMRuntimeConfig {name:?} in the template's namespace and no AIMClusterRuntimeConfig {name:?}"
                    )
                }
                TemplateScope::Cluster => format!("no AIMClusterRuntimeConfig {name:?}"),
            },
        },
    }
}
