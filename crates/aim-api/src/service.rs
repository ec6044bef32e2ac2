//! AIMService: a running model, served from a selected template.

use crate::common::{ResolvedReference, TemplateScope};
use crate::template::TemplatePhase;
use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn one() -> i32 {
    1
}

/// Serves a model: selects a template and runs its inference workload.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "aim.eai.amd.com",
    version = "v1alpha1",
    kind = "AIMService",
    namespaced,
    status = "ServiceStatus",
    shortname = "aimsvc",
    category = "aim",
    derive = "PartialEq",
    doc = "Serves an AIM model: selects a service template and runs the inference workload.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.name"),
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".status.resolvedTemplate.name"
    ),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AIMServiceSpec {
    /// The model to serve, by name or by image.
    pub model: ServiceModel,
    /// The template to use; omitted means automatic selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ServiceTemplateRef>,
    /// Inference replicas. Defaults to 1.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Env for the inference container; wins over template and runtime-config env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,
    /// Container resources; override the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra pull secrets for the inference pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// The model of a service: exactly one of `name` and `image`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.image)").message("set exactly one of model.name or model.image"))]
pub struct ServiceModel {
    /// Name of an AIMModel in this namespace, else of an AIMClusterModel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An AIM image; an AIMModel for it is found or created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A template chosen by name.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplateRef {
    /// Name of an AIMServiceTemplate in this namespace, else of an AIMClusterServiceTemplate.
    pub name: String,
}

/// One-word state of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServicePhase {
    #[default]
    Pending,
    Starting,
    Running,
    Degraded,
    NotAvailable,
    Failed,
}

crate::common::str_enum!(ServicePhase {
    Pending => "Pending", Starting => "Starting", Running => "Running",
    Degraded => "Degraded", NotAvailable => "NotAvailable", Failed => "Failed",
});

/// Observed state of a service.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Starting`, `Running`, `Degraded`, `NotAvailable` or `Failed`.
    #[serde(default)]
    pub status: ServicePhase,
    /// `ModelResolved`, `TemplateSelected`, `WorkloadReady`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The model the service resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_model: Option<ResolvedReference>,
    /// The selected template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_template: Option<ResolvedReference>,
    /// Every template considered, and why it was or was not selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_candidates: Vec<TemplateCandidate>,
}

/// A template considered during selection.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateCandidate {
    /// Template name.
    pub name: String,
    /// `Namespace` or `Cluster`.
    pub scope: TemplateScope,
    /// The template's status when considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TemplatePhase>,
    /// Whether it was selected.
    #[serde(default)]
    pub selected: bool,
    /// Why it was or was not selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
