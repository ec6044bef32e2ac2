//! Template selection for services (S-02, S-03, S-04, S-06): one row per exclusion reason, and
//! properties over shuffled candidates.

use aim_api::*;
use aim_hardware::Inventory;
use aim_resolve::service::{Candidate, Selection, SelectionInput, select};
use k8s_openapi::api::core::v1::Node;
use proptest::prelude::*;

fn node(name: &str, device_id: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "amd.com/gpu.device-id": device_id } },
        "status": { "allocatable": { "amd.com/gpu": "8" } },
    }))
    .unwrap()
}

fn inventory() -> Inventory {
    // MI300X and MI325X nodes.
    let nodes = [node("a", "74a1"), node("b", "74a5")];
    Inventory::from_nodes(nodes.iter())
}

fn hw(model: &str) -> ResolvedHardware {
    serde_json::from_value(serde_json::json!({
        "gpu": { "requests": 1, "model": model, "resourceName": "amd.com/gpu" }
    }))
    .unwrap()
}

struct Owned {
    scope: TemplateScope,
    name: String,
    model: String,
    phase: Option<TemplatePhase>,
    hw: ResolvedHardware,
}

fn t(scope: TemplateScope, name: &str, phase: Option<TemplatePhase>, gpu: &str) -> Owned {
    Owned {
        scope,
        name: name.into(),
        model: "qwen".into(),
        phase,
        hw: hw(gpu),
    }
}

const NS: TemplateScope = TemplateScope::Namespace;
const CL: TemplateScope = TemplateScope::Cluster;
const READY: Option<TemplatePhase> = Some(TemplatePhase::Ready);

fn run(
    templates: &[Owned],
    named: Option<&str>,
    current: Option<&ResolvedReference>,
) -> aim_resolve::service::SelectionResult {
    let inv = inventory();
    let candidates = templates
        .iter()
        .map(|o| Candidate {
            scope: o.scope,
            name: &o.name,
            namespace: (o.scope == NS).then_some("team"),
            uid: None,
            model_name: &o.model,
            phase: o.phase,
            ready_message: None,
            resolved_hardware: Some(&o.hw),
        })
        .collect();
    select(&SelectionInput {
        service_namespace: "team",
        model_name: "qwen",
        template_name: named,
        current,
        candidates,
        inventory: &inv,
    })
}

fn reason<'a>(r: &'a aim_resolve::service::SelectionResult, name: &str) -> &'a str {
    r.candidates
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.reason.as_deref())
        .unwrap_or_else(|| panic!("{name} not among {:?}", r.candidates))
}

// S-03: exactly one usable → selected; each exclusion reason is written next to its candidate.
#[test]
fn s03_one_usable_template_is_selected_and_the_others_say_why() {
    let mut other_model = t(NS, "other-model", READY, "MI300X");
    other_model.model = "llama".into();
    let r = run(
        &[
            t(CL, "ok", READY, "MI300X"),
            t(
                NS,
                "discovering",
                Some(TemplatePhase::Progressing),
                "MI300X",
            ),
            t(NS, "failed", Some(TemplatePhase::Failed), "MI300X"),
            t(CL, "absent-gpu", READY, "MI355X"),
            t(
                CL,
                "not-available",
                Some(TemplatePhase::NotAvailable),
                "MI355X",
            ),
            t(NS, "no-status", None, "MI300X"),
            other_model,
        ],
        None,
        None,
    );
    match &r.selection {
        Selection::Selected { template, .. } => {
            assert_eq!(
                (template.name.as_str(), template.scope),
                ("ok", ReferenceScope::Cluster)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.candidates.len(),
        6,
        "another model's template is no candidate"
    );
    assert!(r.candidates.iter().filter(|c| c.selected).count() == 1);
    assert_eq!(
        reason(&r, "ok"),
        "the only Ready template with its GPU in the cluster"
    );
    assert_eq!(reason(&r, "discovering"), "Progressing, not Ready");
    assert_eq!(reason(&r, "failed"), "Failed, not Ready");
    assert!(reason(&r, "absent-gpu").starts_with("its GPU is not in the cluster"));
    assert_eq!(reason(&r, "not-available"), "NotAvailable, not Ready");
    assert_eq!(reason(&r, "no-status"), "without status, not Ready");
    // Namespace templates first, then cluster ones, each by name.
    let order: Vec<&str> = r.candidates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "discovering",
            "failed",
            "no-status",
            "absent-gpu",
            "not-available",
            "ok"
        ]
    );
}

