//! T-14: discovery Job names and template label values stay within Kubernetes' limits.

use aim_discovery::{
    JOB_NAME_PREFIX, is_dns1123_label, is_valid_label_value, job_name, template_label_value,
};
use proptest::prelude::*;

const HASH: &str = "0123456789abcdef";

fn assert_valid_job_name(name: &str) {
    assert!(name.len() <= 63, "{name} is {} characters", name.len());
    assert!(name.starts_with(JOB_NAME_PREFIX), "{name}");
    assert!(!name.contains("--"), "{name}");
    assert!(!name.ends_with('-'), "{name}");
    assert!(is_dns1123_label(name), "{name}");
    assert!(is_valid_label_value(name), "{name}");
}

#[test]
fn short_names_are_kept_verbatim() {
    // T-14
    assert_eq!(
        job_name("qwen3-32b-latency", HASH),
        "discover-qwen3-32b-latency-01234567"
    );
}

#[test]
fn a_45_character_name_fits_exactly() {
    // T-14: 9 ("discover-") + 45 + 1 + 8 = 63.
    let name = "a".repeat(45);
    let job = job_name(&name, HASH);
    assert_eq!(job, format!("discover-{name}-01234567"));
    assert_eq!(job.len(), 63);
}

#[test]
fn long_names_are_cut_and_kept_apart() {
    // T-14: cut so the whole is at most 63, with a hash of the full name so that names sharing the
    // first characters do not share a Job.
    let a = format!("{}-latency", "qwen3-32b-instruct-awq".repeat(4));
    let b = format!("{}-throughput", "qwen3-32b-instruct-awq".repeat(4));
    let (ja, jb) = (job_name(&a, HASH), job_name(&b, HASH));
    assert_valid_job_name(&ja);
    assert_valid_job_name(&jb);
    assert_ne!(ja, jb);
    assert!(ja.starts_with("discover-qwen3-32b-instruct-awq"), "{ja}");
    assert!(ja.ends_with("-01234567"), "{ja}");
}

#[test]
fn a_253_character_name_with_dots_gives_a_valid_name() {
    // T-14
    let name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name.len(), 253);
    let job = job_name(&name, HASH);
    assert_valid_job_name(&job);
}

#[test]
fn dots_and_case_are_normalised_without_collisions() {
    // T-14: `a.b` and `a-b` may both exist; their Jobs must differ.
    let dotted = job_name("qwen3.32b", HASH);
    let dashed = job_name("qwen3-32b", HASH);
    assert_valid_job_name(&dotted);
    assert_eq!(dashed, "discover-qwen3-32b-01234567");
    assert_ne!(dotted, dashed);
    assert!(dotted.starts_with("discover-qwen3-32b-"), "{dotted}");
    for odd in ["-.-", "A..B", "x_y", "ünïcode", "", "--a--", "UPPER.case"] {
        assert_valid_job_name(&job_name(odd, HASH));
    }
}

#[test]
fn only_the_first_8_hash_characters_are_used() {
    assert_eq!(job_name("t", "deadbeef00000000"), "discover-t-deadbeef");
    assert_eq!(job_name("t", "DEADBEEF"), "discover-t-deadbeef");
    assert_valid_job_name(&job_name("t", ""));
    assert_valid_job_name(&job_name("t", "--"));
}

#[test]
fn valid_label_values_are_kept_verbatim() {
    // T-14: every template name of at most 63 characters is a valid label value.
    assert_eq!(
        template_label_value("qwen3-32b-latency"),
        "qwen3-32b-latency"
    );
    assert_eq!(template_label_value("a.b-c"), "a.b-c");
    let name63 = "x".repeat(63);
    assert_eq!(template_label_value(&name63), name63);
}

#[test]
fn long_label_values_are_cut_with_a_hash() {
    // T-14: label values are at most 63; the full name is in an annotation.
    let a = format!("{}.{}", "a".repeat(60), "b".repeat(60));
    let b = format!("{}.{}", "a".repeat(60), "c".repeat(60));
    let (la, lb) = (template_label_value(&a), template_label_value(&b));
    assert!(is_valid_label_value(&la), "{la}");
    assert_eq!(la.len(), 63);
    assert!(la.starts_with(&"a".repeat(54)), "{la}");
    assert_ne!(la, lb);
    for odd in ["-x-", "ü", "a b", "..", &"z".repeat(64)] {
        let v = template_label_value(odd);
        assert!(
            is_valid_label_value(&v) && !v.is_empty(),
            "{odd:?} -> {v:?}"
        );
    }
}

/// DNS-1123 subdomains (what Kubernetes allows as a template name), up to 253 characters.
fn subdomain() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
    prop::collection::vec(label, 1..6)
        .prop_map(|labels| labels.join("."))
        .prop_filter("at most 253 characters", |s| s.len() <= 253)
}

proptest! {
    #[test]
    fn job_names_are_always_valid(name in subdomain(), hash in "[0-9a-f]{16}") {
        // T-14
        let job = job_name(&name, &hash);
        prop_assert!(job.len() <= 63, "{} is {} characters", job, job.len());
        prop_assert!(!job.contains("--"), "{}", job);
        prop_assert!(!job.ends_with('-'), "{}", job);
        prop_assert!(is_dns1123_label(&job), "{}", job);
        prop_assert!(is_valid_label_value(&job), "{}", job);
        prop_assert!(job.ends_with(&hash[..8]), "{}", job);
    }

    #[test]
    fn different_hashes_give_different_names(
        name in subdomain(),
        a in "[0-9a-f]{16}",
        b in "[0-9a-f]{16}",
    ) {
        // T-22, T-24: a Job of older inputs never has the name of the current one.
        prop_assume!(a[..8] != b[..8]);
        prop_assert_ne!(job_name(&name, &a), job_name(&name, &b));
    }

    #[test]
    fn different_names_give_different_jobs(a in subdomain(), b in subdomain(), hash in "[0-9a-f]{16}") {
        prop_assume!(a != b);
        prop_assert_ne!(job_name(&a, &hash), job_name(&b, &hash));
    }

    #[test]
    fn label_values_are_always_valid(name in subdomain()) {
        // T-14
        let value = template_label_value(&name);
        prop_assert!(is_valid_label_value(&value), "{}", value);
        prop_assert!(!value.is_empty());
        if name.len() <= 63 {
            prop_assert_eq!(value, name);
        }
    }
}
