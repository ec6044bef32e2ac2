//! Condition types and reasons, as they appear in `status.conditions`.

/// Condition types of templates.
pub mod types {
    pub const MODEL_FOUND: &str = "ModelFound";
    pub const RUNTIME_CONFIG_READY: &str = "RuntimeConfigReady";
    pub const HARDWARE_AVAILABLE: &str = "HardwareAvailable";
    pub const DISCOVERED: &str = "Discovered";
    pub const CACHE_READY: &str = "CacheReady";
    pub const READY: &str = "Ready";
    // Services.
    pub const MODEL_RESOLVED: &str = "ModelResolved";
    pub const TEMPLATE_SELECTED: &str = "TemplateSelected";
    pub const WORKLOAD_READY: &str = "WorkloadReady";
    // Models.
    /// The image's metadata is known (read from the registry, or inline).
    pub const METADATA_EXTRACTED: &str = "MetadataExtracted";
    /// The templates of the recommended deployments exist.
    pub const TEMPLATES_CREATED: &str = "TemplatesCreated";
    // Template caches (C-01…C-03).
    /// The cached template exists in the named scope and is Ready.
    pub const TEMPLATE_READY: &str = "TemplateReady";
    /// Every volume of the cache is bound.
    pub const VOLUMES_READY: &str = "VolumesReady";
    /// Every model source is downloaded onto its volume.
    pub const DOWNLOADED: &str = "Downloaded";
}

/// Condition reasons.
pub mod reasons {
    pub const MODEL_FOUND: &str = "ModelFound";
    pub const MODEL_NOT_FOUND: &str = "ModelNotFound";
    pub const RUNTIME_CONFIG_FOUND: &str = "RuntimeConfigFound";
    pub const DEFAULT_CONFIG_NOT_FOUND: &str = "DefaultConfigNotFound";
    pub const RUNTIME_CONFIG_NOT_FOUND: &str = "RuntimeConfigNotFound";
    pub const HARDWARE_AVAILABLE: &str = "HardwareAvailable";
    pub const GPU_NOT_AVAILABLE: &str = "GPUNotAvailable";
    pub const VRAM_NOT_AVAILABLE: &str = "VRAMNotAvailable";
    pub const INSUFFICIENT_GPUS_PER_NODE: &str = "InsufficientGPUsPerNode";
    pub const DISCOVERY_COMPLETE: &str = "DiscoveryComplete";
    pub const INLINE_MODEL_SOURCES: &str = "InlineModelSources";
    pub const AWAITING_DISCOVERY: &str = "AwaitingDiscovery";
    pub const DISCOVERY_RUNNING: &str = "DiscoveryRunning";
    pub const DISCOVERY_FAILED: &str = "DiscoveryFailed";
    /// The discovery pod cannot be created or scheduled (quota, admission, taints, a missing service
    /// account): the Job will not finish until someone acts.
    pub const DISCOVERY_BLOCKED: &str = "DiscoveryBlocked";
    pub const CACHE_WARM: &str = "Ready";
    pub const WAITING_FOR_CACHE: &str = "WaitingForCache";
    pub const CACHE_DEGRADED: &str = "CacheDegraded";
    pub const CACHE_FAILED: &str = "CacheFailed";
    // Template caches (C-01…C-03).
    pub const TEMPLATE_READY: &str = "TemplateReady";
    /// The cache names a template that does not exist in either scope.
    pub const CACHE_TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    /// The named template exists only in the other scope (`templateScope` is wrong).
    pub const WRONG_TEMPLATE_SCOPE: &str = "WrongTemplateScope";
    /// The template exists but is not Ready, so its sources are not settled.
    pub const TEMPLATE_NOT_READY: &str = "TemplateNotReady";
    pub const VOLUMES_BOUND: &str = "VolumesBound";
    /// Waiting for a volume to be bound (normal for a moment).
    pub const VOLUME_PENDING: &str = "VolumePending";
    /// A volume is not bound and needs a person: a provisioning failure, or still unbound after a grace period.
    pub const VOLUME_NOT_BOUND: &str = "VolumeNotBound";
    pub const DOWNLOADS_COMPLETE: &str = "DownloadsComplete";
    /// Downloads are waiting to start or running.
    pub const DOWNLOADING: &str = "Downloading";
    pub const DOWNLOAD_FAILED: &str = "DownloadFailed";
    /// The cache is warm.
    pub const WARM: &str = "Warm";
    pub const READY: &str = "Ready";
    pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";
    // Models (M-01…M-04).
    /// The template's model could not read its image's metadata.
    pub const MODEL_FAILED: &str = "ModelFailed";
    pub const METADATA_READ: &str = "MetadataRead";
    pub const INLINE_METADATA: &str = "InlineMetadata";
    pub const EXTRACTION_DISABLED: &str = "ExtractionDisabled";
    pub const AWAITING_METADATA: &str = "AwaitingMetadata";
    pub const REGISTRY_UNREACHABLE: &str = "RegistryUnreachable";
    pub const REGISTRY_UNAUTHORIZED: &str = "RegistryUnauthorized";
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    pub const REGISTRY_ERROR: &str = "RegistryError";
    /// A registry sent (or announced) a token, manifest or config blob over the operator's cap.
    pub const REGISTRY_RESPONSE_TOO_LARGE: &str = "RegistryResponseTooLarge";
    pub const PULL_SECRET_INVALID: &str = "PullSecretInvalid";
    /// The read would reach an address or use a scheme the operator's egress rules refuse (a loopback or
    /// link-local address of an unlisted registry, a token realm over plain HTTP, a redirect to HTTP).
    pub const REGISTRY_NOT_ALLOWED: &str = "RegistryNotAllowed";
    pub const LABEL_MISSING: &str = "LabelMissing";
    pub const LABEL_UNPARSABLE: &str = "LabelUnparsable";
    pub const TEMPLATES_CREATED: &str = "TemplatesCreated";
    pub const TEMPLATE_CREATION_DISABLED: &str = "TemplateCreationDisabled";
    pub const TEMPLATE_NAME_TAKEN: &str = "TemplateNameTaken";
    /// The API server refused a template the model would write (admission, quota, an invalid object).
    pub const TEMPLATE_REFUSED: &str = "TemplateRefused";
    // Services (S-01…S-06).
    pub const MODEL_RESOLVED: &str = "ModelResolved";
    pub const MODEL_CREATED: &str = "ModelCreated";
    pub const TEMPLATE_SELECTED: &str = "TemplateSelected";
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    pub const AMBIGUOUS_SELECTION: &str = "AmbiguousSelection";
    pub const NO_USABLE_TEMPLATE: &str = "NoUsableTemplate";
    pub const WAITING_FOR_TEMPLATE: &str = "WaitingForTemplate";
    pub const WORKLOAD_AVAILABLE: &str = "WorkloadAvailable";
    pub const WORKLOAD_PROGRESSING: &str = "WorkloadProgressing";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The API server refused the service's Deployment or Service (admission, quota, an invalid object).
    pub const WORKLOAD_REFUSED: &str = "WorkloadRefused";
}

/// `True`, `False` or `Unknown`.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}
