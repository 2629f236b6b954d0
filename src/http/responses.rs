//! The problem answers shared by many operations, for the OpenAPI document: each operation
//! names the sets that apply to it, so every status the server can answer is documented, each
//! with one description, written once here.

use std::collections::BTreeMap;

use utoipa::{
    IntoResponses,
    openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Type,
        response::{Response, ResponseBuilder},
    },
};

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

fn set(entries: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    entries
        .iter()
        .map(|(status, description)| ((*status).to_owned(), problem(description)))
        .collect()
}

const UNAUTHORIZED: (&str, &str) = (
    "401",
    "No valid API key: missing (once keys are required), unknown, revoked or expired (`unauthorized`).",
);
const UNAVAILABLE: (&str, &str) = (
    "503",
    "The database is unavailable (`unavailable`); retry after `Retry-After` seconds.",
);

/// Every operation behind an API key: the key, and the database checking it.
pub struct KeyProblems;

impl IntoResponses for KeyProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[UNAUTHORIZED, UNAVAILABLE])
    }
}

/// Operations that need an administrative scope (named in `missing_scope`).
pub struct ScopeProblem;

impl IntoResponses for ScopeProblem {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[(
            "403",
            "The key lacks the scope this needs (`forbidden`, with `missing_scope`).",
        )])
    }
}

/// Operations with parameters: one that is malformed is named.
pub struct BadParameters;

impl IntoResponses for BadParameters {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[(
            "400",
            "A malformed parameter (`invalid_request`, naming it in `errors`).",
        )])
    }
}

/// Operations with a JSON body.
pub struct BodyProblems;

impl IntoResponses for BodyProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[
            (
                "400",
                "Malformed JSON, a missing or malformed field, or a NUL character (`invalid_request`, naming each field in `errors`).",
            ),
            (
                "413",
                "The body exceeds server.max_body_bytes (`body_too_large`, with `limit_bytes`).",
            ),
            (
                "415",
                "The body is not JSON: send `Content-Type: application/json` (`unsupported_media_type`).",
            ),
        ])
    }
}

/// Running an intent (`orchestrate`, in the API and the Action profile): what the intent, its
/// inputs and the idempotency key can be refused for.
pub struct IntakeProblems;

impl IntoResponses for IntakeProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[
            (
                "403",
                "The key may not run this intent (`forbidden`, with `missing_scope`).",
            ),
            (
                "404",
                "Unknown intent (`unknown_intent`, with `suggestions`).",
            ),
            (
                "409",
                "Ambiguous intent (`ambiguous_intent`, with `served_by`), or the idempotency key is being claimed (`idempotency_key_busy`).",
            ),
            (
                "422",
                "Invalid inputs, mode, callback URL, or a reused idempotency key (`invalid_inputs`, `mode_not_supported`, `invalid_callback_url`, `idempotency_key_reused`, or a tool's own code, each field named in `errors`).",
            ),
        ])
    }
}

/// Operations on one schedule: a malformed id, or no such schedule.
pub struct ScheduleLookup;

impl IntoResponses for ScheduleLookup {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[
            ("400", "`schedule_id` is not a UUID (`invalid_request`)."),
            ("404", "No such schedule (`schedule_not_found`)."),
        ])
    }
}

/// Operations on one job: a malformed id, or a job this key cannot see.
pub struct JobLookup;

impl IntoResponses for JobLookup {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[
            (
                "400",
                "`job_id` is not `job_` followed by 32 lowercase hex digits (`invalid_request`).",
            ),
            (
                "404",
                "No such job, or another client's (`job_not_found`, with `job_id`).",
            ),
        ])
    }
}

/// Operations that file a job: the caller's API key, or the intent, is over its rate limit
/// (`[rate_limits]`).
pub struct RateLimited;

impl IntoResponses for RateLimited {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut out = set(&[(
            "429",
            "Over a rate limit (`rate_limited`): `limit` says which (`api_key` or `intent`) and `limit_name` whose; retry after `Retry-After` seconds, when that limit next admits a request.",
        )]);
        if let Some(RefOr::T(response)) = out.get_mut("429") {
            response.headers.insert(
                "Retry-After".into(),
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some("Seconds until the limit admits a request"))
                    .build()
                    .into(),
            );
        }
        out
    }
}
