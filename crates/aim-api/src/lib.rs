//! The AIM API (`aim.eai.amd.com/v1alpha1`): custom resource types, shared enums, label keys and
//! condition vocabulary. No client code lives here, so any controller can depend on it.

// `#[kube(printcolumn(type_ = "string", ...))]` repeats on purpose; clippy reads it as a duplicate.
#![allow(clippy::duplicated_attributes)]

pub mod cache;
pub mod common;
pub mod conditions;
pub mod labels;
pub mod model;
pub mod runtime_config;
pub mod service;
pub mod source;
pub mod template;

pub use cache::*;
pub use common::*;
pub use model::*;
pub use runtime_config::*;
pub use service::*;
pub use source::*;
pub use template::*;

/// API group of every AIM kind.
pub const GROUP: &str = "aim.eai.amd.com";
/// API version of every AIM kind.
pub const VERSION: &str = "v1alpha1";

/// Every CustomResourceDefinition this crate defines, in a stable order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        AIMServiceTemplate::crd(),
        AIMClusterServiceTemplate::crd(),
        AIMModel::crd(),
        AIMClusterModel::crd(),
        AIMRuntimeConfig::crd(),
        AIMClusterRuntimeConfig::crd(),
        AIMTemplateCache::crd(),
        AIMService::crd(),
    ]
}
