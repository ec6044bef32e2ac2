//! What the two template kinds have in common, for one generic reconcile.

use aim_api::{
    AIMClusterServiceTemplate, AIMServiceTemplate, ServiceTemplateCommon, ServiceTemplateStatus,
    TemplateScope,
};
use aim_resolve::cache::DesiredCache;
use k8s_openapi::api::core::v1::EnvVar;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub trait TemplateKind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    const SCOPE: TemplateScope;
    /// The controller's name in logs and metrics.
    const CONTROLLER: &'static str;
    fn common(&self) -> &ServiceTemplateCommon;
    fn env(&self) -> &[EnvVar];
    fn caching_enabled(&self) -> bool;
    fn status(&self) -> Option<&ServiceTemplateStatus>;
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// T-26: the AIMTemplateCache this template owns with the status just decided; T-28: never one for a
    /// cluster template.
    fn desired_cache(&self, status: &ServiceTemplateStatus) -> Option<DesiredCache>;
}

impl TemplateKind for AIMServiceTemplate {
    const SCOPE: TemplateScope = TemplateScope::Namespace;
    const CONTROLLER: &'static str = "AIMServiceTemplate";
    fn common(&self) -> &ServiceTemplateCommon {
        &self.spec.common
    }
    fn env(&self) -> &[EnvVar] {
        &self.spec.env
    }
    fn caching_enabled(&self) -> bool {
        self.spec.caching.as_ref().is_some_and(|c| c.enabled)
    }
    fn status(&self) -> Option<&ServiceTemplateStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
    fn desired_cache(&self, status: &ServiceTemplateStatus) -> Option<DesiredCache> {
        aim_resolve::cache::desired_cache(
            &self.name_any(),
            &self.namespace()?,
            &self.uid()?,
            &self.spec,
            status,
        )
    }
}

impl TemplateKind for AIMClusterServiceTemplate {
    const SCOPE: TemplateScope = TemplateScope::Cluster;
    const CONTROLLER: &'static str = "AIMClusterServiceTemplate";
    fn common(&self) -> &ServiceTemplateCommon {
        &self.spec.common
    }
    fn env(&self) -> &[EnvVar] {
        &[]
    }
    fn caching_enabled(&self) -> bool {
        false
    }
    fn status(&self) -> Option<&ServiceTemplateStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn desired_cache(&self, _: &ServiceTemplateStatus) -> Option<DesiredCache> {
        None
    }
}

pub fn key_of<K: TemplateKind>(t: &K) -> String {
    aim_resolve::children::template_key(K::SCOPE, t.namespace().as_deref(), &t.name_any())
}

/// What the two model kinds have in common, for one generic model reconcile.
pub trait ModelKind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// `AIMModel` or `AIMClusterModel`.
    const KIND: &'static str;
    fn common(&self) -> &aim_api::ModelCommon;
    fn status(&self) -> Option<&aim_api::ModelStatus>;
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
}

impl ModelKind for aim_api::AIMModel {
    const KIND: &'static str = "AIMModel";
    fn common(&self) -> &aim_api::ModelCommon {
        &self.spec.common
    }
    fn status(&self) -> Option<&aim_api::ModelStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

impl ModelKind for aim_api::AIMClusterModel {
    const KIND: &'static str = "AIMClusterModel";
    fn common(&self) -> &aim_api::ModelCommon {
        &self.spec.common
    }
    fn status(&self) -> Option<&aim_api::ModelStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// Why a model cannot read its image's metadata (its `MetadataExtracted` condition is `False`).
pub fn model_failure(status: Option<&aim_api::ModelStatus>) -> Option<&str> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == aim_api::conditions::types::METADATA_EXTRACTED && c.status == "False")
        .map(|c| c.message.as_str())
}
