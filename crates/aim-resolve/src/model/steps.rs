//! The steps of a model decision, each adding to the plan being built: the image's metadata (M-01), the
//! templates it calls for (M-02/M-03), the status they sum up to (M-04), and the events.

use super::metadata::{MetadataFailure, metadata_from_labels};
use super::plan::{
    ModelObservation, ModelPlan, RegistryNeed, RegistryRead, TemplateSeen, aggregate,
};
use super::templates::{DesiredTemplate, ModelRef, desired_templates};
use crate::common::{backoff, human_duration};
use crate::conditions::{ConditionSpec, PlannedEvent, merge_conditions};
use aim_api::conditions::{reasons, types};
use aim_api::{
    ImageMetadata, ModelPhase, ModelStatus, ModelTemplateStatus, ObservedImageMetadata,
    RegistryReadStatus, TemplatePhase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where the image's metadata stands after M-01.
pub(super) enum Metadata {
    /// Known: from the spec, from status (read before for this image) or from this read.
    Known(ImageMetadata),
    /// Extraction is off and no inline metadata.
    Disabled,
    /// The read failed (now, or earlier and still backing off); `status.registry` says why.
    Failed,
}

/// The plan being built: what each step adds.
pub(super) struct ModelDraft<'o, 'a> {
    obs: &'o ModelObservation<'a>,
    old: ModelStatus,
    st: ModelStatus,
    conds: Vec<ConditionSpec>,
    events: Vec<PlannedEvent>,
    requeue_after: Option<Duration>,
    registry_result: Option<Result<(), &'static str>>,
    /// The templates this model controls, by name.
    ours: BTreeMap<&'a str, &'o TemplateSeen<'a>>,
    /// Every template in the model's scope, by name.
    by_name: BTreeMap<&'a str, &'o TemplateSeen<'a>>,
    /// Names this model expects (M-04 sums up their phases).
    expected: BTreeSet<String>,
    apply: Vec<DesiredTemplate>,
    delete: Vec<String>,
    /// Expected templates that do not exist because the API server refused them.
    refused: BTreeSet<String>,
}

impl<'o, 'a> ModelDraft<'o, 'a> {
    pub(super) fn new(obs: &'o ModelObservation<'a>) -> Self {
        let m = &obs.model;
        let old = m.status.cloned().unwrap_or_default();
        let mut st = old.clone();
        st.observed_generation = m.generation;
        Self {
            obs,
            old,
            st,
            conds: Vec::new(),
            events: Vec::new(),
            requeue_after: None,
            registry_result: None,
            ours: obs
                .templates
                .iter()
                .filter(|t| t.controller_uid == Some(m.uid))
                .map(|t| (t.name, t))
                .collect(),
            by_name: obs.templates.iter().map(|t| (t.name, t)).collect(),
            expected: BTreeSet::new(),
            apply: Vec::new(),
            delete: Vec::new(),
            refused: BTreeSet::new(),
        }
    }

    fn image(&self) -> &'a str {
        self.obs.model.spec.image.as_str()
    }

    /// M-01: where the metadata comes from: the spec, the status (read before for this image), or the
    /// registry, which the operator must read first ([`RegistryNeed`]) unless a failed read of this image
    /// is still backing off.
    pub(super) fn metadata(&mut self) -> Result<Metadata, RegistryNeed> {
        let obs = self.obs;
        let spec = obs.model.spec;
        if let Some(inline) = &spec.image_metadata {
            return Ok(self.inline(inline));
        }
        if !spec.discovery.extract_metadata {
            return Ok(self.disabled());
        }
        if let Some(cached) = self.cached() {
            return Ok(self.use_cached(cached));
        }
        match &obs.registry {
            RegistryRead::NotRead => match self.backing_off_until() {
                Some((prior, at)) => Ok(self.backing_off(prior, at)),
                None => Err(self.registry_need()),
            },
            RegistryRead::Read { digest, labels } => Ok(self.read(digest, labels)),
            RegistryRead::Failed(f) => Ok(self.read_failed(f)),
        }
    }

    fn inline(&mut self, inline: &ImageMetadata) -> Metadata {
        self.st.image_metadata = None;
        self.st.registry = None;
        self.conds.push(ConditionSpec::new(
            types::METADATA_EXTRACTED,
            true,
            reasons::INLINE_METADATA,
            "spec.imageMetadata is set; the registry is not contacted",
        ));
        Metadata::Known(inline.clone())
    }

    fn disabled(&mut self) -> Metadata {
        self.st.image_metadata = None;
        self.st.registry = None;
        Metadata::Disabled
    }

    /// The metadata read before, when it was read for this very image.
    fn cached(&self) -> Option<&'a ObservedImageMetadata> {
        let image = self.image();
        self.obs
            .model
            .status?
            .image_metadata
            .as_ref()
            .filter(|c| c.image == image)
    }

    fn use_cached(&mut self, cached: &ObservedImageMetadata) -> Metadata {
        self.conds
            .push(read_condition(self.image(), cached.digest.as_deref()));
        self.st.registry = None;
        Metadata::Known(cached.metadata.clone())
    }

    /// The record of earlier failed reads of this image.
    fn prior(&self) -> Option<&'a RegistryReadStatus> {
        let image = self.image();
        self.obs
            .model
            .status?
            .registry
            .as_ref()
            .filter(|r| r.image == image)
    }

    /// Still backing off from a failure for this image and this spec: the failure and when it ends.
    fn backing_off_until(&self) -> Option<(&'a RegistryReadStatus, jiff::Timestamp)> {
        let prior = self.prior()?;
        let at = prior.next_attempt_time.as_ref()?.0;
        (self.old.observed_generation == self.obs.model.generation && at > self.obs.now)
            .then_some((prior, at))
    }

    /// The failure stays as it was written; the decision wakes when the backoff ends.
    fn backing_off(&mut self, prior: &RegistryReadStatus, at: jiff::Timestamp) -> Metadata {
        self.conds.push(failed_condition(&self.old, prior));
        self.requeue_after = Some(Duration::from_secs(
            (at - self.obs.now)
                .total(jiff::Unit::Second)
                .map(|s| s.ceil().max(1.0) as u64)
                .unwrap_or(1),
        ));
        Metadata::Failed
    }

    /// What the operator must read: the image, with the model's pull secrets (an AIMClusterModel's in
    /// the operator namespace).
    fn registry_need(&self) -> RegistryNeed {
        let m = &self.obs.model;
        RegistryNeed {
            image: self.image().to_string(),
            pull_secrets: m
                .spec
                .image_pull_secrets
                .iter()
                .map(|s| s.name.clone())
                .filter(|n| !n.is_empty())
                .collect(),
            secret_namespace: m
                .namespace
                .unwrap_or(self.obs.operator_namespace)
                .to_string(),
        }
    }

    /// The registry's labels, kept in status so that the image is not read again.
    fn read(&mut self, digest: &Option<String>, labels: &BTreeMap<String, String>) -> Metadata {
        let image = self.image();
        match metadata_from_labels(image, labels) {
            Ok(meta) => {
                self.registry_result = Some(Ok(()));
                self.st.image_metadata = Some(ObservedImageMetadata {
                    image: image.to_string(),
                    digest: digest.clone(),
                    metadata: meta.clone(),
                });
                self.st.registry = None;
                self.conds.push(read_condition(image, digest.as_deref()));
                Metadata::Known(meta)
            }
            Err(f) => self.read_failed(&f),
        }
    }

    /// A failed read: counted, told in a Warning, retried after the backoff.
    fn read_failed(&mut self, f: &MetadataFailure) -> Metadata {
        self.registry_result = Some(Err(f.category()));
        self.record_failure(f);
        self.requeue_after = Some(self.retry_wait());
        Metadata::Failed
    }

    fn record_failure(&mut self, f: &MetadataFailure) {
        let obs = self.obs;
        // A changed spec (new pull secret, say) starts the count again.
        let same_spec =
            obs.model.status.and_then(|s| s.observed_generation) == obs.model.generation;
        let attempts = match self.prior() {
            Some(p) if same_spec => p.attempts + 1,
            _ => 1,
        };
        let wait = backoff(obs.backoff_base, attempts);
        let next = obs
            .now
            .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
            .unwrap_or(obs.now);
        self.st.registry = Some(RegistryReadStatus {
            image: obs.model.spec.image.clone(),
            attempts,
            last_attempt_time: Some(Time(obs.now)),
            next_attempt_time: Some(Time(next)),
            last_failure: Some(f.message().to_string()),
        });
        let message = format!(
            "{}; attempt {attempts} failed, retry after a {} backoff",
            f.message(),
            human_duration(wait)
        );
        self.conds.push(ConditionSpec::new(
            types::METADATA_EXTRACTED,
            false,
            f.reason(),
            message.clone(),
        ));
        self.events.push(PlannedEvent {
            warning: true,
            reason: "MetadataFailed".into(),
            message,
        });
    }

    fn retry_wait(&self) -> Duration {
        self.st
            .registry
            .as_ref()
            .and_then(|r| r.next_attempt_time.as_ref())
            .and_then(|t| (t.0 - self.obs.now).total(jiff::Unit::Second).ok())
            .map(|s| Duration::from_secs(s.ceil().max(1.0) as u64))
            .unwrap_or(self.obs.backoff_base)
    }

    /// M-02/M-03: which templates must exist; ours are those the model controls.
    pub(super) fn templates(&mut self, metadata: &Metadata) {
        let creating = self.obs.model.spec.discovery.create_service_templates;
        match (metadata, creating) {
            (Metadata::Known(meta), true) => self.desired(meta),
            (Metadata::Known(_) | Metadata::Disabled, false) | (Metadata::Disabled, true) => {
                // Templates this model made earlier go once creation is off.
                self.delete.extend(self.ours.keys().map(|n| n.to_string()));
            }
            (Metadata::Failed, _) => {
                // Keep what exists until the metadata is known again.
                self.expected
                    .extend(self.ours.keys().map(|n| n.to_string()));
            }
        }
        self.delete.sort();
    }

    /// M-02: a template per recommended deployment, written when missing or different; a name held by a
    /// template this model does not control is left alone and reported. M-03: ours that no deployment
    /// asks for any more go.
    fn desired(&mut self, meta: &ImageMetadata) {
        let m = &self.obs.model;
        let model_ref = ModelRef {
            kind: m.kind,
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
        };
        let (want, skipped) = desired_templates(&model_ref, &meta.recommended_deployments);
        let mut taken: Vec<String> = Vec::new();
        let mut refused: Vec<(String, &str)> = Vec::new();
        for d in want {
            match self.by_name.get(d.name.as_str()) {
                Some(t) if t.controller_uid != Some(m.uid) => {
                    taken.push(d.name.clone());
                    continue;
                }
                Some(t) if up_to_date(t, &d) => {}
                // Refused in this reconcile: not written again until the model is decided anew.
                _ => match self.obs.refused.get(&d.name) {
                    Some(why) => refused.push((d.name.clone(), why.as_str())),
                    None => self.apply.push(d.clone()),
                },
            }
            self.expected.insert(d.name);
        }
        if !refused.is_empty() {
            // Retried after the backoff's first step: an admission rule or a quota may change.
            self.requeue_after = Some(
                self.requeue_after
                    .map_or(self.obs.backoff_base, |r| r.min(self.obs.backoff_base)),
            );
        }
        self.refused = refused
            .iter()
            .filter(|(n, _)| !self.ours.contains_key(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        for name in self.ours.keys() {
            if !self.expected.contains(*name) {
                self.delete.push(name.to_string());
            }
        }
        self.conds.push(templates_condition(
            self.expected.len(),
            &skipped,
            &taken,
            &refused,
        ));
    }

    /// M-04: a template's phase; one the API server refused to create counts as `Failed` (it cannot
    /// come to be until something changes), one not created yet as `Pending`.
    fn phase_of(&self, name: &str) -> Option<TemplatePhase> {
        if self.refused.contains(name) {
            return Some(TemplatePhase::Failed);
        }
        self.ours.get(name).and_then(|t| t.phase)
    }

    /// M-04: the status from the expected templates (one not created yet counts as `Pending`), or
    /// `Failed` while the metadata cannot be read; then the conditions are merged.
    pub(super) fn aggregate_status(&mut self, metadata: &Metadata) {
        self.st.templates = self
            .expected
            .iter()
            .map(|n| ModelTemplateStatus {
                name: n.clone(),
                status: self.phase_of(n).unwrap_or_default(),
            })
            .collect();
        let phases: Vec<Option<TemplatePhase>> =
            self.expected.iter().map(|n| self.phase_of(n)).collect();
        let (phase, ready) = match metadata {
            Metadata::Failed => (ModelPhase::Failed, self.unreadable()),
            _ => self.summed_up(metadata, &phases),
        };
        self.st.status = phase;
        self.conds.push(ready);
        let order = [
            types::METADATA_EXTRACTED,
            types::TEMPLATES_CREATED,
            types::READY,
        ];
        crate::conditions::sort_conditions(&mut self.conds, &order);
        self.st.conditions = merge_conditions(
            &self.old.conditions,
            &self.conds,
            &Time(self.obs.now),
            self.obs.model.generation,
        );
    }

    /// `Ready=False` with the reason of the failed read.
    fn unreadable(&self) -> ConditionSpec {
        let r = self.st.registry.as_ref();
        ConditionSpec::new(
            types::READY,
            false,
            failure_reason(&self.conds),
            format!(
                "the image's metadata cannot be read: {}",
                r.and_then(|r| r.last_failure.clone()).unwrap_or_default()
            ),
        )
    }

    /// The phase the templates sum up to, and a `Ready` condition that says why.
    fn summed_up(
        &self,
        metadata: &Metadata,
        phases: &[Option<TemplatePhase>],
    ) -> (ModelPhase, ConditionSpec) {
        let phase = aggregate(phases);
        let creating = self.obs.model.spec.discovery.create_service_templates;
        let text = match (metadata, creating) {
            (Metadata::Disabled, _) => {
                "metadata extraction is off (spec.discovery.extractMetadata: false); no templates \
                 are created"
                    .to_string()
            }
            (_, false) => "template creation is off (spec.discovery.createServiceTemplates: false)"
                .to_string(),
            _ if phases.is_empty() => "no templates expected".to_string(),
            _ if !self.refused.is_empty() => format!(
                "{}; the API server refused to create {} (see TemplatesCreated)",
                summary(phases),
                join(self.refused.iter().cloned())
            ),
            _ => summary(phases),
        };
        let ok = phase == ModelPhase::Ready;
        (
            phase,
            ConditionSpec::new(
                types::READY,
                ok,
                if ok { reasons::READY } else { phase.as_str() },
                text,
            ),
        )
    }

    /// Events: templates created/removed, and a change of the model's status (T-31's rule for models).
    pub(super) fn events(&mut self) {
        let created: Vec<String> = self
            .apply
            .iter()
            .filter(|d| !self.by_name.contains_key(d.name.as_str()))
            .map(|d| d.name.clone())
            .collect();
        if !created.is_empty() {
            self.events.push(PlannedEvent {
                warning: false,
                reason: "TemplatesCreated".into(),
                message: format!("created {}", join(created.into_iter())),
            });
        }
        if !self.delete.is_empty() {
            self.events.push(PlannedEvent {
                warning: false,
                reason: "TemplatesDeleted".into(),
                message: format!(
                    "deleted {} (no longer recommended)",
                    join(self.delete.iter().cloned())
                ),
            });
        }
        if let Some(e) = self.refused_event() {
            self.events.push(e);
        }
        if let Some(e) = self.status_event() {
            self.events.push(e);
        }
    }

    /// A Warning when the API server refused a template, once for each new refusal message (T-31:
    /// not once per reconcile).
    fn refused_event(&self) -> Option<PlannedEvent> {
        let created = |st: &ModelStatus| {
            st.conditions
                .iter()
                .find(|c| c.type_ == types::TEMPLATES_CREATED)
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        let (reason, message) = created(&self.st)?;
        (reason == reasons::TEMPLATE_REFUSED
            && created(&self.old) != Some((reason, message.clone())))
        .then(|| PlannedEvent {
            warning: true,
            reason: reasons::TEMPLATE_REFUSED.into(),
            message,
        })
    }

    /// The event of a new status or `Ready` reason; none for a failed read, which has its own Warning.
    fn status_event(&self) -> Option<PlannedEvent> {
        let ready_reason = |st: &ModelStatus| {
            st.conditions
                .iter()
                .find(|c| c.type_ == types::READY)
                .map(|c| c.reason.clone())
        };
        let changed = self.obs.model.status.is_none()
            || self.old.status != self.st.status
            || ready_reason(&self.old) != ready_reason(&self.st);
        if !changed || (self.st.status == ModelPhase::Failed && self.registry_result.is_some()) {
            return None;
        }
        let ready = self
            .st
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)?;
        Some(PlannedEvent {
            warning: matches!(
                self.st.status,
                ModelPhase::Failed | ModelPhase::Degraded | ModelPhase::NotAvailable
            ),
            reason: self.st.status.as_str().into(),
            message: ready.message.clone(),
        })
    }

    pub(super) fn finish(self) -> ModelPlan {
        ModelPlan {
            status: self.st,
            apply: self.apply,
            delete: self.delete,
            events: self.events,
            requeue_after: self.requeue_after,
            registry_result: self.registry_result,
        }
    }
}

/// `TemplatesCreated`: how many templates the deployments call for, which were skipped, which names
/// are taken, which the API server refused (and what it said).
fn templates_condition(
    expected: usize,
    skipped: &[usize],
    taken: &[String],
    refused: &[(String, &str)],
) -> ConditionSpec {
    let mut message = match expected {
        0 => "the image recommends no deployments".to_string(),
        1 => "1 template for the recommended deployment".to_string(),
        n => format!("{n} templates for the recommended deployments"),
    };
    if !skipped.is_empty() {
        message.push_str(&format!(
            "; deployment(s) {} have no gpuModel and were skipped",
            join(skipped.iter().map(|i| i.to_string()))
        ));
    }
    if !refused.is_empty() {
        return ConditionSpec::new(
            types::TEMPLATES_CREATED,
            false,
            reasons::TEMPLATE_REFUSED,
            format!(
                "{message}; the API server refused {}",
                join(refused.iter().map(|(n, why)| format!("{n}: {why}")))
            ),
        );
    }
    if taken.is_empty() {
        ConditionSpec::new(
            types::TEMPLATES_CREATED,
            true,
            reasons::TEMPLATES_CREATED,
            message,
        )
    } else {
        ConditionSpec::new(
            types::TEMPLATES_CREATED,
            false,
            reasons::TEMPLATE_NAME_TAKEN,
            format!(
                "{message}; not created because a template of that name exists and was not \
                 made by this model (rename or delete it): {}",
                join(taken.iter().cloned())
            ),
        )
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn summary(phases: &[Option<TemplatePhase>]) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for p in phases {
        *counts.entry(p.unwrap_or_default().as_str()).or_default() += 1;
    }
    let parts = counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = phases.len();
    format!("{n} template{}: {parts}", if n == 1 { "" } else { "s" })
}

fn up_to_date(seen: &TemplateSeen<'_>, want: &DesiredTemplate) -> bool {
    seen.spec == &want.spec
        && want
            .labels
            .iter()
            .all(|(k, v)| seen.labels.and_then(|l| l.get(k)) == Some(v))
}

fn read_condition(image: &str, digest: Option<&str>) -> ConditionSpec {
    ConditionSpec::new(
        types::METADATA_EXTRACTED,
        true,
        reasons::METADATA_READ,
        match digest {
            Some(d) => format!("labels of {image} read from its registry ({d})"),
            None => format!("labels of {image} read from its registry"),
        },
    )
}

fn failure_reason(conds: &[ConditionSpec]) -> String {
    conds
        .iter()
        .find(|c| c.type_ == types::METADATA_EXTRACTED)
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| reasons::REGISTRY_ERROR.into())
}

/// The backoff's condition, as written when the failure was recorded.
fn failed_condition(old: &ModelStatus, r: &RegistryReadStatus) -> ConditionSpec {
    match old
        .conditions
        .iter()
        .find(|c| c.type_ == types::METADATA_EXTRACTED)
    {
        Some(c) => ConditionSpec::new(
            types::METADATA_EXTRACTED,
            false,
            c.reason.clone(),
            c.message.clone(),
        ),
        None => ConditionSpec::new(
            types::METADATA_EXTRACTED,
            false,
            reasons::REGISTRY_ERROR,
            r.last_failure.clone().unwrap_or_default(),
        ),
    }
}
