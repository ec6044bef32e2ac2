//! T-19: a successful parse never yields a status the API server would reject. Every result is written
//! into a template status and checked against the status schema of the generated CRDs.

mod common;

use aim_api::{ServiceTemplateStatus, TemplatePhase, is_valid_source_uri};
use aim_discovery::{DEFAULT_LOG_LIMIT, DryRunResult, parse_dry_run};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Checks `value` against a structural OpenAPI v3 schema as the API server would, for the keywords the
/// status schemas use. Any other validating keyword fails the check, so a new one cannot slip by.
fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    const KNOWN: &[&str] = &[
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "nullable",
        "format",
        "description",
        "title",
        "default",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "additionalProperties",
    ];
    let s = schema
        .as_object()
        .ok_or(format!("{path}: schema is not an object"))?;
    if let Some(k) = s.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "{path}: schema keyword {k} is not checked by this test"
        ));
    }
    if value.is_null() {
        return if s.get("nullable") == Some(&json!(true)) {
            Ok(())
        } else {
            Err(format!("{path}: null"))
        };
    }
    if s.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        return if value.is_string() || value.is_i64() || value.is_u64() {
            Ok(())
        } else {
            Err(format!("{path}: not int-or-string"))
        };
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{path}: {value} not in {allowed:?}"));
    }
    let ty = s.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("number") => value.is_number(),
        Some("integer") => match s.get("format").and_then(Value::as_str) {
            Some("int32") => value.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
            _ => value.is_i64(),
        },
        None => true,
        Some(other) => return Err(format!("{path}: type {other} not checked")),
    };
    if !ok {
        return Err(format!("{path}: {value} is not {ty:?}"));
    }
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        && !s.contains_key("properties")
    {
        return Ok(());
    }
    if let Some(obj) = value.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("{path}: {r} is required"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(sub), _) => check(sub, v, &format!("{path}.{k}"))?,
                (None, Some(ap)) if ap.is_object() => check(ap, v, &format!("{path}.{k}"))?,
                _ => return Err(format!("{path}: unknown field {k} would be pruned")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(items, v, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

/// The status schema of both template kinds.
fn status_schemas() -> &'static [Value] {
    static SCHEMAS: OnceLock<Vec<Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        aim_api::crds()
            .into_iter()
            .filter(|c| c.spec.names.kind.ends_with("ServiceTemplate"))
            .map(|c| {
                let crd = serde_json::to_value(c).unwrap();
                crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
                    .clone()
            })
            .collect()
    })
}

/// The status T-18 writes from a result.
fn status_from(result: &DryRunResult) -> Value {
    let status = ServiceTemplateStatus {
        observed_generation: Some(1),
        status: TemplatePhase::Ready,
        model_sources: result.model_sources.clone(),
        profile: Some(result.profile.clone()),
        ..ServiceTemplateStatus::default()
    };
    serde_json::to_value(status).unwrap()
}

fn assert_accepted(result: &DryRunResult) -> Result<(), String> {
    for s in &result.model_sources {
        if !is_valid_source_uri(&s.source) {
            return Err(format!("invalid source URI {:?}", s.source));
        }
        if s.size_bytes.is_some_and(|b| b < 0) {
            return Err(format!("negative size {:?}", s.size_bytes));
        }
    }
    let status = status_from(result);
    let schemas = status_schemas();
    assert_eq!(schemas.len(), 2);
    for schema in schemas {
        check(schema, &status, "status")?;
    }
    // The printer columns read these as strings.
    let meta = &result.profile["metadata"];
    for key in ["metric", "precision"] {
        if !(meta[key].is_null() || meta[key].is_string()) {
            return Err(format!("metadata.{key} is {}", meta[key]));
        }
    }
    Ok(())
}

#[test]
fn the_example_result_is_accepted() {
    // T-19
    let result = parse_dry_run(common::clean_array().as_bytes(), DEFAULT_LOG_LIMIT).unwrap();
    assert_accepted(&result).unwrap();
}

#[test]
fn the_schema_check_rejects_what_the_api_server_rejects() {
    // The checker itself: a status with a string size or a missing source is refused.
    let schema = &status_schemas()[0];
    let mut status =
        status_from(&parse_dry_run(common::clean_array().as_bytes(), DEFAULT_LOG_LIMIT).unwrap());
    status["modelSources"][0]["sizeBytes"] = json!("16Gi");
    assert!(check(schema, &status, "status").is_err());
    status["modelSources"][0] = json!({"name": "x"});
    assert!(check(schema, &status, "status").is_err());
    status["modelSources"] = json!([]);
    status["profile"] = json!("not an object");
    assert!(check(schema, &status, "status").is_err());
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn maybe(values: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        6 => prop::sample::select(values).prop_map(Value::from),
        1 => json_value(),
    ]
}

fn model() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            8 => "[a-zA-Z0-9/._-]{1,20}".prop_map(Value::from),
            1 => json_value(),
        ],
        prop_oneof![
            8 => "(hf|s3)://[!-~]{1,30}".prop_map(Value::from),
            1 => "[ -~]{0,30}".prop_map(Value::from),
            1 => json_value(),
        ],
        prop_oneof![
            2 => Just(Value::Null),
            6 => (-0.5f64..1e10).prop_map(Value::from),
            1 => json_value(),
        ],
    )
        .prop_map(|(name, source, size)| json!({"name": name, "source": source, "size_gb": size}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn every_successful_parse_gives_an_accepted_status(
        metric in maybe(&["latency", "throughput", "latency", "throughput", "Latency", "fast"]),
        precision in maybe(&["auto", "fp4", "fp8", "fp16", "fp32", "bf16", "int4", "int8", "FP8", "fp64"]),
        ty in maybe(&["optimized", "preview", "unoptimized", "tuned"]),
        gpu_count in prop_oneof![
            2 => Just(Value::Null),
            6 => (-1i64..10).prop_map(Value::from),
            1 => json_value(),
        ],
        extra in json_value(),
        models in prop::collection::vec(model(), 0..4),
    ) {
        // T-19: never a status the API server would reject — either a failure, or an accepted status.
        let element = json!({
            "profile": {
                "metadata": {"metric": metric, "precision": precision, "type": ty, "gpu_count": gpu_count},
                "extra": extra,
            },
            "models": models,
        });
        let log = format!("banner\n{}\ndone [ok]\n", Value::Array(vec![element]));
        if let Ok(result) = parse_dry_run(log.as_bytes(), DEFAULT_LOG_LIMIT) {
            prop_assert!(assert_accepted(&result).is_ok(), "{:?}", assert_accepted(&result));
        }
    }
}
