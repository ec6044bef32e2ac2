//! Errors of a reconcile.

/// Why a reconcile did not finish; retried with a delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising: {0}")]
    Serde(#[from] serde_json::Error),
    /// An object the operator would write belongs to someone else.
    #[error("{0}")]
    Conflict(String),
}

/// Every value of [`Error::category`].
pub const CATEGORIES: [&str; 4] = ["conflict", "api", "transport", "serialisation"];

impl Error {
    /// Coarse class, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Serde(_) => "serialisation",
            Error::Conflict(_) => "conflict",
        }
    }
}
