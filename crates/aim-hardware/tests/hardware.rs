//! Inventory, availability, affinity and resolved hardware (T-05…T-11).

use aim_api::{GpuRequirements, Hardware, ResolvedGpu};
use aim_hardware::*;
use k8s_openapi::api::core::v1::{Node, NodeAffinity, NodeSelectorRequirement};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn node(name: &str, labels: &[(&str, &str)], gpus: Option<&str>, cordoned: bool) -> Node {
    let mut v = serde_json::json!({
        "metadata": { "name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>() },
        "spec": { "unschedulable": cordoned },
        "status": { "allocatable": { "cpu": "64" } },
    });
    if let Some(n) = gpus {
        v["status"]["allocatable"]["amd.com/gpu"] = n.into();
    }
    serde_json::from_value(v).unwrap()
}

fn gpu(requests: i32, model: Option<&str>, min_vram: Option<&str>) -> ResolvedGpu {
    ResolvedGpu {
        requests,
        model: model.map(String::from),
        min_vram: min_vram.map(|q| Quantity(q.into())),
        resource_name: "amd.com/gpu".into(),
    }
}

fn standard() -> Vec<Node> {
    vec![
        node(
            "mi300x-0",
            &[
                ("amd.com/gpu.device-id", "74a1"),
                ("amd.com/gpu.vram", "192G"),
            ],
            Some("8"),
            false,
        ),
        node(
            "mi300x-1",
            &[("amd.com/gpu.device-id", "74a1")],
            Some("8"),
            false,
        ),
        node(
            "mi325x-0",
            &[("beta.amd.com/gpu.device-id", "74a5")],
            Some("8"),
            false,
        ),
        node("cpu-0", &[], None, false),
    ]
}

#[test]
fn every_label_form_is_read() {
    // T-05
    let nodes = [
        node("a", &[("amd.com/gpu.device-id", "0x74A1")], None, false),
        node("b", &[("beta.amd.com/gpu.device-id", "74a5")], None, false),
        node("c", &[("amd.com/gpu.device-id.75a3", "8")], None, false),
        node("d", &[("amd.com/gpu.device-id.75a3", "0")], None, false),
        node(
            "e",
            &[("amd.com/gpu.family", "Instinct-MI210")],
            None,
            false,
        ),
        node("f", &[("amd.com/gpu.device-id", "beef")], None, false),
        node(
            "g",
            &[
                ("amd.com/gpu.device-id", "74a1"),
                ("amd.com/gpu.family", "MI100"),
            ],
            None,
            false,
        ),
    ];
    let inv = Inventory::from_nodes(&nodes);
    let models: BTreeMap<&str, Vec<&str>> = inv
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.gpus.iter().map(|g| g.model.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(models["a"], ["MI300X"]);
    assert_eq!(models["b"], ["MI325X"]);
    assert_eq!(models["c"], ["MI355X"]);
    assert!(!models.contains_key("d"), "count 0 means none");
    assert_eq!(models["e"], ["MI210"]);
    assert_eq!(models["f"], ["AMD-BEEF"], "unknown ids become AMD-<ID>");
    assert_eq!(
        models["g"],
        ["MI300X"],
        "the family label is ignored when a device id exists"
    );
}

#[test]
fn missing_model_is_not_available_and_lists_what_is_present() {
    // T-06
    let inv = Inventory::from_nodes(&standard());
    let v = availability(Some(&gpu(1, Some("MI355X"), None)), &inv).unwrap();
    assert_eq!(
        v,
        Availability::NotAvailable {
            reason: "GPUNotAvailable",
            message: "no schedulable node has a MI355X; the cluster has MI300X, MI325X".into()
        }
    );
    let empty = Inventory::from_nodes(&[node("cpu", &[], None, false)]);
    let v = availability(Some(&gpu(1, None, None)), &empty).unwrap();
    assert!(
        matches!(v, Availability::NotAvailable { reason: "GPUNotAvailable", ref message } if message.contains("no schedulable AMD GPU nodes"))
    );
}

#[test]
fn model_spellings_match() {
    // T-06: Instinct-MI300X and mi300x mean MI300X.
    let inv = Inventory::from_nodes(&standard());
    for spelling in ["mi300x", "Instinct-MI300X", "MI300X"] {
        assert!(
            availability(Some(&gpu(1, Some(spelling), None)), &inv)
                .unwrap()
                .is_available(),
            "{spelling}"
        );
    }
}

#[test]
fn min_vram_selects_every_model_with_enough_memory() {
    // T-07
    let inv = Inventory::from_nodes(&standard());
    match availability(Some(&gpu(1, None, Some("200Gi"))), &inv).unwrap() {
        Availability::Available { models, .. } => {
            assert_eq!(models, BTreeSet::from(["MI325X".to_string()]))
        }
        other => panic!("{other:?}"),
    }
    match availability(Some(&gpu(1, None, Some("128Gi"))), &inv).unwrap() {
        Availability::Available { models, .. } => {
            assert_eq!(
                models,
                BTreeSet::from(["MI300X".to_string(), "MI325X".to_string()])
            )
        }
        other => panic!("{other:?}"),
    }
    let v = availability(Some(&gpu(1, None, Some("300Gi"))), &inv).unwrap();
    assert_eq!(
        v,
        Availability::NotAvailable {
            reason: "VRAMNotAvailable",
            message: "no schedulable node has a GPU with at least 300Gi memory; the largest GPU memory present is 256Gi (MI325X)".into()
        }
    );
    assert!(availability(Some(&gpu(1, None, Some("lots"))), &inv).is_err());
}

#[test]
fn vram_label_wins_over_catalog() {
    // T-07: a node labelled with less memory than the catalog says does not qualify.
    let nodes = [node(
        "small",
        &[
            ("amd.com/gpu.device-id", "74a1"),
            ("amd.com/gpu.vram", "96G"),
        ],
        None,
        false,
    )];
    let inv = Inventory::from_nodes(&nodes);
    assert!(
        !availability(Some(&gpu(1, None, Some("128Gi"))), &inv)
            .unwrap()
            .is_available()
    );
}

#[test]
fn cordons_and_allocatable_gpus_count() {
    // T-08
    let four = [
        node("a", &[("amd.com/gpu.device-id", "74a1")], Some("4"), false),
        node("b", &[("amd.com/gpu.device-id", "74a1")], Some("8"), true),
    ];
    let inv = Inventory::from_nodes(&four);
    let v = availability(Some(&gpu(8, Some("MI300X"), None)), &inv).unwrap();
    assert_eq!(
        v,
        Availability::NotAvailable {
            reason: "InsufficientGPUsPerNode",
            message: "needs 8 x MI300X on one node; the most allocatable amd.com/gpu on a schedulable matching node is 4".into()
        }
    );
    assert!(
        availability(Some(&gpu(4, Some("MI300X"), None)), &inv)
            .unwrap()
            .is_available()
    );
    let cordoned = Inventory::from_nodes(&[node(
        "b",
        &[("amd.com/gpu.device-id", "74a1")],
        Some("8"),
        true,
    )]);
    let v = availability(Some(&gpu(1, Some("MI300X"), None)), &cordoned).unwrap();
    assert!(
        matches!(v, Availability::NotAvailable { reason: "GPUNotAvailable", ref message } if message.ends_with("; cordoned nodes have one"))
    );
}

#[test]
fn cpu_only_needs_no_gpu_and_gets_no_affinity() {
    // T-09: a CPU-only template has none.
    let inv = Inventory::from_nodes(&standard());
    assert_eq!(
        availability(None, &inv).unwrap(),
        Availability::Available {
            models: BTreeSet::new(),
            affinity: None,
            message: "CPU only".into()
        }
    );
}

#[test]
fn affinity_snapshot_is_sorted_and_stable() {
    // T-09: every label form, sorted values, byte-identical for identical inputs.
    let mut nodes = standard();
    let a = match availability(
        Some(&gpu(1, None, Some("128Gi"))),
        &Inventory::from_nodes(&nodes),
    )
    .unwrap()
    {
        Availability::Available { affinity, .. } => affinity.unwrap(),
        other => panic!("{other:?}"),
    };
    nodes.reverse();
    let b = match availability(
        Some(&gpu(1, None, Some("128Gi"))),
        &Inventory::from_nodes(&nodes),
    )
    .unwrap()
    {
        Availability::Available { affinity, .. } => affinity.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    insta::assert_yaml_snapshot!(a);
}

#[test]
fn resolved_hardware_prefers_discovery() {
    // T-10
    let spec = Hardware {
        gpu: Some(GpuRequirements {
            requests: 1,
            model: None,
            min_vram: Some(Quantity("128Gi".into())),
            resource_name: "amd.com/gpu".into(),
        }),
        cpu: None,
    };
    let found = DiscoveredHardware {
        gpu: Some("Instinct-MI300X".into()),
        gpu_count: Some(2),
    };
    let r = resolve_hardware(Some(&spec), Some(&found)).unwrap();
    let g = r.gpu.as_ref().unwrap();
    assert_eq!(
        (g.requests, g.model.as_deref(), g.min_vram.as_ref()),
        (2, Some("MI300X"), None),
        "never model and minVram"
    );
    assert_eq!(hardware_summary(&r), "2 x MI300X");
    let r = resolve_hardware(Some(&spec), None).unwrap();
    assert_eq!(hardware_summary(&r), "1 x GPU");
    let cpu: Hardware =
        serde_json::from_value(serde_json::json!({"cpu": {"requests": "4"}})).unwrap();
    assert_eq!(
        hardware_summary(&resolve_hardware(Some(&cpu), None).unwrap()),
        "CPU"
    );
    assert_eq!(resolve_hardware(None, None), None);
    // requests: 0 consumes no GPU: not "0 x GPU".
    let zero: Hardware =
        serde_json::from_value(serde_json::json!({"gpu": {"requests": 0, "model": "MI300X"}}))
            .unwrap();
    assert_eq!(
        hardware_summary(&resolve_hardware(Some(&zero), None).unwrap()),
        "MI300X node"
    );
}

#[test]
fn only_gpu_relevant_node_changes_alter_the_inventory() {
    // T-11
    let base = node("a", &[("amd.com/gpu.device-id", "74a1")], Some("8"), false);
    let mut heartbeat = base.clone();
    heartbeat.metadata.resource_version = Some("2".into());
    heartbeat
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("topology.kubernetes.io/zone".into(), "z".into());
    assert!(!alters_gpu_inventory(Some(&base), Some(&heartbeat)));
    let relabelled = node("a", &[("amd.com/gpu.device-id", "74a5")], Some("8"), false);
    assert!(alters_gpu_inventory(Some(&base), Some(&relabelled)));
    let fewer = node("a", &[("amd.com/gpu.device-id", "74a1")], Some("4"), false);
    assert!(alters_gpu_inventory(Some(&base), Some(&fewer)));
    let cordoned = node("a", &[("amd.com/gpu.device-id", "74a1")], Some("8"), true);
    assert!(alters_gpu_inventory(Some(&base), Some(&cordoned)));
    assert!(alters_gpu_inventory(None, Some(&base)), "GPU node added");
    assert!(alters_gpu_inventory(Some(&base), None), "GPU node deleted");
    let cpu = node("c", &[], None, false);
    let mut cpu_cordoned = cpu.clone();
    cpu_cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    assert!(!alters_gpu_inventory(None, Some(&cpu)), "CPU node added");
    assert!(
        !alters_gpu_inventory(Some(&cpu), Some(&cpu_cordoned)),
        "CPU node cordoned"
    );
}

/// Kubernetes node-selector semantics, written from the API documentation for this test.
fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values.as_slice()) else {
                return false;
            };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        other => panic!("unknown operator {other}"),
    }
}

