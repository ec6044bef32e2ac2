//! What a Job and its pods say: which pods are its, whether it finished or failed and why, whether a
//! pod is stuck on its image or cannot be scheduled. Each controller words the message itself.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ContainerStateTerminated, ContainerStatus, Event, Pod, PodCondition,
};

/// The `(reason, message)` of the Job's condition `type_` (`Complete`, `Failed`), when it is `True`.
pub(crate) fn job_has(job: &Job, type_: &str) -> Option<(String, String)> {
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

/// Why a Job failed, most telling first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobFailure {
    /// Stopped at its `activeDeadlineSeconds`.
    DeadlineExceeded,
    /// A container of one of its pods exited (the first found).
    Exited(ContainerStateTerminated),
    /// Neither: the `reason` and `message` of its `Failed` condition (either may be empty).
    Failed { reason: String, message: String },
}

/// Why this failed Job failed, from its `Failed` condition and its pods.
pub(crate) fn job_failure(job: &Job, pods: &[&Pod]) -> JobFailure {
    let (reason, message) = job_has(job, "Failed").unwrap_or_default();
    if reason == "DeadlineExceeded" {
        return JobFailure::DeadlineExceeded;
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
        Some(t) => JobFailure::Exited(t),
        None => JobFailure::Failed { reason, message },
    }
}

/// A container of the pod stuck on pulling its image: its status, the waiting reason (`ErrImagePull`,
/// `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`) and the kubelet's message (may be empty).
pub(crate) fn image_pull_wait(pod: &Pod) -> Option<(&ContainerStatus, &str, &str)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let waiting = s.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        if !matches!(
            reason,
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
        ) {
            return None;
        }
        Some((s, reason, waiting.message.as_deref().unwrap_or_default()))
    })
}

/// A container of the pod the kubelet cannot start because of its configuration
/// (`CreateContainerConfigError`: a Secret, ConfigMap or key behind `valueFrom` or a volume is missing;
/// `CreateContainerError`): the waiting reason and the kubelet's message. Nothing changes until someone
/// acts, so it is reported at once instead of waiting out the Job's deadline.
pub(crate) fn container_config_wait(pod: &Pod) -> Option<(&str, &str)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let waiting = s.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        matches!(
            reason,
            "CreateContainerConfigError" | "CreateContainerError"
        )
        .then(|| (reason, waiting.message.as_deref().unwrap_or_default()))
    })
}

pub(crate) fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// Whether the pod is owned by this Job (by uid).
pub(crate) fn owned_by(pod: &Pod, job: &Job) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| job.metadata.uid.as_deref() == Some(o.uid.as_str()))
}

/// The pods of one Job, by name.
pub(crate) fn pods_of<'a>(job: &Job, pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let mut out: Vec<&Pod> = pods.iter().copied().filter(|p| owned_by(p, job)).collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// The pod's `PodScheduled=False` condition: the scheduler cannot place it (taints, selectors, no room).
pub(crate) fn unscheduled(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
}

/// Why a pod cannot be scheduled: the message of its `PodScheduled=False` condition.
pub(crate) fn unschedulable(pod: &Pod) -> Option<&str> {
    unscheduled(pod).map(|c| c.message.as_deref().unwrap_or("no node fits"))
}

/// Why the Job controller cannot create the Job's pod, from its newest `FailedCreate` event.
pub(crate) fn failed_create<'a>(job: &Job, events: &[&'a Event]) -> Option<&'a str> {
    let uid = job.metadata.uid.as_deref()?;
    events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedCreate")
                && e.involved_object.uid.as_deref() == Some(uid)
        })
        .max_by_key(|e| {
            (
                e.last_timestamp.as_ref().map(|t| t.0),
                e.metadata.name.clone(),
            )
        })
        .and_then(|e| e.message.as_deref())
}
