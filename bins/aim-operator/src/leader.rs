//! O-01: leader election on the Lease `aim-operator` in the operator namespace. Only the leader runs the
//! controllers (and so writes); a standby waits, and takes over once the leader's lease expires or is
//! released. A leader that loses its lease stops at once and exits non-zero, to start again as a standby.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease.
pub const LEASE_NAME: &str = "aim-operator";

/// Default seconds a lease stays valid after its last renewal (`--lease-duration-seconds`).
pub const DEFAULT_LEASE_DURATION_SECONDS: u64 = 15;

/// How the operator elects its leader.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// This replica's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal: how long a standby waits for a dead leader.
    pub lease_duration: u64,
    /// Seconds before expiry at which the leader renews.
    pub renew_grace: u64,
}

impl LeaderElection {
    /// Defaults: 15 s lease, renewed 5 s before it expires; identity from `POD_NAME`, else host and pid.
    pub fn new(identity: Option<String>) -> Self {
        let identity = identity.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "aim-operator".into());
            format!("{host}-{}", std::process::id())
        });
        Self {
            identity,
            lease_duration: DEFAULT_LEASE_DURATION_SECONDS,
            renew_grace: 5,
        }
    }
}

/// Leadership held: watch it, and give it back.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leading| !*leading).await;
    }

    /// Releases the lease (the standby takes over without waiting for it to expire).
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the lease failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

/// Waits until this replica leads, or until `stop` resolves (then `None`). `standby` is called once
/// it is known that another replica leads.
pub async fn acquire(
    client: Client,
    namespace: &str,
    election: &LeaderElection,
    stop: impl std::future::Future<Output = ()>,
    standby: impl FnOnce(),
) -> anyhow::Result<Option<Leadership>> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration)
        .with_grace(election.renew_grace)
        .with_field_manager(format!("{}-lease", crate::client::FIELD_MANAGER))
        .build()
        .await?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(identity = %election.identity, lease = %format!("{namespace}/{LEASE_NAME}"), "waiting for leadership");
    let mut standby = Some(standby);
    tokio::pin!(stop);
    loop {
        if *state.borrow_and_update() {
            tracing::info!(identity = %election.identity, "leading");
            return Ok(Some(Leadership { state, task }));
        }
        if let Some(f) = standby.take() {
            f();
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the lease manager stopped");
                }
            }
            _ = &mut stop => {
                drop(state);
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                return Ok(None);
            }
        }
    }
}
