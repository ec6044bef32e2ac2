//! T-10: hardware after discovery, and its one-line summary.

use crate::catalog::normalize_model;
use aim_api::{DEFAULT_GPU_RESOURCE_NAME, Hardware, ResolvedGpu, ResolvedHardware};

/// What discovery said about the hardware (profile `metadata.gpu` and `metadata.gpu_count`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveredHardware {
    pub gpu: Option<String>,
    pub gpu_count: Option<i32>,
}

/// Resolves hardware: discovered values win over the spec, `resourceName` comes from the spec, and the
/// result never has both a model and a minimum VRAM. `None` when neither names any hardware.
pub fn resolve_hardware(
    spec: Option<&Hardware>,
    discovered: Option<&DiscoveredHardware>,
) -> Option<ResolvedHardware> {
    let spec_gpu = spec.and_then(|h| h.gpu.as_ref());
    let found_model = discovered
        .and_then(|d| d.gpu.as_deref())
        .filter(|g| !g.trim().is_empty());
    let found_count = discovered.and_then(|d| d.gpu_count);
    let gpu = if spec_gpu.is_some() || found_model.is_some() || found_count.is_some_and(|c| c > 0) {
        let model = found_model
            .or_else(|| spec_gpu.and_then(|g| g.model_name()))
            .map(normalize_model);
        Some(ResolvedGpu {
            requests: found_count
                .or(spec_gpu.map(|g| g.requests))
                .unwrap_or(1)
                .max(0),
            min_vram: if model.is_some() {
                None
            } else {
                spec_gpu.and_then(|g| g.min_vram.clone())
            },
            model,
            resource_name: spec_gpu
                .map(|g| g.resource_name.clone())
                .unwrap_or_else(|| DEFAULT_GPU_RESOURCE_NAME.to_string()),
        })
    } else {
        None
    };
    let cpu = spec.and_then(|h| h.cpu.clone());
    if gpu.is_none() && cpu.is_none() {
        return None;
    }
    Some(ResolvedHardware { gpu, cpu })
}

/// `2 x MI300X`, `1 x GPU` when any model is accepted, `CPU` for CPU-only. A template that asks for no
/// GPU (`requests: 0`) runs on a GPU node without consuming one: `MI300X node` / `GPU node`.
pub fn hardware_summary(hw: &ResolvedHardware) -> String {
    match &hw.gpu {
        Some(g) if g.requests <= 0 => format!("{} node", g.model.as_deref().unwrap_or("GPU")),
        Some(g) => format!("{} x {}", g.requests, g.model.as_deref().unwrap_or("GPU")),
        None => "CPU".to_string(),
    }
}
