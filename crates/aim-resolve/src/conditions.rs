//! Conditions computed purely: `lastTransitionTime` kept unless the status flips (T-30).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as decided, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionSpec {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl ConditionSpec {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// The conditions to write: `desired`, in its order, keeping each `lastTransitionTime` from `old` when the
/// condition's status did not change.
pub fn merge_conditions(
    old: &[Condition],
    desired: &[ConditionSpec],
    now: &Time,
    generation: Option<i64>,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_string();
            let since = old
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// `Normal` (good news) or `Warning`.
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// Puts conditions in the order of `types` (a type not listed goes first; the sort is stable).
pub fn sort_conditions(conds: &mut [ConditionSpec], types: &[&str]) {
    conds.sort_by_key(|c| types.iter().position(|t| *t == c.type_));
}
