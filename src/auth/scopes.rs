//! Scopes: intent globs (`memory.*`, `ssh.exec.peek`, `*`) and administrative scopes.

const ADMIN_SCOPES: [&str; 5] = [
    "jobs:read:all",
    "jobs:cancel",
    "callbacks:retry",
    "keys:admin",
    // Operational detail: /readyz checks, flow URLs and breakers, the instance.
    "ops:read",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Checks each scope: an administrative one, or an intent glob.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut scopes = Vec::with_capacity(list.len());
        for raw in list {
            let scope = raw.trim();
            if scope.is_empty() {
                continue;
            }
            let is_admin = ADMIN_SCOPES.contains(&scope);
            let is_glob = scope
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'));
            if !is_admin && (scope.contains(':') || !is_glob) {
                return Err(format!(
                    "`{scope}` is neither an intent glob (letters, digits, . _ - *) nor one of {}",
                    ADMIN_SCOPES.join(", ")
                ));
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            return Err("at least one scope is needed".into());
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
            .any(|glob| glob_matches(glob, intent))
    }
}

/// `*` matches any run of characters (dots included); everything else literally.
fn glob_matches(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
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
}
