//! C-01/C-02: the volume of a model source: its name (shared by every cache of the source in a
//! namespace), its size and its document.

use crate::common::sha256_hex;
use aim_api::{ModelSourceStatus, labels};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Prefix of every cache volume name.
pub const VOLUME_PREFIX: &str = "aim-cache-";
/// Hex characters of the source hash in a volume name (64 bits: collisions between the sources of one
/// namespace are not a practical concern).
const HASH_CHARS: usize = 16;

/// The hash part of volume and Job names: 16 hex of the SHA-256 of the source URI.
pub(super) fn source_hash(source_uri: &str) -> String {
    sha256_hex(source_uri.as_bytes(), HASH_CHARS / 2)
}

/// C-01: the PersistentVolumeClaim of a source, `aim-cache-<16 hex of sha256(uri)>` (26 characters, a
/// DNS-1123 label). The same URI gives the same name, so caches of one source in a namespace share it.
pub fn volume_name(source_uri: &str) -> String {
    format!("{VOLUME_PREFIX}{}", source_hash(source_uri))
}

/// C-02: `size_bytes` plus `headroom_percent` %, rounded up to whole MiB (at least 1Mi), e.g. 16Gi with
/// 10 % headroom is `18023Mi`. Negative inputs count as 0.
pub fn volume_size(size_bytes: i64, headroom_percent: i32) -> Quantity {
    const MIB: u128 = 1024 * 1024;
    let bytes = u128::try_from(size_bytes.max(0)).unwrap_or(0);
    let percent = 100 + u128::try_from(headroom_percent.max(0)).unwrap_or(0);
    let mib = (bytes * percent).div_ceil(100 * MIB).max(1);
    Quantity(format!("{mib}Mi"))
}

/// Labels of a cache volume: managed-by, component `cache-volume`, name `aim-cache`, and the volume's
/// own name under `aim.eai.amd.com/cache-volume`.
pub fn volume_labels(volume: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::COMPONENT.to_string(),
            labels::COMPONENT_CACHE_VOLUME.to_string(),
        ),
        (labels::NAME.to_string(), labels::NAME_CACHE.to_string()),
        (labels::CACHE_VOLUME.to_string(), volume.to_string()),
    ])
}

/// The volume of `source` in `namespace`: `ReadWriteMany` (inference pods on several nodes read it), the
/// given size, the storage class when one is chosen (else the field is left out and the cluster default
/// applies), the source URI as an annotation, and `owner` (a cache) as a non-controller owner.
pub fn cache_volume(
    namespace: &str,
    source: &ModelSourceStatus,
    size: Quantity,
    storage_class: Option<&str>,
    owner: OwnerReference,
) -> PersistentVolumeClaim {
    let name = volume_name(&source.source);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(volume_labels(&name)),
            annotations: Some(BTreeMap::from([(
                labels::CACHE_SOURCE.to_string(),
                source.source.clone(),
            )])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteMany".into()]),
            storage_class_name: storage_class.map(str::to_string),
            volume_mode: Some("Filesystem".into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}
