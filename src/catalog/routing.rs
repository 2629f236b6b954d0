//! How `mode: auto` picks an engine when the operator has a say: explicit routes (an intent glob
//! → an engine, optionally another intent on it), and an engine preference for intents several
//! engines serve. The order itself is applied by [`super::Catalog::resolve`].

use serde::{Deserialize, Serialize};

use crate::{
    glob::Glob,
    model::{ConfigProblem, Mode},
};

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
    /// A glob over intent names ([`crate::glob`]: `*` any run of characters, dots included;
    /// `?` one character).
    pub intent: String,
    pub mode: Mode,
    /// The intent to run on that engine instead; each `*` in it takes what the matching `*` of
    /// `intent` matched (`time.*` → `mcp.time.*` runs `time.now` as `mcp.time.now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl RoutingConfig {
    /// Every problem.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = |key: &str| format!("routing.routes[{i}].{key}");
            if route.intent.trim().is_empty() {
                out.push(ConfigProblem::new(field("intent"), "must not be empty"));
            }
            if route.mode == Mode::Auto {
                out.push(ConfigProblem::new(
                    field("mode"),
                    "must name an engine: agent, flow or mcp",
                ));
            }
            if let Some(target) = &route.target {
                let stars = |s: &str| s.matches('*').count();
                if target.contains('?') || stars(target) > stars(&route.intent) {
                    out.push(ConfigProblem::new(
                        field("target"),
                        "may only use `*`, at most as many as `intent` has",
                    ));
                }
            }
        }
        if self.prefer.contains(&Mode::Auto) {
            out.push(ConfigProblem::new(
                "routing.prefer",
                "must list engines, not auto",
            ));
        }
        out
    }

    /// The intents explicit routes send `name` to, in order: (engine, intent on it).
    pub fn targets<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (Mode, String)> + 'a {
        self.routes.iter().filter_map(move |route| {
            let glob = Glob::new(&route.intent);
            let target = match &route.target {
                Some(t) => glob.substitute(name, t)?,
                None if glob.matches(name) => name.to_owned(),
                None => return None,
            };
            Some((route.mode, target))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_match(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).matches(text)
    }

    fn glob_captures<'t>(pattern: &str, text: &'t str) -> Option<Vec<&'t str>> {
        Glob::new(pattern).captures(text)
    }

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
        assert!(routing.problems().is_empty());
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
        assert_eq!(bad.problems()[0].field, "routing.routes[0].mode");
        let bad = RoutingConfig {
            routes: vec![Route {
                intent: "a.b".into(),
                mode: Mode::Mcp,
                target: Some("mcp.x.*".into()),
            }],
            prefer: vec![],
        };
        assert_eq!(bad.problems()[0].field, "routing.routes[0].target");
    }

    #[test]
    fn targets_take_the_stars_not_the_question_marks() {
        let routing: RoutingConfig = serde_json::from_value(serde_json::json!({
            "routes": [{"intent": "v?.*", "mode": "mcp", "target": "mcp.api.*"}],
        }))
        .unwrap();
        assert!(routing.problems().is_empty());
        let targets: Vec<_> = routing.targets("v2.users.list").collect();
        assert_eq!(targets, [(Mode::Mcp, "mcp.api.users.list".to_owned())]);
        assert_eq!(routing.targets("v10.users").count(), 0);
    }
}
