//! M-01: an image's labels → its recommended deployments, and why a metadata read failed.

use aim_api::conditions::reasons;
use aim_api::{
    ImageMetadata, Metric, Precision, RECOMMENDED_DEPLOYMENTS_LABEL,
    RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY, RecommendedDeployment,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why an image's metadata could not be had. The operator classifies registry errors into these; label
/// problems come from [`metadata_from_labels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataFailure {
    /// The registry did not answer (DNS, connection refused, TLS, timeout).
    Unreachable(String),
    /// The registry refused the credentials, or asked for credentials and none were given.
    Unauthorized(String),
    /// The repository, tag or digest does not exist (or has no linux/amd64 image).
    NotFound(String),
    /// A pull secret the model names is missing or is not a usable `kubernetes.io/dockerconfigjson`.
    PullSecret(String),
    /// Any other registry answer (5xx, a malformed manifest).
    Registry(String),
    /// A token, manifest or config blob larger than the operator reads from a registry.
    TooLarge(String),
    /// The read would go where the operator's egress rules do not let it (a local address of a registry
    /// that is not listed, a token realm over plain HTTP, a redirect down to plain HTTP).
    NotAllowed(String),
    /// The image has neither recommended-deployments label.
    LabelMissing(String),
    /// The label is there but cannot be read.
    LabelUnparsable(String),
}

impl MetadataFailure {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => reasons::REGISTRY_UNREACHABLE,
            Self::Unauthorized(_) => reasons::REGISTRY_UNAUTHORIZED,
            Self::NotFound(_) => reasons::IMAGE_NOT_FOUND,
            Self::PullSecret(_) => reasons::PULL_SECRET_INVALID,
            Self::Registry(_) => reasons::REGISTRY_ERROR,
            Self::TooLarge(_) => reasons::REGISTRY_RESPONSE_TOO_LARGE,
            Self::NotAllowed(_) => reasons::REGISTRY_NOT_ALLOWED,
            Self::LabelMissing(_) => reasons::LABEL_MISSING,
            Self::LabelUnparsable(_) => reasons::LABEL_UNPARSABLE,
        }
    }

    /// The message, as complete as the cause allows.
    pub fn message(&self) -> &str {
        match self {
            Self::Unreachable(m)
            | Self::Unauthorized(m)
            | Self::NotFound(m)
            | Self::PullSecret(m)
            | Self::Registry(m)
            | Self::TooLarge(m)
            | Self::NotAllowed(m)
            | Self::LabelMissing(m)
            | Self::LabelUnparsable(m) => m,
        }
    }

    /// A short category for metrics: `unreachable`, `unauthorized`, `not_found`, `pull_secret`,
    /// `registry` (a response over the cap included), `not_allowed`, `label_missing`, `label_unparsable`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::PullSecret(_) => "pull_secret",
            Self::Registry(_) | Self::TooLarge(_) => "registry",
            Self::NotAllowed(_) => "not_allowed",
            Self::LabelMissing(_) => "label_missing",
            Self::LabelUnparsable(_) => "label_unparsable",
        }
    }
}

/// The image's metadata from its config labels: the recommended deployments from
/// `com.amd.aim.model.recommendedDeployments`, else from the older `org.amd.silogen.…` key.
pub fn metadata_from_labels(
    image: &str,
    labels: &BTreeMap<String, String>,
) -> Result<ImageMetadata, MetadataFailure> {
    let (key, text) = match labels
        .get(RECOMMENDED_DEPLOYMENTS_LABEL)
        .map(|t| (RECOMMENDED_DEPLOYMENTS_LABEL, t))
        .or_else(|| {
            labels
                .get(RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY)
                .map(|t| (RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY, t))
        }) {
        Some(found) => found,
        None => {
            return Err(MetadataFailure::LabelMissing(format!(
                "image {image} has no label {RECOMMENDED_DEPLOYMENTS_LABEL} (nor the older \
                 {RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY}); set spec.imageMetadata on the model, or \
                 spec.discovery.extractMetadata: false and write the templates yourself"
            )));
        }
    };
    let deployments = parse_recommended_deployments(text).map_err(|why| {
        MetadataFailure::LabelUnparsable(format!(
            "label {key} of image {image} cannot be read: {why}"
        ))
    })?;
    Ok(ImageMetadata {
        labels: labels.clone(),
        recommended_deployments: deployments,
    })
}

/// Parses the recommended-deployments label: a JSON array of objects. Tolerated: single quotes instead
/// of double quotes, a missing outer `[]`, field values in any letter case, counts as strings.
pub fn parse_recommended_deployments(text: &str) -> Result<Vec<RecommendedDeployment>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("it is empty".into());
    }
    let value = lenient_json(trimmed).ok_or_else(|| {
        format!(
            "it is not a JSON array of deployments (starts with {:?})",
            excerpt(trimmed)
        )
    })?;
    let entries = match value {
        Value::Array(items) => items,
        Value::Object(o) => vec![Value::Object(o)],
        other => {
            return Err(format!(
                "expected an array of deployment objects, found {}",
                kind_of(&other)
            ));
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(o) => deployment(o).map_err(|e| format!("entry {}: {e}", i + 1)),
            other => Err(format!(
                "entry {} is {}, not a deployment object",
                i + 1,
                kind_of(other)
            )),
        })
        .collect()
}

