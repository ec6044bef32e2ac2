//! Helpers the controllers share: the retry backoff and how a wait is written (T-21, which the model
//! (M-01) and cache (C-01) controllers follow too), the hex of a hash in a name or annotation, and what a
//! Job and its pods say (discovery T-17…T-20, downloads C-01, the service's workload S-05). Decisions
//! stay in their controller's module; only the reading and the arithmetic live here. [`names`] makes
//! every name and label value derived from an object's name fit the API server's limits.

mod backoff;
mod hash;
mod jobs;
pub mod names;

pub use backoff::{backoff, human_duration};
pub(crate) use hash::{hex, sha256_hex};
pub(crate) use jobs::{
    JobFailure, container_config_wait, failed_create, image_pull_wait, job_failure, job_has,
    owned_by, pod_phase, pods_of, unschedulable, unscheduled,
};
