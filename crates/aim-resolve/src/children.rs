//! Which objects belong to a template, which Job holds a discovery slot and which pod's log is the
//! result (T-11, T-13, T-17, T-23): the answers the operator needs before it routes a watch event or
//! reads a log, kept here so that they are decided (and tested) without I/O. What a Job's pods say is
//! read in `common`.

use crate::common::{job_has, owned_by, pod_phase, pods_of};
use aim_api::{ServiceTemplateCommon, ServiceTemplateStatus, TemplateScope, labels};
use aim_discovery::ANNOTATION_TEMPLATE_NAME;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A template named by scope, namespace (namespace templates only) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateRef {
    pub scope: TemplateScope,
    pub namespace: Option<String>,
    pub name: String,
}

impl TemplateRef {
    pub fn new(scope: TemplateScope, namespace: Option<&str>, name: &str) -> Self {
        Self {
            scope,
            namespace: match scope {
                TemplateScope::Namespace => namespace.map(str::to_string),
                TemplateScope::Cluster => None,
            },
            name: name.to_string(),
        }
    }

    /// The discovery queue's key: `Namespace/<ns>/<name>` or `Cluster//<name>`.
    pub fn key(&self) -> String {
        template_key(self.scope, self.namespace.as_deref(), &self.name)
    }

    /// The inverse of [`TemplateRef::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        let mut parts = key.splitn(3, '/');
        let (scope, ns, name) = (parts.next()?, parts.next()?, parts.next()?);
        let scope = match scope {
            "Namespace" => TemplateScope::Namespace,
            "Cluster" => TemplateScope::Cluster,
            _ => return None,
        };
        (!name.is_empty()).then(|| Self::new(scope, Some(ns), name))
    }
}

/// Queue key of a template: `Namespace/<ns>/<name>` or `Cluster//<name>`.
pub fn template_key(scope: TemplateScope, namespace: Option<&str>, name: &str) -> String {
    let namespace = match scope {
        TemplateScope::Namespace => namespace.unwrap_or_default(),
        TemplateScope::Cluster => "",
    };
    format!("{}/{namespace}/{name}", scope.as_str())
}

/// The template a discovery Job or pod belongs to, from its scope label and its template-name annotation
/// (the label value may be shortened; the annotation never is).
pub fn owner_of(meta: &ObjectMeta) -> Option<TemplateRef> {
    let labels = meta.labels.as_ref()?;
    let scope = match labels.get(labels::TEMPLATE_SCOPE)?.as_str() {
        "Namespace" => TemplateScope::Namespace,
        "Cluster" => TemplateScope::Cluster,
        _ => return None,
    };
    let name = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_TEMPLATE_NAME))
        .or_else(|| labels.get(labels::TEMPLATE))?;
    Some(TemplateRef::new(scope, meta.namespace.as_deref(), name))
}

/// Whether a discovery Job belongs to this template (a cluster template's Jobs run in the operator
/// namespace; a namespace template's in its own).
pub fn job_belongs_to(job: &Job, template: &TemplateRef) -> bool {
    owner_of(&job.metadata).is_some_and(|o| o == *template)
}

/// `namespace/name` of a Job: the key of its discovery slot.
pub fn job_key(job: &Job) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether a pod is owned by one of these Jobs (by uid).
pub fn pod_of_any(pod: &Pod, jobs: &[&Job]) -> bool {
    jobs.iter().any(|j| owned_by(pod, j))
}

/// A Job holds a discovery slot until it finished (`Complete` or `Failed`) or is being deleted.
pub fn job_is_active(job: &Job) -> bool {
    if job.metadata.deletion_timestamp.is_some() {
        return false;
    }
    job_has(job, "Complete").is_none() && job_has(job, "Failed").is_none()
}

/// The pod whose `discovery` log is the dry-run result: the Job's succeeded pod (the last by name if,
/// against `backoffLimit: 0`, there were several).
pub fn log_pod<'a>(job: &Job, pods: &[&'a Pod]) -> Option<&'a Pod> {
    pods_of(job, pods)
        .into_iter()
        .rfind(|p| pod_phase(p) == Some("Succeeded"))
}

/// Whether a change of the GPU inventory can change this template's verdict: it asks for a GPU in its
/// spec or its discovered hardware does (T-11).
pub fn wakes_on_gpu_change(
    spec: &ServiceTemplateCommon,
    status: Option<&ServiceTemplateStatus>,
) -> bool {
    spec.hardware.as_ref().is_some_and(|h| h.gpu.is_some())
        || status
            .and_then(|s| s.resolved_hardware.as_ref())
            .is_some_and(|h| h.gpu.is_some())
}

