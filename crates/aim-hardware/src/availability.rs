//! T-06…T-08: whether the cluster can run a template's hardware, and why not.

use crate::affinity::node_affinity;
use crate::catalog::normalize_model;
use crate::inventory::{Inventory, NodeGpu, NodeGpus};
use crate::quantity::{format_bytes, parse_quantity};
use aim_api::ResolvedGpu;
use aim_api::conditions::reasons;
use k8s_openapi::api::core::v1::NodeAffinity;
use std::collections::BTreeSet;
use thiserror::Error;

/// Hardware that cannot be evaluated at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HardwareError {
    #[error("gpu.minVram {value:?} is not a valid quantity (use e.g. 128Gi)")]
    InvalidMinVram { value: String },
}

impl HardwareError {
    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        "InvalidHardware"
    }
}

/// The verdict for one template's GPU requirements.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    /// Runnable. `models` are the qualifying GPU models (empty for CPU-only); `affinity` selects their nodes.
    Available {
        models: BTreeSet<String>,
        affinity: Option<NodeAffinity>,
        message: String,
    },
    /// Not runnable on this cluster now; `reason` is one of `GPUNotAvailable`, `VRAMNotAvailable`,
    /// `InsufficientGPUsPerNode`, and `message` lists what the cluster has.
    NotAvailable {
        reason: &'static str,
        message: String,
    },
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available { .. })
    }
}

fn describe_present(inventory: &Inventory) -> String {
    let models = inventory.models();
    if models.is_empty() {
        return "the cluster has no schedulable AMD GPU nodes".to_string();
    }
    // Models only, no node counts: a count in a condition would rewrite the status of every template
    // that names it whenever a node comes or goes.
    let list: Vec<&str> = models.keys().map(String::as_str).collect();
    format!("the cluster has {}", list.join(", "))
}

/// Evaluates GPU requirements against the inventory. `None` (CPU-only or no hardware) is always available.
pub fn availability(
    gpu: Option<&ResolvedGpu>,
    inventory: &Inventory,
) -> Result<Availability, HardwareError> {
    let Some(gpu) = gpu else {
        return Ok(Availability::Available {
            models: BTreeSet::new(),
            affinity: None,
            message: "CPU only".to_string(),
        });
    };
    let model = gpu
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(normalize_model);
    let min_vram = match (&model, &gpu.min_vram) {
        (None, Some(q)) => Some(
            parse_quantity(&q.0)
                .map_err(|_| HardwareError::InvalidMinVram { value: q.0.clone() })?,
        ),
        _ => None,
    };
    let requires_gpu = gpu.requests > 0 || model.is_some() || min_vram.is_some();
    let identity = |g: &NodeGpu| match (&model, min_vram) {
        (Some(m), _) => &g.model == m,
        (None, Some(min)) => g.vram_bytes.is_some_and(|v| v >= min),
        (None, None) => true,
    };
    let wanted = match (&model, min_vram) {
        (Some(m), _) => m.clone(),
        (None, Some(min)) => format!("GPU with at least {} memory", format_bytes(min)),
        (None, None) => "AMD GPU".to_string(),
    };
    let matching: Vec<&NodeGpus> = inventory
        .nodes
        .iter()
        .filter(|n| n.schedulable && n.gpus.iter().any(identity))
        .collect();
    if matching.is_empty() {
        if !requires_gpu {
            return Ok(Availability::Available {
                models: BTreeSet::new(),
                affinity: None,
                message: "no GPU required".into(),
            });
        }
        let cordoned = inventory
            .nodes
            .iter()
            .any(|n| !n.schedulable && n.gpus.iter().any(identity));
        let cordon_note = if cordoned {
            "; cordoned nodes have one"
        } else {
            ""
        };
        if let (None, Some(_)) = (&model, min_vram) {
            let largest = inventory
                .nodes
                .iter()
                .filter(|n| n.schedulable)
                .flat_map(|n| &n.gpus)
                .filter_map(|g| g.vram_bytes.map(|v| (v, g.model.clone())))
                .max();
            let present = match largest {
                Some((v, m)) => format!(
                    "the largest GPU memory present is {} ({m})",
                    format_bytes(v)
                ),
                None => describe_present(inventory),
            };
            return Ok(Availability::NotAvailable {
                reason: reasons::VRAM_NOT_AVAILABLE,
                message: format!("no schedulable node has a {wanted}; {present}{cordon_note}"),
            });
        }
        return Ok(Availability::NotAvailable {
            reason: reasons::GPU_NOT_AVAILABLE,
            message: format!(
                "no schedulable node has a {wanted}; {}{cordon_note}",
                describe_present(inventory)
            ),
        });
    }
    let requests = i64::from(gpu.requests.max(0));
    let fits = |n: &&NodeGpus| {
        n.allocatable
            .get(&gpu.resource_name)
            .is_none_or(|a| *a >= requests)
    };
    let fitting: Vec<&NodeGpus> = matching.iter().copied().filter(fits).collect();
    if fitting.is_empty() {
        let most = matching
            .iter()
            .filter_map(|n| n.allocatable.get(&gpu.resource_name))
            .max()
            .copied()
            .unwrap_or(0);
        return Ok(Availability::NotAvailable {
            reason: reasons::INSUFFICIENT_GPUS_PER_NODE,
            message: format!(
                "needs {requests} x {wanted} on one node; the most allocatable {} on a schedulable matching node is {most}",
                gpu.resource_name
            ),
        });
    }
    let models: BTreeSet<String> = fitting
        .iter()
        .flat_map(|n| {
            n.gpus
                .iter()
                .filter(|g| identity(g))
                .map(|g| g.model.clone())
        })
        .collect();
    let affinity = node_affinity(&models, inventory);
    // No node count (see `describe_present`): adding a fourth MI300X node changes no template.
    let message = format!(
        "schedulable nodes have {}",
        models.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(Availability::Available {
        models,
        affinity,
        message,
    })
}
