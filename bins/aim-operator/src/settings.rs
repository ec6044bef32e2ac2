//! How the operator runs: the settings `main` fills from flags, and their defaults.

use crate::leader::LeaderElection;
use crate::registry::RegistrySettings;
use std::time::Duration;

/// Default of [`Settings::system_namespace`] (`--system-namespace`).
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "aim-system";
/// Default of `--metrics-bind-address`.
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = "0.0.0.0:8080";

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where cluster templates run discovery (`--system-namespace`).
    pub system_namespace: String,
    /// Cluster-wide limit of active discovery Jobs (T-23).
    pub max_concurrent_discoveries: usize,
    /// Byte limit when reading a dry-run log (T-17).
    pub log_limit: usize,
    /// First retry delay after a failed discovery; doubles per attempt up to an hour (T-21).
    pub backoff_base: Duration,
    /// Reconciles running at once, for each controller (`--max-concurrent-reconciles`).
    pub max_concurrent_reconciles: u16,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`--metrics-bind-address`); `None`: not served.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Leader election on the Lease `aim-operator` in the system namespace; `None`: this process leads.
    pub leader_election: Option<LeaderElection>,
    /// How image registries are reached (M-01).
    pub registry: RegistrySettings,
    /// Image of cache download Jobs (`--cache-download-image`).
    pub cache_download_image: String,
}

/// Default of [`Settings::max_concurrent_reconciles`]: enough to keep a 2-core API server busy, few
/// enough that a start with thousands of templates does not queue thousands of requests at once.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 8;

impl Default for Settings {
    fn default() -> Self {
        Self {
            system_namespace: DEFAULT_SYSTEM_NAMESPACE.into(),
            max_concurrent_discoveries: aim_resolve::queue::DEFAULT_MAX_CONCURRENT_DISCOVERIES,
            log_limit: aim_discovery::DEFAULT_LOG_LIMIT,
            backoff_base: aim_resolve::template::DEFAULT_BACKOFF_BASE,
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            metrics_address: None,
            leader_election: None,
            registry: RegistrySettings::default(),
            cache_download_image: aim_resolve::cache::DEFAULT_DOWNLOAD_IMAGE.into(),
        }
    }
}
