//! M-02: the templates a model's recommended deployments call for.

use crate::common::hex;
use aim_api::labels;
use aim_api::{GpuRequirements, Hardware, Metric, RecommendedDeployment, ServiceTemplateCommon};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest template name (a label value must be able to hold it).
pub const MAX_TEMPLATE_NAME: usize = 63;

/// A template that must exist, as the model controller writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTemplate {
    pub name: String,
    /// The model's namespace for an AIMModel; `None` (cluster template) for an AIMClusterModel.
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The model's full name ([`labels::MODEL_NAME`]) when the [`labels::MODEL`] label had to be
    /// shortened; otherwise empty.
    pub annotations: BTreeMap<String, String>,
    /// Controller reference to the model.
    pub owner: OwnerReference,
    pub spec: ServiceTemplateCommon,
}

/// The model a template is made for.
#[derive(Debug, Clone, Copy)]
pub struct ModelRef<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub uid: &'a str,
}

/// M-02: the template name of a deployment: model name, GPU count and model, metric, precision and a
/// hash of all of them (so deployments differing only in profile get distinct names), at most 63
/// characters, lowercase DNS label. Example: `qwen3-32b-2x-mi300x-lat-fp8-1a2b3c4d`.
pub fn template_name(model: &str, d: &RecommendedDeployment) -> String {
    let mut h = Sha256::new();
    for part in [
        model,
        d.gpu_model.as_deref().unwrap_or(""),
        &d.gpu_count.map(|c| c.to_string()).unwrap_or_default(),
        d.precision.map(|p| p.as_str()).unwrap_or(""),
        d.metric.map(|m| m.as_str()).unwrap_or(""),
        d.profile_id.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hash = hex(&h.finalize()[..4]);
    let mut parts = vec![model.to_string()];
    if let Some(gpu) = &d.gpu_model {
        parts.push(format!("{}x", d.gpu_count.unwrap_or(1)));
        parts.push(gpu.clone());
    }
    if let Some(m) = d.metric {
        parts.push(
            match m {
                Metric::Latency => "lat",
                Metric::Throughput => "tput",
            }
            .into(),
        );
    }
    if let Some(p) = d.precision {
        parts.push(p.as_str().into());
    }
    let prefix = dns_label(&parts.join("-"));
    let room = MAX_TEMPLATE_NAME - hash.len() - 1;
    let prefix: String = prefix.chars().take(room).collect();
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Lowercase letters, digits and single dashes, no dash at either end.
fn dns_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The owner reference a model puts on its templates.
pub fn owner_reference(model: &ModelRef<'_>) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", aim_api::GROUP, aim_api::VERSION),
        kind: model.kind.to_string(),
        name: model.name.to_string(),
        uid: model.uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The labels of an auto-created template. The model's name is a label value of at most 63 characters
/// ([`crate::names::label_value`]: the name itself when it fits, else cut and hashed); the full name is
/// then in [`template_annotations`].
pub fn template_labels(model: &str) -> BTreeMap<String, String> {
    [
        (labels::MODEL.to_string(), crate::names::label_value(model)),
        (
            labels::ORIGIN.to_string(),
            labels::ORIGIN_AUTO_GENERATED.to_string(),
        ),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
    ]
    .into()
}

/// The annotations of an auto-created template: the model's full name, when its label is shortened.
pub fn template_annotations(model: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if crate::names::label_value(model) != model {
        out.insert(labels::MODEL_NAME.to_string(), model.to_string());
    }
    out
}

/// M-02: one template per recommended deployment with a GPU model, deduplicated by name, sorted by name.
/// Deployments without `gpuModel` cannot be placed and are returned apart, by position (1-based).
pub fn desired_templates(
    model: &ModelRef<'_>,
    deployments: &[RecommendedDeployment],
) -> (Vec<DesiredTemplate>, Vec<usize>) {
    let mut out: BTreeMap<String, DesiredTemplate> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        let Some(gpu) = d.gpu_model.clone() else {
            skipped.push(i + 1);
            continue;
        };
        let name = template_name(model.name, d);
        let mut spec = ServiceTemplateCommon::for_model(model.name);
        spec.metric = d.metric;
        spec.precision = d.precision;
        spec.profile_id = d.profile_id.clone();
        spec.hardware = Some(Hardware {
            gpu: Some(GpuRequirements {
                requests: d.gpu_count.unwrap_or(1),
                model: Some(gpu),
                ..GpuRequirements::default()
            }),
            cpu: None,
        });
        out.entry(name.clone()).or_insert_with(|| DesiredTemplate {
            name,
            namespace: model.namespace.map(str::to_string),
            labels: template_labels(model.name),
            annotations: template_annotations(model.name),
            owner: owner_reference(model),
            spec,
        });
    }
    (out.into_values().collect(), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aim_api::Precision;
    use proptest::prelude::*;

    fn dep(gpu: &str, count: i32, metric: Metric, precision: Precision) -> RecommendedDeployment {
        RecommendedDeployment {
            gpu_model: Some(gpu.into()),
            gpu_count: Some(count),
            precision: Some(precision),
            metric: Some(metric),
            ..Default::default()
        }
    }

    // M-02
    #[test]
    fn names_read_like_the_deployment() {
        let n = template_name(
            "qwen3-32b",
            &dep("MI300X", 2, Metric::Latency, Precision::Fp8),
        );
        assert!(n.starts_with("qwen3-32b-2x-mi300x-lat-fp8-"), "{n}");
        assert_eq!(n.len(), "qwen3-32b-2x-mi300x-lat-fp8-".len() + 8);
    }

    // M-02: deterministic and distinct per deployment, also when only the profile differs.
    #[test]
    fn names_are_distinct_per_deployment() {
        let a = dep("MI300X", 1, Metric::Latency, Precision::Fp8);
        let mut b = a.clone();
        b.profile_id = Some("other".into());
        assert_eq!(template_name("m", &a), template_name("m", &a));
        assert_ne!(template_name("m", &a), template_name("m", &b));
        assert_ne!(template_name("m", &a), template_name("n", &a));
    }

    proptest! {
        // M-02: any model name and deployment give a DNS label of at most 63 characters.
        #[test]
        fn names_are_short_dns_labels(
            model in "[a-z0-9][a-z0-9.-]{0,252}",
            gpu in proptest::option::of("[A-Za-z0-9 _-]{0,80}"),
            count in proptest::option::of(0i32..1000),
        ) {
            let d = RecommendedDeployment { gpu_model: gpu, gpu_count: count, ..Default::default() };
            let n = template_name(&model, &d);
            prop_assert!(n.len() <= MAX_TEMPLATE_NAME, "{}", n);
            prop_assert!(!n.starts_with('-') && !n.ends_with('-'), "{}", n);
            prop_assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{}", n);
        }
    }

    #[test]
    fn desired_templates_carry_labels_owner_and_hardware() {
        let model = ModelRef {
            kind: "AIMClusterModel",
            name: "qwen",
            namespace: None,
            uid: "u1",
        };
        let deps = vec![
            dep("MI300X", 2, Metric::Latency, Precision::Fp8),
            RecommendedDeployment::default(),
            dep("MI300X", 2, Metric::Latency, Precision::Fp8),
        ];
        let (want, skipped) = desired_templates(&model, &deps);
        assert_eq!(want.len(), 1, "duplicates collapse");
        assert_eq!(skipped, vec![2]);
        let t = &want[0];
        assert_eq!(t.namespace, None);
        assert_eq!(t.labels[labels::MODEL], "qwen");
        assert_eq!(t.labels[labels::ORIGIN], labels::ORIGIN_AUTO_GENERATED);
        assert_eq!(t.owner.controller, Some(true));
        assert_eq!(t.owner.uid, "u1");
        let gpu = t.spec.hardware.as_ref().unwrap().gpu.as_ref().unwrap();
        assert_eq!((gpu.requests, gpu.model.as_deref()), (2, Some("MI300X")));
        assert_eq!(t.spec.model_name, "qwen");
    }
}
