//! Results in status: discovered hardware, and what static sources give (T-10, T-12).

use aim_api::{ModelSourceStatus, ServiceTemplateCommon};
use aim_hardware::DiscoveredHardware;

pub(super) fn discovered_hardware(
    profile: Option<&serde_json::Value>,
) -> Option<DiscoveredHardware> {
    let meta = profile?.get("metadata")?;
    let gpu = meta.get("gpu").and_then(|v| v.as_str()).map(str::to_string);
    let gpu_count = meta
        .get("gpu_count")
        .and_then(|v| v.as_i64())
        .and_then(|n| i32::try_from(n).ok());
    Some(DiscoveredHardware { gpu, gpu_count })
}

/// `status.profile` for static sources (T-12): the metadata the spec gives.
pub(super) fn static_profile(spec: &ServiceTemplateCommon) -> serde_json::Value {
    let mut meta = serde_json::Map::new();
    if let Some(m) = spec.metric {
        meta.insert("metric".into(), m.as_str().into());
    }
    if let Some(p) = spec.precision {
        meta.insert("precision".into(), p.as_str().into());
    }
    if let Some(g) = spec.hardware.as_ref().and_then(|h| h.gpu.as_ref()) {
        if let Some(model) = g.model_name() {
            meta.insert("gpu".into(), aim_hardware::normalize_model(model).into());
        }
        meta.insert("gpu_count".into(), g.requests.into());
    }
    if let Some(t) = spec.r#type {
        meta.insert("type".into(), t.as_str().into());
    }
    serde_json::json!({ "metadata": meta })
}

pub(super) fn static_sources(
    spec: &ServiceTemplateCommon,
) -> Result<Vec<ModelSourceStatus>, String> {
    spec.model_sources
        .iter()
        .map(|s| {
            let size_bytes = match &s.size {
                Some(q) => Some(
                    aim_hardware::quantity::parse_quantity(&q.0)
                        .ok()
                        .and_then(|b| i64::try_from(b).ok())
                        .ok_or_else(|| {
                            format!(
                                "model source {:?} has size {:?}, which is not a valid quantity",
                                s.name, q.0
                            )
                        })?,
                ),
                None => None,
            };
            Ok(ModelSourceStatus {
                name: s.name.clone(),
                source: s.source_uri.clone(),
                size_bytes,
            })
        })
        .collect()
}
