//! What a flow engine's answer means: a result, "I'll call back", or a failure that is or is
//! not worth retrying. Pure, so every engine's quirks are unit-tested here.

use std::time::Duration;

use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};

use super::config::{Completion, FlowEngine};
use crate::{
    callbacks::{body_text, excerpt, retry_after},
    tools::{ToolError, ToolOutput, ToolResult},
};

pub struct Answer<'a> {
    pub engine: FlowEngine,
    pub completion: Completion,
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub callback_deadline: Duration,
}

/// Whether the answer counts against the URL's circuit breaker.
pub fn is_failure(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

pub fn interpret(a: &Answer<'_>) -> ToolResult {
    let status = a.status;
    let await_callback = || {
        Ok(ToolOutput::AwaitCallback {
            deadline: a.callback_deadline,
        })
    };
    if a.engine == FlowEngine::Activepieces
        && (status == StatusCode::NO_CONTENT || status == StatusCode::REQUEST_TIMEOUT)
    {
        // ActivePieces' synchronous webhook gives up waiting for the flow with 204 or 408.
        return Err(ToolError::timed_out(format!(
            "ActivePieces answered {status} before the flow finished"
        )));
    }
    if status.is_success() {
        let text = String::from_utf8_lossy(a.body);
        let trimmed = text.trim();
        if status == StatusCode::ACCEPTED {
            return await_callback();
        }
        if trimmed.is_empty() {
            return match a.completion {
                Completion::Async => await_callback(),
                Completion::Sync => Ok(ToolOutput::Done(Value::Null)),
            };
        }
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(v) if is_n8n_started(&v) => await_callback(),
            Ok(v) => Ok(ToolOutput::Done(v)),
            Err(_) => Ok(ToolOutput::Done(json!({ "text": trimmed }))),
        };
    }
    let message = engine_message(a.body).unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_owned()
    });
    let detail = format!("the flow answered {}: {message}", status.as_u16());
    if status == StatusCode::REQUEST_TIMEOUT {
        return Err(ToolError::timed_out(detail));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(ToolError {
            retry_after: retry_after(a.headers),
            ..ToolError::transient("flow_error", detail)
        });
    }
    if status.is_redirection() {
        return Err(ToolError::permanent(
            "flow_redirected",
            format!("{detail} (redirects are not followed: configure the final URL)"),
        ));
    }
    Err(ToolError::permanent("flow_rejected", detail))
}

/// n8n's "Respond: Immediately" answer.
fn is_n8n_started(v: &Value) -> bool {
    v.get("message").and_then(Value::as_str) == Some("Workflow was started")
        && v.as_object().is_some_and(|o| o.len() == 1)
}

/// The engine's own words: `message` (n8n, ActivePieces), `error`, or the text itself.
fn engine_message(body: &[u8]) -> Option<String> {
    let text = body_text(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        ["message", "error", "detail"]
            .iter()
            .find_map(|k| match v.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) if !other.is_null() => Some(other.to_string()),
                _ => None,
            })
    });
    Some(excerpt(&from_json.unwrap_or_else(|| text.to_owned()), 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(engine: FlowEngine, completion: Completion, status: u16, body: &str) -> ToolResult {
        let headers = HeaderMap::new();
        interpret(&Answer {
            engine,
            completion,
            status: StatusCode::from_u16(status).unwrap(),
            headers: &headers,
            body: body.as_bytes(),
            callback_deadline: Duration::from_secs(60),
        })
    }

    const AWAIT: ToolOutput = ToolOutput::AwaitCallback {
        deadline: Duration::from_secs(60),
    };

    #[test]
    fn n8n_answers() {
        use {Completion::*, FlowEngine::N8n};
        assert_eq!(
            answer(N8n, Sync, 200, r#"{"processed": 15}"#).unwrap(),
            ToolOutput::Done(json!({"processed": 15}))
        );
        assert_eq!(
            answer(N8n, Sync, 200, r#"[{"a": 1}]"#).unwrap(),
            ToolOutput::Done(json!([{"a": 1}]))
        );
        assert_eq!(
            answer(N8n, Async, 200, r#"{"message":"Workflow was started"}"#).unwrap(),
            AWAIT
        );
        assert_eq!(answer(N8n, Async, 200, "").unwrap(), AWAIT);
        assert_eq!(answer(N8n, Async, 202, "queued").unwrap(), AWAIT);
        assert_eq!(
            answer(N8n, Sync, 200, "").unwrap(),
            ToolOutput::Done(Value::Null)
        );
        assert_eq!(
            answer(N8n, Sync, 200, "plain words").unwrap(),
            ToolOutput::Done(json!({"text": "plain words"}))
        );
    }

    #[test]
    fn activepieces_sync_timeouts_are_timeouts() {
        use {Completion::Sync, FlowEngine::Activepieces};
        for status in [204, 408] {
            let e = answer(Activepieces, Sync, status, "").unwrap_err();
            assert!(e.timed_out && e.retryable, "{status}");
        }
    }

    #[test]
    fn failures_are_retried_or_not_by_kind() {
        use {Completion::Sync, FlowEngine::Generic};
        let e = answer(
            Generic,
            Sync,
            404,
            r#"{"message":"webhook not registered"}"#,
        )
        .unwrap_err();
        assert!(!e.retryable);
        assert_eq!(e.code, "flow_rejected");
        assert!(
            e.message.contains("webhook not registered"),
            "{}",
            e.message
        );
        for status in [500, 502, 503, 429] {
            assert!(
                answer(Generic, Sync, status, "").unwrap_err().retryable,
                "{status}"
            );
        }
        assert!(!answer(Generic, Sync, 302, "").unwrap_err().retryable);
        assert!(answer(Generic, Sync, 408, "").unwrap_err().timed_out);
    }
}
