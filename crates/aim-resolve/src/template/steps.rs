//! The steps of a template decision, each adding to the plan being built.

use super::*;

/// Whether this Job's failure is the one `status.discovery` already counted (T-20: once per Job).
fn failure_counted(job: &Job, disc: &DiscoveryStatus) -> bool {
    disc.attempts > 0
        && disc.last_failure.is_some()
        && job.metadata.uid.is_some()
        && disc.job.as_ref().and_then(|j| j.uid.as_ref()) == job.metadata.uid.as_ref()
}

/// How long a discovery Job may exist without a pod before the status says so.
pub(super) const POD_CREATION_GRACE: Duration = Duration::from_secs(30);

/// The plan being built: what each step adds.
pub(super) struct Draft<'o, 'a> {
    pub(super) obs: &'o Observation<'a>,
    pub(super) old: ServiceTemplateStatus,
    now: Time,
    st: ServiceTemplateStatus,
    conds: Vec<ConditionSpec>,
    blockers: Blockers,
    create_job: Option<Job>,
    delete_jobs: Vec<(String, String)>,
    requeue_after: Option<Duration>,
    waiting_for_slot: bool,
    happened: events::Happened,
}

impl<'o, 'a> Draft<'o, 'a> {
    pub(super) fn new(obs: &'o Observation<'a>, old: ServiceTemplateStatus) -> Self {
        let mut st = old.clone();
        st.observed_generation = obs.template.generation;
        Self {
            obs,
            old,
            now: Time(obs.now),
            st,
            conds: Vec::new(),
            blockers: Blockers::default(),
            create_job: None,
            delete_jobs: Vec::new(),
            requeue_after: None,
            waiting_for_slot: false,
            happened: events::Happened::default(),
        }
    }

    /// A status written by the first release holds the first encoding of the inputs hash: when it
    /// matches these inputs, it is the same discovery, so the results stay (no re-discovery on upgrade).
    pub(super) fn adopt_legacy_hash(&mut self, legacy: &str, hash: &str) {
        if let Some(d) = self.old.discovery.as_mut()
            && d.inputs_hash.as_deref() == Some(legacy)
        {
            d.inputs_hash = Some(hash.to_string());
        }
    }

