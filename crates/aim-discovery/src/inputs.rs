//! The snapshot of everything that determines one discovery run.

use aim_api::{DEFAULT_DISCOVERY_DEADLINE_SECONDS, Metric, Precision, TemplateScope};
use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;

/// `apiVersion` of both template kinds.
pub const TEMPLATE_API_VERSION: &str = "aim.eai.amd.com/v1alpha1";

/// Everything that determines a discovery run of one template, gathered by the caller.
///
/// Empty strings in the optional string fields mean "unset", and a non-positive deadline means the
/// default ([`DEFAULT_DISCOVERY_DEADLINE_SECONDS`]); the hash and the Job both see the effective values.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryInputs {
    /// Name of the template (identity: not part of the inputs hash).
    pub template_name: String,
    /// Scope of the template: its kind, and a part of the inputs hash.
    pub template_scope: TemplateScope,
    /// UID of the template, for the owner reference (not part of the inputs hash).
    pub template_uid: String,
    /// Where the Job runs: the template's namespace, or the operator namespace for cluster templates.
    pub job_namespace: String,
    /// The model image.
    pub image: String,
    /// Runtime-config env, then model env, then template env, in that order.
    pub env: Vec<EnvVar>,
    /// Pull secrets: the template's, else the model's.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Service account: the template's, else the model's.
    pub service_account_name: Option<String>,
    /// Passed as `AIM_METRIC`.
    pub metric: Option<Metric>,
    /// Passed as `AIM_PRECISION`.
    pub precision: Option<Precision>,
    /// Passed as `AIM_GPU_MODEL`.
    pub gpu_model: Option<String>,
    /// Passed as `AIM_GPU_COUNT`.
    pub gpu_count: Option<i32>,
    /// Passed as `AIM_PROFILE_ID`.
    pub profile_id: Option<String>,
    /// Upper bound of the dry-run in seconds (runtime config, default 600). Shapes the Job only: not part
    /// of the inputs hash, so changing a timeout does not re-discover.
    pub active_deadline_seconds: i64,
    /// Container resources of the dry-run pod (runtime config); `None` means [`crate::default_resources`].
    /// Not part of the inputs hash.
    pub resources: Option<ResourceRequirements>,
    /// The template's own `aim.eai.amd.com/*` labels, copied to the Job and its pod. Not part of the hash.
    pub template_labels: BTreeMap<String, String>,
}

impl DiscoveryInputs {
    /// Inputs for `template_name` running `image`, with every optional input unset and the default deadline.
    pub fn new(
        template_name: impl Into<String>,
        template_scope: TemplateScope,
        template_uid: impl Into<String>,
        job_namespace: impl Into<String>,
        image: impl Into<String>,
    ) -> Self {
        Self {
            template_name: template_name.into(),
            template_scope,
            template_uid: template_uid.into(),
            job_namespace: job_namespace.into(),
            image: image.into(),
            env: Vec::new(),
            image_pull_secrets: Vec::new(),
            service_account_name: None,
            metric: None,
            precision: None,
            gpu_model: None,
            gpu_count: None,
            profile_id: None,
            active_deadline_seconds: DEFAULT_DISCOVERY_DEADLINE_SECONDS,
            resources: None,
            template_labels: BTreeMap::new(),
        }
    }

    /// Kind of the template: `AIMServiceTemplate` or `AIMClusterServiceTemplate`.
    pub fn template_kind(&self) -> &'static str {
        match self.template_scope {
            TemplateScope::Namespace => "AIMServiceTemplate",
            TemplateScope::Cluster => "AIMClusterServiceTemplate",
        }
    }

    /// `apiVersion` of the template.
    pub fn template_api_version(&self) -> &'static str {
        TEMPLATE_API_VERSION
    }

    /// Controller owner reference to the template, so deleting the template deletes the Job. A cluster
    /// template may own the namespaced Job: cluster-scoped owners of namespaced dependents are allowed.
    pub fn template_owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: TEMPLATE_API_VERSION.to_string(),
            kind: self.template_kind().to_string(),
            name: self.template_name.clone(),
            uid: self.template_uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// The service account, unless unset or empty.
    pub fn effective_service_account(&self) -> Option<&str> {
        non_empty(&self.service_account_name)
    }

    /// The GPU model, unless unset or empty.
    pub fn effective_gpu_model(&self) -> Option<&str> {
        non_empty(&self.gpu_model)
    }

    /// The GPU count passed to the dry-run: unset when no GPU is requested (`requests: 0` schedules on GPU
    /// nodes without consuming GPUs, so there is no count to tell the engine).
    pub fn effective_gpu_count(&self) -> Option<i32> {
        self.gpu_count.filter(|n| *n > 0)
    }

    /// The profile id, unless unset or empty.
    pub fn effective_profile_id(&self) -> Option<&str> {
        non_empty(&self.profile_id)
    }

    /// The deadline, or the default when it is not positive (the Job API rejects those).
    pub fn effective_deadline_seconds(&self) -> i64 {
        if self.active_deadline_seconds > 0 {
            self.active_deadline_seconds
        } else {
            DEFAULT_DISCOVERY_DEADLINE_SECONDS
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}
