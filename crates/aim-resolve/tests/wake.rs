//! Wake rules paired with the resolution rules they mirror: for every world in the table, a change of
//! an object that alters what the resolution returns must wake the decision (otherwise the operator
//! would keep a stale status until something else happened), and a rule that wakes must name an
//! object the decision reads.

use aim_api::*;
use aim_resolve::wake::{
    Changed, cache_config_name, child_wakes_cache, config_wakes_cache, config_wakes_template,
    model_wakes_template, node_wakes_template, template_wakes_cache, wakes_service,
};
use aim_resolve::{
    ConfigCandidate, ModelCandidate, ModelResolution, resolve_model, resolve_runtime_config,
};

const SCOPES: [TemplateScope; 2] = [TemplateScope::Namespace, TemplateScope::Cluster];
/// Where the changed object lives: `None` is the cluster kind.
const PLACES: [Option<&str>; 3] = [Some("team"), Some("other"), None];
const NAMES: [&str; 2] = ["m", "n"];

fn template_in(scope: TemplateScope) -> Option<&'static str> {
    (scope == TemplateScope::Namespace).then_some("team")
}

fn model_spec() -> ModelCommon {
    serde_json::from_value(serde_json::json!({ "image": "registry.example/aim:1" })).unwrap()
}

/// What resolution returns, as a comparable string.
fn resolved_model(
    scope: TemplateScope,
    wanted: &str,
    present: &[(Option<&str>, &str)],
    spec: &ModelCommon,
) -> String {
    let candidate = |ns: Option<&str>| {
        present
            .iter()
            .find(|(pns, pname)| *pns == ns && *pname == wanted)
            .map(|(pns, pname)| ModelCandidate {
                name: pname,
                namespace: *pns,
                uid: None,
                spec,
                failure: None,
            })
    };
    // The gather: the model of that name in the template's namespace, and the cluster model.
    let ns = template_in(scope).and_then(|ns| candidate(Some(ns)));
    match resolve_model(scope, template_in(scope), wanted, ns, candidate(None)) {
        ModelResolution::Found { reference, .. } => format!("{reference:?}"),
        ModelResolution::NotFound { message } => message,
    }
}

/// T-02: adding or removing any model, with any other models present, changes the resolution only
/// if the wake rule wakes the template; and the rule never wakes for a model the template cannot read.
#[test]
fn model_changes_wake_exactly_the_templates_whose_resolution_they_alter() {
    let spec = model_spec();
    let everything: Vec<(Option<&str>, &str)> = PLACES
        .iter()
        .flat_map(|p| NAMES.iter().map(move |n| (*p, *n)))
        .collect();
    for scope in SCOPES {
        let template = ServiceTemplateCommon::for_model("m");
        // Every subset of the other models as background.
        for mask in 0u32..(1 << everything.len()) {
            let background: Vec<_> = everything
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, m)| *m)
                .collect();
            for changed in &everything {
                let with: Vec<_> = background
                    .iter()
                    .chain(std::iter::once(changed))
                    .copied()
                    .collect();
                let without: Vec<_> = background
                    .iter()
                    .filter(|m| *m != changed)
                    .copied()
                    .collect();
                let alters = resolved_model(scope, "m", &with, &spec)
                    != resolved_model(scope, "m", &without, &spec);
                let wakes = model_wakes_template(
                    Changed::new(changed.0, changed.1),
                    scope,
                    template_in(scope),
                    &template,
                );
                if alters {
                    assert!(
                        wakes,
                        "{scope:?} template: {changed:?} alters its model but does not wake it"
                    );
                }
            }
        }
        // And the rule is exact: it wakes for what the gather reads, nothing else.
        for changed in &everything {
            let reads = changed.1 == "m"
                && match (changed.0, scope) {
                    (None, _) => true,
                    (Some(ns), TemplateScope::Namespace) => ns == "team",
                    (Some(_), TemplateScope::Cluster) => false,
                };
            assert_eq!(
                model_wakes_template(
                    Changed::new(changed.0, changed.1),
                    scope,
                    template_in(scope),
                    &template
                ),
                reads,
                "{scope:?} template, {changed:?}"
            );
        }
    }
}

fn config_spec(var: &str, value: &str) -> RuntimeConfigCommon {
    serde_json::from_value(serde_json::json!({ "env": [{ "name": var, "value": value }] })).unwrap()
}

