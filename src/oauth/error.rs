//! The OAuth layer's one error type. Its codes are the registered ones (RFC 6749 §5.2,
//! RFC 7591 §3.2.2, RFC 8707 §2), which OAuth clients act on.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OauthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    UnsupportedResponseType(String),
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// RFC 8707: the `resource` is not this server's.
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OauthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::InvalidScope(_) => "invalid_scope",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::UnsupportedResponseType(_) => "unsupported_response_type",
            Self::InvalidRedirectUri(_) => "invalid_redirect_uri",
            Self::InvalidClientMetadata(_) => "invalid_client_metadata",
            Self::InvalidTarget(_) => "invalid_target",
            Self::AccessDenied(_) => "access_denied",
            Self::Store(e) if e.is_unavailable() => "temporarily_unavailable",
            Self::Store(_) => "server_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClient(_) => 401,
            Self::Store(e) if e.is_unavailable() => 503,
            Self::Store(_) => 500,
            _ => 400,
        }
    }

    /// What the client is told (never a database message).
    pub fn description(&self) -> String {
        match self {
            Self::Store(e) if e.is_unavailable() => "the database is unavailable; retry".into(),
            Self::Store(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

pub type OauthResult<T> = Result<T, OauthError>;
