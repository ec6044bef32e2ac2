//! The seed documentation's examples deserialise into the types, and upstream spellings normalise.

use aim_api::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn namespace_template_example() {
    let t: AIMServiceTemplate = serde_saphyr::from_str(&fixture(
        "seed-aimservicetemplate-qwen3-32b-throughput.yaml",
    ))
    .unwrap();
    assert_eq!(t.metadata.namespace.as_deref(), Some("ml-research"));
    let c = &t.spec.common;
    assert_eq!(c.model_name, "qwen-qwen3-32b");
    assert_eq!(c.runtime_config_name, "ml-research");
    assert_eq!(c.metric, Some(Metric::Throughput));
    assert_eq!(c.precision, Some(Precision::Fp8));
    let gpu = c.hardware.as_ref().unwrap().gpu.as_ref().unwrap();
    assert_eq!((gpu.requests, gpu.model.as_deref()), (2, Some("MI300X")));
    assert_eq!(gpu.resource_name, "amd.com/gpu", "default resource name");
    assert_eq!(t.spec.env[0].name, "HF_TOKEN");
    let key_ref = t.spec.env[0]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("huggingface-creds", "token")
    );
    assert_eq!(c.image_pull_secrets[0].name, "registry-credentials");
}

#[test]
fn static_sources_example() {
    let t: AIMServiceTemplate =
        serde_saphyr::from_str(&fixture("seed-aimservicetemplate-qwen3-32b-static.yaml")).unwrap();
    let c = &t.spec.common;
    assert_eq!(
        c.runtime_config_name, "default",
        "T-03: default runtime config name"
    );
    assert_eq!(c.model_sources.len(), 2);
    assert_eq!(c.model_sources[1].name, "tokenizer");
    assert_eq!(
        c.model_sources[1].source_uri,
        "hf://Qwen/Qwen3-32B/tokenizer.json"
    );
    assert_eq!(c.model_sources[0].size.as_ref().unwrap().0, "16Gi");
}

#[test]
fn cluster_template_example() {
    let t: AIMClusterServiceTemplate = serde_saphyr::from_str(&fixture(
        "seed-aimclusterservicetemplate-qwen3-32b-latency.yaml",
    ))
    .unwrap();
    assert_eq!(t.metadata.namespace, None);
    assert_eq!(t.spec.common.runtime_config_name, "platform-default");
    assert_eq!(t.spec.common.metric, Some(Metric::Latency));
    assert_eq!(t.spec.common.precision, Some(Precision::Fp16));
}

#[test]
fn upstream_spellings_normalise_to_the_seed() {
    let seed: AIMServiceTemplate =
        serde_saphyr::from_str(&fixture("seed-aimservicetemplate-qwen3-32b-static.yaml")).unwrap();
    let upstream: AIMServiceTemplate =
        serde_saphyr::from_str(&fixture("upstream-spelling-static.yaml")).unwrap();
    assert_eq!(seed.spec, upstream.spec);
    let written = serde_json::to_value(&upstream.spec).unwrap();
    assert_eq!(
        written["modelSources"][0]["sourceURI"],
        "hf://Qwen/Qwen3-32B"
    );
    assert_eq!(written["modelSources"][0]["name"], "Qwen/Qwen3-32B");
    assert!(written["modelSources"][0].get("modelId").is_none());
}

#[test]
fn status_example() {
    let status: ServiceTemplateStatus = serde_saphyr::from_str(
        "modelSources:\n  - name: Qwen/Qwen3-32B\n    source: hf://Qwen/Qwen3-32B\n    sizeBytes: 17179869184\n  - name: tokenizer\n    source: hf://Qwen/Qwen3-32B/tokenizer.json\n    sizeBytes: 2097152\n",
    )
    .unwrap();
    assert_eq!(status.status, TemplatePhase::Pending);
    assert_eq!(status.model_sources[0].size_bytes, Some(17_179_869_184));
}

#[test]
fn unknown_enum_values_are_rejected_by_the_types() {
    // T-33 (client side): the same closed enums the schema carries.
    let err = serde_json::from_value::<ServiceTemplateCommon>(
        serde_json::json!({"modelName": "m", "metric": "fast"}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown variant `fast`"), "{err}");
}
