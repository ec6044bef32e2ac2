//! What a discovery Job's failure means, in the template's words (T-19, T-20).

use crate::common::{JobFailure, image_pull_wait, job_failure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// A pod stuck on pulling its image: the message to report.
pub(super) fn image_pull_failure(pod: &Pod, image: &str) -> Option<String> {
    let (_, reason, detail) = image_pull_wait(pod)?;
    let lower = detail.to_ascii_lowercase();
    let hint = if [
        "unauthorized",
        "authentication required",
        "denied",
        "forbidden",
        "401",
        "403",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        "this looks like missing or wrong credentials: check imagePullSecrets of the template or model"
    } else if [
        "not found",
        "manifest unknown",
        "404",
        "does not exist",
        "no such",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        "this looks like a missing image or tag: check the model's image"
    } else {
        "check the model's image and the pull secrets"
    };
    Some(format!(
        "cannot pull image {image:?} ({reason}: {detail}); {hint}"
    ))
}

pub(super) fn failed_job_message(job: &Job, pods: &[&Pod], deadline: i64) -> String {
    match job_failure(job, pods) {
        JobFailure::DeadlineExceeded => format!(
            "the dry-run ran longer than activeDeadlineSeconds ({deadline}s) and was stopped"
        ),
        JobFailure::Exited(t) => format!(
            "the dry-run exited with code {}{}{}",
            t.exit_code,
            t.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
            t.message
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        JobFailure::Failed { reason, message } if !message.is_empty() => {
            format!("the discovery job failed ({reason}): {message}")
        }
        JobFailure::Failed { reason, .. } => format!("the discovery job failed ({reason})"),
    }
}
