//! What a discovery Job and its pods say: finished, failed and why, stuck on the image.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

pub(super) fn job_has(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// A pod stuck on pulling its image: the message to report.
pub(super) fn image_pull_failure(pod: &Pod, image: &str) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let waiting = s.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        if !matches!(reason, "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull") {
            return None;
        }
        let detail = waiting.message.clone().unwrap_or_default();
        let lower = detail.to_ascii_lowercase();
        let hint = if ["unauthorized", "authentication required", "denied", "forbidden", "401", "403"]
            .iter()
            .any(|w| lower.contains(w))
        {
            "this looks like missing or wrong credentials: check imagePullSecrets of the template or model"
        } else if ["not found", "manifest unknown", "404", "does not exist", "no such"].iter().any(|w| lower.contains(w)) {
            "this looks like a missing image or tag: check the model's image"
        } else {
            "check the model's image and the pull secrets"
        };
        Some(format!("cannot pull image {image:?} ({reason}: {detail}); {hint}"))
    })
}

pub(super) fn failed_job_message(job: &Job, pods: &[&Pod], deadline: i64) -> String {
    let (reason, message) = job_has(job, "Failed").unwrap_or_default();
    if reason == "DeadlineExceeded" {
        return format!(
            "the dry-run ran longer than activeDeadlineSeconds ({deadline}s) and was stopped"
        );
    }
    let terminated = pods.iter().find_map(|p| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|s| s.state.as_ref()?.terminated.clone())
    });
    match terminated {
        Some(t) => format!(
            "the dry-run exited with code {}{}{}",
            t.exit_code,
            t.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
            t.message
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        None if !message.is_empty() => format!("the discovery job failed ({reason}): {message}"),
        None => format!("the discovery job failed ({reason})"),
    }
}