/// The field selector of the Events worth watching for discovery: the Job controller's `FailedCreate`
/// (a pod refused by quota, admission or a missing service account).
pub const FAILED_CREATE_EVENT_SELECTOR: &str = "involvedObject.kind=Job,reason=FailedCreate";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{failed_create, unschedulable};
    use k8s_openapi::api::core::v1::Event;

    fn job(ns: &str, name: &str, scope: &str, template: &str, uid: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": ns, "uid": uid,
                "labels": { "aim.eai.amd.com/template-scope": scope, "aim.eai.amd.com/template": "cut" },
                "annotations": { "aim.eai.amd.com/template-name": template } },
        }))
        .unwrap()
    }

    fn pod(name: &str, owner_uid: &str, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "team",
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": owner_uid }] },
            "status": { "phase": phase },
        }))
        .unwrap()
    }

    #[test]
    fn keys_round_trip() {
        for t in [
            TemplateRef::new(TemplateScope::Namespace, Some("team"), "a"),
            TemplateRef::new(TemplateScope::Cluster, Some("ignored"), "b"),
        ] {
            assert_eq!(TemplateRef::from_key(&t.key()), Some(t.clone()));
        }
        assert_eq!(
            TemplateRef::new(TemplateScope::Cluster, None, "b").key(),
            "Cluster//b"
        );
        assert_eq!(TemplateRef::from_key("Other//x"), None);
        assert_eq!(TemplateRef::from_key("Cluster//"), None);
    }

    #[test]
    fn jobs_belong_by_scope_namespace_and_full_name() {
        // T-13: a cluster template's Job in the operator namespace; the annotation beats the cut label.
        let ns_job = job("team", "discover-a-1", "Namespace", "a", "u1");
        let cl_job = job("aim-system", "discover-a-2", "Cluster", "a", "u2");
        let a_ns = TemplateRef::new(TemplateScope::Namespace, Some("team"), "a");
        let a_other = TemplateRef::new(TemplateScope::Namespace, Some("other"), "a");
        let a_cl = TemplateRef::new(TemplateScope::Cluster, None, "a");
        assert!(job_belongs_to(&ns_job, &a_ns));
        assert!(!job_belongs_to(&ns_job, &a_other));
        assert!(!job_belongs_to(&ns_job, &a_cl));
        assert!(job_belongs_to(&cl_job, &a_cl));
        assert!(!job_belongs_to(&cl_job, &a_ns));
        let mut unlabelled = ns_job.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(owner_of(&unlabelled.metadata), None);
    }

    #[test]
    fn active_until_finished_or_deleting() {
        // T-23: what holds a slot.
        let mut j = job("team", "j", "Namespace", "a", "u1");
        assert!(job_is_active(&j));
        for (type_, status, active) in [
            ("Complete", "True", false),
            ("Failed", "True", false),
            ("Failed", "False", true),
            ("Suspended", "True", true),
        ] {
            j.status = Some(
                serde_json::from_value(
                    serde_json::json!({"conditions": [{"type": type_, "status": status}]}),
                )
                .unwrap(),
            );
            assert_eq!(job_is_active(&j), active, "{type_}={status}");
        }
        j.status = None;
        j.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(!job_is_active(&j));
    }

    #[test]
    fn the_log_is_read_from_the_jobs_succeeded_pod() {
        // T-17
        let j = job("team", "j", "Namespace", "a", "u1");
        let running = pod("j-1", "u1", "Running");
        let done = pod("j-2", "u1", "Succeeded");
        let foreign = pod("k-1", "u9", "Succeeded");
        let pods = [&running, &done, &foreign];
        assert_eq!(
            log_pod(&j, &pods).and_then(|p| p.metadata.name.as_deref()),
            Some("j-2")
        );
        assert_eq!(log_pod(&j, &[&running, &foreign]), None);
        assert_eq!(pods_of(&j, &pods).len(), 2);
    }

    #[test]
    fn gpu_changes_wake_gpu_templates_only() {
        // T-11
        let mut spec = ServiceTemplateCommon::for_model("m");
        assert!(!wakes_on_gpu_change(&spec, None));
        let status = ServiceTemplateStatus {
            resolved_hardware: Some(
                serde_json::from_value(
                    serde_json::json!({"gpu": {"requests": 1, "resourceName": "amd.com/gpu"}}),
                )
                .unwrap(),
            ),
            ..Default::default()
        };
        assert!(wakes_on_gpu_change(&spec, Some(&status)));
        spec.hardware =
            Some(serde_json::from_value(serde_json::json!({"cpu": {"requests": "2"}})).unwrap());
        assert!(!wakes_on_gpu_change(&spec, None));
        spec.hardware =
            Some(serde_json::from_value(serde_json::json!({"gpu": {"requests": 0}})).unwrap());
        assert!(wakes_on_gpu_change(&spec, None));
    }

    #[test]
    fn why_a_pod_is_not_created_or_scheduled() {
        let j = job("team", "j", "Namespace", "a", "u1");
        let ev = |name: &str, uid: &str, at: i64, msg: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": "team" },
                "involvedObject": { "kind": "Job", "name": "j", "uid": uid },
                "reason": "FailedCreate", "message": msg,
                "lastTimestamp": jiff::Timestamp::from_second(at).unwrap().to_string(),
            }))
            .unwrap()
        };
        let old = ev("e1", "u1", 10, "old");
        let new = ev("e2", "u1", 20, "serviceaccount \"x\" not found");
        let other = ev("e3", "u9", 30, "not ours");
        assert_eq!(
            failed_create(&j, &[&old, &new, &other]),
            Some("serviceaccount \"x\" not found")
        );
        assert_eq!(failed_create(&j, &[&other]), None);
        let p: Pod = serde_json::from_value(serde_json::json!({
            "status": { "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/4 nodes are available: 4 node(s) had untolerated taint" }] }
        }))
        .unwrap();
        assert!(unschedulable(&p).unwrap().contains("untolerated taint"));
        assert_eq!(unschedulable(&pod("x", "u1", "Running")), None);
    }
}
