//! AIMServiceTemplate (namespaced) and AIMClusterServiceTemplate (cluster-wide).

use crate::common::{
    Hardware, Metric, Precision, ResolvedHardware, ResolvedReference, TemplateType,
};
use crate::source::{ModelSource, ModelSourceStatus};
use k8s_openapi::api::core::v1::{
    EnvVar, LocalObjectReference, NodeAffinity, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the runtime config a template uses when it names none.
pub const DEFAULT_RUNTIME_CONFIG_NAME: &str = "default";

fn default_runtime_config_name() -> String {
    DEFAULT_RUNTIME_CONFIG_NAME.to_string()
}

/// Rule: a runtime parameter may be set once, then neither changed nor removed.
fn immutable_once_set(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!has(oldSelf.{field}) || (has(self.{field}) && self.{field} == oldSelf.{field})"
    ))
    .message(kube::core::Message::Message(format!(
        "{field} is immutable once set"
    )))
    .field_path(format!(".{field}"))
}

/// Fields both template kinds share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplateCommon {
    /// Name of the AIMModel (namespace templates; else the AIMClusterModel of that name) or AIMClusterModel
    /// (cluster templates) whose image this template runs. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("modelName is immutable"))]
    #[schemars(length(min = 1))]
    pub model_name: String,
    /// Runtime config supplying env, storage and discovery settings. Defaults to `default`.
    #[serde(default = "default_runtime_config_name")]
    pub runtime_config_name: String,
    /// Optimisation goal: `latency` or `throughput`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Numeric precision. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// GPU and CPU requirements per replica. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
    /// Secrets for pulling the image, for discovery and inference pods. They must exist where the pods run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Service account of discovery and inference pods; empty means the namespace default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Container resources; they override the model's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Static model sources. When non-empty no discovery runs and these are used as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_sources: Vec<ModelSource>,
    /// Profile to select in the image, passed to the dry-run as `AIM_PROFILE_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    /// Overrides the discovered profile type: `optimized`, `preview` or `unoptimized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<TemplateType>,
}

impl ServiceTemplateCommon {
    /// A template for `model_name` with every optional field unset.
    pub fn for_model(model_name: impl Into<String>) -> Self {
        Self {
            model_name: model_name.into(),
            runtime_config_name: default_runtime_config_name(),
            metric: None,
            precision: None,
            hardware: None,
            image_pull_secrets: Vec::new(),
            service_account_name: None,
            resources: None,
            model_sources: Vec::new(),
            profile_id: None,
            r#type: None,
        }
    }
}

/// A namespaced service template: how to run a model (metric, precision, GPUs) and the cache of
/// what its discovery found. ML teams use these with their own secrets and model caching.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMServiceTemplate",
    namespaced,
    status = "ServiceTemplateStatus",
    shortname = "aimtpl",
    category = "aim",
    derive = "PartialEq",
    doc = "A namespaced AIM service template: a runtime profile for a model and the cache of its discovery.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.modelName"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Hardware",
        type_ = "string",
        json_path = ".status.hardwareSummary"
    ),
    printcolumn(
        name = "Metric",
        type_ = "string",
        json_path = ".status.profile.metadata.metric"
    ),
    printcolumn(
        name = "Precision",
        type_ = "string",
        json_path = ".status.profile.metadata.precision"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = immutable_once_set("metric"))]
#[x_kube(validation = immutable_once_set("precision"))]
#[x_kube(validation = immutable_once_set("hardware"))]
pub struct AIMServiceTemplateSpec {
    #[serde(flatten)]
    pub common: ServiceTemplateCommon,
    /// Env for discovery and downloads, typically credentials (`valueFrom.secretKeyRef`).
    /// Later entries of the same name win over runtime-config and model env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// Model caching for this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching: Option<TemplateCaching>,
}

/// A cluster-wide service template, maintained by platform teams. Discovery runs in the operator namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMClusterServiceTemplate",
    status = "ServiceTemplateStatus",
    shortname = "aimcltpl",
    category = "aim",
    derive = "PartialEq",
    doc = "A cluster-wide AIM service template: a runtime profile for a cluster model and the cache of its discovery.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.modelName"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Hardware",
        type_ = "string",
        json_path = ".status.hardwareSummary"
    ),
    printcolumn(
        name = "Metric",
        type_ = "string",
        json_path = ".status.profile.metadata.metric"
    ),
    printcolumn(
        name = "Precision",
        type_ = "string",
        json_path = ".status.profile.metadata.precision"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = immutable_once_set("metric"))]
#[x_kube(validation = immutable_once_set("precision"))]
#[x_kube(validation = immutable_once_set("hardware"))]
pub struct AIMClusterServiceTemplateSpec {
    #[serde(flatten)]
    pub common: ServiceTemplateCommon,
}

/// Caching settings of a namespace template.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateCaching {
    /// Cache the model sources into this namespace (an AIMTemplateCache of the same name).
    #[serde(default)]
    pub enabled: bool,
    /// Env for the downloads; when unset the template's `env` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
}

/// One-word state of a template.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum TemplatePhase {
    #[default]
    Pending,
    Progressing,
    NotAvailable,
    Ready,
    Degraded,
    Failed,
}

crate::common::str_enum!(TemplatePhase {
    Pending => "Pending", Progressing => "Progressing", NotAvailable => "NotAvailable",
    Ready => "Ready", Degraded => "Degraded", Failed => "Failed",
});

/// Observed state of a template (both scopes).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplateStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Progressing`, `NotAvailable`, `Ready`, `Degraded` or `Failed`.
    #[serde(default)]
    pub status: TemplatePhase,
    /// `ModelFound`, `RuntimeConfigReady`, `HardwareAvailable`, `Discovered`, `CacheReady` (with caching), `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The model the template resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_model: Option<ResolvedReference>,
    /// The runtime config the template resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_runtime_config: Option<ResolvedReference>,
    /// GPU/CPU requirements after discovery (discovered values win over the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_hardware: Option<ResolvedHardware>,
    /// Node affinity that inference pods of this template get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_node_affinity: Option<NodeAffinity>,
    /// Short hardware description, e.g. `2 x MI300X`, `1 x GPU`, `CPU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_summary: Option<String>,
    /// Model artifacts: discovered, or copied from the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_sources: Vec<ModelSourceStatus>,
    /// The complete profile of the dry-run result, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::free_form_object")]
    pub profile: Option<serde_json::Value>,
    /// Discovery bookkeeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryStatus>,
}

/// Discovery bookkeeping of a template.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryStatus {
    /// The current or last discovery Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobReference>,
    /// Failed attempts for the current inputs.
    #[serde(default)]
    pub attempts: i32,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next attempt may start, while waiting out the backoff after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Hash of every discovery input; a change starts a new discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_hash: Option<String>,
    /// Place in the cluster-wide discovery queue while waiting for a slot (1 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
}

/// Name and namespace of a Job.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobReference {
    pub name: String,
    pub namespace: String,
    /// UID of the Job whose failure `lastFailure` records, so one failed Job is counted once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}
