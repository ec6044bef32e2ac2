//! Models: which model a template runs (T-01/T-02), and the model controller's decisions (M-01…M-04):
//! image labels → recommended deployments → the templates that must exist → status.

pub mod metadata;
pub mod plan;
mod steps;
pub mod templates;

pub use metadata::{MetadataFailure, metadata_from_labels, parse_recommended_deployments};
pub use plan::{
    ModelDecision, ModelObservation, ModelPlan, ModelView, RegistryNeed, RegistryRead,
    TemplateSeen, aggregate,
};
pub use templates::{DesiredTemplate, ModelRef, desired_templates, template_name};

use aim_api::{ModelCommon, ReferenceScope, ResolvedReference, TemplateScope};

/// A model object as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCandidate<'a> {
    pub name: &'a str,
    /// `Some` for an AIMModel, `None` for an AIMClusterModel.
    pub namespace: Option<&'a str>,
    pub uid: Option<&'a str>,
    pub spec: &'a ModelCommon,
    /// Why the model cannot read its image's metadata, when that is so (its `MetadataExtracted` is
    /// `False`); the template says so in its `ModelFound` condition.
    pub failure: Option<&'a str>,
}

/// The outcome of model resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelResolution<'a> {
    Found {
        model: ModelCandidate<'a>,
        reference: ResolvedReference,
    },
    NotFound {
        message: String,
    },
}

/// A namespace template resolves `modelName` to the AIMModel in its namespace, else to the AIMClusterModel
/// of that name; a cluster template only to the AIMClusterModel.
pub fn resolve_model<'a>(
    scope: TemplateScope,
    template_namespace: Option<&str>,
    model_name: &str,
    namespace_model: Option<ModelCandidate<'a>>,
    cluster_model: Option<ModelCandidate<'a>>,
) -> ModelResolution<'a> {
    let found = match scope {
        TemplateScope::Namespace => namespace_model.or(cluster_model),
        TemplateScope::Cluster => cluster_model,
    };
    match found {
        Some(model) => {
            let reference = ResolvedReference {
                name: model.name.to_string(),
                namespace: model.namespace.map(str::to_string),
                scope: if model.namespace.is_some() {
                    ReferenceScope::Namespace
                } else {
                    ReferenceScope::Cluster
                },
                kind: if model.namespace.is_some() {
                    "AIMModel"
                } else {
                    "AIMClusterModel"
                }
                .to_string(),
                uid: model.uid.map(str::to_string),
            };
            ModelResolution::Found { model, reference }
        }
        None => ModelResolution::NotFound {
            message: match (scope, template_namespace) {
                (TemplateScope::Namespace, Some(ns)) => format!(
                    "no AIMModel {model_name:?} in namespace {ns:?} and no AIMClusterModel {model_name:?}"
                ),
                _ => format!("no AIMClusterModel {model_name:?}"),
            },
        },
    }
}

/// Decides: where the image's metadata comes from (M-01), the templates it calls for (M-02/M-03), the
/// status they sum up to (M-04), then the events. May first answer [`ModelDecision::Need`]: the operator
/// reads the registry, puts the answer in `registry`, and decides again.
pub fn decide_model(obs: &ModelObservation<'_>) -> ModelDecision {
    let mut d = steps::ModelDraft::new(obs);
    let metadata = match d.metadata() {
        Ok(metadata) => metadata,
        Err(need) => return ModelDecision::Need(need),
    };
    d.templates(&metadata);
    d.aggregate_status(&metadata);
    d.events();
    ModelDecision::Plan(Box::new(d.finish()))
}
