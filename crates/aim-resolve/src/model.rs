//! T-01/T-02: which model a template runs.

use aim_api::{ModelCommon, ReferenceScope, ResolvedReference, TemplateScope};

/// A model object as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCandidate<'a> {
    pub name: &'a str,
    /// `Some` for an AIMModel, `None` for an AIMClusterModel.
    pub namespace: Option<&'a str>,
    pub uid: Option<&'a str>,
    pub spec: &'a ModelCommon,
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
