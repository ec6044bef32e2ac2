//! Model sources: the artifacts (weights, tokenizers) an AIM downloads.

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The pattern every source URI must match (as the API server checks it).
pub const SOURCE_URI_PATTERN: &str = r"^(hf|s3)://\S+$";

/// Whether `uri` matches [`SOURCE_URI_PATTERN`]: `hf://` or `s3://` followed by at least one character
/// and no whitespace (`\s` as the API server's RE2 defines it: tab, newline, form feed, carriage return, space).
pub fn is_valid_source_uri(uri: &str) -> bool {
    let rest = uri
        .strip_prefix("hf://")
        .or_else(|| uri.strip_prefix("s3://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.contains(['\t', '\n', '\x0c', '\r', ' ']))
}

/// A model artifact given in a template spec. Older manifests may spell the fields `modelId` and
/// `sourceUri`; they are read into `name` and `sourceURI`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelSourceWire")]
pub struct ModelSource {
    /// Name of the artifact, e.g. `Qwen/Qwen3-32B` or `tokenizer`.
    pub name: String,
    /// Where to download it from: `hf://…` or `s3://…`.
    #[serde(rename = "sourceURI")]
    pub source_uri: String,
    /// Expected size, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Credentials for downloading this artifact when it is cached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

// The wire form of `ModelSource`: both spellings of each field, exactly one of each set.
/// A model artifact to download: weights, tokenizer, … Set exactly one of `name` / `modelId` and one of
/// `sourceURI` / `sourceUri` (the second spellings are those of older manifests).
#[derive(Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.modelId)").message("set exactly one of name or modelId (modelId is the older spelling of name)"))]
#[x_kube(validation = Rule::new("has(self.sourceURI) != has(self.sourceUri)").message("set exactly one of sourceURI or sourceUri (sourceUri is the older spelling of sourceURI)"))]
struct ModelSourceWire {
    /// Name of the artifact, e.g. `Qwen/Qwen3-32B` or `tokenizer`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    name: Option<String>,
    /// Older spelling of `name`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    model_id: Option<String>,
    /// Where to download the artifact from: `hf://<repo>[/<file>]` or `s3://<bucket>/<key>`.
    #[serde(default, rename = "sourceURI")]
    #[schemars(regex(pattern = r"^(hf|s3)://\S+$"))]
    source_uri_upper: Option<String>,
    /// Older spelling of `sourceURI`.
    #[serde(default, rename = "sourceUri")]
    #[schemars(regex(pattern = r"^(hf|s3)://\S+$"))]
    source_uri_camel: Option<String>,
    /// Expected size, e.g. `16Gi`.
    #[serde(default)]
    size: Option<Quantity>,
    /// Credentials for downloading this artifact when it is cached.
    #[serde(default)]
    env: Option<Vec<EnvVar>>,
}

impl TryFrom<ModelSourceWire> for ModelSource {
    type Error = String;

    fn try_from(w: ModelSourceWire) -> Result<Self, String> {
        let name = match (w.name, w.model_id) {
            (Some(n), None) | (None, Some(n)) => n,
            (Some(_), Some(_)) => {
                return Err("model source sets both name and modelId; set one".into());
            }
            (None, None) => return Err("model source needs a name".into()),
        };
        let source_uri = match (w.source_uri_upper, w.source_uri_camel) {
            (Some(u), None) | (None, Some(u)) => u,
            (Some(_), Some(_)) => {
                return Err(format!(
                    "model source {name:?} sets both sourceURI and sourceUri; set one"
                ));
            }
            (None, None) => return Err(format!("model source {name:?} needs a sourceURI")),
        };
        Ok(ModelSource {
            name,
            source_uri,
            size: w.size,
            env: w.env.unwrap_or_default(),
        })
    }
}

impl JsonSchema for ModelSource {
    fn schema_name() -> Cow<'static, str> {
        "ModelSource".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        ModelSourceWire::json_schema(generator)
    }
}

/// A model artifact as recorded in status: discovered or copied from the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSourceStatus {
    /// Name of the artifact.
    pub name: String,
    /// URI of the artifact.
    pub source: String,
    /// Size in bytes; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_uri_rule_matches_the_schema_pattern() {
        // T-33, T-19: the Rust check and the schema pattern agree.
        assert!(is_valid_source_uri("hf://Qwen/Qwen3-32B"));
        assert!(is_valid_source_uri("s3://bucket/key"));
        assert!(!is_valid_source_uri("hf://"));
        assert!(!is_valid_source_uri("http://x"));
        assert!(!is_valid_source_uri("hf://a b"));
        assert!(!is_valid_source_uri("HF://x"));
        assert!(!is_valid_source_uri(" hf://x"));
    }

    #[test]
    fn upstream_spellings_normalise() {
        let seed: ModelSource =
            serde_json::from_str(r#"{"name":"tokenizer","sourceURI":"hf://a/b","size":"2Mi"}"#)
                .unwrap();
        let upstream: ModelSource =
            serde_json::from_str(r#"{"modelId":"tokenizer","sourceUri":"hf://a/b","size":"2Mi"}"#)
                .unwrap();
        assert_eq!(seed, upstream);
        let out = serde_json::to_value(&upstream).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"name":"tokenizer","sourceURI":"hf://a/b","size":"2Mi"})
        );
    }

    #[test]
    fn both_spellings_are_an_error() {
        let err = serde_json::from_str::<ModelSource>(
            r#"{"name":"a","modelId":"a","sourceURI":"hf://a"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("both name and modelId"), "{err}");
        let err = serde_json::from_str::<ModelSource>(r#"{"name":"a"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a sourceURI"), "{err}");
    }
}
