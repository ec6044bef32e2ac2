//! AIMModel (namespaced) and AIMClusterModel (cluster-wide): an AIM container image and how to discover it.

use crate::common::{Metric, Precision};
use crate::template::TemplatePhase;
use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Image label holding the recommended deployments.
pub const RECOMMENDED_DEPLOYMENTS_LABEL: &str = "com.amd.aim.model.recommendedDeployments";
/// The same label as older images spell it.
pub const RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY: &str =
    "org.amd.silogen.model.recommendedDeployments";

fn yes() -> bool {
    true
}

/// Fields both model kinds share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCommon {
    /// The AIM container image, e.g. `amdenterpriseai/aim-qwen-qwen3-32b:0.8.5`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Pull secrets used for discovery when the template sets none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Service account used for discovery when the template sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Env added to discovery pods (before template env).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// What the model controller discovers from the image.
    #[serde(default)]
    pub discovery: ModelDiscovery,
    /// Inline image metadata; when set the registry is not contacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_metadata: Option<ImageMetadata>,
}

/// What the model controller discovers from the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDiscovery {
    /// Read the image's labels from its registry. Defaults to true.
    #[serde(default = "yes")]
    pub extract_metadata: bool,
    /// Create a template per recommended deployment. Defaults to true.
    #[serde(default = "yes")]
    pub create_service_templates: bool,
}

impl Default for ModelDiscovery {
    fn default() -> Self {
        Self {
            extract_metadata: true,
            create_service_templates: true,
        }
    }
}

/// Metadata of an AIM image.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageMetadata {
    /// Image config labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Deployments the image recommends; one template is created per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommended_deployments: Vec<RecommendedDeployment>,
}

/// A deployment an image recommends.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendedDeployment {
    /// GPU model, e.g. `MI300X`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// GPUs per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A namespaced AIM model: a container image serving one LLM.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMModel",
    namespaced,
    status = "ModelStatus",
    shortname = "aimmdl",
    category = "aim",
    derive = "PartialEq",
    doc = "A namespaced AIM model: the container image that serves one LLM on AMD GPUs.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct AIMModelSpec {
    #[serde(flatten)]
    pub common: ModelCommon,
}

/// A cluster-wide AIM model, usable by cluster templates and by namespace templates everywhere.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMClusterModel",
    status = "ModelStatus",
    shortname = "aimclmdl",
    category = "aim",
    derive = "PartialEq",
    doc = "A cluster-wide AIM model: the container image that serves one LLM on AMD GPUs.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct AIMClusterModelSpec {
    #[serde(flatten)]
    pub common: ModelCommon,
}

/// One-word state of a model: the aggregate of its templates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ModelPhase {
    #[default]
    Pending,
    Progressing,
    Ready,
    Degraded,
    NotAvailable,
    Failed,
}

crate::common::str_enum!(ModelPhase {
    Pending => "Pending", Progressing => "Progressing", Ready => "Ready",
    Degraded => "Degraded", NotAvailable => "NotAvailable", Failed => "Failed",
});

/// Observed state of a model.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Aggregate of the model's templates.
    #[serde(default)]
    pub status: ModelPhase,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Metadata read from the registry, cached for `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_metadata: Option<ObservedImageMetadata>,
    /// Reading the image's metadata from its registry: attempts and the last failure (M-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryReadStatus>,
    /// The templates this model created, with their status (M-02, M-04).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub templates: Vec<ModelTemplateStatus>,
}

/// Attempts to read an image's metadata from its registry.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryReadStatus {
    /// Image reference the attempts were for.
    pub image: String,
    /// Failed attempts in a row for this reference.
    #[serde(default)]
    pub attempts: i32,
    /// When the last attempt was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next attempt is due (while backing off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// A template a model created, and its status.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelTemplateStatus {
    /// Template name (same namespace as an AIMModel; cluster-wide for an AIMClusterModel).
    pub name: String,
    /// The template's status (`Pending` until it has one).
    pub status: TemplatePhase,
}

/// Registry metadata and the image reference it was read for.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedImageMetadata {
    /// Image reference the metadata was read for.
    pub image: String,
    /// Digest of the image manifest the labels were read from (for an index: the linux/amd64 one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The metadata.
    #[serde(flatten)]
    pub metadata: ImageMetadata,
}
