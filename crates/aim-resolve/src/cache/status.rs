//! C-03: the cache's status from its sources, its conditions, and its events.

use crate::conditions::{ConditionSpec, PlannedEvent};
use aim_api::conditions::{reasons, types};
use aim_api::{CachePhase, CacheSourceState, CachedSource, TemplateCacheStatus};
use std::time::Duration;

/// How long a volume may stay unbound without a warning event before the status says it needs a look.
pub const VOLUME_BIND_GRACE: Duration = Duration::from_secs(30);

/// Event reason when download Jobs were created.
pub const DOWNLOAD_STARTED: &str = "DownloadStarted";

/// C-03: the cache's phase from the states of its sources (the template being usable): none or all
/// `Ready` → `Warm`; all `Failed` → `Failed`; some `Failed` → `Degraded` (the others are or will be
/// usable); any `Downloading` or `Ready` → `Warming`; otherwise (nothing started yet) → `Pending`.
pub fn aggregate(states: &[CacheSourceState]) -> CachePhase {
    use CacheSourceState as S;
    let count = |s: S| states.iter().filter(|x| **x == s).count();
    let (ready, failed, downloading) = (count(S::Ready), count(S::Failed), count(S::Downloading));
    if ready == states.len() {
        CachePhase::Warm
    } else if failed == states.len() {
        CachePhase::Failed
    } else if failed > 0 {
        CachePhase::Degraded
    } else if downloading > 0 || ready > 0 {
        CachePhase::Warming
    } else {
        CachePhase::Pending
    }
}

/// What a volume says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum VolumeState {
    /// Being created by this decision.
    Creating,
    Bound,
    /// Not bound yet; normal for a moment.
    Waiting(String),
    /// Not bound, and it needs a person: why.
    Stuck(String),
}

/// `VolumesReady`: every volume bound, or which are not and why.
pub(super) fn volumes_condition(volumes: &[(String, VolumeState)]) -> ConditionSpec {
    let stuck: Vec<&str> = volumes
        .iter()
        .filter_map(|(_, s)| match s {
            VolumeState::Stuck(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    let waiting: Vec<&str> = volumes
        .iter()
        .filter(|(_, s)| matches!(s, VolumeState::Creating | VolumeState::Waiting(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    if !stuck.is_empty() {
        ConditionSpec::new(
            types::VOLUMES_READY,
            false,
            reasons::VOLUME_NOT_BOUND,
            stuck.join("; "),
        )
    } else if !waiting.is_empty() {
        ConditionSpec::new(
            types::VOLUMES_READY,
            false,
            reasons::VOLUME_PENDING,
            format!("waiting for volume(s) {} to be bound", waiting.join(", ")),
        )
    } else {
        ConditionSpec::new(
            types::VOLUMES_READY,
            true,
            reasons::VOLUMES_BOUND,
            format!("{} volume(s) bound", volumes.len()),
        )
    }
}

/// `Downloaded`: every source on its volume, or which are not.
pub(super) fn downloads_condition(sources: &[CachedSource]) -> ConditionSpec {
    let failed: Vec<String> = sources
        .iter()
        .filter(|s| s.state == CacheSourceState::Failed)
        .map(|s| format!("{}: {}", s.name, s.message.as_deref().unwrap_or("failed")))
        .collect();
    let ready = sources
        .iter()
        .filter(|s| s.state == CacheSourceState::Ready)
        .count();
    if !failed.is_empty() {
        ConditionSpec::new(
            types::DOWNLOADED,
            false,
            reasons::DOWNLOAD_FAILED,
            failed.join("; "),
        )
    } else if ready == sources.len() {
        ConditionSpec::new(
            types::DOWNLOADED,
            true,
            reasons::DOWNLOADS_COMPLETE,
            format!("{ready} model source(s) downloaded"),
        )
    } else {
        let names = |state: CacheSourceState| {
            sources
                .iter()
                .filter(|s| s.state == state)
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut message = format!("{ready} of {} model source(s) downloaded", sources.len());
        for (state, what) in [
            (CacheSourceState::Downloading, "downloading"),
            (CacheSourceState::Pending, "waiting"),
        ] {
            let list = names(state);
            if !list.is_empty() {
                message.push_str(&format!("; {what}: {list}"));
            }
        }
        ConditionSpec::new(types::DOWNLOADED, false, reasons::DOWNLOADING, message)
    }
}

/// `Ready`: `True/Warm`, else the first condition that holds the cache back, worst first: the template,
/// a failed download, an unbound volume, downloads still to finish.
pub(super) fn ready_condition(phase: CachePhase, conds: &[ConditionSpec]) -> ConditionSpec {
    if phase == CachePhase::Warm {
        return ConditionSpec::new(
            types::READY,
            true,
            reasons::WARM,
            "every model source is downloaded onto a bound volume",
        );
    }
    let find = |type_: &str| conds.iter().find(|c| c.type_ == type_ && !c.status);
    let blocker = find(types::TEMPLATE_READY)
        .or_else(|| find(types::DOWNLOADED).filter(|c| c.reason == reasons::DOWNLOAD_FAILED))
        .or_else(|| find(types::VOLUMES_READY))
        .or_else(|| find(types::DOWNLOADED));
    match blocker {
        Some(c) => ConditionSpec::new(types::READY, false, c.reason.clone(), c.message.clone()),
        None => ConditionSpec::new(types::READY, false, phase.as_str(), phase.as_str()),
    }
}

fn ready_reason(st: &TemplateCacheStatus) -> Option<&str> {
    st.conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .map(|c| c.reason.as_str())
}

/// Events: one for created download Jobs and a Warning per failed download attempt; when neither, one
/// when the status or the reason that holds the cache back changes (a Warning for `Failed`, `Degraded` and
/// a volume that does not bind). Never one per reconcile.
pub(super) fn events(
    old: Option<&TemplateCacheStatus>,
    new: &TemplateCacheStatus,
    started: &[String],
    failures: &[String],
) -> Vec<PlannedEvent> {
    let mut out = Vec::new();
    if !started.is_empty() {
        out.push(PlannedEvent {
            warning: false,
            reason: DOWNLOAD_STARTED.into(),
            message: format!("started download job(s) {}", started.join(", ")),
        });
    }
    out.extend(failures.iter().map(|m| PlannedEvent {
        warning: true,
        reason: reasons::DOWNLOAD_FAILED.into(),
        message: m.clone(),
    }));
    if !out.is_empty() {
        return out;
    }
    let changed = match old {
        None => true,
        Some(o) => {
            o.conditions.is_empty()
                || o.status != new.status
                || ready_reason(o) != ready_reason(new)
        }
    };
    if !changed {
        return Vec::new();
    }
    let ready = new.conditions.iter().find(|c| c.type_ == types::READY);
    let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
    vec![PlannedEvent {
        warning: matches!(new.status, CachePhase::Failed | CachePhase::Degraded)
            || reason == reasons::VOLUME_NOT_BOUND,
        reason,
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
    }]
}
