//! T-14, T-15, T-16: the shape of the discovery Job.

mod common;

use aim_api::labels;
use aim_discovery::{
    ANNOTATION_INPUTS_HASH, ANNOTATION_TEMPLATE_NAME, DiscoveryInputs, discovery_env,
    discovery_job, inputs_hash, is_valid_label_value, job_name,
};
use common::{cluster_inputs, env, full_inputs, namespace_inputs, secret_env};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};

fn job_for(inputs: &DiscoveryInputs) -> Job {
    discovery_job(inputs, &inputs_hash(inputs))
}

fn pod(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn container(job: &Job) -> &Container {
    &pod(job).containers[0]
}

fn env_pairs(env: &[EnvVar]) -> Vec<(&str, Option<&str>)> {
    env.iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect()
}

#[test]
fn namespace_template_job() {
    insta::assert_yaml_snapshot!(job_for(&namespace_inputs()));
}

#[test]
fn cluster_template_job() {
    insta::assert_yaml_snapshot!(job_for(&cluster_inputs()));
}

#[test]
fn job_with_every_input() {
    insta::assert_yaml_snapshot!(job_for(&full_inputs()));
}

#[test]
fn name_and_namespace() {
    // T-14: discover-<template>-<8 hex of the inputs hash>, in the namespace the caller chose (T-13).
    let inputs = namespace_inputs();
    let hash = inputs_hash(&inputs);
    let job = discovery_job(&inputs, &hash);
    let name = job.metadata.name.as_deref().unwrap();
    assert_eq!(name, format!("discover-qwen3-32b-latency-{}", &hash[..8]));
    assert_eq!(name, job_name(&inputs.template_name, &hash));
    assert_eq!(job.metadata.namespace.as_deref(), Some("ml-team"));
    assert_eq!(
        job_for(&cluster_inputs()).metadata.namespace.as_deref(),
        Some("aim-system")
    );
}

#[test]
fn labels_on_job_and_pod() {
    // T-14
    for (inputs, scope) in [
        (namespace_inputs(), "Namespace"),
        (cluster_inputs(), "Cluster"),
    ] {
        let job = job_for(&inputs);
        let pod_labels = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref();
        for labels_of in [job.metadata.labels.as_ref(), pod_labels] {
            let l = labels_of.unwrap();
            assert_eq!(l[labels::TEMPLATE], inputs.template_name);
            assert_eq!(l[labels::TEMPLATE_SCOPE], scope);
            assert_eq!(l[labels::MANAGED_BY], "aim-operator");
            assert_eq!(l[labels::COMPONENT], "discovery");
            assert_eq!(l[labels::NAME], "aim-discovery");
            assert_eq!(l.len(), 5);
        }
    }
}

#[test]
fn the_templates_own_labels_are_propagated() {
    // The template's aim.eai.amd.com/* labels reach the Job and its pod; other keys and our own keys
    // are not taken from the template.
    let mut inputs = namespace_inputs();
    inputs.template_labels = [
        ("aim.eai.amd.com/model", "qwen3-32b"),
        ("aim.eai.amd.com/origin", "auto-generated"),
        ("aim.eai.amd.com/template-scope", "Cluster"),
        ("team", "ml"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let job = job_for(&inputs);
    let pod_labels = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone();
    for l in [job.metadata.labels.clone().unwrap(), pod_labels.unwrap()] {
        assert_eq!(l["aim.eai.amd.com/model"], "qwen3-32b");
        assert_eq!(l["aim.eai.amd.com/origin"], "auto-generated");
        assert_eq!(l[labels::TEMPLATE_SCOPE], "Namespace", "ours win");
        assert!(!l.contains_key("team"));
    }
}

#[test]
fn resources_come_from_the_runtime_config_else_a_realistic_default() {
    // api.md: spec.discovery.resources; the default leaves room for a real dry-run.
    let job = job_for(&namespace_inputs());
    let r = container(&job).resources.clone().unwrap();
    assert_eq!(r, aim_discovery::default_resources());
    assert_eq!(r.limits.unwrap()["memory"].0, "4Gi");
    let mut inputs = namespace_inputs();
    let mut custom = aim_discovery::default_resources();
    custom.limits.as_mut().unwrap().insert(
        "memory".into(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("12Gi".into()),
    );
    inputs.resources = Some(custom.clone());
    assert_eq!(
        container(&job_for(&inputs)).resources.as_ref(),
        Some(&custom)
    );
}

#[test]
fn zero_gpus_pass_no_gpu_count() {
    // `requests: 0` uses GPU nodes without consuming GPUs: no AIM_GPU_COUNT=0 for the engine.
    let mut inputs = full_inputs();
    inputs.gpu_count = Some(0);
    let names: Vec<_> = discovery_env(&inputs).into_iter().map(|e| e.name).collect();
    assert!(!names.contains(&"AIM_GPU_COUNT".to_string()), "{names:?}");
    assert!(names.contains(&"AIM_GPU_MODEL".to_string()));
}

#[test]
fn annotations_carry_full_hash_and_name() {
    // T-14, T-22: the hash the Job was built from, and the full template name even when the label is cut.
    let mut inputs = namespace_inputs();
    inputs.template_name = format!("{}.{}", "a".repeat(100), "b".repeat(100));
    let hash = inputs_hash(&inputs);
    let job = discovery_job(&inputs, &hash);
    let a = job.metadata.annotations.as_ref().unwrap();
    assert_eq!(a[ANNOTATION_INPUTS_HASH], hash);
    assert_eq!(a[ANNOTATION_TEMPLATE_NAME], inputs.template_name);
    let label = &job.metadata.labels.as_ref().unwrap()[labels::TEMPLATE];
    assert!(label.len() <= 63 && is_valid_label_value(label), "{label}");
    assert!(job.metadata.name.as_ref().unwrap().len() <= 63);
}

#[test]
fn controller_owner_reference_to_the_template() {
    // T-14: deleting the template deletes the Job.
    for (inputs, kind) in [
        (namespace_inputs(), "AIMServiceTemplate"),
        (cluster_inputs(), "AIMClusterServiceTemplate"),
    ] {
        let job = job_for(&inputs);
        let owners = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(o.api_version, "aim.eai.amd.com/v1alpha1");
        assert_eq!(o.kind, kind);
        assert_eq!(o.name, inputs.template_name);
        assert_eq!(o.uid, inputs.template_uid);
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(true));
    }
}

#[test]
fn one_dry_run_container_with_the_model_image() {
    // T-14
    let job = job_for(&full_inputs());
    assert_eq!(pod(&job).containers.len(), 1);
    assert!(pod(&job).init_containers.is_none());
    let c = container(&job);
    assert_eq!(c.name, "discovery");
    assert_eq!(c.image.as_deref(), Some(full_inputs().image.as_str()));
    assert_eq!(
        c.args.as_deref(),
        Some(&["dry-run".to_string(), "--format=json".to_string()][..])
    );
    assert!(c.command.is_none());
}

#[test]
fn runs_once_within_the_deadline_and_is_cleaned_up() {
    // T-14: restartPolicy Never, backoffLimit 0, activeDeadlineSeconds from the runtime config, ttl 600.
    let job = job_for(&full_inputs());
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(pod(&job).restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(900));
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));
    assert_eq!(
        job_for(&namespace_inputs())
            .spec
            .unwrap()
            .active_deadline_seconds,
        Some(600),
        "default deadline"
    );
    let mut zero = namespace_inputs();
    zero.active_deadline_seconds = 0;
    assert_eq!(
        job_for(&zero).spec.unwrap().active_deadline_seconds,
        Some(600)
    );
}

#[test]
fn no_gpu_requests_and_no_node_affinity() {
    // T-14: discovery runs anywhere, even with every GPU in use.
    for inputs in [namespace_inputs(), cluster_inputs(), full_inputs()] {
        let job = job_for(&inputs);
        let p = pod(&job);
        assert!(p.affinity.is_none());
        assert!(p.node_selector.is_none());
        assert!(p.node_name.is_none());
        let r = container(&job).resources.as_ref().unwrap();
        for list in [r.requests.as_ref(), r.limits.as_ref()]
            .into_iter()
            .flatten()
        {
            for key in list.keys() {
                assert!(key == "cpu" || key == "memory", "unexpected resource {key}");
            }
        }
        assert!(r.requests.as_ref().unwrap().contains_key("cpu"));
        assert!(r.requests.as_ref().unwrap().contains_key("memory"));
    }
}

#[test]
fn env_in_order() {
    // T-15: log levels, runtime-config/model/template env as given, then the runtime parameters.
    let env = discovery_env(&full_inputs());
    assert_eq!(
        env_pairs(&env),
        vec![
            ("AIM_LOG_LEVEL_ROOT", Some("CRITICAL")),
            ("AIM_LOG_LEVEL", Some("CRITICAL")),
            ("HF_HUB_OFFLINE", Some("0")),
            ("HF_TOKEN", None),
            ("VLLM_LOGGING_LEVEL", Some("WARNING")),
            ("AIM_METRIC", Some("latency")),
            ("AIM_PRECISION", Some("fp16")),
            ("AIM_GPU_MODEL", Some("MI325X")),
            ("AIM_GPU_COUNT", Some("1")),
            ("AIM_PROFILE_ID", Some("vllm-mi325x-fp16-tp1-latency")),
        ]
    );
    assert_eq!(container(&job_for(&full_inputs())).env.as_ref(), Some(&env));
}

#[test]
fn only_set_parameters_are_passed() {
    // T-15: "for whatever is set".
    let env = discovery_env(&namespace_inputs());
    assert_eq!(
        env_pairs(&env),
        vec![
            ("AIM_LOG_LEVEL_ROOT", Some("CRITICAL")),
            ("AIM_LOG_LEVEL", Some("CRITICAL"))
        ]
    );
    let mut empty = namespace_inputs();
    empty.gpu_model = Some(String::new());
    empty.profile_id = Some(String::new());
    assert_eq!(discovery_env(&empty).len(), 2);
    let names: Vec<_> = discovery_env(&cluster_inputs())
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        [
            "AIM_LOG_LEVEL_ROOT",
            "AIM_LOG_LEVEL",
            "AIM_METRIC",
            "AIM_PRECISION",
            "AIM_GPU_MODEL",
            "AIM_GPU_COUNT"
        ]
    );
}