fn affinity_matches(a: &NodeAffinity, labels: &BTreeMap<String, String>) -> bool {
    let terms = &a
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    terms.iter().any(|t| {
        t.match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, labels))
    })
}

fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
    let ids = prop::sample::select(vec![
        "74a1", "74A1", "0x74a1", "74b5", "74a5", "75a3", "7408", "beef",
    ]);
    let families = prop::sample::select(vec![
        "MI300X",
        "Instinct-MI300X",
        "mi325x",
        "MI250X",
        "MI999X",
    ]);
    let counts = prop::sample::select(vec!["0", "1", "8", "x", "-2"]);
    prop::collection::vec(
        prop_oneof![
            ids.clone()
                .prop_map(|i| ("amd.com/gpu.device-id".to_string(), i.to_string())),
            ids.clone()
                .prop_map(|i| ("beta.amd.com/gpu.device-id".to_string(), i.to_string())),
            (ids, counts).prop_map(|(i, c)| (format!("amd.com/gpu.device-id.{i}"), c.to_string())),
            families.prop_map(|f| ("amd.com/gpu.family".to_string(), f.to_string())),
            Just(("kubernetes.io/os".to_string(), "linux".to_string())),
        ],
        0..4,
    )
}

proptest! {
    // T-09: the affinity built for a model matches exactly the nodes the inventory counts as having it.
    #[test]
    fn affinity_matches_exactly_the_nodes_with_the_model(nodes in prop::collection::vec((label_set(), any::<bool>()), 1..8)) {
        let nodes: Vec<Node> = nodes
            .iter()
            .enumerate()
            .map(|(i, (labels, cordoned))| {
                let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                node(&format!("n{i}"), &labels, Some("8"), *cordoned)
            })
            .collect();
        let inv = Inventory::from_nodes(&nodes);
        let mut models: BTreeSet<String> = inv.nodes.iter().flat_map(|n| n.gpus.iter().map(|g| g.model.clone())).collect();
        models.insert("MI355X".into());
        for model in models {
            let affinity = node_affinity(&BTreeSet::from([model.clone()]), &inv);
            for n in &nodes {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                let has = NodeGpus::from_node(n).has_model(&model);
                let matched = affinity.as_ref().is_some_and(|a| affinity_matches(a, &labels));
                prop_assert_eq!(matched, has, "model {} node {:?}", model, labels);
            }
        }
    }

    // T-09: byte-identical output for identical inputs in any order.
    #[test]
    fn affinity_is_independent_of_node_order(nodes in prop::collection::vec(label_set(), 1..6)) {
        let mut nodes: Vec<Node> = nodes
            .iter()
            .enumerate()
            .map(|(i, labels)| {
                let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                node(&format!("n{i}"), &labels, None, false)
            })
            .collect();
        let models = BTreeSet::from(["MI300X".to_string(), "MI325X".to_string()]);
        let a = serde_json::to_string(&node_affinity(&models, &Inventory::from_nodes(&nodes))).unwrap();
        nodes.reverse();
        let b = serde_json::to_string(&node_affinity(&models, &Inventory::from_nodes(&nodes))).unwrap();
        prop_assert_eq!(a, b);
    }
}

