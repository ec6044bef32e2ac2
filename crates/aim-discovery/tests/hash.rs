//! T-22: the inputs hash changes exactly when a discovery input changes.

mod common;

use aim_api::{Metric, Precision, TemplateScope};
use aim_discovery::{DiscoveryInputs, INPUTS_HASH_LEN, inputs_hash, legacy_inputs_hash};
use common::{env, full_inputs, secret_env};
use k8s_openapi::api::core::v1::LocalObjectReference;

fn changed(change: impl FnOnce(&mut DiscoveryInputs)) -> (String, String) {
    let base = full_inputs();
    let mut other = base.clone();
    change(&mut other);
    (inputs_hash(&base), inputs_hash(&other))
}

/// One test per input: changing only that input changes the hash (T-22).
macro_rules! changes_hash {
    ($($test:ident: $change:expr;)+) => {$(
        #[test]
        fn $test() {
            // T-22
            let (before, after) = changed($change);
            assert_ne!(before, after);
        }
    )+};
}

changes_hash! {
    image_changes_hash: |i| i.image = "docker.io/amdenterpriseai/aim-qwen-qwen3-32b:0.8.6".into();
    env_value_changes_hash: |i| i.env[0] = env("HF_HUB_OFFLINE", "1");
    env_name_changes_hash: |i| i.env[0] = env("HF_HUB_ONLINE", "0");
    env_order_changes_hash: |i| i.env.swap(0, 2);
    env_added_changes_hash: |i| i.env.push(env("EXTRA", ""));
    env_removed_changes_hash: |i| { i.env.pop(); };
    env_value_from_key_changes_hash: |i| i.env[1] = secret_env("HF_TOKEN", "hf-credentials", "other-key");
    env_value_from_secret_changes_hash: |i| i.env[1] = secret_env("HF_TOKEN", "other-secret", "token");
    env_value_from_to_value_changes_hash: |i| i.env[1] = env("HF_TOKEN", "");
    pull_secret_changes_hash: |i| i.image_pull_secrets[0].name = "other-credentials".into();
    pull_secret_added_changes_hash: |i| i.image_pull_secrets.push(LocalObjectReference { name: "more".into() });
    pull_secret_removed_changes_hash: |i| i.image_pull_secrets.clear();
    service_account_changes_hash: |i| i.service_account_name = Some("other".into());
    service_account_unset_changes_hash: |i| i.service_account_name = None;
    metric_changes_hash: |i| i.metric = Some(Metric::Throughput);
    metric_unset_changes_hash: |i| i.metric = None;
    precision_changes_hash: |i| i.precision = Some(Precision::Bf16);
    precision_unset_changes_hash: |i| i.precision = None;
    gpu_model_changes_hash: |i| i.gpu_model = Some("MI300X".into());
    gpu_model_unset_changes_hash: |i| i.gpu_model = None;
    gpu_count_changes_hash: |i| i.gpu_count = Some(2);
    gpu_count_unset_changes_hash: |i| i.gpu_count = None;
    profile_id_changes_hash: |i| i.profile_id = Some("vllm-mi325x-fp16-tp2-latency".into());
    profile_id_unset_changes_hash: |i| i.profile_id = None;
    job_namespace_changes_hash: |i| i.job_namespace = "other-team".into();
    scope_changes_hash: |i| i.template_scope = TemplateScope::Cluster;
}

#[test]
fn identical_inputs_give_identical_hashes() {
    // T-22, T-25: nothing but the inputs goes into the hash, so restarts and resyncs see the same value.
    assert_eq!(inputs_hash(&full_inputs()), inputs_hash(&full_inputs()));
    let a = full_inputs();
    let b = a.clone();
    assert_eq!(inputs_hash(&a), inputs_hash(&b));
}

#[test]
fn hash_is_16_lowercase_hex() {
    let h = inputs_hash(&full_inputs());
    assert_eq!(h.len(), INPUTS_HASH_LEN);
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{h}"
    );
}

#[test]
fn golden_hash_is_pinned() {
    // Changing the encoding changes every template's hash and re-runs every discovery (T-22):
    // do it only on purpose, with a new INPUTS_HASH_VERSION.
    assert_eq!(inputs_hash(&common::namespace_inputs()), "ecdf16a8bcadac28");
    assert_eq!(inputs_hash(&full_inputs()), "610555fb3fffd0d7");
    // The first encoding stays recognisable, so an upgrade does not re-discover (T-25).
    assert_eq!(
        legacy_inputs_hash(&common::namespace_inputs()),
        "494cda35b891239c"
    );
    assert_eq!(legacy_inputs_hash(&full_inputs()), "be6bccd4c03d7490");
}

#[test]
fn what_only_shapes_the_job_is_not_an_input() {
    // T-22 lists what re-discovers; a changed timeout, pod resources or template labels do not.
    let (before, after) = changed(|i| {
        i.active_deadline_seconds = 901;
        i.resources = Some(aim_discovery::default_resources());
        i.template_labels
            .insert("aim.eai.amd.com/team".into(), "a".into());
    });
    assert_eq!(before, after);
}

#[test]
fn a_zero_gpu_count_is_no_count() {
    // `requests: 0` passes no AIM_GPU_COUNT, so it hashes like an unset count.
    let (zero, unset) = (
        changed(|i| i.gpu_count = Some(0)).1,
        changed(|i| i.gpu_count = None).1,
    );
    assert_eq!(zero, unset);
}

#[test]
fn identity_is_not_an_input() {
    // The template name and uid identify the template; they do not change what the dry-run sees.
    let (before, after) = changed(|i| {
        i.template_name = "renamed".into();
        i.template_uid = "another-uid".into();
    });
    assert_eq!(before, after);
}

#[test]
fn hash_sees_effective_values() {
    // An empty service account, GPU model or profile id is unset; a non-positive deadline is the default.
    let mut a = full_inputs();
    a.service_account_name = None;
    a.gpu_model = None;
    a.profile_id = None;
    a.active_deadline_seconds = 600;
    let mut b = a.clone();
    b.service_account_name = Some(String::new());
    b.gpu_model = Some(String::new());
    b.profile_id = Some(String::new());
    b.active_deadline_seconds = 0;
    assert_eq!(inputs_hash(&a), inputs_hash(&b));
}

#[test]
fn length_prefixes_keep_neighbouring_fields_apart() {
    // Moving characters between adjacent inputs must not give the same encoding.
    let mut a = full_inputs();
    a.env = vec![env("AB", "C")];
    let mut b = full_inputs();
    b.env = vec![env("A", "BC")];
    assert_ne!(inputs_hash(&a), inputs_hash(&b));
    let mut c = full_inputs();
    c.gpu_model = Some("MI300Xvllm".into());
    c.profile_id = Some("-x".into());
    let mut d = full_inputs();
    d.gpu_model = Some("MI300X".into());
    d.profile_id = Some("vllm-x".into());
    assert_ne!(inputs_hash(&c), inputs_hash(&d));
}