// S-03: two usable → no choice, both named.
#[test]
fn s03_two_ready_templates_are_named_not_chosen_at_random() {
    let r = run(
        &[t(NS, "a", READY, "MI300X"), t(CL, "b", READY, "MI325X")],
        None,
        None,
    );
    match &r.selection {
        Selection::Ambiguous { names, message } => {
            assert_eq!(
                names,
                &["AIMServiceTemplate a", "AIMClusterServiceTemplate b"]
            );
            assert!(message.contains("set spec.template.name"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.candidates.iter().all(|c| !c.selected));
    assert!(reason(&r, "a").contains("AIMClusterServiceTemplate b"));
}

// S-03: nothing usable and nothing coming → fails, naming every candidate and why.
#[test]
fn s03_none_usable_names_every_candidate() {
    let r = run(
        &[
            t(CL, "x", READY, "MI355X"),
            t(NS, "y", Some(TemplatePhase::Failed), "MI300X"),
        ],
        None,
        None,
    );
    match &r.selection {
        Selection::NoneUsable { message } => {
            assert!(
                message.contains("AIMClusterServiceTemplate x: its GPU is not in the cluster"),
                "{message}"
            );
            assert!(
                message.contains("AIMServiceTemplate y: Failed, not Ready"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let r = run(&[], None, None);
    assert!(matches!(r.selection, Selection::NoneUsable { .. }));
}

// S-04: a candidate still discovering → Starting, not Failed.
#[test]
fn s04_waits_while_a_candidate_is_still_coming() {
    let r = run(
        &[
            t(NS, "y", Some(TemplatePhase::Failed), "MI300X"),
            t(NS, "z", Some(TemplatePhase::Pending), "MI300X"),
        ],
        None,
        None,
    );
    assert!(
        matches!(r.selection, Selection::Waiting { .. }),
        "{:?}",
        r.selection
    );
}

// S-06: the template in use stays while usable, even when another becomes Ready; gone or not Ready →
// selected again.
#[test]
fn s06_the_selected_template_is_kept_while_usable() {
    let current = ResolvedReference {
        name: "b".into(),
        namespace: None,
        scope: ReferenceScope::Cluster,
        kind: "AIMClusterServiceTemplate".into(),
        uid: None,
    };
    let both = [t(NS, "a", READY, "MI300X"), t(CL, "b", READY, "MI325X")];
    let r = run(&both, None, Some(&current));
    match &r.selection {
        Selection::Selected { template, .. } => assert_eq!(template.name, "b"),
        other => panic!("{other:?}"),
    }
    assert!(reason(&r, "a").contains("is in use"));
    let r = run(&both[..1], None, Some(&current));
    match &r.selection {
        Selection::Selected { template, .. } => assert_eq!(template.name, "a"),
        other => panic!("{other:?}"),
    }
    let r = run(
        &[
            t(NS, "a", READY, "MI300X"),
            t(CL, "b", Some(TemplatePhase::Degraded), "MI325X"),
        ],
        None,
        Some(&current),
    );
    match &r.selection {
        Selection::Selected { template, .. } => assert_eq!(template.name, "a"),
        other => panic!("{other:?}"),
    }
}

// S-02: a named template, namespace before cluster; absent → NotFound.
#[test]
fn s02_a_named_template_wins_or_is_reported_missing() {
    let r = run(
        &[
            t(CL, "x", READY, "MI325X"),
            t(NS, "x", READY, "MI300X"),
            t(NS, "y", READY, "MI300X"),
        ],
        Some("x"),
        None,
    );
    match &r.selection {
        Selection::Selected { template, .. } => {
            assert_eq!(
                (template.name.as_str(), template.scope),
                ("x", ReferenceScope::Namespace)
            )
        }
        other => panic!("{other:?}"),
    }
    let r = run(&[t(NS, "y", READY, "MI300X")], Some("x"), None);
    match &r.selection {
        Selection::NotFound { message } => assert!(message.contains("\"x\""), "{message}"),
        other => panic!("{other:?}"),
    }
    let r = run(
        &[t(NS, "x", Some(TemplatePhase::Progressing), "MI300X")],
        Some("x"),
        None,
    );
    assert!(matches!(r.selection, Selection::Waiting { .. }));
    let r = run(&[t(NS, "x", READY, "MI355X")], Some("x"), None);
    assert!(matches!(r.selection, Selection::NoneUsable { .. }));
}

fn phase() -> impl Strategy<Value = Option<TemplatePhase>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(TemplatePhase::ALL.to_vec()).prop_map(Some)
    ]
}

proptest! {
    // S-03: the same candidates in any order give the same choice and the same text.
    #[test]
    fn selection_does_not_depend_on_order(
        specs in proptest::collection::vec(
            (any::<bool>(), 0u8..6, phase(), proptest::sample::select(vec!["MI300X", "MI325X", "MI355X"])),
            0..8,
        ),
        seed in any::<u64>(),
    ) {
        let mut seen = std::collections::BTreeSet::new();
        let templates: Vec<Owned> = specs
            .into_iter()
            .filter(|(ns, n, _, _)| seen.insert((*ns, *n)))
            .map(|(ns, n, p, gpu)| t(if ns { NS } else { CL }, &format!("t{n}"), p, gpu))
            .collect();
        let a = run(&templates, None, None);
        let mut shuffled: Vec<Owned> = templates.iter().map(|o| t(o.scope, &o.name, o.phase, o.hw.gpu.as_ref().unwrap().model.as_deref().unwrap())).collect();
        // A deterministic shuffle from the seed.
        let len = shuffled.len();
        for i in 0..len {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % len as u64) as usize;
            shuffled.swap(i, j);
        }
        let b = run(&shuffled, None, None);
        prop_assert_eq!(&a, &b);
        // Never more than one selected, and a selection only when exactly one is usable (no current).
        let usable = a.candidates.iter().filter(|c| c.reason.as_deref().is_some_and(|r| r.starts_with("the only") || r.starts_with("Ready"))).count();
        let selected = a.candidates.iter().filter(|c| c.selected).count();
        prop_assert!(selected <= 1);
        prop_assert_eq!(selected == 1, usable == 1);
    }
}

// S-06 and T-30's spirit for services: selecting, then looking again with the selection in place, gives
// the same explanation, so the second reconcile writes nothing.
#[test]
fn a_second_look_gives_the_same_words() {
    let ts = [
        t(CL, "ok", READY, "MI300X"),
        t(NS, "x", Some(TemplatePhase::Failed), "MI300X"),
    ];
    let first = run(&ts, None, None);
    let Selection::Selected { template, .. } = &first.selection else {
        panic!("{:?}", first.selection)
    };
    let second = run(&ts, None, Some(template));
    assert_eq!(first, second);
}
