//! Scopes: intent globs (`memory.*`, `ssh.exec.peek`, `*`; the syntax of [`crate::glob`]) and
//! administrative scopes, which are exact names.

use crate::glob::Glob;

/// Every administrative scope (exact names; `keys create --help` lists them all).
pub const ADMIN_SCOPES: [&str; 8] = [
    "jobs:read:all",
    // Jobs' inputs and results in the dashboard (hidden from other keys by default).
    "jobs:read:payloads",
    "jobs:cancel",
    // Send failed, timed-out and cancelled jobs back to the queue.
    "jobs:retry",
    "callbacks:retry",
    // The /schedules API: schedules file jobs as the key that makes them.
    "schedules:admin",
    "keys:admin",
    // Operational detail: /readyz checks, flow URLs and breakers, the instance.
    "ops:read",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

/// Why a list of scopes is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("`{0}` is neither an intent glob (letters, digits, `._-*?`) nor one of {ADMIN}", ADMIN = ADMIN_SCOPES.join(", "))]
    NotAScope(String),
    #[error("at least one scope is needed")]
    Empty,
}

impl Scopes {
    /// Checks each scope: an administrative one, or an intent glob.
    pub fn parse(list: &[String]) -> Result<Self, ScopeError> {
        let mut scopes = Vec::with_capacity(list.len());
        for raw in list {
            let scope = raw.trim();
            if scope.is_empty() {
                continue;
            }
            let is_admin = ADMIN_SCOPES.contains(&scope);
            let is_glob = scope
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?'));
            if !is_admin && (scope.contains(':') || !is_glob) {
                return Err(ScopeError::NotAScope(scope.to_owned()));
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(scopes))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn has(&self, admin_scope: &str) -> bool {
        self.0.iter().any(|s| s == admin_scope)
    }

    pub fn allows_intent(&self, intent: &str) -> bool {
        self.0
            .iter()
            .filter(|s| !s.contains(':'))
            .any(|glob| Glob::new(glob).matches(intent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Scopes {
        Scopes::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn intent_globs() {
        let s = scopes(&["memory.*", "ssh.exec.peek", "mcp.*.echo"]);
        assert!(s.allows_intent("memory.write"));
        assert!(s.allows_intent("memory.search"));
        assert!(s.allows_intent("ssh.exec.peek"));
        assert!(!s.allows_intent("ssh.exec"));
        assert!(!s.allows_intent("memoryx"));
        assert!(s.allows_intent("mcp.everything.echo"));
        assert!(!s.allows_intent("mcp.everything.add"));
        assert!(scopes(&["*"]).allows_intent("anything.at.all"));
        assert!(!scopes(&["jobs:read:all"]).allows_intent("memory.write"));
    }

    #[test]
    fn admin_scopes_are_exact() {
        let s = scopes(&["jobs:read:all", "memory.*"]);
        assert!(s.has("jobs:read:all"));
        assert!(!s.has("jobs:cancel"));
        assert!(
            !scopes(&["*"]).has("keys:admin"),
            "* is every intent, not every power"
        );
    }

    #[test]
    fn bad_scopes_are_refused() {
        for bad in [&["jobs:delete"][..], &["memory write"], &[""], &[]] {
            let list: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(Scopes::parse(&list).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn question_marks_stand_for_one_character() {
        let s = scopes(&["get-?um", "jobs:read:all"]);
        assert!(s.allows_intent("get-sum"));
        assert!(!s.allows_intent("get-um"));
        assert!(!s.allows_intent("get-summ"));
        assert!(!scopes(&["jobs:read:all"]).has("jobs:read:al?"));
        for bad in ["jobs:read:al?", "jobs:*"] {
            assert!(Scopes::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
