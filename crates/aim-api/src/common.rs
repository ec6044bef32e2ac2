//! Types shared by several kinds: runtime parameters, hardware, references and phases.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default extended resource name of AMD GPUs.
pub const DEFAULT_GPU_RESOURCE_NAME: &str = "amd.com/gpu";

/// What a deployment is tuned for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    // Interactive use: time to first token and per-token latency.
    Latency,
    // Batch use: tokens per second across requests.
    Throughput,
}

/// Numeric precision of the model weights and compute.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Auto,
    Fp4,
    Fp8,
    Fp16,
    Fp32,
    Bf16,
    Int4,
    Int8,
}

/// How well a profile is tuned for its hardware.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TemplateType {
    Optimized,
    Preview,
    Unoptimized,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            /// The spelling used on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $s),+ }
            }

            /// Parses the wire spelling (exact match).
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(<$ty>::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use str_enum;

str_enum!(Metric { Latency => "latency", Throughput => "throughput" });
str_enum!(Precision {
    Auto => "auto", Fp4 => "fp4", Fp8 => "fp8", Fp16 => "fp16", Fp32 => "fp32",
    Bf16 => "bf16", Int4 => "int4", Int8 => "int8",
});
str_enum!(TemplateType { Optimized => "optimized", Preview => "preview", Unoptimized => "unoptimized" });

/// Hardware a deployment needs. Set `gpu` for GPU models, `cpu` alone for CPU-only models.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.gpu) || has(self.cpu)").message("hardware must set gpu, cpu, or both"))]
pub struct Hardware {
    /// GPU requirements per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequirements>,
    /// CPU requirements per replica; alone, it describes a CPU-only model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuRequirements>,
}

/// GPU requirements: which GPU (by model or by minimum memory) and how many per replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minVram) || !has(self.model) || self.model == ''").message("gpu.model and gpu.minVram are mutually exclusive: name a GPU model or a minimum VRAM, not both"))]
pub struct GpuRequirements {
    /// GPUs per replica. 0 schedules on GPU nodes without consuming GPUs. Defaults to 1.
    #[serde(default = "default_gpu_requests")]
    #[schemars(range(min = 0))]
    pub requests: i32,
    /// GPU model, e.g. `MI300X`. Matched case-insensitively; `Instinct-MI300X` and `mi300x` mean `MI300X`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub model: Option<String>,
    /// Minimum memory per GPU, e.g. `128Gi`; any GPU model with at least this much qualifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_vram: Option<Quantity>,
    /// Extended resource name requested for the GPUs. Defaults to `amd.com/gpu`.
    #[serde(default = "default_gpu_resource_name")]
    #[schemars(length(min = 1))]
    pub resource_name: String,
}

impl Default for GpuRequirements {
    fn default() -> Self {
        Self {
            requests: 1,
            model: None,
            min_vram: None,
            resource_name: default_gpu_resource_name(),
        }
    }
}

impl GpuRequirements {
    /// The GPU model when one is named (an empty string names none).
    pub fn model_name(&self) -> Option<&str> {
        self.model.as_deref().filter(|m| !m.is_empty())
    }
}

fn default_gpu_requests() -> i32 {
    1
}

pub(crate) fn default_gpu_resource_name() -> String {
    DEFAULT_GPU_RESOURCE_NAME.to_string()
}

/// CPU requirements per replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuRequirements {
    /// CPU requested per replica, e.g. `4`.
    pub requests: Quantity,
    /// CPU limit per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Quantity>,
}

/// Hardware after resolution (status). Same shape as the spec's hardware, without its rules, and never
/// with both a GPU model and a minimum VRAM.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedHardware {
    /// GPU requirements per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<ResolvedGpu>,
    /// CPU requirements per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuRequirements>,
}

/// GPU requirements after resolution (status).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedGpu {
    /// GPUs per replica.
    pub requests: i32,
    /// Normalised GPU model, when one model is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Minimum memory per GPU, when any model with enough memory is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_vram: Option<Quantity>,
    /// Extended resource name requested for the GPUs.
    pub resource_name: String,
}

/// Where a referenced object lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ReferenceScope {
    Namespace,
    Cluster,
    // A namespace object merged over a cluster object of the same name.
    Merged,
}

/// Scope of a template (or of the template a cache refers to).
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
pub enum TemplateScope {
    #[default]
    Namespace,
    Cluster,
}

str_enum!(ReferenceScope { Namespace => "Namespace", Cluster => "Cluster", Merged => "Merged" });
str_enum!(TemplateScope { Namespace => "Namespace", Cluster => "Cluster" });

/// A reference to the object something was resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedReference {
    /// Name of the object.
    pub name: String,
    /// Namespace of the object; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `Namespace`, `Cluster`, or `Merged` (a namespace object over a cluster object).
    pub scope: ReferenceScope,
    /// Kind of the object (of the namespace object when merged).
    pub kind: String,
    /// UID of the object (of the namespace object when merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Schema of a free-form JSON object whose content is kept as it is.
pub fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
