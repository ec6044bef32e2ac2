//! O-02: the operator's Prometheus metrics: reconciles and their errors by controller and error
//! category, a reconcile duration histogram, active and queued discoveries, templates and caches by
//! status, registry reads. [`crate::http`] serves them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabels {
    pub scope: &'static str,
    pub status: String,
}

/// The controllers, as named in metrics.
const CONTROLLERS: [&str; 6] = [
    "AIMServiceTemplate",
    "AIMClusterServiceTemplate",
    "AIMModel",
    "AIMClusterModel",
    "AIMService",
    "AIMTemplateCache",
];

/// Categories of a failed registry read (M-01), as `aim_registry_failures_total{category}` names them.
const REGISTRY_CATEGORIES: [&str; 8] = [
    "unreachable",
    "unauthorized",
    "not_found",
    "pull_secret",
    "registry",
    "not_allowed",
    "label_missing",
    "label_unparsable",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub category: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub discoveries_active: Gauge,
    pub discoveries_queued: Gauge,
    pub templates: Family<TemplateLabels, Gauge>,
    /// Image metadata reads from registries (M-01).
    pub registry_reads: Counter,
    pub registry_failures: Family<RegistryLabels, Counter>,
    /// Failed cache download attempts (C-03), each counted once.
    pub cache_download_failures: Counter,
    /// Template caches by status.
    pub caches: Family<CacheLabels, Gauge>,
    /// All watches have synced (for `/readyz`).
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aim");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and error category",
            errors.clone(),
        );
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took, by controller",
            duration.clone(),
        );
        let discoveries_active = Gauge::default();
        registry.register(
            "discoveries_active",
            "Discovery Jobs holding a slot",
            discoveries_active.clone(),
        );
        let discoveries_queued = Gauge::default();
        registry.register(
            "discoveries_queued",
            "Templates waiting for a discovery slot",
            discoveries_queued.clone(),
        );
        let leader: Gauge = Gauge::default();
        leader.set(1);
        registry.register("leader", "Whether this replica leads", leader);
        let templates = Family::<TemplateLabels, Gauge>::default();
        registry.register(
            "templates",
            "Templates by scope and status",
            templates.clone(),
        );
        let registry_reads = Counter::default();
        registry.register(
            "registry_reads",
            "Image metadata reads from registries",
            registry_reads.clone(),
        );
        let registry_failures = Family::<RegistryLabels, Counter>::default();
        registry.register(
            "registry_failures",
            "Failed image metadata reads, by category",
            registry_failures.clone(),
        );
        let cache_download_failures = Counter::default();
        registry.register(
            "cache_download_failures",
            "Failed cache download attempts",
            cache_download_failures.clone(),
        );
        let caches = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "template_caches",
            "Template caches by status",
            caches.clone(),
        );
        for category in REGISTRY_CATEGORIES {
            let _ = registry_failures.get_or_create(&RegistryLabels { category });
        }
        // Every series exists from the start (at zero), so that rates and alerts need no special case.
        for controller in CONTROLLERS {
            let _ = reconciles.get_or_create(&ControllerLabels { controller });
            for category in crate::error::CATEGORIES {
                let _ = errors.get_or_create(&ErrorLabels {
                    controller,
                    category,
                });
            }
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            discoveries_active,
            discoveries_queued,
            templates,
            registry_reads,
            registry_failures,
            cache_download_failures,
            caches,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Records one reconcile of `controller` that took `took`.
    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records a registry read and, when it failed, its category.
    pub fn registry_read(&self, failure: Option<&'static str>) {
        self.registry_reads.inc();
        if let Some(category) = failure {
            self.registry_failures
                .get_or_create(&RegistryLabels { category })
                .inc();
        }
    }

    /// Records a failed reconcile.
    pub fn failed(&self, controller: &'static str, category: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                category,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_encoded() {
        let m = Metrics::default();
        m.reconciled("AIMServiceTemplate", Duration::from_millis(20));
        m.failed("AIMServiceTemplate", "api");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("aim_reconciles_total{controller=\"AIMServiceTemplate\"} 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "aim_reconcile_errors_total{controller=\"AIMServiceTemplate\",category=\"api\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("aim_reconcile_duration_seconds_bucket{"),
            "{out}"
        );
    }
}
