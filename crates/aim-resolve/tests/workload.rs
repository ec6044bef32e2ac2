//! S-05: the inference Deployment and Service as documents.

use aim_api::*;
use aim_resolve::service::workload::{WorkloadInputs, deployment, merge_env, service};
use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, NodeAffinity};

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn hardware() -> ResolvedHardware {
    serde_json::from_value(serde_json::json!({
        "gpu": { "requests": 2, "model": "MI300X", "resourceName": "amd.com/gpu" }
    }))
    .unwrap()
}

fn affinity() -> NodeAffinity {
    serde_json::from_value(serde_json::json!({
        "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
            { "matchExpressions": [{ "key": "amd.com/gpu.device-id", "operator": "In", "values": ["74a1"] }] }
        ]}
    }))
    .unwrap()
}

// S-05: env merged in the documented order, later winning: runtime config, template, profile, service.
#[test]
fn env_is_merged_in_order_later_wins() {
    let merged = merge_env([
        &[env("A", "runtime"), env("B", "runtime")][..],
        &[env("B", "template"), env("C", "template")][..],
        &[env("C", "profile")][..],
        &[env("A", "service")][..],
    ]);
    let got: Vec<(&str, &str)> = merged
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
        .collect();
    assert_eq!(got, [("A", "service"), ("B", "template"), ("C", "profile")]);
}

// S-05: image, GPU requests and limits, node affinity, env, pull secrets, service account, owner.
#[test]
fn the_workload_documents() {
    let hw = hardware();
    let na = affinity();
    let runtime = [env("HF_HOME", "/models"), env("LOG", "info")];
    let template = [env("LOG", "debug")];
    let svc_env = [env("VLLM_EXTRA", "1")];
    let inputs = WorkloadInputs {
        service_name: "chat",
        namespace: "team",
        service_uid: "svc-uid",
        replicas: 2,
        image: "registry.example.test/aim/qwen:0.8.5",
        template_name: "qwen-1x-mi300x-lat-fp8-1a2b3c4d",
        runtime_env: &runtime,
        template_env: &template,
        profile_env: [("VLLM_USE_TRITON_FLASH_ATTN".to_string(), "0".to_string())].into(),
        service_env: &svc_env,
        metric: Some(Metric::Latency),
        precision: Some(Precision::Fp8),
        profile_id: None,
        hardware: Some(&hw),
        node_affinity: Some(&na),
        image_pull_secrets: vec![LocalObjectReference {
            name: "regcred".into(),
        }],
        service_account_name: Some("inference"),
        resources: None,
        cache_volumes: vec![
            ("Qwen/Qwen3-32B".into(), "aim-cache-0123abcd".into()),
            ("tokenizer".into(), "aim-cache-4567ef01".into()),
        ],
    };
    let d = deployment(&inputs);
    let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
    let r = c.resources.as_ref().unwrap();
    assert_eq!(r.limits.as_ref().unwrap()["amd.com/gpu"].0, "2");
    assert_eq!(r.requests.as_ref().unwrap()["amd.com/gpu"].0, "2");
    insta::assert_yaml_snapshot!("deployment", d);
    insta::assert_yaml_snapshot!("service", service(&inputs));
}

// S-05: an AIMService of a long dotted name gets a Deployment and Service named by a DNS label of at
// most 63 characters, label values within 63, a selector that matches its pods, and its full name in an
// annotation; so does a long template name.
#[test]
fn long_and_dotted_names_give_valid_workload_names_and_labels() {
    use aim_resolve::names::{is_dns1035_label, is_label_value};
    use aim_resolve::service::workload::SERVICE_NAME_ANNOTATION;
    let service_name = format!("{}.chat.v1", "long-service-name-".repeat(10));
    let template_name = format!("{}.mi300x", "t".repeat(190));
    let inputs = WorkloadInputs {
        service_name: &service_name,
        namespace: "team",
        service_uid: "svc-uid",
        replicas: 1,
        image: "registry.example.test/aim/qwen:0.8.5",
        template_name: &template_name,
        runtime_env: &[],
        template_env: &[],
        profile_env: Default::default(),
        service_env: &[],
        metric: None,
        precision: None,
        profile_id: None,
        hardware: None,
        node_affinity: None,
        image_pull_secrets: Vec::new(),
        service_account_name: None,
        resources: None,
        cache_volumes: Vec::new(),
    };
    let d = deployment(&inputs);
    let s = service(&inputs);
    for meta in [&d.metadata, &s.metadata] {
        let name = meta.name.as_deref().unwrap();
        assert!(is_dns1035_label(name), "{name}");
        assert_eq!(
            meta.annotations.as_ref().unwrap()[SERVICE_NAME_ANNOTATION],
            service_name
        );
        for v in meta.labels.as_ref().unwrap().values() {
            assert!(is_label_value(v), "{v}");
        }
    }
    let pod = d.spec.template.metadata.as_ref().unwrap();
    let pod_labels = pod.labels.as_ref().unwrap();
    for (k, v) in d.spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "the selector matches the pods");
    }
    for (k, v) in s.spec.as_ref().unwrap().selector.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "the Service selects the pods");
    }
    assert_eq!(
        aim_resolve::service::service_of(pod),
        Some(service_name.as_str())
    );
}
