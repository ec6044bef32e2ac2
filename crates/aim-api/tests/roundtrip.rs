//! Arbitrary specs and statuses serialise and deserialise to the same value.

use aim_api::*;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, LocalObjectReference, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}"
}

fn quantity() -> impl Strategy<Value = Quantity> {
    select(vec!["16Gi", "2Mi", "128Gi", "192G", "4", "500m", "1.5Ti"])
        .prop_map(|q| Quantity(q.into()))
}

fn env_var() -> impl Strategy<Value = EnvVar> {
    (
        "[A-Z_][A-Z0-9_]{0,12}",
        prop_oneof![
            of(".{0,16}").prop_map(|v| (v, None)),
            (name(), name()).prop_map(|(n, k)| (
                None,
                Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: n,
                        key: k,
                        optional: None
                    }),
                    ..Default::default()
                })
            )),
        ],
    )
        .prop_map(|(name, (value, value_from))| EnvVar {
            name,
            value,
            value_from,
        })
}

fn secrets() -> impl Strategy<Value = Vec<LocalObjectReference>> {
    vec(name().prop_map(|name| LocalObjectReference { name }), 0..3)
}

fn hardware() -> impl Strategy<Value = Hardware> {
    let gpu = (
        0..16i32,
        of(select(vec!["MI300X", "MI325X", "mi300x"])),
        of(quantity()),
        select(vec!["amd.com/gpu", "amd.com/mi300x"]),
    )
        .prop_map(|(requests, model, min_vram, rn)| GpuRequirements {
            requests,
            // The schema forbids both; keep generated values valid.
            min_vram: if model.is_some() { None } else { min_vram },
            model: model.map(String::from),
            resource_name: rn.into(),
        });
    let cpu = (quantity(), of(quantity()))
        .prop_map(|(requests, limits)| CpuRequirements { requests, limits });
    (of(gpu), of(cpu))
        .prop_filter("gpu or cpu", |(g, c)| g.is_some() || c.is_some())
        .prop_map(|(gpu, cpu)| Hardware { gpu, cpu })
}

fn model_source() -> impl Strategy<Value = ModelSource> {
    (
        name(),
        "(hf|s3)://[A-Za-z0-9/._-]{1,30}",
        of(quantity()),
        vec(env_var(), 0..2),
    )
        .prop_map(|(name, source_uri, size, env)| ModelSource {
            name,
            source_uri,
            size,
            env,
        })
}

fn common() -> impl Strategy<Value = ServiceTemplateCommon> {
    (
        (
            name(),
            name(),
            of(select(Metric::ALL.to_vec())),
            of(select(Precision::ALL.to_vec())),
            of(hardware()),
        ),
        (
            secrets(),
            of(name()),
            vec(model_source(), 0..3),
            of(name()),
            of(select(TemplateType::ALL.to_vec())),
        ),
    )
        .prop_map(
            |(
                (model_name, runtime_config_name, metric, precision, hardware),
                (image_pull_secrets, service_account_name, model_sources, profile_id, r#type),
            )| ServiceTemplateCommon {
                model_name,
                runtime_config_name,
                metric,
                precision,
                hardware,
                image_pull_secrets,
                service_account_name,
                resources: None,
                model_sources,
                profile_id,
                r#type,
            },
        )
}

fn condition() -> impl Strategy<Value = Condition> {
    (
        name(),
        select(vec!["True", "False", "Unknown"]),
        name(),
        ".{0,40}",
        0i64..4_000_000_000,
        of(0i64..100),
    )
        .prop_map(
            |(type_, status, reason, message, secs, observed_generation)| Condition {
                type_,
                status: status.into(),
                reason,
                message,
                last_transition_time: Time(jiff::Timestamp::from_second(secs).unwrap()),
                observed_generation,
            },
        )
}

fn reference() -> impl Strategy<Value = ResolvedReference> {
    (
        name(),
        of(name()),
        select(vec![
            ReferenceScope::Namespace,
            ReferenceScope::Cluster,
            ReferenceScope::Merged,
        ]),
        name(),
        of(name()),
    )
        .prop_map(|(name, namespace, scope, kind, uid)| ResolvedReference {
            name,
            namespace,
            scope,
            kind,
            uid,
        })
}

fn profile() -> impl Strategy<Value = serde_json::Value> {
    (
        name(),
        of(select(Metric::ALL.to_vec())),
        0i64..64,
        vec((name(), ".{0,10}"), 0..4),
    )
        .prop_map(|(engine, metric, tp, extra)| {
            let mut args = serde_json::Map::new();
            for (k, v) in extra {
                args.insert(k, serde_json::Value::String(v));
            }
            serde_json::json!({
                "model": engine,
                "metadata": { "metric": metric.map(|m| m.as_str()), "gpu_count": tp },
                "engine_args": args,
            })
        })
}

fn template_status() -> impl Strategy<Value = ServiceTemplateStatus> {
    let phases = vec![
        TemplatePhase::Pending,
        TemplatePhase::Progressing,
        TemplatePhase::NotAvailable,
        TemplatePhase::Ready,
        TemplatePhase::Degraded,
        TemplatePhase::Failed,
    ];
    let resolved_gpu =
        (0..8i32, of(name()), name()).prop_map(|(requests, model, resource_name)| ResolvedGpu {
            requests,
            model,
            min_vram: None,
            resource_name,
        });
    let discovery = (
        of((name(), name(), of("[0-9a-f-]{36}"))),
        0..10i32,
        of(0i64..4_000_000_000),
        of(".{0,30}"),
        of("[0-9a-f]{8}"),
        of(1..30i32),
    )
        .prop_map(
            |(job, attempts, t, last_failure, inputs_hash, queue_position)| DiscoveryStatus {
                job: job.map(|(name, namespace, uid)| JobReference {
                    name,
                    namespace,
                    uid,
                }),
                attempts,
                last_attempt_time: t.map(|s| Time(jiff::Timestamp::from_second(s).unwrap())),
                next_attempt_time: t.map(|s| Time(jiff::Timestamp::from_second(s + 60).unwrap())),
                last_failure,
                inputs_hash,
                queue_position,
            },
        );
    (
        (
            of(0i64..1000),
            select(phases),
            vec(condition(), 0..4),
            of(reference()),
            of(reference()),
        ),
        (
            of(of(resolved_gpu)),
            of(name()),
            vec((name(), "hf://[a-z/]{1,20}", of(0i64..i64::MAX)), 0..3),
            of(profile()),
            of(discovery),
        ),
    )
        .prop_map(
            |(
                (observed_generation, status, conditions, resolved_model, resolved_runtime_config),
                (hw, hardware_summary, sources, profile, discovery),
            )| ServiceTemplateStatus {
                observed_generation,
                status,
                conditions,
                resolved_model,
                resolved_runtime_config,
                resolved_hardware: hw.map(|gpu| ResolvedHardware { gpu, cpu: None }),
                resolved_node_affinity: None,
                hardware_summary,
                model_sources: sources
                    .into_iter()
                    .map(|(name, source, size_bytes)| ModelSourceStatus {
                        name,
                        source,
                        size_bytes,
                    })
                    .collect(),
                profile,
                discovery,
            },
        )
}

fn roundtrip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "JSON: {json}");
}

