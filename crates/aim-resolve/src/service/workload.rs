//! S-05: the inference workload of a service: a Deployment and a ClusterIP Service, owned by the AIMService.

use aim_api::labels;
use aim_api::{Metric, Precision, ResolvedHardware};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, HTTPGetAction, LocalObjectReference, NodeAffinity,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Label naming the AIMService a workload belongs to: [`service_label_value`] of its name.
pub const SERVICE_LABEL: &str = "aim.eai.amd.com/service";
/// Annotation with the AIMService's full name, on the workload and its pods, when [`SERVICE_LABEL`]
/// had to be shortened.
pub const SERVICE_NAME_ANNOTATION: &str = "aim.eai.amd.com/service-name";

/// S-05: the name of the Deployment and the Service of an AIMService: its name when that is a DNS-1035
/// label of at most 63 characters (what a Service's name must be), else cut and hashed
/// ([`crate::names::dns_label`]), so that a long or dotted name still gets a workload.
pub fn workload_name(service: &str) -> String {
    crate::names::dns_label(service)
}

/// The value of [`SERVICE_LABEL`] for an AIMService: its name when it is a valid label value, else cut
/// and hashed ([`crate::names::label_value`]). The pods of a service are found by this value.
pub fn service_label_value(service: &str) -> String {
    crate::names::label_value(service)
}

/// The AIMService a workload object or pod belongs to, by name: the [`SERVICE_NAME_ANNOTATION`] when
/// the label was shortened, else the [`SERVICE_LABEL`] itself.
pub fn service_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_NAME_ANNOTATION))
        .or_else(|| meta.labels.as_ref()?.get(SERVICE_LABEL))
        .map(String::as_str)
}
/// Value of `app.kubernetes.io/component` on inference workloads.
pub const COMPONENT_INFERENCE: &str = "inference";
/// Port the AIM image serves its OpenAI-compatible API on.
pub const SERVING_PORT: i32 = 8000;

/// Everything the workload is built from.
#[derive(Debug, Clone)]
pub struct WorkloadInputs<'a> {
    pub service_name: &'a str,
    pub namespace: &'a str,
    pub service_uid: &'a str,
    pub replicas: i32,
    /// The model image.
    pub image: &'a str,
    /// The template the service runs (for labels).
    pub template_name: &'a str,
    /// Env in the documented order, later entries winning on a name clash: runtime config, template,
    /// profile `env_vars`, service.
    pub runtime_env: &'a [EnvVar],
    pub template_env: &'a [EnvVar],
    pub profile_env: BTreeMap<String, String>,
    pub service_env: &'a [EnvVar],
    /// The profile the template resolved, passed as `AIM_*` like discovery, so the image serves it.
    pub metric: Option<Metric>,
    pub precision: Option<Precision>,
    pub profile_id: Option<&'a str>,
    pub hardware: Option<&'a ResolvedHardware>,
    pub node_affinity: Option<&'a NodeAffinity>,
    /// The template's (else the model's) pull secrets, then the service's.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub service_account_name: Option<&'a str>,
    /// The service's resources, else the template's; GPU requests and limits are set from `hardware`.
    pub resources: Option<&'a ResourceRequirements>,
    /// Warm cache volumes of the template: (source name, PersistentVolumeClaim), mounted read-only under
    /// [`CACHE_MOUNT_ROOT`].
    pub cache_volumes: Vec<(String, String)>,
}

/// Where a cached source's volume is mounted: `/cache/<source name as a DNS label>`.
pub const CACHE_MOUNT_ROOT: &str = "/cache";

/// The mount directory of a cached source.
pub fn cache_mount_path(source: &str) -> String {
    let mut dir = String::new();
    for c in source.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            dir.push(c);
        } else if !dir.ends_with('-') {
            dir.push('-');
        }
    }
    format!("{CACHE_MOUNT_ROOT}/{}", dir.trim_matches('-'))
}

/// Merges env lists: a later entry replaces an earlier one of the same name in place; new names append.
pub fn merge_env<'a>(lists: impl IntoIterator<Item = &'a [EnvVar]>) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    for list in lists {
        for e in list {
            match out.iter_mut().find(|o| o.name == e.name) {
                Some(slot) => *slot = e.clone(),
                None => out.push(e.clone()),
            }
        }
    }
    out
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// Labels of everything the workload is made of.
pub fn workload_labels(service: &str, template: &str) -> BTreeMap<String, String> {
    [
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::COMPONENT.to_string(),
            COMPONENT_INFERENCE.to_string(),
        ),
        (labels::NAME.to_string(), "aim-inference".to_string()),
        (SERVICE_LABEL.to_string(), service_label_value(service)),
        (
            labels::TEMPLATE.to_string(),
            crate::names::label_value(template),
        ),
    ]
    .into()
}

