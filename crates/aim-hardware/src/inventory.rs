//! The GPU inventory of a cluster, read from node labels, allocatable resources and cordons.

use crate::catalog::{catalog, model_for_device_id, normalize_device_id, normalize_model};
use crate::quantity::{parse_quantity, parse_vram_label};
use k8s_openapi::api::core::v1::Node;
use std::collections::{BTreeMap, BTreeSet};

/// Device id label written by the node labeller.
pub const DEVICE_ID_LABEL: &str = "amd.com/gpu.device-id";
/// The same label from older labellers.
pub const BETA_DEVICE_ID_LABEL: &str = "beta.amd.com/gpu.device-id";
/// Prefix of the count form `amd.com/gpu.device-id.<id>=<n>`.
pub const DEVICE_ID_COUNT_PREFIX: &str = "amd.com/gpu.device-id.";
/// Family label, used when a node has no device id label of any form.
pub const FAMILY_LABEL: &str = "amd.com/gpu.family";
/// Per-GPU memory label.
pub const VRAM_LABEL: &str = "amd.com/gpu.vram";

/// How a node's GPU was identified.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identified {
    /// By a device id (any of the three id label forms).
    DeviceId(String),
    /// By the family label (its exact value).
    Family(String),
}

/// One kind of GPU on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGpu {
    /// Normalised model, e.g. `MI300X`, or `AMD-<ID>` for an unknown device id.
    pub model: String,
    pub identified: Identified,
    /// Memory per GPU: the VRAM label, else the catalog; `None` when neither knows.
    pub vram_bytes: Option<u64>,
}

/// What the inventory knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGpus {
    pub name: String,
    /// GPUs on the node, sorted.
    pub gpus: Vec<NodeGpu>,
    /// Not cordoned.
    pub schedulable: bool,
    /// Allocatable extended resources (names with a `/`), e.g. `amd.com/gpu` → 8.
    pub allocatable: BTreeMap<String, i64>,
}

impl NodeGpus {
    /// Reads a node. Device ids from `amd.com/gpu.device-id`, `beta.amd.com/gpu.device-id` and
    /// `amd.com/gpu.device-id.<id>=<n>` (n > 0) are combined; the family label is used only when the node
    /// carries no device id label of any form (T-05).
    pub fn from_node(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let empty = BTreeMap::new();
        let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
        let vram_label = labels
            .get(VRAM_LABEL)
            .and_then(|v| parse_vram_label(v).ok());
        let mut ids = BTreeSet::new();
        for (key, value) in labels {
            if key == DEVICE_ID_LABEL || key == BETA_DEVICE_ID_LABEL {
                let id = normalize_device_id(value);
                if !id.is_empty() {
                    ids.insert(id);
                }
            } else if let Some(id) = key.strip_prefix(DEVICE_ID_COUNT_PREFIX)
                && count_is_positive(value)
            {
                ids.insert(normalize_device_id(id));
            }
        }
        let has_id_label = labels.keys().any(|k| is_device_id_key(k));
        let mut gpus: Vec<NodeGpu> = ids
            .into_iter()
            .map(|id| {
                let model = model_for_device_id(&id);
                let vram =
                    vram_label.or_else(|| catalog().by_device_id(&id).map(|m| m.vram_bytes()));
                NodeGpu {
                    model,
                    identified: Identified::DeviceId(id),
                    vram_bytes: vram,
                }
            })
            .collect();
        if !has_id_label
            && let Some(family) = labels.get(FAMILY_LABEL).filter(|f| !f.trim().is_empty())
        {
            let model = normalize_model(family);
            let vram = vram_label.or_else(|| catalog().by_model(&model).map(|m| m.vram_bytes()));
            gpus.push(NodeGpu {
                model,
                identified: Identified::Family(family.clone()),
                vram_bytes: vram,
            });
        }
        gpus.sort_by(|a, b| (&a.model, &a.identified).cmp(&(&b.model, &b.identified)));
        let schedulable = !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| k.contains('/'))
                    .filter_map(|(k, v)| {
                        Some((k.clone(), i64::try_from(parse_quantity(&v.0).ok()?).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            name,
            gpus,
            schedulable,
            allocatable,
        }
    }

    /// Whether the node has a GPU of this (normalised) model.
    pub fn has_model(&self, model: &str) -> bool {
        self.gpus.iter().any(|g| g.model == model)
    }
}

/// Whether a count-form label value means "some GPUs": an integer above 0, read as node selectors'
/// `Gt` reads it.
pub fn count_is_positive(value: &str) -> bool {
    value.parse::<i64>().is_ok_and(|n| n > 0)
}

/// Whether a label key is one of the device id forms.
pub fn is_device_id_key(key: &str) -> bool {
    key == DEVICE_ID_LABEL || key == BETA_DEVICE_ID_LABEL || key.starts_with(DEVICE_ID_COUNT_PREFIX)
}

/// The GPU inventory of a cluster: every node that has a GPU, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub nodes: Vec<NodeGpus>,
    /// Every device id suffix that appears in a count-form label key, as spelled, even with count 0
    /// (the family affinity term must not match nodes that carry any device id label).
    pub count_label_ids: BTreeSet<String>,
    /// Every spelling of each normalised device id seen in labels (values and count-key suffixes).
    pub id_spellings: BTreeMap<String, BTreeSet<String>>,
}

impl Inventory {
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        let mut count_label_ids = BTreeSet::new();
        let mut id_spellings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut out: Vec<NodeGpus> = Vec::new();
        for node in nodes {
            for (key, value) in node.metadata.labels.iter().flatten() {
                let spelled = if let Some(id) = key.strip_prefix(DEVICE_ID_COUNT_PREFIX) {
                    count_label_ids.insert(id.to_string());
                    id
                } else if key == DEVICE_ID_LABEL || key == BETA_DEVICE_ID_LABEL {
                    value
                } else {
                    continue;
                };
                id_spellings
                    .entry(normalize_device_id(spelled))
                    .or_default()
                    .insert(spelled.to_string());
            }
            let gpus = NodeGpus::from_node(node);
            if !gpus.gpus.is_empty() {
                out.push(gpus);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            nodes: out,
            count_label_ids,
            id_spellings,
        }
    }