/// A node as a real cluster shows it: GPU labels among others, images, conditions, addresses.
fn busy_node(name: &str, labels: &[(String, String)], gpus: Option<&str>, cordoned: bool) -> Node {
    let mut n = node(name, &[], gpus, cordoned);
    let all = n.metadata.labels.get_or_insert_with(BTreeMap::new);
    all.extend(labels.iter().cloned());
    all.insert("kubernetes.io/hostname".into(), name.into());
    n.metadata.annotations = Some([("node.alpha.kubernetes.io/ttl".into(), "0".into())].into());
    let v = serde_json::json!({
        "images": [{ "names": ["registry.example/aim:1"], "sizeBytes": 123456789 }],
        "conditions": [{ "type": "Ready", "status": "True" }],
        "addresses": [{ "type": "InternalIP", "address": "192.0.2.1" }],
        "capacity": { "cpu": "64", "amd.com/gpu": gpus.unwrap_or("0") },
    });
    let extra: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(v).unwrap();
    let status = n.status.get_or_insert_with(Default::default);
    status.images = extra.images;
    status.conditions = extra.conditions;
    status.addresses = extra.addresses;
    status.capacity = extra.capacity;
    n
}

proptest! {
    // T-11: the stored node is cut to what the inventory reads, and reads the same: its GPUs, its
    // cordon, its allocatable GPUs, and whether a change of it alters the inventory.
    #[test]
    fn a_stripped_node_gives_the_same_inventory(
        labels in label_set(),
        other in label_set(),
        gpus in prop::option::of(prop::sample::select(vec!["0", "4", "8"])),
        cordoned in any::<bool>(),
    ) {
        let full = busy_node("n", &labels, gpus, cordoned);
        let mut stripped = full.clone();
        strip_to_inventory(&mut stripped);
        prop_assert_eq!(NodeGpus::from_node(&stripped), NodeGpus::from_node(&full));
        prop_assert!(!alters_gpu_inventory(Some(&full), Some(&stripped)));
        let changed = busy_node("n", &other, gpus, !cordoned);
        let mut changed_stripped = changed.clone();
        strip_to_inventory(&mut changed_stripped);
        prop_assert_eq!(
            alters_gpu_inventory(Some(&full), Some(&changed)),
            alters_gpu_inventory(Some(&stripped), Some(&changed_stripped))
        );
        let st = stripped.status.as_ref();
        prop_assert!(st.is_none_or(|s| s.images.is_none() && s.conditions.is_none() && s.capacity.is_none()));
        prop_assert!(stripped.metadata.labels.iter().flatten().all(|(k, _)| k.contains("amd.com/gpu")));
    }
}
