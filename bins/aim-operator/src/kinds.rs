//! The kinds the controllers run on ([`Kind`]), and what the two template kinds and the two model
//! kinds have in common, for one generic reconcile each.

use crate::controller::Kind;
use aim_api::{
    AIMClusterModel, AIMClusterServiceTemplate, AIMModel, AIMService, AIMServiceTemplate,
    AIMTemplateCache, ModelStatus, ServiceStatus, ServiceTemplateCommon, ServiceTemplateStatus,
    TemplateCacheStatus, TemplateScope,
};
use aim_resolve::cache::DesiredCache;
use k8s_openapi::api::core::v1::EnvVar;
use kube::{Api, Client, ResourceExt};

/// Declares [`Kind`] for a kind: its status type and whether it lives in a namespace.
macro_rules! kind {
    ($kind:ty, $status:ty, namespaced) => {
        impl Kind for $kind {
            const NAME: &'static str = stringify!($kind);
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
                Api::namespaced(client, namespace.unwrap_or_default())
            }
        }
    };
    ($kind:ty, $status:ty, cluster) => {
        impl Kind for $kind {
            const NAME: &'static str = stringify!($kind);
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn api(client: Client, _: Option<&str>) -> Api<Self> {
                Api::all(client)
            }
        }
    };
}

kind!(AIMServiceTemplate, ServiceTemplateStatus, namespaced);
kind!(AIMClusterServiceTemplate, ServiceTemplateStatus, cluster);
kind!(AIMModel, ModelStatus, namespaced);
kind!(AIMClusterModel, ModelStatus, cluster);
kind!(AIMTemplateCache, TemplateCacheStatus, namespaced);
kind!(AIMService, ServiceStatus, namespaced);

pub trait TemplateKind: Kind<Status = ServiceTemplateStatus> {
    const SCOPE: TemplateScope;
    fn common(&self) -> &ServiceTemplateCommon;
    fn env(&self) -> &[EnvVar];
    fn caching_enabled(&self) -> bool;
    /// T-26: the AIMTemplateCache this template owns with the status just decided; T-28: never one for a
    /// cluster template.
    fn desired_cache(&self, status: &ServiceTemplateStatus) -> Option<DesiredCache>;
}

impl TemplateKind for AIMServiceTemplate {
    const SCOPE: TemplateScope = TemplateScope::Namespace;
    fn common(&self) -> &ServiceTemplateCommon {
        &self.spec.common
    }
    fn env(&self) -> &[EnvVar] {
        &self.spec.env
    }
    fn caching_enabled(&self) -> bool {
        self.spec.caching.as_ref().is_some_and(|c| c.enabled)
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
    fn common(&self) -> &ServiceTemplateCommon {
        &self.spec.common
    }
    fn env(&self) -> &[EnvVar] {
        &[]
    }
    fn caching_enabled(&self) -> bool {
        false
    }
    fn desired_cache(&self, _: &ServiceTemplateStatus) -> Option<DesiredCache> {
        None
    }
}

/// What the two model kinds have in common, for one generic model reconcile.
pub trait ModelKind: Kind<Status = ModelStatus> {
    fn common(&self) -> &aim_api::ModelCommon;
}

impl ModelKind for AIMModel {
    fn common(&self) -> &aim_api::ModelCommon {
        &self.spec.common
    }
}

impl ModelKind for AIMClusterModel {
    fn common(&self) -> &aim_api::ModelCommon {
        &self.spec.common
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

/// A model object as the decisions take it.
pub fn model_candidate<M: ModelKind>(m: &M) -> aim_resolve::ModelCandidate<'_> {
    let meta = m.meta();
    aim_resolve::ModelCandidate {
        name: meta.name.as_deref().unwrap_or_default(),
        namespace: meta.namespace.as_deref(),
        uid: meta.uid.as_deref(),
        spec: m.common(),
        failure: model_failure(m.status()),
    }
}

/// The UID of an object's controller owner.
pub fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}
