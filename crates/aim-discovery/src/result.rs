//! The first element of the dry-run array, checked and converted (T-18, T-19).

use crate::error::ParseError;
use crate::excerpt;
use aim_api::{Metric, ModelSourceStatus, Precision, TemplateType, is_valid_source_uri};
use serde_json::{Map, Value};

/// Bytes in one GiB: `size_gb` counts GiB.
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// 2^63: the first byte count that no longer fits an int64.
const INT64_LIMIT: f64 = 9_223_372_036_854_775_808.0;

/// What a successful dry-run found. Every value fits the template status as the CRD defines it.
#[derive(Clone, Debug, PartialEq)]
pub struct DryRunResult {
    /// The element's `profile` object, verbatim (unknown keys kept).
    pub profile: Value,
    /// `profile.metadata`, checked against the API's enums.
    pub metadata: ProfileMetadata,
    /// `models[]` as status model sources; `size_gb` converted to bytes (GiB × 1024³, rounded).
    pub model_sources: Vec<ModelSourceStatus>,
}

/// `profile.metadata` of a dry-run result; absent or `null` values are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileMetadata {
    /// Inference engine, e.g. `vllm`.
    pub engine: Option<String>,
    /// GPU model, e.g. `MI300X`.
    pub gpu: Option<String>,
    /// Precision the profile runs at.
    pub precision: Option<Precision>,
    /// GPUs per replica.
    pub gpu_count: Option<i32>,
    /// What the profile is tuned for.
    pub metric: Option<Metric>,
    /// How well the profile is tuned.
    pub r#type: Option<TemplateType>,
}

/// Checks and converts the first element of the array.
pub(crate) fn element_to_result(element: Value) -> Result<DryRunResult, ParseError> {
    let Value::Object(mut element) = element else {
        return Err(malformed(format!(
            "the first element is {}, not an object with `profile` and `models`",
            kind(&element)
        )));
    };
    let profile = match element.remove("profile") {
        Some(Value::Object(profile)) => profile,
        Some(other) => {
            return Err(malformed(format!(
                "`profile` is {}, not an object",
                kind(&other)
            )));
        }
        None => return Err(malformed("`profile` is missing".into())),
    };
    let metadata = metadata(&profile)?;
    let model_sources = match element.get("models") {
        Some(Value::Array(models)) => models
            .iter()
            .enumerate()
            .map(|(i, m)| model_source(i, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(malformed(format!(
                "`models` is {}, not an array",
                kind(other)
            )));
        }
        None => return Err(malformed("`models` is missing".into())),
    };
    Ok(DryRunResult {
        profile: Value::Object(profile),
        metadata,
        model_sources,
    })
}

fn metadata(profile: &Map<String, Value>) -> Result<ProfileMetadata, ParseError> {
    let meta = match profile.get("metadata") {
        None | Some(Value::Null) => return Ok(ProfileMetadata::default()),
        Some(Value::Object(meta)) => meta,
        Some(other) => {
            return Err(malformed(format!(
                "`profile.metadata` is {}, not an object",
                kind(other)
            )));
        }
    };
    Ok(ProfileMetadata {
        engine: string(meta, "engine")?,
        gpu: string(meta, "gpu")?,
        precision: enumerated(meta, "precision", Precision::ALL, Precision::parse)?,
        gpu_count: gpu_count(meta)?,
        metric: enumerated(meta, "metric", Metric::ALL, Metric::parse)?,
        r#type: enumerated(meta, "type", TemplateType::ALL, TemplateType::parse)?,
    })
}

fn string(meta: &Map<String, Value>, key: &str) -> Result<Option<String>, ParseError> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid_value(key, other, "a string".into())),
    }
}

fn enumerated<T: std::fmt::Display>(
    meta: &Map<String, Value>,
    key: &str,
    all: &[T],
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ParseError> {
    let allowed = || {
        all.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::String(s)) => parse(s)
            .map(Some)
            .ok_or_else(|| invalid_value(key, v, allowed())),
        Some(other) => Err(invalid_value(key, other, allowed())),
    }
}

fn gpu_count(meta: &Map<String, Value>) -> Result<Option<i32>, ParseError> {
    let v = match meta.get("gpu_count") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let count = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < INT64_LIMIT)
                .map(|f| f as i64)
        }),
        _ => None,
    };
    count
        .and_then(|c| i32::try_from(c).ok())
        .filter(|c| *c >= 0)
        .map(Some)
        .ok_or_else(|| invalid_value("gpu_count", v, "a whole number from 0 to 2147483647".into()))
}

fn model_source(index: usize, model: &Value) -> Result<ModelSourceStatus, ParseError> {
    let Value::Object(model) = model else {
        return Err(malformed(format!(
            "`models[{index}]` is {}, not an object",
            kind(model)
        )));
    };
    let name = match model.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(malformed(format!(
                "`models[{index}].name` is {}, not a non-empty string",
                excerpt::value(other)
            )));
        }
        None => return Err(malformed(format!("`models[{index}].name` is missing"))),
    };
    let source = match model.get("source") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(malformed(format!(
                "`models[{index}].source` ({name}) is {}, not a string",
                kind(other)
            )));
        }
        None => {
            return Err(malformed(format!(
                "`models[{index}].source` ({name}) is missing"
            )));
        }
    };
    if !is_valid_source_uri(&source) {
        return Err(ParseError::InvalidSourceUri {
            name: excerpt::printable(name.as_bytes(), 80),
            uri: excerpt::printable(source.as_bytes(), 120),
        });
    }
    let size_bytes = match model.get("size_gb") {
        None | Some(Value::Null) => None,
        Some(v) => Some(size_bytes(&name, v)?),
    };
    Ok(ModelSourceStatus {
        name,
        source,
        size_bytes,
    })
}

/// `size_gb` (GiB) as bytes: round(size_gb × 1024³).
fn size_bytes(name: &str, v: &Value) -> Result<i64, ParseError> {
    let invalid = |reason: &str| ParseError::InvalidSize {
        name: excerpt::printable(name.as_bytes(), 80),
        value: excerpt::value(v),
        reason: reason.to_string(),
    };
    let gib = match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| invalid("not a number"))?,
        _ => return Err(invalid("not a number")),
    };
    if !gib.is_finite() {
        return Err(invalid("not a finite number"));
    }
    if gib < 0.0 {
        return Err(invalid("negative"));
    }
    let bytes = (gib * GIB).round();
    if bytes >= INT64_LIMIT {
        return Err(invalid("too large for a size in bytes (int64)"));
    }
    Ok(bytes as i64)
}

fn malformed(message: String) -> ParseError {
    ParseError::InvalidElement { message }
}

fn invalid_value(key: &str, value: &Value, allowed: String) -> ParseError {
    ParseError::InvalidValue {
        field: format!("profile.metadata.{key}"),
        value: excerpt::value(value),
        allowed,
    }
}

/// What kind of JSON value `v` is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