proptest! {
    #[test]
    fn namespace_template_spec_roundtrips(common in common(), env in vec(env_var(), 0..3), caching in of((any::<bool>(), of(vec(env_var(), 0..2))))) {
        let mut seen = std::collections::BTreeSet::new();
        let env = env.into_iter().filter(|e| seen.insert(e.name.clone())).collect();
        roundtrip(&AIMServiceTemplateSpec {
            common,
            env,
            caching: caching.map(|(enabled, env)| TemplateCaching { enabled, env }),
        });
    }

    #[test]
    fn cluster_template_spec_roundtrips(common in common()) {
        roundtrip(&AIMClusterServiceTemplateSpec { common });
    }

    #[test]
    fn template_status_roundtrips(status in template_status()) {
        roundtrip(&status);
    }

    #[test]
    fn model_spec_roundtrips(image in "[a-z./:-]{1,40}", secrets in secrets(), sa in of(name()), env in vec(env_var(), 0..3), extract in any::<bool>(), create in any::<bool>()) {
        roundtrip(&AIMModelSpec { common: ModelCommon {
            image,
            image_pull_secrets: secrets,
            service_account_name: sa,
            env,
            discovery: ModelDiscovery { extract_metadata: extract, create_service_templates: create },
            image_metadata: None,
        }});
    }

    #[test]
    fn runtime_config_spec_roundtrips(env in vec(env_var(), 0..3), class in of(name()), headroom in of(0..100i32), deadline in of(1..10_000i64)) {
        roundtrip(&AIMClusterRuntimeConfigSpec { common: RuntimeConfigCommon {
            env,
            storage: Some(StorageConfig { storage_class_name: class, headroom_percent: headroom }),
            discovery: Some(DiscoveryConfig {
                active_deadline_seconds: deadline,
                resources: None,
            }),
        }});
    }

    #[test]
    fn cache_and_service_specs_roundtrip(tpl in name(), cluster in any::<bool>(), env in vec(env_var(), 0..2), by_image in any::<bool>(), replicas in 0..5i32, conds in vec(condition(), 0..3)) {
        roundtrip(&AIMTemplateCacheSpec {
            template_name: tpl.clone(),
            template_scope: if cluster { TemplateScope::Cluster } else { TemplateScope::Namespace },
            env: env.clone(),
            storage_class_name: None,
        });
        roundtrip(&AIMServiceSpec {
            model: if by_image { ServiceModel { name: None, image: Some(tpl.clone()) } } else { ServiceModel { name: Some(tpl.clone()), image: None } },
            template: Some(ServiceTemplateRef { name: tpl }),
            replicas,
            env,
            resources: None,
            image_pull_secrets: vec![],
        });
        roundtrip(&ServiceStatus { conditions: conds, ..Default::default() });
    }
}
