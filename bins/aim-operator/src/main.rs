//! `aim-operator`: runs the AIM controllers against the cluster of the current kubeconfig or
//! service account.

use aim_operator::Settings;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The cluster-wide discovery limit's default (T-23), as the flag's type.
const DEFAULT_MAX_CONCURRENT_DISCOVERIES: u16 =
    aim_resolve::queue::DEFAULT_MAX_CONCURRENT_DISCOVERIES as u16;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "aim-operator",
    version,
    about = "Kubernetes operator for AMD Inference Microservice templates"
)]
struct Args {
    /// Namespace where cluster templates run discovery.
    #[arg(long, env = "AIM_SYSTEM_NAMESPACE", default_value = aim_operator::DEFAULT_SYSTEM_NAMESPACE)]
    system_namespace: String,
    /// Cluster-wide limit of discovery Jobs running at once.
    #[arg(long, env = "AIM_MAX_CONCURRENT_DISCOVERIES", default_value_t = DEFAULT_MAX_CONCURRENT_DISCOVERIES, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_discoveries: u16,
    /// Byte limit when reading a dry-run log.
    #[arg(long, env = "AIM_DISCOVERY_LOG_LIMIT", default_value_t = aim_discovery::DEFAULT_LOG_LIMIT)]
    discovery_log_limit: usize,
    /// First retry delay after a failed discovery, in seconds (doubles per attempt, at most an hour).
    #[arg(long, env = "AIM_DISCOVERY_BACKOFF_SECONDS", default_value_t = aim_resolve::template::DEFAULT_BACKOFF_BASE.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    discovery_backoff_seconds: u64,
    /// Reconciles running at once, for each controller.
    #[arg(long, env = "AIM_MAX_CONCURRENT_RECONCILES", default_value_t = aim_operator::DEFAULT_MAX_CONCURRENT_RECONCILES, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Address of `/metrics`, `/healthz` and `/readyz`; `0` turns them off.
    #[arg(long, env = "AIM_METRICS_BIND_ADDRESS", default_value = aim_operator::DEFAULT_METRICS_BIND_ADDRESS)]
    metrics_bind_address: String,
    /// Elect a leader among replicas (Lease `aim-operator` in the system namespace); only it writes.
    #[arg(long, env = "AIM_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Seconds a leader's lease lasts without renewal: how long a standby waits for a dead leader.
    #[arg(long, env = "AIM_LEASE_DURATION_SECONDS", default_value_t = aim_operator::DEFAULT_LEASE_DURATION_SECONDS, value_parser = clap::value_parser!(u64).range(2..))]
    lease_duration_seconds: u64,
    /// Registries (`host[:port]`, comma-separated) reached over plain HTTP instead of HTTPS when reading
    /// image labels, e.g. an in-cluster registry without TLS.
    #[arg(long, env = "AIM_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// Registries (`host[:port]`, comma-separated) reached over HTTPS that may resolve to loopback or
    /// link-local addresses (a node-local mirror). Unlisted registries never reach those addresses.
    #[arg(long, env = "AIM_LOCAL_REGISTRIES", value_delimiter = ',')]
    local_registries: Vec<String>,
    /// Follow a registry's redirect to another host (over HTTPS only, without its credentials), as the
    /// large public registries do for blobs.
    #[arg(long, env = "AIM_REGISTRY_CROSS_HOST_REDIRECTS", default_value_t = true, action = clap::ArgAction::Set)]
    registry_cross_host_redirects: bool,
    /// Image of the Jobs that download model sources onto cache volumes. It is run with the arguments
    /// `<source URI> <target directory>` (also in env `AIM_CACHE_SOURCE_URI`, `AIM_CACHE_TARGET_PATH`).
    #[arg(long, env = "AIM_CACHE_DOWNLOAD_IMAGE", default_value = aim_resolve::cache::DEFAULT_DOWNLOAD_IMAGE)]
    cache_download_image: String,
    /// Watch and reconcile only these namespaces (comma-separated), and the system namespace with them;
    /// without it, every namespace. Cluster-scoped kinds and nodes are watched cluster-wide either way.
    #[arg(long, env = "AIM_WATCH_NAMESPACES")]
    watch_namespaces: Option<String>,
    /// Log format; filter with RUST_LOG (default `info`).
    #[arg(long, env = "AIM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match operate(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what went wrong (and its causes), never anyhow's Debug print with a
            // backtrace.
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn operate(args: Args) -> anyhow::Result<()> {
    aim_operator::install_crypto_provider();
    let watch_namespaces = args
        .watch_namespaces
        .as_deref()
        .map(aim_operator::parse_watch_namespaces)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    let client = aim_operator::http2_client(kube::Config::infer().await?)?;
    let settings = Settings {
        system_namespace: args.system_namespace,
        max_concurrent_discoveries: usize::from(args.max_concurrent_discoveries),
        log_limit: args.discovery_log_limit,
        backoff_base: std::time::Duration::from_secs(args.discovery_backoff_seconds),
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        leader_election: args.leader_elect.then(|| {
            let mut e = aim_operator::LeaderElection::new(std::env::var("POD_NAME").ok());
            e.lease_duration = args.lease_duration_seconds;
            e.renew_grace = (args.lease_duration_seconds / 3).max(1);
            e
        }),
        registry: aim_operator::RegistrySettings {
            insecure: hosts(args.insecure_registries),
            local: hosts(args.local_registries),
            cross_host_redirects: args.registry_cross_host_redirects,
        },
        cache_download_image: args.cache_download_image,
        watch_namespaces,
        metrics_address: match args.metrics_bind_address.as_str() {
            "0" | "" => None,
            a => Some(a.parse().map_err(|e| {
                anyhow::anyhow!("--metrics-bind-address {a:?} is not an address: {e}")
            })?),
        },
    };
    tracing::info!(?settings, "starting");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    aim_operator::run(client, settings, shutdown).await
}

/// A list flag's entries, trimmed, the empty ones dropped.
fn hosts(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_namespaces_is_one_comma_separated_flag() {
        let args = Args::try_parse_from(["aim-operator", "--watch-namespaces", "a, b"]).unwrap();
        assert_eq!(args.watch_namespaces.as_deref(), Some("a, b"));
        let args = Args::try_parse_from(["aim-operator"]).unwrap();
        assert_eq!(args.watch_namespaces, None, "default: the whole cluster");
    }
}
