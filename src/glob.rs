//! The one glob syntax for names: API key scopes (`memory.*`), routes (`[[routing.routes]]`),
//! MCP `allow_tools`/`deny_tools`, and the word and operand patterns of the peek allowlist.
//!
//! - `*` matches any run of characters, possibly empty; dots (and `/`, `-`, …) included.
//! - `?` matches exactly one character (a `char`, not a byte).
//! - Every other character matches itself. There are no character classes (`[…]`), no braces and
//!   no escapes: a pattern cannot match a literal `*` or `?` other than with a wildcard. `**` is
//!   two `*`s: it matches what one does (the first captures nothing).
//!
//! A pattern matches the whole text, case-sensitively. Path globs (`**` spanning directories,
//! `*` stopping at `/`) are another syntax, kept in `tools::ssh::paths` with `globset`.
//!
//! Routes need captures (what each wildcard matched) to build their target intent. `wildmatch`
//! has none; `wildcard` has them but matches slices of bytes (a `?` would be one byte of UTF-8)
//! or of `char`s (both sides collected, captures mapped back to `&str`) and brings escapes that
//! would need turning off. The matcher is the classic one, a few lines: on a mismatch, the last
//! `*` takes one more character and matching resumes after it — O(text × pattern) at worst,
//! never exponential.

use std::ops::Range;

/// A glob pattern (see the module documentation for the syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glob<'p>(&'p str);

impl<'p> Glob<'p> {
    pub fn new(pattern: &'p str) -> Self {
        Self(pattern)
    }

