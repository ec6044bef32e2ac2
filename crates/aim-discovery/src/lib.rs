//! Discovery without I/O: what a template's dry-run Job looks like, the hash that says when it must run
//! again, and what its log means.
//!
//! The operator gathers a [`DiscoveryInputs`] snapshot, asks [`inputs_hash`] whether the inputs changed
//! (T-22), builds the Job with [`discovery_job`] (T-14..T-16) and, once the pod succeeded, turns the
//! container log into a [`DryRunResult`] with [`parse_dry_run`] (T-17..T-19). Everything here is
//! deterministic: the same inputs always give byte-identical output.

#![warn(missing_docs)]

mod error;
mod excerpt;
mod first;
mod hash;
mod inputs;
mod job;
mod name;
mod parse;
mod result;
mod scan;
pub mod security;

pub use error::ParseError;
pub use first::RESULT_MEMORY_LIMIT;
pub use hash::{INPUTS_HASH_LEN, INPUTS_HASH_VERSION, hex, inputs_hash, legacy_inputs_hash};
pub use inputs::{DiscoveryInputs, TEMPLATE_API_VERSION};
pub use job::{
    ANNOTATION_INPUTS_HASH, ANNOTATION_TEMPLATE_NAME, CONTAINER_NAME, DISCOVERY_GID, DISCOVERY_UID,
    DRY_RUN_ARGS, JOB_TTL_SECONDS_AFTER_FINISHED, default_resources, discovery_env, discovery_job,
    discovery_labels,
};
pub use name::{
    JOB_NAME_PREFIX, is_dns1123_label, is_valid_label_value, job_name, template_label_value,
};
pub use parse::{DEFAULT_LOG_LIMIT, parse_dry_run};
pub use result::{DryRunResult, ProfileMetadata};
