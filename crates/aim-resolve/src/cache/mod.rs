//! Template caches (T-26…T-28, C-01…C-03): which AIMTemplateCache a template owns, and the cache
//! controller's decisions: the template, its runtime config and the volumes, Jobs, pods and volume events
//! that exist in; the volumes and download Jobs to write, the status and the events out.
//!
//! Volumes are shared: one PersistentVolumeClaim per model source per namespace, named from a hash of the
//! source URI ([`volume_name`]), and one download Job per volume ([`download_job_name`]). Every cache that
//! needs a volume is one of its owners (a non-controller owner reference), and so of its Job; Kubernetes'
//! garbage collector deletes both when the last owner goes.

mod decide;
mod desired;
mod download;
mod plan;
mod sources;
mod status;
mod volume;

pub use decide::decide_cache;
pub use desired::{
    CacheAction, DesiredCache, ExistingCache, cache_phase_for_template, desired_cache,
    template_cache_action,
};
pub use download::{
    CONTAINER_NAME, DEFAULT_DOWNLOAD_IMAGE, DOWNLOAD_DEADLINE_SECONDS, DOWNLOAD_GID, DOWNLOAD_UID,
    DownloadInputs, MOUNT_PATH, download_env, download_job, download_job_name, download_labels,
};
pub use plan::{
    CacheObservation, CachePlan, CacheView, CachedTemplate, ChildChange, ChildKind, cache_owner,
    field_manager,
};
pub use status::{VOLUME_BIND_GRACE, aggregate};
pub use volume::{VOLUME_PREFIX, cache_volume, volume_labels, volume_name, volume_size};

/// Label selector of the cache volumes (PersistentVolumeClaims) the operator made.
pub const VOLUME_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=cache-volume";
/// Label selector of download Jobs and their pods.
pub const DOWNLOAD_SELECTOR: &str =
    "app.kubernetes.io/managed-by=aim-operator,app.kubernetes.io/component=cache-download";
/// Field selector of the Events worth watching for cache volumes: why a claim does not bind
/// (`ProvisioningFailed`, `FailedBinding`, an external provisioner that does not answer).
pub const VOLUME_EVENT_SELECTOR: &str = "involvedObject.kind=PersistentVolumeClaim";