    pub fn as_str(&self) -> &'p str {
        self.0
    }

    /// Without `*` or `?`: matches only the text equal to it.
    pub fn is_literal(&self) -> bool {
        !self.0.contains(['*', '?'])
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        self.spans(text).is_some()
    }

    /// What each wildcard (`*` and `?`, in pattern order) matched, if `text` matches. Left to
    /// right, each `*` takes the shortest run that lets the rest match.
    pub fn captures<'t>(&self, text: &'t str) -> Option<Vec<&'t str>> {
        Some(self.spans(text)?.into_iter().map(|r| &text[r]).collect())
    }

    /// `template` with each `*` replaced by what the `*` of the same rank in this pattern matched
    /// in `text` (empty when the pattern has fewer); `?` captures are not used and every other
    /// character of `template` is kept. `None` if `text` does not match.
    pub fn substitute(&self, text: &str, template: &str) -> Option<String> {
        let spans = self.spans(text)?;
        let wildcards = self.0.chars().filter(|c| matches!(c, '*' | '?'));
        let mut stars = wildcards
            .zip(spans)
            .filter(|(c, _)| *c == '*')
            .map(|(_, r)| &text[r]);
        let mut out = String::with_capacity(template.len());
        for c in template.chars() {
            match c {
                '*' => out.push_str(stars.next().unwrap_or_default()),
                c => out.push(c),
            }
        }
        Some(out)
    }

    /// The byte range each wildcard matched, in pattern order.
    fn spans(&self, text: &str) -> Option<Vec<Range<usize>>> {
        /// The last `*` met: where the pattern resumes after it, and its run so far.
        struct Star {
            resume: usize,
            run: Range<usize>,
            rank: usize,
        }
        let pattern = self.0;
        let mut spans: Vec<Range<usize>> = Vec::new();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<Star> = None;
        loop {
            match (pattern[p..].chars().next(), text[t..].chars().next()) {
                (None, None) => return Some(spans),
                (Some('*'), _) => {
                    p += 1;
                    star = Some(Star {
                        resume: p,
                        run: t..t,
                        rank: spans.len(),
                    });
                    spans.push(t..t);
                    continue;
                }
                (Some('?'), Some(c)) => {
                    spans.push(t..t + c.len_utf8());
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                (Some(pc), Some(c)) if pc == c => {
                    p += c.len_utf8();
                    t += c.len_utf8();
                    continue;
                }
                _ => {}
            }
            // A mismatch: the last `*` takes one more character (none left: no match).
            let star = star.as_mut()?;
            let c = text[star.run.end..].chars().next()?;
            star.run.end += c.len_utf8();
            spans.truncate(star.rank);
            spans.push(star.run.clone());
            (p, t) = (star.resume, star.run.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn patterns_match_and_capture_as_documented() {
        // (pattern, text, captures when it matches)
        let table: &[(&str, &str, Option<&[&str]>)] = &[
            ("", "", Some(&[])),
            ("", "a", None),
            ("exact", "exact", Some(&[])),
            ("exact", "exactly", None),
            ("exact", "exac", None),
            ("Exact", "exact", None),
            ("*", "", Some(&[""])),
            ("*", "anything.at.all", Some(&["anything.at.all"])),
            ("**", "ab", Some(&["", "ab"])),
            ("a**b", "axyb", Some(&["", "xy"])),
            ("memory.*", "memory.write", Some(&["write"])),
            ("memory.*", "memory.", Some(&[""])),
            ("memory.*", "memoryx.write", None),
            ("*.peek", "ssh.exec.peek", Some(&["ssh.exec"])),
            ("mcp.*.echo", "mcp.everything.echo", Some(&["everything"])),
            ("mcp.*.echo", "mcp.everything.add", None),
            ("*.*", "a.b.c", Some(&["a", "b.c"])),
            ("a.*.c.*", "a.b.b.c.d", Some(&["b.b", "d"])),
            ("a*b*c", "aXXbYYc", Some(&["XX", "YY"])),
            ("a*b*c", "aXXcYYb", None),
            ("?", "", None),
            ("?", "x", Some(&["x"])),
            ("?", "xy", None),
            ("?ab", "xab", Some(&["x"])),
            ("ab?", "abx", Some(&["x"])),
            ("ab?", "ab", None),
            ("get-?um", "get-sum", Some(&["s"])),
            ("get-?um", "get-um", None),
            ("?*", "", None),
            ("?*", "xyz", Some(&["x", "yz"])),
            ("*?", "xyz", Some(&["xy", "z"])),
            ("*.?", "a.b.c", Some(&["a.b", "c"])),
            ("-fprint*", "-fprint0", Some(&["0"])),
            ("+*", "+%s", Some(&["%s"])),
            ("+*", "0101", None),
            (
                "/var/log/*",
                "/var/log/nginx/access.log",
                Some(&["nginx/access.log"]),
            ),
            ("é?", "éà", Some(&["à"])),
            ("?é*", "àé", Some(&["à", ""])),
            ("[ab]", "a", None),
            ("[ab]", "[ab]", Some(&[])),
            ("a\\*", "a\\bc", Some(&["bc"])),
        ];
        for (pattern, text, expected) in table {
            let glob = Glob::new(pattern);
            let captures = glob.captures(text);
            assert_eq!(
                captures.as_deref(),
                *expected,
                "`{pattern}` against `{text}`"
            );
            assert_eq!(glob.matches(text), expected.is_some(), "`{pattern}`");
        }
    }

    #[test]
    fn substitution_uses_the_stars_in_order() {
        let glob = Glob::new("time.*");
        assert_eq!(
            glob.substitute("time.now", "mcp.time.*").as_deref(),
            Some("mcp.time.now")
        );
        assert_eq!(glob.substitute("clock.now", "mcp.time.*"), None);
        let glob = Glob::new("?.*.*");
        assert_eq!(
            glob.substitute("a.b.c.d", "*-*-*").as_deref(),
            Some("b-c.d-"),
            "`?` captures are skipped; missing stars are empty"
        );
        assert_eq!(glob.substitute("a.b.c", "fixed").as_deref(), Some("fixed"));
    }

    #[test]
    fn literal_patterns_are_known() {
        assert!(Glob::new("ssh.exec.peek").is_literal());
        assert!(!Glob::new("memory.*").is_literal());
        assert!(!Glob::new("get-?um").is_literal());
    }

    #[test]
    fn pathological_patterns_finish_fast() {
        let pattern = format!("{}b", "*a".repeat(40));
        let text = "a".repeat(4000);
        let started = Instant::now();
        assert!(!Glob::new(&pattern).matches(&text));
        let with_b = format!("{text}b");
        assert!(Glob::new(&pattern).matches(&with_b));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
}
