//! The steps of a cache decision for each source: its volume, its download Job, its state.

use super::download::{DownloadInputs, download_job, failure_message, pull_failure};
use super::download_job_name;
use super::plan::{CacheObservation, CachedTemplate, ChildChange, ChildKind};
use super::status::{VOLUME_BIND_GRACE, VolumeState};
use super::volume::{cache_volume, volume_name, volume_size};
use crate::common::{
    backoff, container_config_wait, human_duration, job_has, pod_phase, pods_of, unschedulable,
};
use aim_api::{CacheSourceState, CachedSource, JobReference, ModelSourceStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Event, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use std::collections::BTreeSet;
use std::time::Duration;

pub(super) fn owner_index(meta: &ObjectMeta, uid: &str) -> Option<usize> {
    meta.owner_references
        .iter()
        .flatten()
        .position(|o| o.uid == uid)
}

/// The plan being built.
pub(super) struct Draft<'o, 'a> {
    obs: &'o CacheObservation<'a>,
    owner: OwnerReference,
    pub(super) create_volumes: Vec<PersistentVolumeClaim>,
    pub(super) create_jobs: Vec<Job>,
    pub(super) delete_jobs: Vec<String>,
    pub(super) children: BTreeSet<ChildChange>,
    /// Each volume once, with what it says.
    pub(super) volumes: Vec<(String, VolumeState)>,
    pub(super) requeue_after: Option<Duration>,
    /// Download Jobs created (for the event).
    pub(super) started: Vec<String>,
    /// Failed attempts counted (for the events and metrics).
    pub(super) failures: Vec<String>,
}

impl<'o, 'a> Draft<'o, 'a> {
    pub(super) fn new(obs: &'o CacheObservation<'a>, owner: OwnerReference) -> Self {
        Self {
            obs,
            owner,
            create_volumes: Vec::new(),
            create_jobs: Vec::new(),
            delete_jobs: Vec::new(),
            children: BTreeSet::new(),
            volumes: Vec::new(),
            requeue_after: None,
            started: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn requeue(&mut self, d: Duration) {
        let d = d.max(Duration::from_secs(1));
        self.requeue_after = Some(self.requeue_after.map_or(d, |r| r.min(d)));
    }

    fn volume(&self, name: &str) -> Option<&'a PersistentVolumeClaim> {
        self.obs
            .volumes
            .iter()
            .copied()
            .find(|v| v.metadata.name.as_deref() == Some(name))
    }

    fn job(&self, name: &str) -> Option<&'a Job> {
        self.obs
            .jobs
            .iter()
            .copied()
            .find(|j| j.metadata.name.as_deref() == Some(name))
    }

    fn adopt(&mut self, kind: ChildKind, meta: &ObjectMeta) {
        if owner_index(meta, self.obs.cache.uid).is_none() {
            let name = meta.name.clone().unwrap_or_default();
            self.children.insert(ChildChange::Adopt { kind, name });
        }
    }

    /// A volume that is not bound: normal for a moment, stuck on a warning event or after a grace
    /// period (the newest event of the claim says why).
    fn volume_state(&mut self, pvc: &PersistentVolumeClaim) -> VolumeState {
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        match pvc.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => return VolumeState::Bound,
            Some("Lost") => {
                return VolumeState::Stuck(format!(
                    "volume {name} lost its PersistentVolume; delete the claim to have it made again"
                ));
            }
            _ => {}
        }
        let uid = pvc.metadata.uid.as_deref();
        let newest = self
            .obs
            .volume_events
            .iter()
            .filter(|e| uid.is_some() && e.involved_object.uid.as_deref() == uid)
            .max_by_key(|e| {
                (
                    e.last_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .or_else(|| e.event_time.as_ref().map(|t| t.0)),
                    e.metadata.name.clone(),
                )
            });
        let said = |e: &Event| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default().trim()
            )
        };
        if let Some(e) = newest.filter(|e| e.type_.as_deref() == Some("Warning")) {
            return VolumeState::Stuck(format!("volume {name} is not bound: {}", said(e)));
        }
        let grace = jiff::SignedDuration::from_secs(VOLUME_BIND_GRACE.as_secs() as i64);
        let overdue_at = pvc
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|c| c.0.checked_add(grace).ok());
        match overdue_at {
            Some(at) if self.obs.now >= at => VolumeState::Stuck(format!(
                "volume {name} is not bound after {}s{}; `kubectl describe pvc {name}` shows why",
                VOLUME_BIND_GRACE.as_secs(),
                newest
                    .map(|e| format!(" ({})", said(e)))
                    .unwrap_or_default()
            )),
            at => {
                if let Some(at) = at {
                    self.requeue(at.duration_since(self.obs.now).unsigned_abs());
                }
                VolumeState::Waiting(format!("waiting for volume {name} to be bound"))
            }
        }
    }

    fn backing_off(&self, s: &CachedSource) -> Option<Duration> {
        let at = s.next_attempt_time.as_ref()?.0;
        (s.attempts > 0 && self.obs.now < at)
            .then(|| at.duration_since(self.obs.now).unsigned_abs())
    }

    /// Still waiting out the backoff after a failure: the source stays Failed as it was written.
    fn still_failed(&mut self, out: &mut CachedSource, old: Option<&CachedSource>) -> bool {
        match self.backing_off(out) {
            Some(left) => {
                self.requeue(left);
                out.state = CacheSourceState::Failed;
                out.message = old.and_then(|o| o.message.clone());
                true
            }
            None => false,
        }
    }

    /// A failed download attempt, counted once per Job (by uid), with the scheduled backoff; `job` is
    /// `None` when the API server refused to create the volume or the Job.
    fn failure(&mut self, out: &mut CachedSource, cause: String, job: Option<&Job>, delete: bool) {
        out.attempts += 1;
        out.failed_job = job.map(|job| JobReference {
            name: job.metadata.name.clone().unwrap_or_default(),
            namespace: job.metadata.namespace.clone().unwrap_or_default(),
            uid: job.metadata.uid.clone(),
        });
        let wait = backoff(self.obs.backoff_base, out.attempts);
        out.next_attempt_time = self
            .obs
            .now
            .checked_add(jiff::SignedDuration::from_secs(wait.as_secs() as i64))
            .ok()
            .map(Time);
        self.requeue(wait);
        let message = format!(
            "{cause}; attempt {} failed, retry after a {} backoff",
            out.attempts,
            human_duration(wait)
        );
        out.state = CacheSourceState::Failed;
        out.message = Some(message.clone());
        self.failures.push(format!("{}: {message}", out.name));
        if let Some(job) = job.filter(|_| delete) {
            self.delete_jobs
                .push(job.metadata.name.clone().unwrap_or_default());
        }
    }

    /// C-01/C-02: the volume and download Job of one source, and its state.
    pub(super) fn source(
        &mut self,
        template: &CachedTemplate<'_>,
        src: &ModelSourceStatus,
        old: Option<&CachedSource>,
        env: &[EnvVar],
        storage_class: Option<&str>,
        headroom: i32,
    ) -> CachedSource {
        let volume = volume_name(&src.source);
        let job_name = download_job_name(&src.source);
        let mut out = CachedSource {
            name: src.name.clone(),
            source: src.source.clone(),
            volume: Some(volume.clone()),
            state: CacheSourceState::Pending,
            message: None,
            attempts: old.map_or(0, |o| o.attempts),
            next_attempt_time: old.and_then(|o| o.next_attempt_time.clone()),
            failed_job: old.and_then(|o| o.failed_job.clone()),
        };
        let pending = |out: &mut CachedSource, message: String| {
            out.state = CacheSourceState::Pending;
            out.message = Some(message);
        };
        // C-02: a source without a size cannot be given a volume; nothing to retry until it changes.
        let Some(size) = src.size_bytes else {
            out.volume = None;
            out.state = CacheSourceState::Failed;
            out.attempts = 0;
            out.next_attempt_time = None;
            out.failed_job = None;
            out.message = Some(format!(
                "model source {:?} ({}) has no size, so no volume can be sized for it; give its size in the template's spec.modelSources",
                src.name, src.source
            ));
            return out;
        };
        let vol_state = match self.volume(&volume) {
            None => {
                if self.still_failed(&mut out, old) {
                    return out;
                }
                if let Some(why) = self.obs.refused.get(&volume) {
                    let cause = format!("the API server refused volume {volume}: {why}");
                    self.failure(&mut out, cause, None, false);
                    return out;
                }
                if !self
                    .create_volumes
                    .iter()
                    .any(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
                {
                    self.create_volumes.push(cache_volume(
                        self.obs.cache.namespace,
                        src,
                        volume_size(size, headroom),
                        storage_class,
                        self.owner.clone(),
                    ));
                }
                VolumeState::Creating
            }
            Some(pvc) if pvc.metadata.deletion_timestamp.is_some() => {
                self.volumes.push((
                    volume.clone(),
                    VolumeState::Waiting(format!("volume {volume} is being deleted")),
                ));
                pending(
                    &mut out,
                    format!("volume {volume} is being deleted; it is made again once it is gone"),
                );
                return out;
            }
            Some(pvc) => {
                self.adopt(ChildKind::Volume, &pvc.metadata);
                self.volume_state(pvc)
            }
        };
        if !self.volumes.iter().any(|(n, _)| *n == volume) {
            self.volumes.push((volume.clone(), vol_state.clone()));
        }
        let volume_message = match &vol_state {
            VolumeState::Creating => Some(format!("creating volume {volume}")),
            VolumeState::Bound => None,
            VolumeState::Waiting(m) | VolumeState::Stuck(m) => Some(m.clone()),
        };
        let Some(job) = self.job(&job_name) else {
            if self.still_failed(&mut out, old) {
                return out;
            }
            if let Some(why) = self.obs.refused.get(&job_name) {
                let cause = format!("the API server refused download job {job_name}: {why}");
                self.failure(&mut out, cause, None, false);
                return out;
            }
            let mut env = env.to_vec();
            if let Some(s) = template
                .spec
                .model_sources
                .iter()
                .find(|s| s.source_uri == src.source)
            {
                env.extend(s.env.iter().cloned());
            }
            if !self
                .create_jobs
                .iter()
                .any(|j| j.metadata.name.as_deref() == Some(job_name.as_str()))
            {
                self.create_jobs.push(download_job(&DownloadInputs {
                    namespace: self.obs.cache.namespace,
                    source: src,
                    env,
                    image: self.obs.download_image,
                    owner: self.owner.clone(),
                }));
                self.started.push(format!("{job_name} ({})", src.name));
            }
            out.next_attempt_time = None;
            pending(
                &mut out,
                format!("download job {job_name} created; waiting for its pod to start"),
            );
            return out;
        };
        if job.metadata.deletion_timestamp.is_some() {
            pending(
                &mut out,
                format!("waiting for the previous download job {job_name} to be deleted"),
            );
            return out;
        }
        self.adopt(ChildKind::Job, &job.metadata);
        let counted = out.attempts > 0
            && job.metadata.uid.is_some()
            && out.failed_job.as_ref().and_then(|j| j.uid.as_ref()) == job.metadata.uid.as_ref();
        let pods = pods_of(job, &self.obs.pods);
        if counted {
            match self.backing_off(&out) {
                Some(left) => {
                    // The failed Job stays (for `kubectl logs`) until the retry replaces it.
                    self.requeue(left);
                    out.state = CacheSourceState::Failed;
                    out.message = old.and_then(|o| o.message.clone());
                }
                None => {
                    self.delete_jobs.push(job_name.clone());
                    pending(
                        &mut out,
                        format!("retrying: removing the failed download job {job_name} first"),
                    );
                }
            }
        } else if job_has(job, "Complete").is_some() {
            match volume_message {
                None => {
                    out.state = CacheSourceState::Ready;
                    out.message = Some(format!("downloaded onto volume {volume}"));
                    out.attempts = 0;
                    out.next_attempt_time = None;
                    out.failed_job = None;
                }
                Some(m) => pending(&mut out, m),
            }
        } else if job_has(job, "Failed").is_some() {
            let cause = failure_message(job, &pods);
            self.failure(&mut out, cause, Some(job), false);
        } else if let Some(cause) = pods.iter().find_map(|p| pull_failure(p)) {
            self.failure(&mut out, cause, Some(job), true);
        } else if let Some((reason, message)) = pods.iter().find_map(|p| container_config_wait(p)) {
            pending(
                &mut out,
                format!(
                    "the download pod of job {job_name} cannot start its container ({reason}): {message}"
                ),
            );
        } else if pods.iter().any(|p| pod_phase(p) == Some("Running")) {
            out.state = CacheSourceState::Downloading;
            out.message = Some(format!("downloading onto volume {volume} (job {job_name})"));
        } else if let Some(m) = volume_message {
            pending(&mut out, m);
        } else if let Some(why) = pods.iter().find_map(|p| unschedulable(p)) {
            pending(
                &mut out,
                format!("the download pod of job {job_name} cannot be scheduled: {why}"),
            );
        } else {
            pending(
                &mut out,
                format!("download job {job_name} created; waiting for its pod to start"),
            );
        }
        out
    }

    /// Volumes and Jobs this cache owns that no source needs any more: let go of them, or delete them
    /// when no other cache owns them.
    pub(super) fn release_unneeded(&mut self, needed: &BTreeSet<String>) {
        let uid = self.obs.cache.uid;
        let metas = self
            .obs
            .volumes
            .iter()
            .map(|v| (ChildKind::Volume, &v.metadata))
            .chain(self.obs.jobs.iter().map(|j| (ChildKind::Job, &j.metadata)));
        for (kind, meta) in metas {
            let name = meta.name.clone().unwrap_or_default();
            let hash = name
                .rsplit('-')
                .next()
                .map(str::to_string)
                .unwrap_or_default();
            if needed.contains(&hash) || meta.deletion_timestamp.is_some() {
                continue;
            }
            let Some(index) = owner_index(meta, uid) else {
                continue;
            };
            let owners = meta.owner_references.as_ref().map_or(0, Vec::len);
            self.children.insert(if owners == 1 {
                ChildChange::Delete { kind, name }
            } else {
                ChildChange::Release { kind, name, index }
            });
        }
    }
}
