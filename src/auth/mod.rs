//! API keys: generation, scopes, and the authenticator that turns a presented key into a
//! principal (with a short cache, invalidated across instances by NOTIFY).

pub mod admin;
mod authenticator;
mod config;
mod keys;
mod scopes;

pub use authenticator::{AuthError, AuthState, Authenticated, Authenticator};
pub use config::{AuthConfig, AuthMode};
pub use keys::{GeneratedKey, KEY_PREFIX, generate_key, hash_key, key_prefix};
pub use scopes::{ADMIN_SCOPES, ScopeError, Scopes};