    /// Models present on schedulable nodes, with how many such nodes have each.
    pub fn models(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.schedulable) {
            for model in node.gpus.iter().map(|g| &g.model).collect::<BTreeSet<_>>() {
                *m.entry(model.clone()).or_insert(0) += 1;
            }
        }
        m
    }
}

/// The part of a node that the GPU inventory depends on. Two nodes with equal projections give the
/// same inventory; `None` (no node) projects like a node without GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Projection {
    labels: BTreeMap<String, String>,
    allocatable: BTreeMap<String, String>,
    unschedulable: bool,
}

fn project(node: Option<&Node>) -> Projection {
    let Some(node) = node else {
        return Projection::default();
    };
    let labels: BTreeMap<String, String> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| is_gpu_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let allocatable: BTreeMap<String, String> = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.contains('/'))
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    if labels.is_empty() && allocatable.is_empty() {
        // A node without GPU labels or extended resources does not take part, cordoned or not.
        return Projection::default();
    }
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    Projection {
        labels,
        allocatable,
        unschedulable,
    }
}

/// Whether a label takes part in the GPU inventory (device ids, family, VRAM: T-05, T-07).
fn is_gpu_label(key: &str) -> bool {
    key.starts_with("amd.com/gpu") || key.starts_with("beta.amd.com/gpu")
}

/// Cuts a Node down to what the inventory reads: its name, its GPU labels, its allocatable extended
/// resources and its cordon. A watch keeps thousands of nodes; the rest of each (images, conditions,
/// addresses, system info) is most of its size and nothing here reads it. [`NodeGpus::from_node`] and
/// [`alters_gpu_inventory`] answer the same for the node and its stripped copy.
pub fn strip_to_inventory(node: &mut Node) {
    let meta = &mut node.metadata;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| is_gpu_label(k));
    }
    meta.annotations = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable);
    node.spec = unschedulable.map(|u| k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(u),
        ..Default::default()
    });
    let allocatable = node
        .status
        .as_mut()
        .and_then(|s| s.allocatable.take())
        .map(|mut a| {
            a.retain(|k, _| k.contains('/'));
            a
        });
    node.status = allocatable.map(|a| k8s_openapi::api::core::v1::NodeStatus {
        allocatable: Some(a),
        ..Default::default()
    });
}

/// T-11: whether a node change (add: `old` is `None`; delete: `new` is `None`) alters the GPU inventory —
/// GPU labels, allocatable extended resources, or the cordon of a GPU node. Any other change does not.
pub fn alters_gpu_inventory(old: Option<&Node>, new: Option<&Node>) -> bool {
    project(old) != project(new)
}
