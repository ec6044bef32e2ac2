//! Reading the dry-run log of a discovery pod, with a byte limit (T-17), a few at a time.

use crate::context::Context;
use aim_resolve::template::LogRead;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Dry-run logs read at once in the operator. Each read holds up to the log limit (8 MiB by default) in
/// memory, so many templates finishing together wait for a turn rather than each holding a log.
pub const CONCURRENT_LOG_READS: usize = 2;
/// Deadline of one log read, so a stalled stream cannot keep its turn.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(60);

static LOG_READS: Semaphore = Semaphore::const_new(CONCURRENT_LOG_READS);

/// Reads at most `limit + 1` bytes of the `discovery` container's log of `pod`, so that the parser can
/// tell an over-limit log without the operator holding more than that.
pub async fn read_discovery_log(ctx: &Context, namespace: &str, pod: &str) -> LogRead {
    let _turn = LOG_READS.acquire().await;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let limit = ctx.settings.log_limit;
    let lp = LogParams {
        container: Some(aim_discovery::CONTAINER_NAME.into()),
        limit_bytes: Some(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)),
        ..LogParams::default()
    };
    let read = async {
        let stream = match pods.log_stream(pod, &lp).await {
            Ok(s) => s,
            Err(e) => return Err(answer(&e, pod)),
        };
        let mut buf = Vec::new();
        match stream.take(limit as u64 + 1).read_to_end(&mut buf).await {
            Ok(_) => Ok(buf),
            // The stream broke: nothing says the log is gone.
            Err(e) => Err(LogRead::Transient(format!(
                "reading the log of pod {pod}: {e}"
            ))),
        }
    };
    match tokio::time::timeout(LOG_READ_TIMEOUT, read).await {
        Ok(Ok(buf)) => LogRead::Text(buf),
        Ok(Err(read)) => read,
        Err(_) => LogRead::Transient(format!(
            "reading the log of pod {pod} did not finish within {}s",
            LOG_READ_TIMEOUT.as_secs()
        )),
    }
}

/// T-19: a definite answer that the log cannot be had (the pod or its container is gone, a 4xx other
/// than throttling) is a failed attempt; anything else (a 5xx, a broken connection) is read again
/// shortly, and counts nothing.
fn answer(e: &kube::Error, pod: &str) -> LogRead {
    let why = format!("reading the log of pod {pod}: {e}");
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429 => {
            LogRead::Unavailable(why)
        }
        _ => LogRead::Transient(why),
    }
}
