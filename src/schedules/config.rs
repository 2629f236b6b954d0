//! `[[schedules]]`: schedules kept in the configuration (made or updated at start; removed
//! from the database when removed from the file).

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{FireContext, Timetable, render};
use crate::model::{ConfigProblem, Mode};

/// What a fire does when the schedule's previous job has not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Nothing (recorded as `schedule.skipped`).
    #[default]
    Skip,
    /// Files another job anyway.
    Allow,
    /// Files one job to run after it; further fires skip while that one waits.
    QueueOne,
}

/// What happens to fire times that passed while no instance ran (or the schedule was busy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed fires are dropped; a fire is run only within a minute of its time.
    None,
    /// The most recent missed fire runs, once.
    #[default]
    Latest,
    /// Every missed fire runs, the latest `catch_up_max` of them.
    All,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::QueueOne => "queue_one",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "allow" => Overlap::Allow,
            "queue_one" => Overlap::QueueOne,
            _ => Overlap::Skip,
        }
    }
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "none" => CatchUp::None,
            "all" => CatchUp::All,
            _ => CatchUp::Latest,
        }
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn utc() -> String {
    "UTC".into()
}

fn ten() -> i32 {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique; letters, digits and `._-`.
    pub name: String,
    pub intent: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Strings may use `{{ fire_time }}`, `{{ previous_fire_time }}`, `{{ schedule }}`.
    #[serde(default = "empty_object")]
    pub inputs: Value,
    /// Five fields, or six with seconds first.
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default = "ten")]
    pub catch_up_max: i32,
    #[serde(default)]
    pub paused: bool,
}

/// Why a schedule's fields are refused (config or API), by field.
pub fn schedule_problems(
    name: &str,
    cron: &str,
    timezone: &str,
    inputs: &Value,
    catch_up_max: i32,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        out.push((
            "name",
            "must be 1 to 100 letters, digits and ._- characters".to_owned(),
        ));
    }
    if let Err(e) = Timetable::parse(cron, timezone) {
        let field = match e {
            super::TimetableError::Timezone(_) => "timezone",
            super::TimetableError::Cron(_) => "cron",
        };
        out.push((field, e.to_string()));
    }
    if !inputs.is_object() {
        out.push(("inputs", "must be an object".to_owned()));
    } else if let Err(e) = render(
        inputs,
        &FireContext {
            schedule: name,
            fire_time: Utc::now(),
            previous_fire_time: Some(Utc::now()),
        },
    ) {
        out.push(("inputs", format!("a template does not render: {e}")));
    }
    if !(1..=1000).contains(&catch_up_max) {
        out.push(("catch_up_max", "must be from 1 to 1000".to_owned()));
    }
    out
}

impl ScheduleConfig {
    pub fn problems(list: &[ScheduleConfig]) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            for (field, message) in
                schedule_problems(&s.name, &s.cron, &s.timezone, &s.inputs, s.catch_up_max)
            {
                out.push(ConfigProblem::new(
                    format!("schedules[{i}].{field}"),
                    message,
                ));
            }
            if list[..i].iter().any(|other| other.name == s.name) {
                out.push(ConfigProblem::new(
                    format!("schedules[{i}].name"),
                    format!("`{}` is used by an earlier schedule", s.name),
                ));
            }
        }
        out
    }
}
