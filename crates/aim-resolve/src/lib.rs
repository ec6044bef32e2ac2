//! Decisions without I/O: which model and runtime config a template resolves to, what its status
//! is, which discovery Job must exist, and (for the operator) how discovery slots are shared.
//! Observations in, plan out; the same observations always give the same plan.

pub mod cache;
pub mod children;
mod common;
pub mod conditions;
pub mod events;
pub mod model;
pub mod queue;
pub mod runtime_config;
pub mod service;
pub mod template;
pub mod wake;

pub use common::backoff;
pub use common::names;
pub use conditions::{ConditionSpec, PlannedEvent, merge_conditions};
pub use model::{ModelCandidate, ModelResolution, resolve_model};
pub use queue::{DiscoveryQueue, SlotRequest};
pub use runtime_config::{ConfigCandidate, ConfigResolution, resolve_runtime_config};
pub use template::{Decision, Need, Observation, Plan, Slot, TemplateView, decide};
