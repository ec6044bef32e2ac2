//! The discovery Job (T-14, T-15, T-16).

use crate::inputs::DiscoveryInputs;
use crate::name::{job_name, template_label_value};
use crate::security::{restricted_container_security_context, restricted_pod_security_context};
use aim_api::labels;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Name of the one container of a discovery pod; its log is the dry-run result.
pub const CONTAINER_NAME: &str = "discovery";
/// Arguments of the discovery container.
pub const DRY_RUN_ARGS: [&str; 2] = ["dry-run", "--format=json"];
/// Seconds a finished discovery Job is kept before Kubernetes deletes it.
pub const JOB_TTL_SECONDS_AFTER_FINISHED: i32 = 600;
/// User id of the discovery pod (non-root, as the `restricted` Pod Security Standard requires).
pub const DISCOVERY_UID: i64 = 65532;
/// Group id of the discovery pod.
pub const DISCOVERY_GID: i64 = 65532;
/// Annotation holding the full inputs hash the Job was built from.
pub const ANNOTATION_INPUTS_HASH: &str = "aim.eai.amd.com/inputs-hash";
/// Annotation holding the full template name (the label value may be shortened).
pub const ANNOTATION_TEMPLATE_NAME: &str = "aim.eai.amd.com/template-name";

/// The discovery Job for `inputs`, named from `hash` (which should be `inputs_hash(inputs)`).
///
/// One container `discovery` runs the model image with `dry-run --format=json` and [`discovery_env`];
/// no retries (`backoffLimit: 0`, `restartPolicy: Never`), the inputs' deadline, kept 600 s after it
/// finishes; no GPU requests and no node affinity; the runtime config's resources, else
/// [`default_resources`]. The pod passes
/// the `restricted` Pod Security Standard and mounts no service account token. Labels
/// ([`discovery_labels`]) are on the Job and its pod; annotations carry the full hash and template name;
/// a controller owner reference points at the template.
pub fn discovery_job(inputs: &DiscoveryInputs, hash: &str) -> Job {
    let labels = discovery_labels(inputs);
    let annotations = BTreeMap::from([
        (ANNOTATION_INPUTS_HASH.to_string(), hash.to_string()),
        (
            ANNOTATION_TEMPLATE_NAME.to_string(),
            inputs.template_name.clone(),
        ),
    ]);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&inputs.template_name, hash)),
            namespace: Some(inputs.job_namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            owner_references: Some(vec![inputs.template_owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(inputs.effective_deadline_seconds()),
            ttl_seconds_after_finished: Some(JOB_TTL_SECONDS_AFTER_FINISHED),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(inputs)),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Labels of the Job and its pod: the template's own `aim.eai.amd.com/*` labels, then template (see
/// [`template_label_value`]), template scope, name (`aim-discovery`), managed-by and component, which
/// win over a template label of the same key.
pub fn discovery_labels(inputs: &DiscoveryInputs) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = inputs
        .template_labels
        .iter()
        .filter(|(k, _)| k.starts_with(labels::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend([
        (
            labels::TEMPLATE.to_string(),
            template_label_value(&inputs.template_name),
        ),
        (
            labels::TEMPLATE_SCOPE.to_string(),
            inputs.template_scope.as_str().to_string(),
        ),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::COMPONENT.to_string(),
            labels::COMPONENT_DISCOVERY.to_string(),
        ),
        (labels::NAME.to_string(), labels::NAME_DISCOVERY.to_string()),
    ]);
    out
}

/// Env of the discovery container (T-15): `AIM_LOG_LEVEL_ROOT=CRITICAL`, `AIM_LOG_LEVEL=CRITICAL`, the
/// inputs' env, then `AIM_METRIC`, `AIM_PRECISION`, `AIM_GPU_MODEL`, `AIM_GPU_COUNT`, `AIM_PROFILE_ID`
/// for whatever is set.
///
/// Later entries win on name clashes: each name appears once, at the position of its first occurrence,
/// with the whole entry (`value` or `valueFrom`) of its last. `valueFrom` is passed through untouched.
pub fn discovery_env(inputs: &DiscoveryInputs) -> Vec<EnvVar> {
    let fixed = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    let mut all = vec![
        fixed("AIM_LOG_LEVEL_ROOT", "CRITICAL".into()),
        fixed("AIM_LOG_LEVEL", "CRITICAL".into()),
    ];
    all.extend(inputs.env.iter().cloned());
    if let Some(metric) = inputs.metric {
        all.push(fixed("AIM_METRIC", metric.as_str().into()));
    }
    if let Some(precision) = inputs.precision {
        all.push(fixed("AIM_PRECISION", precision.as_str().into()));
    }
    if let Some(gpu) = inputs.effective_gpu_model() {
        all.push(fixed("AIM_GPU_MODEL", gpu.into()));
    }
    if let Some(count) = inputs.effective_gpu_count() {
        all.push(fixed("AIM_GPU_COUNT", count.to_string()));
    }
    if let Some(profile) = inputs.effective_profile_id() {
        all.push(fixed("AIM_PROFILE_ID", profile.into()));
    }
    dedupe_last_wins(all)
}

/// Keeps one entry per name: at the first occurrence's position, the last occurrence's entry.
fn dedupe_last_wins(all: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<EnvVar> = Vec::with_capacity(all.len());
    for var in all {
        match position.get(&var.name) {
            Some(&i) => out[i] = var,
            None => {
                position.insert(var.name.clone(), out.len());
                out.push(var);
            }
        }
    }
    out
}

fn pod_spec(inputs: &DiscoveryInputs) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        // Service links would add unrelated env to the dry-run.
        enable_service_links: Some(false),
        service_account_name: inputs.effective_service_account().map(str::to_string),
        image_pull_secrets: (!inputs.image_pull_secrets.is_empty())
            .then(|| inputs.image_pull_secrets.clone()),
        security_context: Some(restricted_pod_security_context(
            DISCOVERY_UID,
            DISCOVERY_GID,
        )),
        containers: vec![container(inputs)],
        ..PodSpec::default()
    }
}

/// Resources of the dry-run container when the runtime config sets none: 250m CPU and 1Gi memory
/// requested, memory limited to 4Gi. A real dry-run starts Python and loads the engine's configuration
/// and the model's config files, which needs more than a toy's memory; no GPU is requested.
pub fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "250m"), ("memory", "1Gi")])),
        limits: Some(quantities(&[("memory", "4Gi")])),
        ..ResourceRequirements::default()
    }
}

fn container(inputs: &DiscoveryInputs) -> Container {
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(inputs.image.clone()),
        args: Some(DRY_RUN_ARGS.iter().map(|a| a.to_string()).collect()),
        env: Some(discovery_env(inputs)),
        resources: Some(inputs.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(restricted_container_security_context()),
        // A failed dry-run's last log lines end up in the pod status, for the failure message (T-20).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}