/// T-03/T-04: editing a runtime config (its env) changes the merged config a template gets only if
/// the wake rule wakes that template.
#[test]
fn config_edits_wake_exactly_the_templates_whose_merged_config_they_alter() {
    // Each place's config sets a variable of its own, so that no edit is hidden by the merge.
    let var = |ns: Option<&str>| format!("E_{}", ns.unwrap_or("cluster"));
    let specs: Vec<(Option<&str>, RuntimeConfigCommon, RuntimeConfigCommon)> = PLACES
        .iter()
        .map(|p| (*p, config_spec(&var(*p), "1"), config_spec(&var(*p), "2")))
        .collect();
    for scope in SCOPES {
        for wanted in NAMES {
            let mut template = ServiceTemplateCommon::for_model("m");
            template.runtime_config_name = wanted.to_string();
            for changed_ns in PLACES {
                for changed_name in NAMES {
                    let resolve = |edited: bool| {
                        // Every place has a config under every name; the changed one is edited.
                        let pick = |ns: Option<&'static str>| {
                            let (_, before, after) =
                                specs.iter().find(|(p, _, _)| *p == ns).unwrap();
                            let is_changed = ns == changed_ns && wanted == changed_name;
                            ConfigCandidate {
                                name: wanted,
                                namespace: ns,
                                uid: None,
                                spec: if is_changed && edited { after } else { before },
                            }
                        };
                        let ns_config = template_in(scope).map(|_| pick(Some("team")));
                        format!(
                            "{:?}",
                            resolve_runtime_config(scope, wanted, ns_config, Some(pick(None)))
                        )
                    };
                    let alters = resolve(false) != resolve(true);
                    let wakes = config_wakes_template(
                        Changed::new(changed_ns, changed_name),
                        scope,
                        template_in(scope),
                        &template,
                    );
                    assert_eq!(
                        alters, wakes,
                        "{scope:?} template naming config {wanted:?}: edit of {changed_ns:?}/{changed_name}"
                    );
                }
            }
        }
    }
}

/// C-02: a cache reads the config its template names, in the cache's namespace and cluster-wide; an
/// edit of it wakes the cache, an edit of any other does not.
#[test]
fn config_edits_wake_the_caches_whose_template_names_the_config() {
    let mut ns_template = ServiceTemplateCommon::for_model("m");
    ns_template.runtime_config_name = "fast".into();
    let mut cl_template = ServiceTemplateCommon::for_model("m");
    cl_template.runtime_config_name = "shared".into();
    let cases = [
        // (cache scope, templates present, expected config name)
        (
            TemplateScope::Namespace,
            (Some(&ns_template), Some(&cl_template)),
            "fast",
        ),
        (
            TemplateScope::Cluster,
            (Some(&ns_template), Some(&cl_template)),
            "shared",
        ),
        (
            TemplateScope::Namespace,
            (None, Some(&cl_template)),
            "default",
        ),
        (
            TemplateScope::Cluster,
            (Some(&ns_template), None),
            "default",
        ),
    ];
    for (scope, (ns, cl), expected) in cases {
        let name = cache_config_name(scope, ns, cl);
        assert_eq!(name, expected, "{scope:?} cache");
        for place in PLACES {
            for changed in ["fast", "shared", "default", "x"] {
                let reads = changed == expected && place.is_none_or(|p| p == "team");
                assert_eq!(
                    config_wakes_cache(Changed::new(place, changed), "team", name),
                    reads,
                    "{scope:?} cache in team reading {name:?}: change of {place:?}/{changed}"
                );
            }
        }
    }
}

/// C-01/T-28: a cache in `team` reads the template of its name in `team` and the cluster template of
/// that name.
#[test]
fn template_changes_wake_the_caches_that_read_them() {
    let rows = [
        (TemplateScope::Namespace, Some("team"), "t", true),
        (TemplateScope::Namespace, Some("other"), "t", false),
        (TemplateScope::Namespace, Some("team"), "u", false),
        (TemplateScope::Cluster, None, "t", true),
        (TemplateScope::Cluster, None, "u", false),
    ];
    for (scope, ns, name, wakes) in rows {
        assert_eq!(
            template_wakes_cache(scope, ns, name, "team", "t"),
            wakes,
            "{scope:?} {ns:?}/{name}"
        );
    }
}

/// C-02/C-03: children wake the caches of their namespace that own them or list their volume.
#[test]
fn children_wake_the_caches_that_own_or_list_them() {
    let volumes = ["vol-a", "vol-b"];
    let rows = [
        // (child namespace, owners, volume, wakes)
        ("team", vec!["uid-1"], None, true),
        ("team", vec!["uid-2"], None, false),
        ("team", vec![], Some("vol-b"), true),
        ("team", vec![], Some("vol-c"), false),
        ("other", vec!["uid-1"], Some("vol-a"), false),
    ];
    for (ns, owners, volume, wakes) in rows {
        assert_eq!(
            child_wakes_cache(
                ns,
                &owners,
                volume,
                "team",
                Some("uid-1"),
                volumes.iter().copied()
            ),
            wakes,
            "{ns} {owners:?} {volume:?}"
        );
    }
}

/// T-11: only an inventory change wakes, and only templates that need a GPU.
#[test]
fn node_changes_wake_gpu_templates_only_when_the_inventory_changed() {
    let cpu = ServiceTemplateCommon::for_model("m");
    let gpu: ServiceTemplateCommon = serde_json::from_value(serde_json::json!({
        "modelName": "m", "hardware": { "gpu": { "model": "MI300X", "requests": 1 } },
    }))
    .unwrap();
    assert!(node_wakes_template(true, &gpu, None));
    assert!(!node_wakes_template(false, &gpu, None));
    assert!(!node_wakes_template(true, &cpu, None));
}

/// S-01…S-06: a service reads its own namespace's objects and every cluster-scoped one.
#[test]
fn namespaced_changes_wake_services_of_their_namespace_cluster_changes_every_service() {
    assert!(wakes_service(Some("team"), "team"));
    assert!(!wakes_service(Some("other"), "team"));
    assert!(wakes_service(None, "team"));
}
