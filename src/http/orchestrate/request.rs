//! The body of `POST /orchestrate`: one type that is both what the handler reads and the
//! documented schema, and one way in — the JSON is checked against that same schema (so every
//! bad member is named at once, one error each), then deserialised.

use std::sync::LazyLock;

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{PartialSchema, ToSchema};

use crate::{
    catalog::schema_error_fields,
    http::problem::ApiError,
    model::{FieldError, Mode},
};

/// Run an intent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[cfg_attr(test, derive(PartialEq))]
#[serde(deny_unknown_fields)]
pub struct OrchestrateRequest {
    /// What to do, e.g. `memory.write` or `memory.search`; `GET /tools` lists
    /// every intent with its inputs.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub intent: String,
    /// The intent's inputs, validated against its JSON Schema (see `GET /tools`).
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Which engine runs it; `auto` lets the server choose.
    #[schema(inline)]
    pub mode: Option<Mode>,
    /// Receives the signed result when the job ends (http or https, a public address).
    #[schema(min_length = 1, max_length = 2048, format = "uri")]
    pub callback_url: Option<String>,
    /// Same as the `Idempotency-Key` header: 1 to 255 printable ASCII characters.
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    pub idempotency_key: Option<String>,
    /// `true`: answer 202 at once (also `Prefer: respond-async`).
    #[serde(rename = "async")]
    pub async_: Option<bool>,
    /// How long to wait for the result before answering 202 (default 8000, capped by config;
    /// also `Prefer: wait=N` in seconds). At most a day.
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    /// Lowers the intent's default number of attempts.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
    /// Run it at this time (RFC 3339, at most a year ahead): answered 202 at once, the job
    /// `scheduled` until then. Not with `delay_ms`.
    #[schema(value_type = Option<String>, format = DateTime, max_length = 64)]
    pub run_at: Option<String>,
    /// Run it this many milliseconds from now (at most a year): as `run_at`.
    #[schema(minimum = 0, maximum = 31_536_000_000_i64)]
    pub delay_ms: Option<u64>,
}

/// The longest a job may be filed ahead.
pub const MAX_AHEAD: chrono::Duration = chrono::Duration::days(365);

impl OrchestrateRequest {
    /// When to run it, as the client said it (`run_at=…`, `delay_ms=…`) and as a time.
    pub fn when(&self) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>, ApiError> {
        let now = chrono::Utc::now();
        match (&self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "run_at",
                "send run_at or delay_ms, not both",
            )),
            (Some(raw), None) => {
                let at = chrono::DateTime::parse_from_rfc3339(raw)
                    .map_err(|_| ApiError::invalid("run_at", "must be an RFC 3339 timestamp"))?
                    .with_timezone(&chrono::Utc);
                if at > now + MAX_AHEAD {
                    return Err(ApiError::invalid("run_at", "must be at most a year ahead"));
                }
                Ok(Some((format!("run_at={}", at.timestamp_micros()), at)))
            }
            (None, Some(ms)) => Ok(Some((
                format!("delay_ms={ms}"),
                now + chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64),
            ))),
            (None, None) => Ok(None),
        }
    }
}

/// The members, in the order their errors are listed (unknown members first).
const FIELDS: [&str; 10] = [
    "intent",
    "inputs",
    "mode",
    "callback_url",
    "idempotency_key",
    "async",
    "timeout_ms",
    "max_attempts",
    "run_at",
    "delay_ms",
];

/// This type's own schema, compiled once; `inputs` is checked against the intent's schema
/// later, here only as an object.
static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let mut schema =
        serde_json::to_value(OrchestrateRequest::schema()).expect("the schema serialises");
    schema["properties"]["inputs"] = json!({"type": "object"});
    jsonschema::validator_for(&schema).expect("the request's own schema compiles")
});

impl OrchestrateRequest {
    /// Reads a parsed body, naming every bad member.
    pub fn from_json(body: Value) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        let mut errors: Vec<FieldError> = Vec::new();
        for error in SCHEMA.iter_errors(&body) {
            for e in schema_error_fields(&error, "") {
                if !errors.iter().any(|seen| seen.field == e.field) {
                    errors.push(e);
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| FIELDS.iter().position(|f| *f == e.field));
            return Err(ApiError::InvalidRequest {
                detail: format!(
                    "invalid request: {}",
                    errors
                        .iter()
                        .map(|e| format!("{} {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                errors,
            });
        }
        // What the schema admits deserialises, but for numbers past what the type holds.
        serde_path_to_error::deserialize(body)
            .map_err(|e| ApiError::invalid(&e.path().to_string(), e.into_inner().to_string()))
    }
}

/// The idempotency key of a request: the `Idempotency-Key` header or the body's member (equal
/// when both are sent).
pub fn idempotency_key(
    headers: &HeaderMap,
    from_body: Option<String>,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| valid_key(k))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Idempotency-Key",
                        "must be 1 to 255 printable ASCII characters",
                    )
                })?
                .to_owned(),
        ),
    };
    if let Some(k) = &from_body
        && !valid_key(k)
    {
        return Err(ApiError::invalid(
            "idempotency_key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    match (header, from_body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::invalid(
            "idempotency_key",
            "differs from the Idempotency-Key header; send one or make them equal",
        )),
        (h, b) => Ok(h.or(b)),
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(v: Value) -> Vec<String> {
        match OrchestrateRequest::from_json(v) {
            Err(ApiError::InvalidRequest { errors, .. }) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_seed_examples() {
        let r = OrchestrateRequest::from_json(json!({
            "intent": "memory.write",
            "inputs": {"text": "The Eiffel Tower is in Paris", "tags": ["geography"]},
            "mode": "agent"
        }))
        .unwrap();
        assert_eq!(r.mode, Some(Mode::Agent));
        assert_eq!(r.intent, "memory.write");
    }

    #[test]
    fn names_every_bad_field() {
        assert_eq!(
            errors_of(json!({"inputs": [], "mode": "fast", "async": "yes", "extra": 1})),
            vec!["extra", "intent", "inputs", "mode", "async"]
        );
        assert_eq!(errors_of(json!({"intent": "x"})), vec!["inputs"]);
        assert_eq!(errors_of(json!([1, 2])), vec!["body"]);
        assert_eq!(
            errors_of(json!({"intent": "x", "inputs": {}, "timeout_ms": -1, "max_attempts": 0})),
            vec!["timeout_ms", "max_attempts"]
        );
    }

    #[test]
    fn numbers_past_their_type_are_named() {
        assert_eq!(
            errors_of(json!({"intent": "x", "inputs": {}, "timeout_ms": 18446744073709551616.0})),
            vec!["timeout_ms"]
        );
    }

    #[test]
    fn idempotency_keys_must_be_printable() {
        assert!(valid_key("order-123"));
        assert!(!valid_key(""));
        assert!(!valid_key("a\nb"));
        assert!(!valid_key(&"k".repeat(256)));
    }
}
