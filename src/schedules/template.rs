//! A schedule's inputs may use the fire time: every string in them is a template
//! (`{{ fire_time }}`, `{{ previous_fire_time }}`, `{{ schedule }}`), so `gmail.triage` asks for
//! what came "since the last run". minijinja renders them: no auto-escaping (these are JSON
//! strings, not HTML), undefined names are errors, and each render has a fuel budget so a
//! template cannot spin.

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{Environment, UndefinedBehavior, context};
use serde_json::Value;

/// Template instructions one input string may use.
const FUEL: u64 = 50_000;

/// What a template may refer to.
pub struct FireContext<'a> {
    pub schedule: &'a str,
    pub fire_time: DateTime<Utc>,
    /// The previous fire of the schedule (or, before the first, the expression's previous
    /// time).
    pub previous_fire_time: Option<DateTime<Utc>>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `inputs` with every string rendered for this fire.
pub fn render(inputs: &Value, fire: &FireContext<'_>) -> Result<Value, String> {
    let env = environment();
    let ctx = context! {
        schedule => fire.schedule,
        fire_time => rfc3339(fire.fire_time),
        previous_fire_time => fire.previous_fire_time.map(rfc3339),
    };
    fn walk(v: &Value, env: &Environment<'_>, ctx: &minijinja::Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) if s.contains("{{") || s.contains("{%") => Value::String(
                env.render_str(s, ctx.clone())
                    .map_err(|e| format!("`{s}`: {e}"))?,
            ),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| walk(i, env, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(v, env, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    walk(inputs, &env, &ctx)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn strings_anywhere_in_the_inputs_get_the_fire_times() {
        let fire = FireContext {
            schedule: "triage",
            fire_time: at("2026-12-03T15:00:00Z"),
            previous_fire_time: Some(at("2026-12-03T14:00:00Z")),
        };
        let out = render(
            &json!({"since": "{{ previous_fire_time }}", "n": 3,
                    "tags": ["{{ schedule }}", "at {{ fire_time }}"], "plain": "x"}),
            &fire,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"since": "2026-12-03T14:00:00Z", "n": 3,
                   "tags": ["triage", "at 2026-12-03T15:00:00Z"], "plain": "x"})
        );
    }

    #[test]
    fn unknown_names_bad_syntax_and_runaway_loops_are_errors() {
        let fire = FireContext {
            schedule: "s",
            fire_time: at("2026-12-03T15:00:00Z"),
            previous_fire_time: None,
        };
        for bad in [
            "{{ nope }}",
            "{{ fire_time ",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        ] {
            assert!(render(&json!({"a": bad}), &fire).is_err(), "{bad}");
        }
        // No previous fire yet: rendered as none, not an error.
        assert_eq!(
            render(&json!("{{ previous_fire_time or 'never' }}"), &fire).unwrap(),
            json!("never")
        );
    }
}