#[test]
fn later_env_wins_at_the_first_position() {
    // T-15: later entries win on name clashes; each name once, where it first appeared.
    let mut inputs = full_inputs();
    inputs.env = vec![
        env("A", "runtime-config"),
        env("AIM_LOG_LEVEL", "DEBUG"),
        env("B", "model"),
        env("A", "template"),
        env("AIM_METRIC", "throughput"),
    ];
    let env = discovery_env(&inputs);
    assert_eq!(
        env_pairs(&env)[..5],
        [
            ("AIM_LOG_LEVEL_ROOT", Some("CRITICAL")),
            ("AIM_LOG_LEVEL", Some("DEBUG")),
            ("A", Some("template")),
            ("B", Some("model")),
            ("AIM_METRIC", Some("latency")),
        ]
    );
    let mut names: Vec<_> = env.iter().map(|e| e.name.clone()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "each name once");
}

#[test]
fn value_from_passes_through_untouched() {
    // T-15: the operator never reads secret values.
    let mut inputs = namespace_inputs();
    let token = secret_env("HF_TOKEN", "hf-credentials", "token");
    inputs.env = vec![env("HF_TOKEN", "plain"), token.clone()];
    let env = discovery_env(&inputs);
    assert_eq!(env[2], token);
}

#[test]
fn pull_secrets_and_service_account() {
    // T-15: the caller passes the template's, else the model's; they reach the pod as given.
    let job = job_for(&full_inputs());
    let p = pod(&job);
    assert_eq!(p.service_account_name.as_deref(), Some("aim-discovery"));
    let secrets = p.image_pull_secrets.as_ref().unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].name, "registry-credentials");
    let plain = job_for(&namespace_inputs());
    assert!(pod(&plain).service_account_name.is_none());
    assert!(pod(&plain).image_pull_secrets.is_none());
    assert_eq!(pod(&plain).automount_service_account_token, Some(false));
}

