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
    /// The namespaces whose objects are watched and reconciled (`--watch-namespaces`), the system
    /// namespace always with them; `None`: every namespace. Cluster-scoped kinds and nodes are watched
    /// cluster-wide either way.
    pub watch_namespaces: Option<Vec<String>>,
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
            watch_namespaces: None,
        }
    }
}

impl Settings {
    /// Where namespaced kinds are watched: `None` for the whole cluster, else the listed namespaces and
    /// the system namespace (where cluster templates discover and the Lease is), each once, in order.
    pub fn watched_namespaces(&self) -> Option<Vec<String>> {
        let listed = self.watch_namespaces.as_ref()?;
        let mut all: Vec<String> = Vec::with_capacity(listed.len() + 1);
        for ns in listed.iter().chain(std::iter::once(&self.system_namespace)) {
            if !all.contains(ns) {
                all.push(ns.clone());
            }
        }
        Some(all)
    }
}

/// The namespaces of `--watch-namespaces` (comma-separated): trimmed, empty entries dropped, each once.
/// A list without a namespace, or with a name that cannot be a namespace's, is an error of one line.
pub fn parse_watch_namespaces(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for ns in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !is_namespace_name(ns) {
            return Err(format!(
                "--watch-namespaces: {ns:?} is not a namespace name (lower-case letters, digits and '-', \
                 at most 63, starting and ending with a letter or digit)"
            ));
        }
        if !out.iter().any(|n| n == ns) {
            out.push(ns.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!(
            "--watch-namespaces {list:?} names no namespace: list them (a,b), or leave the flag out to \
             watch the whole cluster"
        ));
    }
    Ok(out)
}

/// A DNS-1123 label, as namespace names are.
fn is_namespace_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_namespaces_are_trimmed_deduplicated_and_never_empty() {
        assert_eq!(
            parse_watch_namespaces(" team-a, team-b ,,team-a").unwrap(),
            vec!["team-a".to_string(), "team-b".to_string()]
        );
        for empty in ["", " ", ",", " , ,"] {
            let e = parse_watch_namespaces(empty).unwrap_err();
            assert!(e.contains("names no namespace"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        for bad in ["Team", "a_b", "-a", "a-", &"x".repeat(64), "a/b"] {
            let e = parse_watch_namespaces(&format!("ok,{bad}")).unwrap_err();
            assert!(e.contains("is not a namespace name"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_system_namespace_is_always_watched_with_a_list() {
        let mut s = Settings::default();
        assert_eq!(s.watched_namespaces(), None, "default: the whole cluster");
        s.watch_namespaces = Some(vec!["a".into(), "b".into()]);
        assert_eq!(
            s.watched_namespaces().unwrap(),
            vec!["a", "b", DEFAULT_SYSTEM_NAMESPACE]
        );
        s.watch_namespaces = Some(vec![DEFAULT_SYSTEM_NAMESPACE.into(), "a".into()]);
        assert_eq!(
            s.watched_namespaces().unwrap(),
            vec![DEFAULT_SYSTEM_NAMESPACE, "a"]
        );
    }
}
