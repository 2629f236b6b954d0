//! How `mode: auto` picks an engine when the operator has a say: explicit routes (an intent glob
//! → an engine, optionally another intent on it), and an engine preference for intents several
//! engines serve. The order itself is applied by [`super::Catalog::resolve`].

use serde::{Deserialize, Serialize};

use crate::model::Mode;

/// `[routing]`: explicit routes first, then the one engine that serves the intent, then
/// `prefer` when several do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Tried in order; the first whose target is served wins.
    pub routes: Vec<Route>,
    /// When several engines serve an intent and no route decides: the first of these engines
    /// that serves it. Empty (the default): such a request is answered 409 `ambiguous_intent`.
    pub prefer: Vec<Mode>,
}

/// `[[routing.routes]]`: intents matching `intent` run on `mode`, as `target` when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// A glob over intent names: `*` matches any run of characters (dots included), `?` one.
    pub intent: String,
    pub mode: Mode,
    /// The intent to run on that engine instead; each `*` in it takes what the matching `*` of
    /// `intent` matched (`time.*` → `mcp.time.*` runs `time.now` as `mcp.time.now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl RoutingConfig {
    /// Field path and message of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, route) in self.routes.iter().enumerate() {
            let field = |key: &str| format!("routing.routes[{i}].{key}");
            if route.intent.trim().is_empty() {
                return Err((field("intent"), "must not be empty".into()));
            }
            if route.mode == Mode::Auto {
                return Err((
                    field("mode"),
                    "must name an engine: agent, flow or mcp".into(),
                ));
            }
            if let Some(target) = &route.target {
                let stars = |s: &str| s.matches('*').count();
                if target.contains('?') || stars(target) > stars(&route.intent) {
                    return Err((
                        field("target"),
                        "may only use `*`, at most as many as `intent` has".into(),
                    ));
                }
            }
        }
        if self.prefer.contains(&Mode::Auto) {
            return Err((
                "routing.prefer".into(),
                "must list engines, not auto".into(),
            ));
        }
        Ok(())
    }

    /// The intents explicit routes send `name` to, in order: (engine, intent on it).
    pub fn targets<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (Mode, String)> + 'a {
        self.routes.iter().filter_map(move |route| {
            let captures = glob_captures(&route.intent, name)?;
            let target = match &route.target {
                None => name.to_owned(),
                Some(t) => expand(t, &captures),
            };
            Some((route.mode, target))
        })
    }
}

fn expand(template: &str, captures: &[&str]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut next = captures.iter();
    for c in template.chars() {
        if c == '*' {
            out.push_str(next.next().copied().unwrap_or_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `text` matches `pattern` (`*` any run, `?` one character, the rest literal).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_captures(pattern, text).is_some()
}

/// What each `*` of `pattern` matched in `text` (shortest first), if it matches.
pub fn glob_captures<'t>(pattern: &str, text: &'t str) -> Option<Vec<&'t str>> {
    fn go<'t>(p: &[char], text: &'t str, at: usize, caps: &mut Vec<&'t str>) -> bool {
        let rest = &text[at..];
        match p.split_first() {
            None => rest.is_empty(),
            Some(('*', tail)) => {
                let mut ends: Vec<usize> = rest.char_indices().map(|(i, _)| at + i).collect();
                ends.push(text.len());
                for end in ends {
                    caps.push(&text[at..end]);
                    if go(tail, text, end, caps) {
                        return true;
                    }
                    caps.pop();
                }
                false
            }
            Some((&c, tail)) => match rest.chars().next() {
                Some(t) if c == '?' || c == t => go(tail, text, at + t.len_utf8(), caps),
                _ => false,
            },
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let mut caps = Vec::new();
    go(&pattern, text, 0, &mut caps).then_some(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_and_capture() {
        assert!(glob_match("memory.*", "memory.write"));
        assert!(glob_match("*", "anything.at.all"));
        assert!(glob_match("get-?um", "get-sum"));
        assert!(!glob_match("memory.*", "memoryx.write"));
        assert!(!glob_match("echo", "echo2"));
        assert_eq!(glob_captures("a.*.c.*", "a.b.b.c.d").unwrap(), ["b.b", "d"]);
        assert_eq!(glob_captures("x*", "x").unwrap(), [""]);
        assert_eq!(glob_captures("é*", "éà").unwrap(), ["à"]);
    }

    #[test]
    fn targets_follow_route_order_and_expand_stars() {
        let routing = RoutingConfig {
            routes: vec![
                Route {
                    intent: "time.*".into(),
                    mode: Mode::Mcp,
                    target: Some("mcp.time.*".into()),
                },
                Route {
                    intent: "*".into(),
                    mode: Mode::Agent,
                    target: None,
                },
            ],
            prefer: vec![],
        };
        routing.validate().unwrap();
        let targets: Vec<_> = routing.targets("time.now").collect();
        assert_eq!(
            targets,
            [
                (Mode::Mcp, "mcp.time.now".to_owned()),
                (Mode::Agent, "time.now".to_owned())
            ]
        );
    }

    #[test]
    fn invalid_routes_are_named() {
        let bad = RoutingConfig {
            routes: vec![Route {
                intent: "a.*".into(),
                mode: Mode::Auto,
                target: None,
            }],
            prefer: vec![],
        };
        assert_eq!(bad.validate().unwrap_err().0, "routing.routes[0].mode");
        let bad = RoutingConfig {
            routes: vec![Route {
                intent: "a.b".into(),
                mode: Mode::Mcp,
                target: Some("mcp.x.*".into()),
            }],
            prefer: vec![],
        };
        assert_eq!(bad.validate().unwrap_err().0, "routing.routes[0].target");
    }
}
