//! The cache state machine (C-01…C-03, T-28): what a cache decision observes and the plan it makes;
//! the decision itself is in `decide.rs`.

use crate::conditions::PlannedEvent;
use crate::runtime_config::ConfigCandidate;
use aim_api::{
    AIMTemplateCacheSpec, ServiceTemplateCommon, ServiceTemplateStatus, TemplateCacheStatus,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;
use std::time::Duration;

/// The cache being decided on.
#[derive(Debug, Clone)]
pub struct CacheView<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a AIMTemplateCacheSpec,
    pub status: Option<&'a TemplateCacheStatus>,
}

/// A template the cache may refer to, as observed.
#[derive(Debug, Clone)]
pub struct CachedTemplate<'a> {
    pub name: &'a str,
    pub spec: &'a ServiceTemplateCommon,
    pub status: Option<&'a ServiceTemplateStatus>,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct CacheObservation<'a> {
    pub cache: CacheView<'a>,
    /// The AIMServiceTemplate named `spec.templateName` in the cache's namespace.
    pub namespace_template: Option<CachedTemplate<'a>>,
    /// The AIMClusterServiceTemplate of that name.
    pub cluster_template: Option<CachedTemplate<'a>>,
    /// The runtime config the template names, in the cache's namespace and cluster-wide: the volumes
    /// live in the cache's namespace, so its team's config counts, merged over the cluster's.
    pub namespace_config: Option<ConfigCandidate<'a>>,
    pub cluster_config: Option<ConfigCandidate<'a>>,
    /// Cache volumes in the cache's namespace.
    pub volumes: Vec<&'a PersistentVolumeClaim>,
    /// Download Jobs in the cache's namespace, and their pods.
    pub jobs: Vec<&'a Job>,
    pub pods: Vec<&'a Pod>,
    /// Events about those volumes (why a claim does not bind).
    pub volume_events: Vec<&'a Event>,
    /// Volumes and download Jobs (by name) the API server refused to create (quota, admission): why. The
    /// operator sets it after a refused create and decides again.
    pub refused: BTreeMap<String, String>,
    /// `--cache-download-image`.
    pub download_image: &'a str,
    /// First retry delay after a failed download (the discovery backoff: doubles, at most an hour).
    pub backoff_base: Duration,
    pub now: jiff::Timestamp,
}

/// Volumes and Jobs are the two kinds of children a cache shares with other caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKind {
    Volume,
    Job,
}

/// A change of a shared child's owners.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildChange {
    /// Add this cache's owner reference: server-side apply of only that reference with the cache's own
    /// field manager ([`field_manager`]), so no cache removes another's (owner references are a list
    /// keyed by uid).
    Adopt { kind: ChildKind, name: String },
    /// Remove this cache's owner reference, which is at `index` (a JSON patch that first tests the uid
    /// there): the cache no longer needs the child, another cache still does.
    Release {
        kind: ChildKind,
        name: String,
        index: usize,
    },
    /// Delete the child: the cache no longer needs it and is its last owner.
    Delete { kind: ChildKind, name: String },
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePlan {
    /// Written only when it differs from the current status.
    pub status: TemplateCacheStatus,
    /// Volumes to create (server-side apply with the cache's field manager).
    pub create_volumes: Vec<PersistentVolumeClaim>,
    /// Download Jobs to create (the same way).
    pub create_jobs: Vec<Job>,
    /// Download Jobs to delete first: a failed one whose retry is due, one stuck on its image.
    pub delete_jobs: Vec<String>,
    pub children: Vec<ChildChange>,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
    /// Failed download attempts counted by this decision (for metrics).
    pub download_failures: usize,
}

/// The field manager of a cache's writes to shared volumes and Jobs: one per cache.
pub fn field_manager(cache_uid: &str) -> String {
    format!("aim-operator-cache-{cache_uid}")
}

/// The owner reference a cache puts on its volumes and download Jobs: not a controller (several caches
/// share them) and without `blockOwnerDeletion` (nothing waits for them).
pub fn cache_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "aim.eai.amd.com/v1alpha1".into(),
        kind: "AIMTemplateCache".into(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: None,
        block_owner_deletion: None,
    }
}
