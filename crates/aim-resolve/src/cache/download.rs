//! The download Job of a cache volume, and what its pods say.

use super::volume::source_hash;
use crate::common::{JobFailure, image_pull_wait, job_failure};
use aim_api::{ModelSourceStatus, labels};
use aim_discovery::security::{
    restricted_container_security_context, restricted_pod_security_context,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Image of download Jobs unless `--cache-download-image` says otherwise: KServe's storage initializer,
/// which downloads `hf://` and `s3://` URIs given as `<source> <target directory>` and reads the usual
/// credentials from env (`HF_TOKEN`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, …).
pub const DEFAULT_DOWNLOAD_IMAGE: &str = "kserve/storage-initializer:v0.16.0";
/// Name of the one container of a download pod.
pub const CONTAINER_NAME: &str = "download";
/// Where the volume is mounted in the download pod; the source is downloaded into it.
pub const MOUNT_PATH: &str = "/cache";
/// Upper bound of one download: large models over slow links take hours.
pub const DOWNLOAD_DEADLINE_SECONDS: i64 = 6 * 3600;
/// User id of the download pod (non-root, as the `restricted` Pod Security Standard requires).
pub const DOWNLOAD_UID: i64 = 65532;
/// Group id of the download pod, also its `fsGroup`, so that it may write to the volume.
pub const DOWNLOAD_GID: i64 = 65532;
/// Prefix of download Job names.
const JOB_PREFIX: &str = "aim-download-";

/// The download Job of the volume of `source_uri`: `aim-download-<the volume's hash>`.
pub fn download_job_name(source_uri: &str) -> String {
    format!("{JOB_PREFIX}{}", source_hash(source_uri))
}

/// What a download Job is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadInputs<'a> {
    pub namespace: &'a str,
    pub source: &'a ModelSourceStatus,
    /// The cache's env (credentials; `valueFrom` passes through untouched), then the source's own env
    /// from the template spec; later entries win.
    pub env: Vec<EnvVar>,
    pub image: &'a str,
    /// The cache that starts the download (a non-controller owner, like on the volume).
    pub owner: OwnerReference,
}

/// Labels of a download Job and its pod: managed-by, component `cache-download`, name `aim-cache`, and
/// the volume it fills under `aim.eai.amd.com/cache-volume`.
pub fn download_labels(volume: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::COMPONENT.to_string(),
            labels::COMPONENT_CACHE_DOWNLOAD.to_string(),
        ),
        (labels::NAME.to_string(), labels::NAME_CACHE.to_string()),
        (labels::CACHE_VOLUME.to_string(), volume.to_string()),
    ])
}

/// Env of the download container: the inputs' env, then `AIM_CACHE_SOURCE_NAME`,
/// `AIM_CACHE_SOURCE_URI`, `AIM_CACHE_TARGET_PATH` and `HOME` (a writable `/tmp`). Each name appears
/// once, at its first position, with its last entry.
pub fn download_env(inputs: &DownloadInputs) -> Vec<EnvVar> {
    let fixed = |name: &str, value: &str| EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    };
    let mut all = inputs.env.clone();
    all.extend([
        fixed("AIM_CACHE_SOURCE_NAME", &inputs.source.name),
        fixed("AIM_CACHE_SOURCE_URI", &inputs.source.source),
        fixed("AIM_CACHE_TARGET_PATH", MOUNT_PATH),
        fixed("HOME", "/tmp"),
    ]);
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

/// The download Job: one container `download` running the image with the arguments
/// `<source URI> <target directory>` (as env references, so the values are in one place), the volume
/// mounted at [`MOUNT_PATH`], an `emptyDir` at `/tmp`; no retries inside the Job (`backoffLimit: 0`,
/// the operator retries with its backoff), [`DOWNLOAD_DEADLINE_SECONDS`]; kept after it finishes (its
/// completion is the record that the volume is filled). The pod passes the `restricted` Pod Security
/// Standard and mounts no service account token.
pub fn download_job(inputs: &DownloadInputs) -> Job {
    let volume = super::volume_name(&inputs.source.source);
    let labels = download_labels(&volume);
    let annotations = BTreeMap::from([(
        labels::CACHE_SOURCE.to_string(),
        inputs.source.source.clone(),
    )]);
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(inputs.image.to_string()),
        args: Some(vec![
            "$(AIM_CACHE_SOURCE_URI)".into(),
            "$(AIM_CACHE_TARGET_PATH)".into(),
        ]),
        env: Some(download_env(inputs)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "256Mi")])),
            limits: Some(quantities(&[("memory", "2Gi")])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "cache".into(),
                mount_path: MOUNT_PATH.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(restricted_container_security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            fs_group: Some(DOWNLOAD_GID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            ..restricted_pod_security_context(DOWNLOAD_UID, DOWNLOAD_GID)
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "cache".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: volume.clone(),
                    read_only: None,
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(download_job_name(&inputs.source.source)),
            namespace: Some(inputs.namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            owner_references: Some(vec![inputs.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(DOWNLOAD_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Why a failed download Job failed: the deadline, the container's exit, or the Job's own reason.
pub(super) fn failure_message(job: &Job, pods: &[&Pod]) -> String {
    match job_failure(job, pods) {
        JobFailure::DeadlineExceeded => format!(
            "the download ran longer than activeDeadlineSeconds ({DOWNLOAD_DEADLINE_SECONDS}s) and was stopped"
        ),
        JobFailure::Exited(t) => format!(
            "the download exited with code {}{}{}",
            t.exit_code,
            t.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
            t.message
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {}", m.trim()))
                .unwrap_or_default()
        ),
        JobFailure::Failed { reason, message } if !message.is_empty() => {
            format!("the download job failed ({reason}): {message}")
        }
        JobFailure::Failed { reason, .. } => format!("the download job failed ({reason})"),
    }
}

/// A download pod stuck on pulling its image: the message to report (its Job is deleted, or it would
/// wait until the deadline).
pub(super) fn pull_failure(pod: &Pod) -> Option<String> {
    let (container, reason, message) = image_pull_wait(pod)?;
    Some(format!(
        "cannot pull the download image {:?} ({reason}: {message}); check --cache-download-image and that the nodes reach its registry",
        container.image
    ))
}