fn lenient_json(text: &str) -> Option<Value> {
    let single = text.replace('\'', "\"");
    let mut tries = vec![text.to_string(), single.clone()];
    if !text.starts_with('[') {
        tries.push(format!("[{text}]"));
        tries.push(format!("[{single}]"));
    }
    tries
        .into_iter()
        .find_map(|t| serde_json::from_str::<Value>(&t).ok())
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn text_field(o: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("{key} is {}, not a string", kind_of(other))),
    }
}

fn deployment(o: &Map<String, Value>) -> Result<RecommendedDeployment, String> {
    let gpu_count = match o.get("gpuCount") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("gpuCount {n} is not a GPU count"))?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("gpuCount {s:?} is not a GPU count"))?,
        ),
        Some(other) => return Err(format!("gpuCount is {}, not a number", kind_of(other))),
    };
    let precision = match text_field(o, "precision")? {
        None => None,
        Some(p) => Some(Precision::parse(&p.to_ascii_lowercase()).ok_or_else(|| {
            format!(
                "precision {p:?} is not one of {}",
                Precision::ALL
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?),
    };
    let metric = match text_field(o, "metric")? {
        None => None,
        Some(m) => Some(
            Metric::parse(&m.to_ascii_lowercase())
                .ok_or_else(|| format!("metric {m:?} is not latency or throughput"))?,
        ),
    };
    Ok(RecommendedDeployment {
        gpu_model: text_field(o, "gpuModel")?,
        gpu_count,
        precision,
        metric,
        profile_id: text_field(o, "profileId")?,
        description: text_field(o, "description")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(key: &str, value: &str) -> BTreeMap<String, String> {
        [(key.to_string(), value.to_string())].into()
    }

    // M-01
    #[test]
    fn reads_the_json_array() {
        let d = parse_recommended_deployments(
            r#"[{"gpuModel":"MI300X","gpuCount":2,"precision":"fp8","metric":"latency","profileId":"p1"}]"#,
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].gpu_model.as_deref(), Some("MI300X"));
        assert_eq!(d[0].gpu_count, Some(2));
        assert_eq!(d[0].precision, Some(Precision::Fp8));
        assert_eq!(d[0].metric, Some(Metric::Latency));
        assert_eq!(d[0].profile_id.as_deref(), Some("p1"));
    }

    // M-01: single quotes and no outer brackets are tolerated.
    #[test]
    fn tolerates_single_quotes_and_missing_brackets() {
        let d = parse_recommended_deployments(
            "{'gpuModel': 'MI325X', 'gpuCount': '1', 'precision': 'FP16', 'metric': 'Throughput'}, {'gpuModel': 'MI300X'}",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].gpu_count, Some(1));
        assert_eq!(d[0].precision, Some(Precision::Fp16));
        assert_eq!(d[0].metric, Some(Metric::Throughput));
        assert_eq!(d[1].gpu_model.as_deref(), Some("MI300X"));
    }

    #[test]
    fn an_empty_array_is_no_deployments() {
        assert!(parse_recommended_deployments("[]").unwrap().is_empty());
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let e = parse_recommended_deployments("definitely not json").unwrap_err();
        assert!(e.contains("not a JSON array"), "{e}");
        let e = parse_recommended_deployments(r#"[{"gpuModel":"MI300X","precision":"fp9"}]"#)
            .unwrap_err();
        assert!(e.contains("entry 1") && e.contains("fp9"), "{e}");
        let e = parse_recommended_deployments("[1, 2]").unwrap_err();
        assert!(e.contains("entry 1 is a number"), "{e}");
        let e = parse_recommended_deployments(r#"[{"gpuCount":-1}]"#).unwrap_err();
        assert!(e.contains("gpuCount"), "{e}");
    }

    // M-01: the current key wins over the older one; the older one alone is read.
    #[test]
    fn label_keys() {
        let mut both = labels(RECOMMENDED_DEPLOYMENTS_LABEL, r#"[{"gpuModel":"MI300X"}]"#);
        both.insert(
            RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY.into(),
            r#"[{"gpuModel":"MI325X"}]"#.into(),
        );
        let m = metadata_from_labels("img", &both).unwrap();
        assert_eq!(
            m.recommended_deployments[0].gpu_model.as_deref(),
            Some("MI300X")
        );
        let legacy = labels(
            RECOMMENDED_DEPLOYMENTS_LABEL_LEGACY,
            r#"[{"gpuModel":"MI325X"}]"#,
        );
        let m = metadata_from_labels("img", &legacy).unwrap();
        assert_eq!(
            m.recommended_deployments[0].gpu_model.as_deref(),
            Some("MI325X")
        );
        assert_eq!(m.labels, legacy);
    }

    #[test]
    fn missing_and_unparsable_labels_say_which() {
        let e = metadata_from_labels("reg/img:1", &BTreeMap::new()).unwrap_err();
        assert_eq!(e.reason(), reasons::LABEL_MISSING);
        assert!(e.message().contains("reg/img:1"));
        let e = metadata_from_labels("reg/img:1", &labels(RECOMMENDED_DEPLOYMENTS_LABEL, "}{"))
            .unwrap_err();
        assert_eq!(e.reason(), reasons::LABEL_UNPARSABLE);
        assert!(e.message().contains(RECOMMENDED_DEPLOYMENTS_LABEL), "{e:?}");
    }

    proptest::proptest! {
        // Whatever the label holds, parsing answers (never panics) and is deterministic.
        #[test]
        fn any_text_gets_an_answer(text in ".{0,200}") {
            let a = parse_recommended_deployments(&text);
            let b = parse_recommended_deployments(&text);
            proptest::prop_assert_eq!(a, b);
        }
    }
}
