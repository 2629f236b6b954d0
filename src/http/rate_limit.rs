//! The rate limits of `[rate_limits]` on the requests that file a job (`POST /orchestrate`, the
//! Action profile, MCP `tools/call`): one token from each bucket that applies, all or none, in
//! one statement; none left is `429 rate_limited` naming the limit, with `Retry-After`.

use super::{AppState, problem::ApiError};
use crate::{model::Principal, store::BucketTake};

/// Takes a token for `principal` running `intent` from every limit that applies.
pub async fn admit(state: &AppState, principal: &Principal, intent: &str) -> Result<(), ApiError> {
    let limits = state.config.rate_limits.applying(principal, intent);
    if limits.is_empty() {
        return Ok(());
    }
    let takes: Vec<BucketTake<'_>> = limits
        .iter()
        .map(|l| BucketTake {
            bucket: &l.bucket,
            interval: l.rate.interval(),
            tolerance: l.rate.tolerance(),
        })
        .collect();
    let Some(refusal) = state.store.take_rate_tokens(&takes, None).await? else {
        return Ok(());
    };
    let limit = &limits[refusal.index.min(limits.len() - 1)];
    metrics::counter!("orchestrator_rate_limited_total", "limit" => limit.kind.as_str())
        .increment(1);
    Err(ApiError::RateLimited {
        limit: limit.kind,
        name: limit.name.clone(),
        rate: limit.rate,
        retry_after: refusal.wait,
    })
}
