//! The GPU catalog (embedded data) and model-name normalisation.

use serde::Deserialize;
use std::sync::LazyLock;

const GIB: u64 = 1 << 30;

/// One GPU model of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GpuModel {
    /// Normalised model name, e.g. `MI300X`.
    pub model: String,
    /// PCI device ids: lowercase hex without `0x`.
    pub device_ids: Vec<String>,
    /// Memory per GPU in GiB.
    pub vram_gib: u64,
}

impl GpuModel {
    /// Memory per GPU in bytes.
    pub fn vram_bytes(&self) -> u64 {
        self.vram_gib * GIB
    }
}

/// The embedded catalog of AMD GPUs.
#[derive(Debug, Deserialize)]
pub struct Catalog {
    gpus: Vec<GpuModel>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let catalog: Catalog = toml::from_str(include_str!("catalog.toml"))
        .expect("the embedded GPU catalog is valid TOML");
    for gpu in &catalog.gpus {
        assert_eq!(
            normalize_model(&gpu.model),
            gpu.model,
            "catalog model names are normalised"
        );
        for id in &gpu.device_ids {
            assert_eq!(
                &normalize_device_id(id),
                id,
                "catalog device ids are normalised"
            );
        }
    }
    catalog
});

/// The embedded catalog.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

impl Catalog {
    /// Every model, in catalog order.
    pub fn models(&self) -> &[GpuModel] {
        &self.gpus
    }

    /// The model with this (already normalised) device id.
    pub fn by_device_id(&self, id: &str) -> Option<&GpuModel> {
        self.gpus
            .iter()
            .find(|g| g.device_ids.iter().any(|d| d == id))
    }

    /// The model with this name (any spelling [`normalize_model`] understands).
    pub fn by_model(&self, name: &str) -> Option<&GpuModel> {
        let name = normalize_model(name);
        self.gpus.iter().find(|g| g.model == name)
    }
}

/// Device ids compare lowercase, without a `0x` prefix.
pub fn normalize_device_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    id.strip_prefix("0x").map(str::to_string).unwrap_or(id)
}

/// The model name of a device id: the catalog's, else `AMD-<ID>`.
pub fn model_for_device_id(id: &str) -> String {
    let id = normalize_device_id(id);
    match catalog().by_device_id(&id) {
        Some(m) => m.model.clone(),
        None => format!("AMD-{}", id.to_ascii_uppercase()),
    }
}

fn looks_like_model(token: &str) -> bool {
    let letters = token
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    letters > 0 && token[letters..].starts_with(|c: char| c.is_ascii_digit())
}

/// Normalises a GPU model name: uppercase, `_` → `-`, leading `AMD` / `INSTINCT` words dropped, and
/// the first token that looks like a model kept. `mi300x`, `Instinct-MI300X` and `AMD Instinct MI300X`
/// all give `MI300X`; a name with no such token (e.g. `AMD-74B0`) keeps its uppercase form.
pub fn normalize_model(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase().replace('_', "-");
    let tokens: Vec<&str> = upper
        .split(|c: char| c == '-' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let rest = tokens
        .iter()
        .skip_while(|t| matches!(**t, "AMD" | "INSTINCT"));
    match rest.clone().find(|t| looks_like_model(t)) {
        Some(t) => t.to_string(),
        None => upper,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_the_table() {
        let c = catalog();
        assert_eq!(c.models().len(), 20);
        assert_eq!(c.by_device_id("74a1").unwrap().model, "MI300X");
        assert_eq!(c.by_device_id("74b9").unwrap().model, "MI325X");
        assert_eq!(c.by_model("MI355X").unwrap().vram_bytes(), 288 * GIB);
        assert_eq!(c.by_model("rx7900").unwrap().vram_gib, 24);
    }

    #[test]
    fn model_names_normalise() {
        for s in [
            "mi300x",
            "MI300X",
            "Instinct-MI300X",
            "AMD Instinct MI300X",
            "amd_instinct_mi300x",
            " MI300X ",
        ] {
            assert_eq!(normalize_model(s), "MI300X", "{s}");
        }
        assert_eq!(normalize_model("AMD-74B0"), "AMD-74B0");
        assert_eq!(normalize_model("Radeon RX7900"), "RX7900");
    }

    #[test]
    fn device_ids_normalise_and_unknown_ids_get_a_name() {
        // T-05
        assert_eq!(normalize_device_id("0x74A1"), "74a1");
        assert_eq!(model_for_device_id("0x74A1"), "MI300X");
        assert_eq!(model_for_device_id("abcd"), "AMD-ABCD");
    }
}
