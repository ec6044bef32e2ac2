//! Reading the dry-run log of a discovery Job's succeeded pod, with a byte limit (T-17).

use crate::context::Context;
use aim_resolve::template::LogRead;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

/// Reads at most `limit + 1` bytes, so that the parser can tell an over-limit log.
pub async fn read_discovery_log(ctx: &Context, namespace: &str, job: &str) -> LogRead {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = match pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
    {
        Ok(l) => l,
        Err(e) => return LogRead::Unavailable(format!("listing the pods of job {job}: {e}")),
    };
    let Some(pod) = listed
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .and_then(|p| p.metadata.name.clone())
    else {
        return LogRead::Unavailable(format!("job {job} has no succeeded pod any more"));
    };
    let limit = ctx.settings.log_limit;
    let lp = LogParams {
        container: Some(aim_discovery::CONTAINER_NAME.into()),
        limit_bytes: Some(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)),
        ..LogParams::default()
    };
    let stream = match pods.log_stream(&pod, &lp).await {
        Ok(s) => s,
        Err(e) => return LogRead::Unavailable(format!("reading the log of pod {pod}: {e}")),
    };
    let mut buf = Vec::new();
    match stream.take(limit as u64 + 1).read_to_end(&mut buf).await {
        Ok(_) => LogRead::Text(buf),
        Err(e) => LogRead::Unavailable(format!("reading the log of pod {pod}: {e}")),
    }
}