#[test]
fn pod_passes_the_restricted_pod_security_standard() {
    // T-16: every check of the `restricted` profile (Kubernetes Pod Security Standards, v1.37).
    for inputs in [namespace_inputs(), cluster_inputs(), full_inputs()] {
        let job = job_for(&inputs);
        let p = pod(&job);
        let psc = p.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(psc.run_as_group, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        // Baseline checks the restricted profile includes.
        assert!(p.host_network.is_none() && p.host_pid.is_none() && p.host_ipc.is_none());
        assert!(
            p.volumes.is_none(),
            "no volumes, so no hostPath or disallowed volume types"
        );
        assert!(psc.sysctls.is_none() && psc.se_linux_options.is_none());
        assert!(psc.app_armor_profile.is_none() && psc.windows_options.is_none());
        for c in &p.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_ne!(sc.run_as_user, Some(0));
            assert_ne!(sc.privileged, Some(true));
            assert!(sc.proc_mount.is_none());
            assert!(
                sc.seccomp_profile
                    .as_ref()
                    .is_none_or(|s| s.type_ == "RuntimeDefault")
            );
            assert!(c.ports.is_none());
        }
    }
}

#[test]
fn job_serialises_as_batch_v1() {
    let json = serde_json::to_value(job_for(&full_inputs())).unwrap();
    assert_eq!(json["apiVersion"], "batch/v1");
    assert_eq!(json["kind"], "Job");
    let back: Job = serde_json::from_value(json).unwrap();
    assert_eq!(back, job_for(&full_inputs()));
}

#[test]
fn same_inputs_same_job() {
    // T-25, T-30: deterministic, byte for byte.
    let a = serde_json::to_string(&job_for(&full_inputs())).unwrap();
    let b = serde_json::to_string(&job_for(&full_inputs())).unwrap();
    assert_eq!(a, b);
}
