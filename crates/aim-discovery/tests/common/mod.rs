//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use aim_api::{Metric, Precision, TemplateScope};
use aim_discovery::DiscoveryInputs;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, LocalObjectReference, SecretKeySelector};

/// The element of `dry-run.md`, as a pretty-printing dry-run would print it.
pub const ELEMENT: &str = r#"{
  "filename": "vllm-mi300x-fp8-tp1-latency.yaml",
  "profile": {
    "model": "Qwen/Qwen3-32B",
    "quantized_model": "",
    "metadata": {
      "engine": "vllm",
      "gpu": "MI300X",
      "precision": "fp8",
      "gpu_count": 1,
      "metric": "latency",
      "type": "optimized"
    },
    "engine_args": { "tensor-parallel-size": 1, "max-num-seqs": 256, "enable-chunked-prefill": true },
    "env_vars": { "VLLM_USE_TRITON_FLASH_ATTN": "0" }
  },
  "models": [
    { "name": "Qwen/Qwen3-32B", "source": "hf://Qwen/Qwen3-32B", "size_gb": 16.0 },
    { "name": "Qwen/Qwen3-32B-tokenizer", "source": "hf://Qwen/Qwen3-32B/tokenizer.json", "size_gb": 0.001953125 }
  ]
}"#;

/// The clean dry-run output: a JSON array holding [`ELEMENT`].
pub fn clean_array() -> String {
    format!("[\n{ELEMENT}\n]\n")
}

/// An array whose only element is built from `profile_metadata` and `models` (JSON text).
pub fn array_with(metadata: &str, models: &str) -> String {
    format!(
        r#"[{{"filename":"x.yaml","profile":{{"model":"m","metadata":{metadata}}},"models":{models}}}]"#
    )
}

/// A plain env var.
pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// An env var read from a secret key.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// A namespace template with only the required inputs.
pub fn namespace_inputs() -> DiscoveryInputs {
    DiscoveryInputs::new(
        "qwen3-32b-latency",
        TemplateScope::Namespace,
        "0b3c7a8e-1111-4222-8333-944455556666",
        "ml-team",
        "docker.io/amdenterpriseai/aim-qwen-qwen3-32b:0.8.5",
    )
}

/// A cluster template, discovering in the operator namespace, with metric, precision and GPU set.
pub fn cluster_inputs() -> DiscoveryInputs {
    let mut inputs = DiscoveryInputs::new(
        "qwen3-32b-mi300x-throughput",
        TemplateScope::Cluster,
        "5f1d2c3b-aaaa-4bbb-8ccc-dddd0000eeee",
        "aim-system",
        "docker.io/amdenterpriseai/aim-qwen-qwen3-32b:0.8.5",
    );
    inputs.metric = Some(Metric::Throughput);
    inputs.precision = Some(Precision::Fp8);
    inputs.gpu_model = Some("MI300X".into());
    inputs.gpu_count = Some(2);
    inputs
}

/// A namespace template using every input: env with a secret, pull secrets, service account, profile id.
pub fn full_inputs() -> DiscoveryInputs {
    let mut inputs = namespace_inputs();
    inputs.env = vec![
        env("HF_HUB_OFFLINE", "0"),
        secret_env("HF_TOKEN", "hf-credentials", "token"),
        env("VLLM_LOGGING_LEVEL", "WARNING"),
    ];
    inputs.image_pull_secrets = vec![LocalObjectReference {
        name: "registry-credentials".into(),
    }];
    inputs.service_account_name = Some("aim-discovery".into());
    inputs.metric = Some(Metric::Latency);
    inputs.precision = Some(Precision::Fp16);
    inputs.gpu_model = Some("MI325X".into());
    inputs.gpu_count = Some(1);
    inputs.profile_id = Some("vllm-mi325x-fp16-tp1-latency".into());
    inputs.active_deadline_seconds = 900;
    inputs
}
