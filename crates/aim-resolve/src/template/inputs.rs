//! The discovery inputs of a template (T-15, T-22).

use super::Observation;
use crate::model::ModelCandidate;
use crate::runtime_config::EffectiveConfig;
use aim_api::TemplateScope;
use aim_discovery::DiscoveryInputs;

pub(super) fn discovery_inputs(
    obs: &Observation,
    model: &ModelCandidate,
    config: &EffectiveConfig,
) -> DiscoveryInputs {
    let t = &obs.template;
    let job_namespace = match t.scope {
        TemplateScope::Namespace => t.namespace.unwrap_or_default(),
        TemplateScope::Cluster => obs.operator_namespace,
    };
    let mut inputs = DiscoveryInputs::new(
        t.name,
        t.scope,
        t.uid,
        job_namespace,
        model.spec.image.clone(),
    );
    inputs.env = config
        .env
        .iter()
        .chain(&model.spec.env)
        .chain(t.env)
        .cloned()
        .collect();
    inputs.image_pull_secrets = if t.spec.image_pull_secrets.is_empty() {
        model.spec.image_pull_secrets.clone()
    } else {
        t.spec.image_pull_secrets.clone()
    };
    inputs.service_account_name = t
        .spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            model
                .spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
        });
    inputs.metric = t.spec.metric;
    inputs.precision = t.spec.precision;
    let gpu = t.spec.hardware.as_ref().and_then(|h| h.gpu.as_ref());
    inputs.gpu_model = gpu
        .and_then(|g| g.model_name())
        .map(aim_hardware::normalize_model);
    inputs.gpu_count = gpu.map(|g| g.requests);
    inputs.profile_id = t.spec.profile_id.clone().filter(|p| !p.is_empty());
    inputs.active_deadline_seconds = config.discovery_deadline_seconds;
    inputs.resources = config.discovery_resources.as_deref().cloned();
    inputs.template_labels = t.labels.cloned().unwrap_or_default();
    inputs
}
