//! When a schedule fires: a cron expression (seconds optional) read in an IANA time zone, so
//! "every day at 02:30 Europe/Berlin" follows daylight saving time. Parsing and the calendar
//! arithmetic are croner's; this is the one place that knows it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};

#[derive(Debug, Clone)]
pub struct Timetable {
    cron: Cron,
    tz: Tz,
}

impl Timetable {
    /// `cron`: five fields, or six with seconds first; `timezone`: an IANA name (`UTC`,
    /// `Europe/Berlin`).
    pub fn parse(cron: &str, timezone: &str) -> Result<Self, TimetableError> {
        let tz = Tz::from_str(timezone).map_err(|_| TimetableError::Timezone(timezone.into()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(cron.trim())
            .map_err(|e| TimetableError::Cron(e.to_string()))?;
        Ok(Self { cron, tz })
    }

    /// The first fire time strictly after `t`; `None` when the expression never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The last fire time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The fire time before `t` (exclusive).
    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The last `max` fire times in `[from, to]`, oldest first (catching up after downtime
    /// reads back from `to`, so a schedule every second that was down for a day costs `max`
    /// steps, not 86,400).
    pub fn last_in(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = self.latest_at_or_before(to);
        while let Some(t) = at {
            if t < from || out.len() == max {
                break;
            }
            out.push(t);
            at = self.previous_before(t);
        }
        out.reverse();
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("`{0}` is not an IANA time zone (e.g. UTC, Europe/Berlin)")]
    Timezone(String),
    #[error("not a cron expression (five fields, or six with seconds first): {0}")]
    Cron(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_local_time_follows_daylight_saving() {
        let t = Timetable::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // Winter: 02:30 CET is 01:30 UTC.
        assert_eq!(
            t.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T01:30:00Z"))
        );
        // Summer: 02:30 CEST is 00:30 UTC.
        assert_eq!(
            t.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T00:30:00Z"))
        );
        // 2026-03-29: 02:00 jumps to 03:00, so 02:30 does not exist that day; it fires once,
        // and the next day as usual.
        let day = t.last_in(at("2026-03-28T12:00:00Z"), at("2026-03-30T12:00:00Z"), 10);
        assert!(day.len() <= 2, "{day:?}");
        assert_eq!(day.last(), Some(&at("2026-03-30T00:30:00Z")));
        // 2026-10-25: 02:30 happens twice (CEST, then CET): one fire.
        let fall = t.last_in(at("2026-10-24T12:00:00Z"), at("2026-10-25T12:00:00Z"), 10);
        assert_eq!(fall.len(), 1, "{fall:?}");
    }

    #[test]
    fn seconds_are_optional_and_bad_input_is_named() {
        let every_ten = Timetable::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_ten.next_after(at("2026-01-01T00:00:03Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
        let hourly = Timetable::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
        assert!(matches!(
            Timetable::parse("0 * * * *", "Mars/Olympus"),
            Err(TimetableError::Timezone(_))
        ));
        for bad in ["", "every hour", "61 * * * *", "* * * *"] {
            assert!(
                matches!(Timetable::parse(bad, "UTC"), Err(TimetableError::Cron(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn catching_up_reads_back_at_most_max() {
        let every_second = Timetable::parse("* * * * * *", "UTC").unwrap();
        let fires = every_second.last_in(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), 3);
        assert_eq!(
            fires,
            [
                at("2026-01-01T23:59:58Z"),
                at("2026-01-01T23:59:59Z"),
                at("2026-01-02T00:00:00Z")
            ]
        );
        let hourly = Timetable::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            hourly
                .last_in(at("2026-01-01T00:30:00Z"), at("2026-01-01T03:10:00Z"), 10)
                .len(),
            3
        );
    }
}
