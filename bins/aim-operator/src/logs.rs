//! Reading the dry-run log of a discovery pod, with a byte limit (T-17).

use crate::context::Context;
use aim_resolve::template::LogRead;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

/// Reads at most `limit + 1` bytes of the `discovery` container's log of `pod`, so that the parser can
/// tell an over-limit log without the operator holding more than that.
pub async fn read_discovery_log(ctx: &Context, namespace: &str, pod: &str) -> LogRead {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let limit = ctx.settings.log_limit;
    let lp = LogParams {
        container: Some(aim_discovery::CONTAINER_NAME.into()),
        limit_bytes: Some(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)),
        ..LogParams::default()
    };
    let stream = match pods.log_stream(pod, &lp).await {
        Ok(s) => s,
        Err(e) => return LogRead::Unavailable(format!("reading the log of pod {pod}: {e}")),
    };
    let mut buf = Vec::new();
    match stream.take(limit as u64 + 1).read_to_end(&mut buf).await {
        Ok(_) => LogRead::Text(buf),
        Err(e) => LogRead::Unavailable(format!("reading the log of pod {pod}: {e}")),
    }
}
