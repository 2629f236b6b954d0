//! Intent names as MCP tool names. ChatGPT and Claude accept `^[A-Za-z0-9_-]{1,64}$`, and our
//! intents have dots (`memory.write`), so:
//!
//! 1. an intent that is already a valid tool name keeps it;
//! 2. otherwise every other character becomes `_` (`memory.write` → `memory_write`);
//! 3. if that is taken (by rule 1, an earlier intent of rule 2, or one of our own tools), too
//!    long, or empty, the name is the first 55 characters of rule 2's and `_` and 8 hex digits of
//!    the intent's SHA-256 (`mcp.srv.x` beside an intent `mcp_srv_x` → `mcp_srv_x_5d41402a`).
//!
//! Intents are taken in name order, so the mapping depends only on the catalog: every instance
//! and every caller sees the same names. The intent itself is in each tool's `title` and
//! `_meta`.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

const MAX_LEN: usize = 64;
const HASH_HEX: usize = 8;

/// `intent → tool name` for `intents`, avoiding `reserved` (our own tools' names).
pub fn tool_names<'a>(
    intents: impl IntoIterator<Item = &'a str>,
    reserved: &[&str],
) -> BTreeMap<String, String> {
    let intents: BTreeSet<&str> = intents.into_iter().collect();
    let mut taken: BTreeSet<String> = reserved.iter().map(|s| (*s).to_owned()).collect();
    let mut names = BTreeMap::new();
    for intent in intents.iter().filter(|i| is_valid(i)) {
        if taken.insert((*intent).to_owned()) {
            names.insert((*intent).to_owned(), (*intent).to_owned());
        }
    }
    let rest: Vec<&str> = intents
        .iter()
        .copied()
        .filter(|i| !names.contains_key(*i))
        .collect();
    for intent in rest {
        let plain = plain(intent);
        let name = if !plain.is_empty() && plain.len() <= MAX_LEN && !taken.contains(&plain) {
            plain
        } else {
            hashed(intent, &plain, &taken)
        };
        taken.insert(name.clone());
        names.insert((*intent).to_owned(), name);
    }
    names
}

pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn plain(intent: &str) -> String {
    intent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Rule 3; with more digits in the (astronomically unlikely) case that is taken too.
fn hashed(intent: &str, plain: &str, taken: &BTreeSet<String>) -> String {
    let digest = hex::encode(Sha256::digest(intent.as_bytes()).as_slice());
    let mut digits = HASH_HEX;
    loop {
        let keep = MAX_LEN - 1 - digits;
        let prefix: String = plain.chars().take(keep).collect();
        let name = if prefix.is_empty() {
            format!("t_{}", &digest[..digits])
        } else {
            format!("{prefix}_{}", &digest[..digits])
        };
        if !taken.contains(&name) || digits == digest.len() {
            return name;
        }
        digits += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(intents: &[&str]) -> BTreeMap<String, String> {
        tool_names(intents.iter().copied(), &["job_status", "job_cancel"])
    }

    #[test]
    fn dots_become_underscores_and_valid_names_stay() {
        let m = map(&["memory.write", "ssh.exec.peek", "send-mail", "job"]);
        assert_eq!(m["memory.write"], "memory_write");
        assert_eq!(m["ssh.exec.peek"], "ssh_exec_peek");
        assert_eq!(m["send-mail"], "send-mail");
        assert_eq!(m["job"], "job");
    }

    #[test]
    fn collisions_long_names_and_reserved_names_get_a_hash_and_every_name_is_unique_and_valid() {
        let long = format!("mcp.server.{}", "x".repeat(80));
        let m = map(&[
            "memory.write",
            "memory_write",
            "job.status",
            &long,
            "a.b",
            "a_b",
            "a-b",
            "é.ü",
        ]);
        assert_eq!(
            m["memory_write"], "memory_write",
            "a valid name keeps itself"
        );
        assert!(m["memory.write"].starts_with("memory_write_"));
        assert_ne!(
            m["job.status"], "job_status",
            "our own tool's name is reserved"
        );
        assert_eq!(m[&long].len(), 64);
        let names: BTreeSet<&String> = m.values().collect();
        assert_eq!(names.len(), m.len(), "collision-free: {m:?}");
        assert!(m.values().all(|n| is_valid(n)), "{m:?}");
    }

    #[test]
    fn the_mapping_depends_on_the_set_not_the_order() {
        let a = map(&["x.y", "x_y", "q.r"]);
        let b = map(&["q.r", "x_y", "x.y"]);
        assert_eq!(a, b);
    }
}
