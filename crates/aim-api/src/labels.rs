//! Label and annotation keys the operator reads or writes, in one place.

/// Names the template a discovery Job belongs to.
pub const TEMPLATE: &str = "aim.eai.amd.com/template";
/// `Namespace` or `Cluster`: the scope of the template a discovery Job belongs to.
pub const TEMPLATE_SCOPE: &str = "aim.eai.amd.com/template-scope";
/// Names the model an auto-generated template belongs to.
pub const MODEL: &str = "aim.eai.amd.com/model";
/// Annotation with the full name of the model, on an auto-generated template whose [`MODEL`] label had
/// to be shortened (a label value holds at most 63 characters).
pub const MODEL_NAME: &str = "aim.eai.amd.com/model-name";
/// `auto-generated` on templates the model controller created.
pub const ORIGIN: &str = "aim.eai.amd.com/origin";
/// Value of [`ORIGIN`] for templates created from a model's recommended deployments.
pub const ORIGIN_AUTO_GENERATED: &str = "auto-generated";
/// Standard `app.kubernetes.io/managed-by` label.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on everything the operator creates.
pub const MANAGED_BY_VALUE: &str = "aim-operator";
/// Standard `app.kubernetes.io/component` label.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`COMPONENT`] on discovery Jobs and their pods.
pub const COMPONENT_DISCOVERY: &str = "discovery";
/// Standard `app.kubernetes.io/name` label.
pub const NAME: &str = "app.kubernetes.io/name";
/// Value of [`NAME`] on discovery Jobs and their pods.
pub const NAME_DISCOVERY: &str = "aim-discovery";
/// Value of [`COMPONENT`] on cache volumes (PersistentVolumeClaims).
pub const COMPONENT_CACHE_VOLUME: &str = "cache-volume";
/// Value of [`COMPONENT`] on cache download Jobs and their pods.
pub const COMPONENT_CACHE_DOWNLOAD: &str = "cache-download";
/// Value of [`NAME`] on cache volumes, download Jobs and their pods.
pub const NAME_CACHE: &str = "aim-cache";
/// Names the cache volume (PersistentVolumeClaim) a download Job and its pod fill; on the volume too.
pub const CACHE_VOLUME: &str = "aim.eai.amd.com/cache-volume";
/// Annotation on cache volumes and download Jobs: the model source URI they hold.
pub const CACHE_SOURCE: &str = "aim.eai.amd.com/source";
/// Prefix of the operator's own label keys; a template's labels with it are copied to its Jobs and pods.
pub const PREFIX: &str = "aim.eai.amd.com/";
/// Annotation that freezes status and children of an object while set to `"true"`.
pub const RECONCILIATION_PAUSED: &str = "aim.eai.amd.com/reconciliation-paused";
