//! T-09: the node affinity that sends inference pods to nodes with a qualifying GPU.

use crate::catalog::catalog;
use crate::inventory::{
    BETA_DEVICE_ID_LABEL, DEVICE_ID_COUNT_PREFIX, DEVICE_ID_LABEL, FAMILY_LABEL, Identified,
    Inventory,
};
use k8s_openapi::api::core::v1::{
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};
use std::collections::BTreeSet;

fn req(key: &str, operator: &str, values: Vec<String>) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: if values.is_empty() {
            None
        } else {
            Some(values)
        },
    }
}

fn term(requirements: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(requirements),
        match_fields: None,
    }
}

/// A required node affinity whose terms (ORed) match every label form that identifies one of `models`:
/// `amd.com/gpu.device-id In [ids]`, the same for the `beta.` key, `amd.com/gpu.device-id.<id> Gt 0` per id,
/// and, for nodes known only by family, `amd.com/gpu.family In [values]` on nodes without any device id label.
/// Ids are the catalog's for each model plus every spelling seen in the inventory; values are sorted, so
/// identical inputs give byte-identical output. `None` when `models` is empty.
pub fn node_affinity(models: &BTreeSet<String>, inventory: &Inventory) -> Option<NodeAffinity> {
    if models.is_empty() {
        return None;
    }
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for model in models {
        if let Some(m) = catalog().by_model(model) {
            ids.extend(m.device_ids.iter().cloned());
        }
    }
    for (normalised, spellings) in &inventory.id_spellings {
        if models.contains(&crate::catalog::model_for_device_id(normalised)) {
            ids.insert(normalised.clone());
            ids.extend(spellings.iter().cloned());
        }
    }
    let families: BTreeSet<String> = inventory
        .nodes
        .iter()
        .flat_map(|n| &n.gpus)
        .filter(|g| models.contains(&g.model))
        .filter_map(|g| match &g.identified {
            Identified::Family(f) => Some(f.clone()),
            Identified::DeviceId(_) => None,
        })
        .collect();

    let mut terms = Vec::new();
    if !ids.is_empty() {
        let values: Vec<String> = ids.iter().cloned().collect();
        terms.push(term(vec![req(DEVICE_ID_LABEL, "In", values.clone())]));
        terms.push(term(vec![req(BETA_DEVICE_ID_LABEL, "In", values)]));
        for id in &ids {
            terms.push(term(vec![req(
                &format!("{DEVICE_ID_COUNT_PREFIX}{id}"),
                "Gt",
                vec!["0".into()],
            )]));
        }
    }
    if !families.is_empty() {
        let mut no_ids: BTreeSet<String> = inventory.count_label_ids.clone();
        no_ids.extend(
            catalog()
                .models()
                .iter()
                .flat_map(|m| m.device_ids.iter().cloned()),
        );
        no_ids.extend(ids.iter().cloned());
        let mut requirements = vec![
            req(FAMILY_LABEL, "In", families.into_iter().collect()),
            req(DEVICE_ID_LABEL, "DoesNotExist", vec![]),
            req(BETA_DEVICE_ID_LABEL, "DoesNotExist", vec![]),
        ];
        requirements.extend(no_ids.iter().map(|id| {
            req(
                &format!("{DEVICE_ID_COUNT_PREFIX}{id}"),
                "DoesNotExist",
                vec![],
            )
        }));
        terms.push(term(requirements));
    }
    if terms.is_empty() {
        return None;
    }
    Some(NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: terms,
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    })
}
