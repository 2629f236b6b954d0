//! What an approval grants: the scopes a client asked for, narrowed to what the approving key
//! holds. Intent scopes are globs, so "narrowed" means: a requested glob the key's glob covers
//! is granted as asked; a key glob the requested one covers is granted as the key has it;
//! anything else (no overlap, or an overlap neither covers) is not granted.

use crate::{auth::Scopes, glob::Glob};

/// Whether every name `inner` matches is matched by `outer` (a sound test, not a complete
/// one: it answers false when unsure, which only ever grants less).
fn covers(outer: &str, inner: &str) -> bool {
    if outer == inner {
        return true;
    }
    let outer_glob = Glob::new(outer);
    if Glob::new(inner).is_literal() {
        return outer_glob.matches(inner);
    }
    // `P*` with a literal P covers any pattern whose literal start begins with P.
    match outer.strip_suffix('*') {
        Some(prefix) if Glob::new(prefix).is_literal() => {
            let inner_literal_start = inner.split(['*', '?']).next().unwrap_or_default();
            inner_literal_start.starts_with(prefix)
        }
        _ => false,
    }
}

/// `requested` (empty: everything the key holds) ∩ `held`, without duplicates.
pub fn grantable(requested: &[String], held: &Scopes) -> Vec<String> {
    let held = held.as_slice();
    let requested: Vec<&str> = if requested.is_empty() {
        held.iter().map(String::as_str).collect()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    let mut granted: Vec<String> = Vec::new();
    let mut grant = |scope: &str| {
        if !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    };
    for asked in requested {
        let is_admin = asked.contains(':');
        for has in held {
            if is_admin || has.contains(':') {
                if asked == has {
                    grant(asked);
                }
            } else if covers(has, asked) {
                grant(asked);
            } else if covers(asked, has) {
                grant(has);
            }
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Scopes {
        Scopes::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn grant(asked: &[&str], held: &[&str]) -> Vec<String> {
        let asked: Vec<String> = asked.iter().map(|s| s.to_string()).collect();
        grantable(&asked, &scopes(held))
    }

    #[test]
    fn the_narrower_of_two_globs_is_granted() {
        assert_eq!(grant(&["*"], &["memory.*"]), ["memory.*"]);
        assert_eq!(grant(&["memory.*"], &["*"]), ["memory.*"]);
        assert_eq!(grant(&["memory.write"], &["memory.*"]), ["memory.write"]);
        assert_eq!(grant(&["memory.*"], &["memory.write"]), ["memory.write"]);
        assert_eq!(grant(&["mem*"], &["memory.*"]), ["memory.*"]);
    }

    #[test]
    fn nothing_beyond_the_key_is_granted() {
        assert!(grant(&["ssh.exec"], &["memory.*"]).is_empty());
        assert!(
            grant(&["memory.*"], &["mem?ry.write"]).is_empty(),
            "unsure: refuse"
        );
        assert!(
            grant(&["jobs:read:all"], &["*"]).is_empty(),
            "* is no admin scope"
        );
        assert_eq!(
            grant(&["jobs:read:all"], &["jobs:read:all", "*"]),
            ["jobs:read:all"]
        );
        assert!(grant(&["*"], &["jobs:read:all"]).is_empty());
    }

    #[test]
    fn asking_nothing_asks_for_what_the_key_holds() {
        assert_eq!(
            grant(&[], &["memory.*", "jobs:cancel"]),
            ["memory.*", "jobs:cancel"]
        );
    }

    #[test]
    fn covering_is_sound() {
        assert!(covers("*", "anything.*"));
        assert!(covers("memory.*", "memory.w*"));
        assert!(!covers("memory.*", "mem*"));
        assert!(!covers("memory.w*", "memory.*"));
        assert!(!covers("m?mory.*", "memory.*"));
    }
}