    /// `spec.type` overrides the type the dry-run reported (api.md).
    pub(super) fn override_type(&mut self) {
        let Some(t) = self.obs.template.spec.r#type else {
            return;
        };
        if let Some(meta) = self
            .st
            .profile
            .as_mut()
            .and_then(|p| p.get_mut("metadata"))
            .and_then(|m| m.as_object_mut())
        {
            meta.insert("type".into(), t.as_str().into());
        }
    }

    pub(super) fn static_sources(&self) -> bool {
        !self.obs.template.spec.model_sources.is_empty()
    }

    pub(super) fn condition(
        &mut self,
        type_: &'static str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.conds
            .push(ConditionSpec::new(type_, ok, reason, message));
    }

    /// T-01/T-02
    pub(super) fn resolve_model(&mut self) -> Option<ModelCandidate<'a>> {
        let t = &self.obs.template;
        let resolution = resolve_model(
            t.scope,
            t.namespace,
            &t.spec.model_name,
            self.obs.namespace_model.clone(),
            self.obs.cluster_model.clone(),
        );
        match resolution {
            ModelResolution::Found { model, reference } => {
                let what = match &reference.namespace {
                    Some(ns) => format!("AIMModel {:?} in namespace {ns:?}", reference.name),
                    None => format!("AIMClusterModel {:?}", reference.name),
                };
                match model.failure {
                    // The image is still known, so discovery can go on; the template says why its model
                    // is Failed.
                    Some(why) => {
                        let message = format!(
                            "{what}, image {}; the model is Failed: {why}",
                            model.spec.image
                        );
                        self.condition(types::MODEL_FOUND, true, reasons::MODEL_FAILED, message);
                    }
                    None => {
                        let message = format!("{what}, image {}", model.spec.image);
                        self.condition(types::MODEL_FOUND, true, reasons::MODEL_FOUND, message);
                    }
                }
                self.st.resolved_model = Some(reference);
                Some(model)
            }
            ModelResolution::NotFound { message } => {
                self.condition(
                    types::MODEL_FOUND,
                    false,
                    reasons::MODEL_NOT_FOUND,
                    message.clone(),
                );
                self.blockers
                    .add(TemplatePhase::Failed, reasons::MODEL_NOT_FOUND, message);
                self.st.resolved_model = None;
                None
            }
        }
    }

    /// T-03/T-04
    pub(super) fn resolve_config(&mut self) -> Option<EffectiveConfig> {
        let t = &self.obs.template;
        let resolution = resolve_runtime_config(
            t.scope,
            &t.spec.runtime_config_name,
            self.obs.namespace_config.clone(),
            self.obs.cluster_config.clone(),
        );
        match resolution {
            ConfigResolution::Resolved {
                config,
                reference,
                reason,
                message,
            } => {
                self.condition(types::RUNTIME_CONFIG_READY, true, reason, message);
                self.st.resolved_runtime_config = reference;
                Some(config)
            }
            ConfigResolution::NotFound { message } => {
                self.condition(
                    types::RUNTIME_CONFIG_READY,
                    false,
                    reasons::RUNTIME_CONFIG_NOT_FOUND,
                    message.clone(),
                );
                self.blockers.add(
                    TemplatePhase::Failed,
                    reasons::RUNTIME_CONFIG_NOT_FOUND,
                    message,
                );
                self.st.resolved_runtime_config = None;
                None
            }
        }
    }

    /// Whether status holds discovery results for these inputs (T-22, T-25).
    pub(super) fn results_current(&self, hash: Option<&str>) -> bool {
        let same_inputs = hash.is_some_and(|h| {
            self.old
                .discovery
                .as_ref()
                .and_then(|d| d.inputs_hash.as_deref())
                == Some(h)
        });
        !self.static_sources()
            && same_inputs
            && is_true(&self.old, types::DISCOVERED, reasons::DISCOVERY_COMPLETE)
    }

    /// T-06…T-10: resolved hardware, affinity and the availability verdict. True when it can run.
    pub(super) fn judge_hardware(&mut self, discovered: Option<&DiscoveredHardware>) -> bool {
        let resolved = resolve_hardware(self.obs.template.spec.hardware.as_ref(), discovered);
        self.st.hardware_summary = resolved.as_ref().map(hardware_summary);
        let verdict = availability(
            resolved.as_ref().and_then(|r| r.gpu.as_ref()),
            self.obs.inventory,
        );
        self.st.resolved_hardware = resolved;
        self.conds.retain(|c| c.type_ != types::HARDWARE_AVAILABLE);
        self.blockers
            .0
            .retain(|b| b.0 != TemplatePhase::NotAvailable);
        self.st.resolved_node_affinity = None;
        match verdict {
            Ok(Availability::Available {
                affinity, message, ..
            }) => {
                self.st.resolved_node_affinity = affinity;
                self.condition(
                    types::HARDWARE_AVAILABLE,
                    true,
                    reasons::HARDWARE_AVAILABLE,
                    message,
                );
                true
            }
            Ok(Availability::NotAvailable { reason, message }) => {
                self.condition(types::HARDWARE_AVAILABLE, false, reason, message.clone());
                self.blockers
                    .add(TemplatePhase::NotAvailable, reason, message);
                false
            }
            Err(e) => {
                self.condition(types::HARDWARE_AVAILABLE, false, e.reason(), e.to_string());
                self.blockers
                    .add(TemplatePhase::Failed, e.reason(), e.to_string());
                false
            }
        }
    }

    /// Every discovery Job of the template that is not already being deleted.
    pub(super) fn all_jobs(&self) -> Vec<(String, String)> {
        self.obs
            .jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .map(|j| job_ref(j))
            .collect()
    }

    /// T-12: static sources, no discovery ever.
    pub(super) fn static_path(&mut self) {
        self.delete_jobs = self.all_jobs();
        self.st.discovery = None;
        let spec = self.obs.template.spec;
        match static_sources(spec) {
            Ok(sources) => {
                self.st.model_sources = sources;
                self.st.profile = Some(static_profile(spec));
                let message = format!(
                    "{} model source(s) given in the spec; no discovery runs",
                    spec.model_sources.len()
                );
                self.condition(
                    types::DISCOVERED,
                    true,
                    reasons::INLINE_MODEL_SOURCES,
                    message,
                );
            }
            Err(message) => {
                self.condition(
                    types::DISCOVERED,
                    false,
                    reasons::DISCOVERY_FAILED,
                    message.clone(),
                );
                self.blockers
                    .add(TemplatePhase::Failed, reasons::DISCOVERY_FAILED, message);
            }
        }
    }

    /// T-02/T-04/T-06: no child objects while the model or config is missing or the hardware absent.
    pub(super) fn blocked_path(&mut self, results_current: bool) {
        self.delete_jobs = self.all_jobs();
        if results_current {
            let message = discovered_message(&self.old);
            self.condition(
                types::DISCOVERED,
                true,
                reasons::DISCOVERY_COMPLETE,
                message,
            );
        }
    }

    /// T-13…T-25: the discovery Job that must exist, and what its outcome means.
    pub(super) fn discovery_path(
        &mut self,
        inputs: &DiscoveryInputs,
        hash: &str,
        results_current: bool,
    ) -> Option<Need> {
        let name = job_name(self.obs.template.name, hash);
        let job_ns = inputs.job_namespace.clone();
        // T-24: Jobs of older inputs go.
        self.delete_jobs = self
            .obs
            .jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| {
                j.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_INPUTS_HASH))
                    .map(String::as_str)
                    != Some(hash)
            })
            .map(|j| job_ref(j))
            .collect();
        let mut disc = match &self.old.discovery {
            Some(d) if d.inputs_hash.as_deref() == Some(hash) => d.clone(),
            _ => DiscoveryStatus {
                inputs_hash: Some(hash.to_string()),
                ..Default::default()
            },
        };
        disc.queue_position = None;
        let need = if results_current {
            let message = discovered_message(&self.old);
            self.condition(
                types::DISCOVERED,
                true,
                reasons::DISCOVERY_COMPLETE,
                message,
            );
            None
        } else {
            self.discovery_step(inputs, hash, &name, &job_ns, &mut disc)
        };
        self.st.discovery = Some(disc);
        need
    }

    pub(super) fn discovery_step(
        &mut self,
        inputs: &DiscoveryInputs,
        hash: &str,
        name: &str,
        job_ns: &str,
        disc: &mut DiscoveryStatus,
    ) -> Option<Need> {
        let obs = self.obs;
        let named = |j: &&&Job| j.metadata.name.as_deref() == Some(name);
        let current = obs
            .jobs
            .iter()
            .filter(named)
            .find(|j| j.metadata.deletion_timestamp.is_none())
            .copied();
        let Some(job) = current else {
            if obs.jobs.iter().any(|j| named(&j)) {
                self.awaiting(
                    &format!("waiting for the previous discovery job {name} to be deleted"),
                    TemplatePhase::Pending,
                );
                return None;
            }
            return self.start_or_wait(inputs, hash, name, job_ns, disc);
        };
        if failure_counted(job, disc) {
            // The Job stays (for `kubectl logs`) until the retry replaces it.
            return self.retry_after(job, disc);
        }
        let pods = pods_of(job, &obs.pods);
        if job_has(job, "Complete").is_some() {
            return self.read_result(job, &pods, name, job_ns, disc);
        }
        if job_has(job, "Failed").is_some() {
            let cause = failed_job_message(job, &pods, inputs.effective_deadline_seconds());
            self.failure(cause, disc, Some(job), false);
        } else if let Some(message) = pods
            .iter()
            .find_map(|p| image_pull_failure(p, &inputs.image))
        {
            // T-20: a job stuck on its image is deleted at once, which frees its slot.
            self.failure(message, disc, Some(job), true);
        } else if let Some((reason, message)) = pods.iter().find_map(|p| container_config_wait(p)) {
            // The pod waits for someone to create what it refers to: say so now, not at the deadline.
            self.blocked(format!(
                "the discovery pod of job {name} cannot start its container ({reason}): {message}"
            ));
        } else if pods.iter().any(|p| pod_phase(p) == Some("Succeeded")) {
            self.awaiting(
                &format!("dry-run finished in job {name}; reading its result"),
                TemplatePhase::Progressing,
            );
        } else if pods.iter().any(|p| pod_phase(p) == Some("Running")) {
            self.awaiting(
                &format!("dry-run running in job {name}"),
                TemplatePhase::Progressing,
            );
        } else if let Some(why) = pods.iter().find_map(|p| unschedulable(p)) {
            self.blocked(format!(
                "the discovery pod of job {name} cannot be scheduled: {why}"
            ));
        } else if pods.is_empty() {
            match failed_create(job, &obs.job_events) {
                Some(why) => self.blocked(format!(
                    "the discovery pod of job {name} cannot be created: {why}"
                )),
                None => self.no_pod_yet(job, name),
            }
        } else {
            self.awaiting(
                &format!("job {name} created; waiting for its pod to start"),
                TemplatePhase::Pending,
            );
        }
        None
    }

    /// T-17…T-19: the Job completed; its succeeded pod's log is the result.
    fn read_result(
        &mut self,
        job: &Job,
        pods: &[&Pod],
        name: &str,
        job_ns: &str,
        disc: &mut DiscoveryStatus,
    ) -> Option<Need> {
        let obs = self.obs;
        let log = match &obs.log {
            LogRead::NotRead => {
                return match log_pod(job, pods).and_then(|p| p.metadata.name.clone()) {
                    Some(pod) => Some(Need::Log {
                        namespace: job_ns.to_string(),
                        pod,
                    }),
                    None => {
                        self.failure(
                            format!("job {name} completed but its pod is gone, so its dry-run log cannot be read"),
                            disc,
                            Some(job),
                            false,
                        );
                        None
                    }
                };
            }
            LogRead::Unavailable(why) => {
                let cause = format!("the dry-run log could not be read: {why}");
                self.failure(cause, disc, Some(job), false);
                return None;
            }
            LogRead::Transient(why) => {
                // Not the dry-run's fault: read it again shortly, count nothing.
                self.awaiting(
                    &format!("job {name} completed; reading its dry-run log failed for now and is retried: {why}"),
                    TemplatePhase::Pending,
                );
                self.requeue_after = Some(super::LOG_RETRY);
                return None;
            }
            LogRead::Text(log) => log,
        };
        match parse_dry_run(log, obs.log_limit) {
            Ok(result) => {
                // T-18
                self.st.model_sources = result.model_sources.clone();
                self.st.profile = Some(result.profile.clone());
                disc.attempts = 0;
                disc.last_failure = None;
                disc.next_attempt_time = None;
                disc.job = Some(JobReference {
                    name: name.to_string(),
                    namespace: job_ns.to_string(),
                    uid: None,
                });
                let found = DiscoveredHardware {
                    gpu: result.metadata.gpu.clone(),
                    gpu_count: result.metadata.gpu_count,
                };
                self.judge_hardware(Some(&found));
                let message = discovered_message(&self.st);
                self.condition(
                    types::DISCOVERED,
                    true,
                    reasons::DISCOVERY_COMPLETE,
                    message,
                );
            }
            Err(e) => self.failure(e.to_string(), disc, Some(job), false),
        }
        None
    }

    /// A Job without a pod: normal for a moment; after [`POD_CREATION_GRACE`] without a `FailedCreate`
    /// event that says why, the status points at `kubectl describe job`.
    fn no_pod_yet(&mut self, job: &Job, name: &str) {
        let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let grace = jiff::SignedDuration::from_secs(POD_CREATION_GRACE.as_secs() as i64);
        let overdue_at = created.and_then(|c| c.checked_add(grace).ok());
        match overdue_at {
            Some(at) if self.obs.now >= at => self.awaiting(
                &format!(
                    "job {name} has no pod after {}s; `kubectl describe job {name}` shows why",
                    POD_CREATION_GRACE.as_secs()
                ),
                TemplatePhase::Pending,
            ),
            _ => {
                if let Some(at) = overdue_at {
                    let left = at.duration_since(self.obs.now).unsigned_abs();
                    self.requeue_after = Some(left.max(Duration::from_secs(1)));
                }
                self.awaiting(
                    &format!("job {name} created; waiting for its pod to start"),
                    TemplatePhase::Pending,
                );
            }
        }
    }

    /// When the current attempt's backoff ends: `nextAttemptTime`, or, for a status written before that
    /// field existed, the last attempt plus the backoff.
    fn retry_at(&self, disc: &DiscoveryStatus) -> Option<jiff::Timestamp> {
        if disc.attempts <= 0 || disc.last_failure.is_none() {
            return None;
        }
        disc.next_attempt_time.as_ref().map(|t| t.0).or_else(|| {
            let wait = backoff(self.obs.backoff_base, disc.attempts);
            disc.last_attempt_time.as_ref().and_then(|t| {
                t.0.checked_add(jiff::SignedDuration::from_secs(wait.as_secs() as i64))
                    .ok()
            })
        })
    }

    /// Still backing off: say so and wake up when it ends (T-21).
    fn backing_off(&mut self, disc: &DiscoveryStatus) -> bool {
        match self.retry_at(disc).filter(|at| self.obs.now < *at) {
            Some(at) => {
                self.failed_state(disc);
                let left = at.duration_since(self.obs.now).unsigned_abs();
                self.requeue_after = Some(left.max(Duration::from_secs(1)));
                true
            }
            None => false,
        }
    }

    /// The failed Job of a counted failure: kept during the backoff, deleted when the retry is due.
    fn retry_after(&mut self, job: &Job, disc: &mut DiscoveryStatus) -> Option<Need> {
        if !self.backing_off(disc) {
            let name = job.metadata.name.as_deref().unwrap_or_default();
            self.delete_jobs.push(job_ref(job));
            self.awaiting(
                &format!("retrying: removing the failed discovery job {name} first"),
                TemplatePhase::Pending,
            );
        }
        None
    }

    /// No Job for the current inputs: wait out a backoff, wait for a slot, or create it (T-21, T-23).
    pub(super) fn start_or_wait(
        &mut self,
        inputs: &DiscoveryInputs,
        hash: &str,
        name: &str,
        job_ns: &str,
        disc: &mut DiscoveryStatus,
    ) -> Option<Need> {
        let obs = self.obs;
        if self.backing_off(disc) {
            return None;
        }
        if let Some(why) = &obs.job_refused {
            let cause = format!("the API server refused discovery job {job_ns}/{name}: {why}");
            self.failure(cause, disc, None, false);
            return None;
        }
        match obs.slot {
            Slot::NotAsked => {
                return Some(Need::Slot {
                    namespace: job_ns.to_string(),
                    job: name.to_string(),
                });
            }
            Slot::Waiting { position, max } => {
                self.waiting_for_slot = true;
                disc.queue_position = Some(i32::try_from(position).unwrap_or(i32::MAX));
                let message = format!(
                    "waiting for a discovery slot: position {position} in the queue (at most {max} discoveries run at once)"
                );
                self.awaiting(&message, TemplatePhase::Pending);
            }
            Slot::Granted => {
                let mut job = discovery_job(inputs, hash);
                // T-21: a failed Job stays until its retry replaces it, however long the backoff.
                if let Some(spec) = job.spec.as_mut() {
                    spec.ttl_seconds_after_finished =
                        Some(job_ttl(obs.backoff_base, disc.attempts));
                }
                self.create_job = Some(job);
                disc.job = Some(JobReference {
                    name: name.to_string(),
                    namespace: job_ns.to_string(),
                    uid: None,
                });
                disc.last_attempt_time = Some(self.now.clone());
                disc.next_attempt_time = None;
                self.awaiting(
                    &format!("job {name} created; waiting for its pod to start"),
                    TemplatePhase::Pending,
                );
                self.happened.started = Some(format!("{job_ns}/{name}"));
            }
        }
        None
    }

    /// Earlier results in status: while re-discovering, the template stays usable (T-22).
    pub(super) fn has_results(&self) -> bool {
        self.old.profile.is_some() || !self.old.model_sources.is_empty()
    }

    pub(super) fn awaiting(&mut self, message: &str, phase: TemplatePhase) {
        self.discovery_not_done(reasons::AWAITING_DISCOVERY, message, phase);
    }

    /// The discovery pod cannot start until someone acts (quota, admission, taints): Pending with a
    /// reason of its own, so that it shows and is recorded as a Warning (T-31).
    fn blocked(&mut self, message: String) {
        self.discovery_not_done(reasons::DISCOVERY_BLOCKED, &message, TemplatePhase::Pending);
    }

    fn discovery_not_done(&mut self, reason: &str, message: &str, phase: TemplatePhase) {
        let (message, phase) = if self.has_results() {
            (
                format!("inputs changed; re-discovery is running: {message}"),
                TemplatePhase::Ready,
            )
        } else {
            (message.to_string(), phase)
        };
        self.condition(types::DISCOVERED, false, reason, message.clone());
        self.blockers.add(phase, reason, message);
    }

    /// T-19/T-20: records the failure of this attempt (tied to its Job, so it counts once) and waits
    /// (T-21), timed from now. The Job is deleted at once only when it would hold its slot (`delete`).
    pub(super) fn failure(
        &mut self,
        cause: String,
        disc: &mut DiscoveryStatus,
        job: Option<&Job>,
        delete: bool,
    ) {
        disc.attempts += 1;
        disc.last_failure = Some(cause);
        if let Some(job) = job {
            disc.job = Some(JobReference {
                name: job.metadata.name.clone().unwrap_or_default(),
                namespace: job.metadata.namespace.clone().unwrap_or_default(),
                uid: job.metadata.uid.clone(),
            });
            if delete {
                self.delete_jobs.push(job_ref(job));
            }
        }
        let wait = backoff(self.obs.backoff_base, disc.attempts);
        disc.next_attempt_time = self
            .obs
            .now
            .checked_add(jiff::SignedDuration::from_secs(wait.as_secs() as i64))
            .ok()
            .map(Time);
        self.requeue_after = Some(wait);
        let message = self.failed_state(disc);
        self.happened.failed = Some(message);
    }

    /// The Failed (or, with earlier results, Degraded) state while backing off; returns its message.
    pub(super) fn failed_state(&mut self, disc: &DiscoveryStatus) -> String {
        let wait = backoff(self.obs.backoff_base, disc.attempts);
        let has_results = self.has_results();
        let message = format!(
            "{}; attempt {} failed, retry after a {} backoff{}",
            disc.last_failure.clone().unwrap_or_default(),
            disc.attempts,
            human_duration(wait),
            if has_results {
                "; the previous results stay in use"
            } else {
                ""
            }
        );
        self.condition(
            types::DISCOVERED,
            false,
            reasons::DISCOVERY_FAILED,
            message.clone(),
        );
        let phase = if has_results {
            TemplatePhase::Degraded
        } else {
            TemplatePhase::Failed
        };
        self.blockers
            .add(phase, reasons::DISCOVERY_FAILED, message.clone());
        message
    }

    /// T-27: the cache seam (namespace templates with caching).
    pub(super) fn cache(&mut self) {
        let t = &self.obs.template;
        if !t.caching_enabled
            || t.scope != TemplateScope::Namespace
            || self.st.model_sources.is_empty()
        {
            return;
        }
        let (ok, reason, phase, message) = match self.obs.cache {
            Some(CachePhase::Warm) => (
                true,
                reasons::CACHE_WARM,
                None,
                "the model sources are cached",
            ),
            Some(CachePhase::Degraded) => (
                false,
                reasons::CACHE_DEGRADED,
                Some(TemplatePhase::Degraded),
                "the cache is degraded",
            ),
            Some(CachePhase::Failed) => (
                false,
                reasons::CACHE_FAILED,
                Some(TemplatePhase::Degraded),
                "the cache failed",
            ),
            _ => (
                false,
                reasons::WAITING_FOR_CACHE,
                Some(TemplatePhase::Progressing),
                "waiting for the model sources to be cached",
            ),
        };
        self.condition(types::CACHE_READY, ok, reason, message);
        if let Some(p) = phase {
            self.blockers.add(p, reason, message);
        }
    }

    /// T-29…T-31: the worst blocker decides; Ready is True exactly when nothing blocks.
    pub(super) fn finish(mut self) -> Plan {
        let ready = match self.blockers.worst() {
            None | Some((TemplatePhase::Ready, _, _)) => {
                self.st.status = TemplatePhase::Ready;
                ConditionSpec::new(
                    types::READY,
                    true,
                    reasons::READY,
                    "the template is ready for services",
                )
            }
            Some((phase, reason, message)) => {
                self.st.status = *phase;
                ConditionSpec::new(types::READY, false, reason.clone(), message.clone())
            }
        };
        self.conds.push(ready);
        let order = [
            types::MODEL_FOUND,
            types::RUNTIME_CONFIG_READY,
            types::HARDWARE_AVAILABLE,
            types::DISCOVERED,
            types::CACHE_READY,
            types::READY,
        ];
        crate::conditions::sort_conditions(&mut self.conds, &order);
        self.st.conditions = merge_conditions(
            &self.old.conditions,
            &self.conds,
            &self.now,
            self.obs.template.generation,
        );
        let events = events::events(&self.old, &self.st, self.happened);
        self.delete_jobs.sort();
        self.delete_jobs.dedup();
        Plan {
            status: self.st,
            create_job: self.create_job,
            delete_jobs: self.delete_jobs,
            requeue_after: self.requeue_after,
            events,
            waiting_for_slot: self.waiting_for_slot,
        }
    }
}

/// T-21: how long a finished discovery Job may stay: [`aim_discovery::JOB_TTL_SECONDS_AFTER_FINISHED`],
/// or longer when the backoff that follows a failure of this attempt would outlast it, so that a
/// failed Job (and its log, for `kubectl logs job/…`) is there until its retry replaces it.
/// `attempts` counts the failures before this attempt.
pub fn job_ttl(backoff_base: Duration, attempts: i32) -> i32 {
    /// Time left after the retry is due, for the retry to delete the Job itself.
    const MARGIN_SECONDS: i32 = 300;
    let wait = backoff(backoff_base, attempts.saturating_add(1));
    i32::try_from(wait.as_secs())
        .unwrap_or(i32::MAX)
        .saturating_add(MARGIN_SECONDS)
        .max(aim_discovery::JOB_TTL_SECONDS_AFTER_FINISHED)
}
