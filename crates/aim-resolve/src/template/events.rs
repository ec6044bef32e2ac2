//! T-31: the events of a decision. One when something happens that a person reading
//! `kubectl describe` wants to know: a discovery Job started, an attempt failed, or the template's
//! status or the reason that blocks it changed. Never one per condition or per reconcile, and never a
//! Warning for ordinary waiting.

use crate::conditions::PlannedEvent;
use aim_api::conditions::{reasons, types};
use aim_api::{ServiceTemplateStatus, TemplatePhase};

/// Event reason when a discovery Job was created.
pub const DISCOVERY_STARTED: &str = "DiscoveryStarted";

/// What happened in this decision besides the status change.
#[derive(Debug, Default)]
pub(super) struct Happened {
    /// `namespace/name` of a discovery Job created.
    pub started: Option<String>,
    /// A discovery attempt failed (its cause and the backoff message).
    pub failed: Option<String>,
}

fn blocking_reason(st: &ServiceTemplateStatus) -> Option<&str> {
    st.conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .map(|c| c.reason.as_str())
}

fn ready_message(st: &ServiceTemplateStatus) -> String {
    st.conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Trouble that needs a person: a Warning. Waiting (Pending, Progressing) is Normal.
fn is_trouble(st: &ServiceTemplateStatus) -> bool {
    matches!(
        st.status,
        TemplatePhase::Failed | TemplatePhase::NotAvailable | TemplatePhase::Degraded
    ) || blocking_reason(st) == Some(reasons::DISCOVERY_BLOCKED)
}

/// At most one event: a started Job, else a failed attempt, else a change of status or blocking reason.
pub(super) fn events(
    old: &ServiceTemplateStatus,
    new: &ServiceTemplateStatus,
    happened: Happened,
) -> Vec<PlannedEvent> {
    if let Some(job) = happened.started {
        return vec![PlannedEvent {
            warning: false,
            reason: DISCOVERY_STARTED.into(),
            message: format!("created discovery job {job}"),
        }];
    }
    if let Some(message) = happened.failed {
        return vec![PlannedEvent {
            warning: true,
            reason: reasons::DISCOVERY_FAILED.into(),
            message,
        }];
    }
    let first = old.conditions.is_empty();
    let changed = first || old.status != new.status || blocking_reason(old) != blocking_reason(new);
    if !changed {
        return Vec::new();
    }
    let reason = blocking_reason(new).unwrap_or(reasons::READY).to_string();
    vec![PlannedEvent {
        warning: is_trouble(new),
        reason,
        message: ready_message(new),
    }]
}
