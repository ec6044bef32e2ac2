//! Errors of a reconcile.

use std::time::Duration;

/// Why a reconcile did not finish; retried with a delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising: {0}")]
    Serde(#[from] serde_json::Error),
    /// A write that failed again after it was decided around (retried with the usual backoff).
    #[error("{0}")]
    Conflict(String),
    /// An object the operator would write belongs to someone else: a person must act.
    #[error("{0}")]
    Foreign(String),
}

/// Every value of [`Error::category`].
pub const CATEGORIES: [&str; 4] = ["conflict", "api", "transport", "serialisation"];

/// How long to wait before looking again at an object of someone else's that is in the way.
pub const FOREIGN_RETRY: Duration = Duration::from_secs(60);

impl Error {
    /// Coarse class, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Serde(_) => "serialisation",
            Error::Conflict(_) | Error::Foreign(_) => "conflict",
        }
    }

    /// A fixed retry delay, when the per-object backoff does not apply.
    pub fn retry_after(&self) -> Option<Duration> {
        matches!(self, Error::Foreign(_)).then_some(FOREIGN_RETRY)
    }
}

/// Why a create was refused for good (quota, admission, RBAC, an invalid object), as opposed to a
/// transient failure worth an ordinary retry.
pub fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            Some(s.message.clone())
        }
        _ => None,
    }
}

/// A refusal because the namespace is being deleted: whatever the reconcile wanted to make there goes
/// with the namespace, and so does the object reconciled.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

impl Error {
    /// Whether the reconcile failed only because its namespace is going away (nothing to retry).
    pub fn namespace_terminating(&self) -> bool {
        matches!(self, Error::Kube(e) if is_namespace_terminating(e))
    }
}

/// A 404: the object is gone already.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, cause: Option<&str>) -> kube::Error {
        let mut s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "message": "refused",
            "details": { "causes": [] },
        }))
        .unwrap();
        if let (Some(reason), Some(d)) = (cause, s.details.as_mut()) {
            d.causes.push(
                serde_json::from_value(serde_json::json!({ "reason": reason, "message": "going" }))
                    .unwrap(),
            );
        }
        kube::Error::Api(Box::new(s))
    }

    // A write into a namespace being deleted is not a failure to retry; other refusals are.
    #[test]
    fn namespace_terminating_is_told_apart() {
        assert!(Error::Kube(status(403, Some("NamespaceTerminating"))).namespace_terminating());
        assert!(!Error::Kube(status(403, None)).namespace_terminating());
        assert!(!Error::Kube(status(404, Some("NamespaceTerminating"))).namespace_terminating());
        assert!(is_not_found(&status(404, None)));
    }
}