/// The annotations of the workload and its pods: the service's full name when its label is shortened.
fn workload_annotations(service: &str) -> Option<BTreeMap<String, String>> {
    (service_label_value(service) != service)
        .then(|| [(SERVICE_NAME_ANNOTATION.to_string(), service.to_string())].into())
}

fn selector(service: &str) -> BTreeMap<String, String> {
    [(SERVICE_LABEL.to_string(), service_label_value(service))].into()
}

fn owner(i: &WorkloadInputs<'_>) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", aim_api::GROUP, aim_api::VERSION),
        kind: "AIMService".into(),
        name: i.service_name.into(),
        uid: i.service_uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn resources(i: &WorkloadInputs<'_>) -> Option<ResourceRequirements> {
    let mut r = i.resources.cloned().unwrap_or_default();
    if let Some(gpu) = i
        .hardware
        .and_then(|h| h.gpu.as_ref())
        .filter(|g| g.requests > 0)
    {
        let q = Quantity(gpu.requests.to_string());
        r.requests
            .get_or_insert_with(BTreeMap::new)
            .insert(gpu.resource_name.clone(), q.clone());
        r.limits
            .get_or_insert_with(BTreeMap::new)
            .insert(gpu.resource_name.clone(), q);
    }
    (r != ResourceRequirements::default()).then_some(r)
}

/// S-05: the Deployment.
pub fn deployment(i: &WorkloadInputs<'_>) -> Deployment {
    let labels = workload_labels(i.service_name, i.template_name);
    let profile_env: Vec<EnvVar> = i
        .profile_env
        .iter()
        .map(|(k, v)| plain(k, v.clone()))
        .collect();
    let mut aim_env = Vec::new();
    if let Some(m) = i.metric {
        aim_env.push(plain("AIM_METRIC", m.as_str().into()));
    }
    if let Some(p) = i.precision {
        aim_env.push(plain("AIM_PRECISION", p.as_str().into()));
    }
    if let Some(gpu) = i.hardware.and_then(|h| h.gpu.as_ref()) {
        if let Some(model) = &gpu.model {
            aim_env.push(plain("AIM_GPU_MODEL", model.clone()));
        }
        if gpu.requests > 0 {
            aim_env.push(plain("AIM_GPU_COUNT", gpu.requests.to_string()));
        }
    }
    if let Some(id) = i.profile_id {
        aim_env.push(plain("AIM_PROFILE_ID", id.into()));
    }
    let env = merge_env([
        aim_env.as_slice(),
        i.runtime_env,
        i.template_env,
        profile_env.as_slice(),
        i.service_env,
    ]);
    let volumes: Vec<k8s_openapi::api::core::v1::Volume> = i
        .cache_volumes
        .iter()
        .enumerate()
        .map(|(n, (_, claim))| k8s_openapi::api::core::v1::Volume {
            name: format!("cache-{n}"),
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                },
            ),
            ..Default::default()
        })
        .collect();
    let mounts: Vec<k8s_openapi::api::core::v1::VolumeMount> = i
        .cache_volumes
        .iter()
        .enumerate()
        .map(|(n, (source, _))| k8s_openapi::api::core::v1::VolumeMount {
            name: format!("cache-{n}"),
            mount_path: cache_mount_path(source),
            read_only: Some(true),
            ..Default::default()
        })
        .collect();
    let container = Container {
        name: "inference".into(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        image: Some(i.image.into()),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: SERVING_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        resources: resources(i),
        ..Default::default()
    };
    Deployment {
        metadata: ObjectMeta {
            name: Some(workload_name(i.service_name)),
            namespace: Some(i.namespace.into()),
            labels: Some(labels.clone()),
            annotations: workload_annotations(i.service_name),
            owner_references: Some(vec![owner(i)]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(i.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(i.service_name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: workload_annotations(i.service_name),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    affinity: i.node_affinity.map(|na| Affinity {
                        node_affinity: Some(na.clone()),
                        ..Default::default()
                    }),
                    image_pull_secrets: (!i.image_pull_secrets.is_empty())
                        .then(|| i.image_pull_secrets.clone()),
                    service_account_name: i.service_account_name.map(str::to_string),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// S-05: the ClusterIP Service in front of the Deployment's pods.
pub fn service(i: &WorkloadInputs<'_>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(workload_name(i.service_name)),
            namespace: Some(i.namespace.into()),
            labels: Some(workload_labels(i.service_name, i.template_name)),
            annotations: workload_annotations(i.service_name),
            owner_references: Some(vec![owner(i)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(i.service_name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}
