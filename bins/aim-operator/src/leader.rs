//! O-01: leader election on the Lease `aim-operator` in the operator namespace. Only the leader runs the
//! controllers (and so writes); a standby waits, and takes over once the leader's lease expires or is
//! released. A leader that loses its lease stops at once and exits non-zero, to start again as a standby.
//!
//! kube-lease-manager takes a free lease by a server-side apply without force: of two replicas applying
//! at once, the second gets a 409 conflict, but only if their field managers differ (one manager never
//! conflicts with itself). So each replica writes the Lease under a field manager of its own.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease.
pub const LEASE_NAME: &str = "aim-operator";

/// The API server refuses longer field manager names.
const MAX_FIELD_MANAGER_LEN: usize = 128;

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

/// This replica's field manager on the Lease: `aim-operator-lease-<identity>`, unique per replica as
/// kube-lease-manager requires. An identity too long for the API server's limit is cut and suffixed with
/// a hash of the whole identity, so that two long identities still differ.
fn lease_field_manager(identity: &str) -> String {
    let name = format!("{}-lease-{identity}", crate::client::FIELD_MANAGER);
    if name.len() <= MAX_FIELD_MANAGER_LEN {
        return name;
    }
    let hash = format!("{:016x}", fnv1a_64(identity.as_bytes()));
    let mut cut = MAX_FIELD_MANAGER_LEN - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &name[..cut])
}

/// 64-bit FNV-1a: stable across builds and Rust versions (unlike `DefaultHasher`).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Says in one line what to do when the Lease cannot be read or created (the namespace does not exist,
/// or RBAC forbids it), instead of the client's error with its whole API response.
fn explain(error: kube_lease_manager::LeaseManagerError, namespace: &str) -> anyhow::Error {
    use kube_lease_manager::LeaseManagerError::KubeError;
    match &error {
        KubeError(kube::Error::Api(status))
            if status.code == 404
                && status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.kind == "namespaces") =>
        {
            anyhow::anyhow!(
                "namespace {namespace:?} does not exist, and leader election needs its Lease there: create it \
                 (kubectl create namespace {namespace}), or run a single replica with --leader-elect=false"
            )
        }
        // Also what a ServiceAccount sees for a namespace that does not exist: authorisation comes first.
        KubeError(kube::Error::Api(status)) if status.code == 403 => anyhow::anyhow!(
            "cannot use the Lease {namespace}/{LEASE_NAME} for leader election ({}): check that namespace \
             {namespace:?} exists and that the operator may get, create and patch leases in it, or run a \
             single replica with --leader-elect=false",
            status.message
        ),
        KubeError(kube::Error::Api(status)) => anyhow::anyhow!(
            "cannot use the Lease {namespace}/{LEASE_NAME} for leader election: {}",
            status.message
        ),
        _ => anyhow::Error::new(error).context(format!(
            "cannot use the Lease {namespace}/{LEASE_NAME} for leader election"
        )),
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
        .with_field_manager(lease_field_manager(&election.identity))
        .build()
        .await
        .map_err(|e| explain(e, namespace))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_writes_the_lease_under_its_own_field_manager() {
        // O-01: one shared manager never conflicts with itself, and two replicas could both take the lease.
        assert_eq!(
            lease_field_manager("aim-operator-7d9c-x2"),
            "aim-operator-lease-aim-operator-7d9c-x2"
        );
        assert_ne!(lease_field_manager("a"), lease_field_manager("b"));
    }

    #[test]
    fn a_long_identity_gives_a_field_manager_within_the_limit_and_still_unique() {
        // Pod names may have 253 characters; two that differ only at the end keep different managers.
        let long = |end: char| format!("{}{end}", "p".repeat(252));
        let (a, b) = (
            lease_field_manager(&long('a')),
            lease_field_manager(&long('b')),
        );
        assert_eq!(a.len(), MAX_FIELD_MANAGER_LEN);
        assert_eq!(b.len(), MAX_FIELD_MANAGER_LEN);
        assert_ne!(a, b);
        assert!(a.starts_with("aim-operator-lease-ppp"), "{a}");
        // Multi-byte characters are never cut in half.
        let wide = lease_field_manager(&"é".repeat(100));
        assert!(wide.len() <= MAX_FIELD_MANAGER_LEN, "{wide}");
        // 128 characters exactly is kept as it is.
        let fits = "q".repeat(MAX_FIELD_MANAGER_LEN - "aim-operator-lease-".len());
        assert_eq!(
            lease_field_manager(&fits),
            format!("aim-operator-lease-{fits}")
        );
    }
}
