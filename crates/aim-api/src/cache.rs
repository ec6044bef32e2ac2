//! AIMTemplateCache: model sources of a template, downloaded onto volumes in a namespace.

use crate::common::TemplateScope;
use crate::template::JobReference;
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Caches the model sources of one template into this namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMTemplateCache",
    namespaced,
    status = "TemplateCacheStatus",
    shortname = "aimtc",
    category = "aim",
    derive = "PartialEq",
    doc = "Downloads the model sources of one AIM template onto volumes in this namespace.",
    printcolumn(name = "Template", type_ = "string", json_path = ".spec.templateName"),
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.templateScope"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AIMTemplateCacheSpec {
    /// Name of the template whose sources are cached.
    #[schemars(length(min = 1))]
    pub template_name: String,
    /// `Namespace` (an AIMServiceTemplate here) or `Cluster` (an AIMClusterServiceTemplate). Defaults to `Namespace`.
    #[serde(default)]
    pub template_scope: TemplateScope,
    /// Env for the downloads, typically credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// Storage class of the volumes; overrides the runtime config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// One-word state of a cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CachePhase {
    #[default]
    Pending,
    Warming,
    Warm,
    Degraded,
    Failed,
}

crate::common::str_enum!(CachePhase {
    Pending => "Pending", Warming => "Warming", Warm => "Warm", Degraded => "Degraded", Failed => "Failed",
});

/// State of one cached source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CacheSourceState {
    #[default]
    Pending,
    Downloading,
    Ready,
    Failed,
}

crate::common::str_enum!(CacheSourceState {
    Pending => "Pending", Downloading => "Downloading", Ready => "Ready", Failed => "Failed",
});

/// Observed state of a cache.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateCacheStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Warming`, `Warm`, `Degraded` or `Failed`.
    #[serde(default)]
    pub status: CachePhase,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Per model source: its volume and download state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<CachedSource>,
}

/// A cached model source.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CachedSource {
    /// Name of the source.
    pub name: String,
    /// URI of the source.
    pub source: String,
    /// PersistentVolumeClaim holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Download state.
    #[serde(default)]
    pub state: CacheSourceState,
    /// Details, e.g. why the download failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failed download attempts since the source was last Ready.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i32,
    /// When the next download may start, while waiting out the backoff after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The download Job whose failure was counted last (with its uid, so one Job counts once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_job: Option<JobReference>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}
