//! AIMRuntimeConfig (namespaced) and AIMClusterRuntimeConfig (cluster-wide): env, storage and discovery
//! settings shared by templates. Read only by the operator.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default extra room on cache volumes, in percent.
pub const DEFAULT_HEADROOM_PERCENT: i32 = 10;
/// Default upper bound of one dry-run, in seconds.
pub const DEFAULT_DISCOVERY_DEADLINE_SECONDS: i64 = 600;

/// Fields both runtime-config kinds share.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfigCommon {
    /// Env added to discovery and inference pods; template env wins on name clashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// Defaults for cache volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageConfig>,
    /// Discovery settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryConfig>,
}

/// Defaults for cache volumes.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageConfig {
    /// Storage class of cache volumes; unset means the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Extra room on cache volumes, in percent of the sources' size. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub headroom_percent: Option<i32>,
}

/// Discovery settings.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryConfig {
    /// Upper bound of one dry-run, in seconds. Defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Container resources of the dry-run pod. Unset: requests of 250m CPU and 1Gi memory and a 4Gi
    /// memory limit (a real dry-run loads Python and the engine's configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Namespaced runtime config; merged over the cluster runtime config of the same name.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMRuntimeConfig",
    namespaced,
    status = "RuntimeConfigStatus",
    shortname = "aimrc",
    category = "aim",
    derive = "PartialEq",
    doc = "Namespaced runtime settings (env, storage, discovery) for AIM templates, merged over the cluster config of the same name.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct AIMRuntimeConfigSpec {
    #[serde(flatten)]
    pub common: RuntimeConfigCommon,
}

/// Cluster-wide runtime config.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMClusterRuntimeConfig",
    status = "RuntimeConfigStatus",
    shortname = "aimclrc",
    category = "aim",
    derive = "PartialEq",
    doc = "Cluster-wide runtime settings (env, storage, discovery) for AIM templates.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct AIMClusterRuntimeConfigSpec {
    #[serde(flatten)]
    pub common: RuntimeConfigCommon,
}

/// Observed state of a runtime config.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfigStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One-word state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
