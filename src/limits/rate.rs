//! A rate and burst as configured (`{ rate = 10, burst = 20 }`), and what the buckets need of
//! it: GCRA's emission interval and burst tolerance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ConfigProblem;

/// The most a rate may be (requests per second): beyond it the interval rounds to nothing.
const MAX_RATE: f64 = 1_000_000.0;

/// `rate` requests per second on average, up to `burst` at once after a quiet spell. A rate of
/// 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second (fractions allowed: 0.5 is one every two seconds).
    pub rate: f64,
    /// Requests a full bucket admits at once; unset: one second's worth (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Rate {
    pub const OFF: Rate = Rate {
        rate: 0.0,
        burst: None,
    };

    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: Some(burst),
        }
    }

    pub fn is_off(&self) -> bool {
        self.rate == 0.0
    }

    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| self.rate.ceil() as u32).max(1)
    }

    /// Time between tokens.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// How far ahead of the rate a full bucket lets requests go: the burst less the one
    /// request the rate admits anyway.
    pub fn tolerance(&self) -> Duration {
        self.interval() * (self.burst() - 1)
    }

    pub fn problems(&self, field: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !(self.rate.is_finite() && (0.0..=MAX_RATE).contains(&self.rate)) {
            out.push(ConfigProblem::new(
                format!("{field}.rate"),
                format!("must be 0 (no limit) or a positive number of requests per second up to {MAX_RATE}"),
            ));
        }
        if self.burst == Some(0) {
            out.push(ConfigProblem::new(
                format!("{field}.burst"),
                "must be at least 1",
            ));
        }
        out
    }

    /// `10/s (burst 20)`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/s (burst {})", self.rate, self.burst())
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up (a client that waits that long finds a
/// token), and at least 1 (0 would invite an immediate retry that is refused again).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_and_tolerance_follow_rate_and_burst() {
        let r = Rate::new(4.0, 10);
        assert_eq!(r.interval(), Duration::from_millis(250));
        assert_eq!(r.tolerance(), Duration::from_millis(2250));
        let one = Rate::new(0.5, 1);
        assert_eq!(one.interval(), Duration::from_secs(2));
        assert_eq!(one.tolerance(), Duration::ZERO);
    }

    #[test]
    fn burst_defaults_to_one_seconds_worth() {
        let r = |rate| Rate { rate, burst: None }.burst();
        assert_eq!(r(10.0), 10);
        assert_eq!(r(2.5), 3);
        assert_eq!(r(0.1), 1);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn refuses_what_is_not_a_rate() {
        assert!(Rate::new(1.0, 1).problems("x").is_empty());
        assert!(Rate::OFF.problems("x").is_empty());
        for bad in [-1.0, f64::NAN, f64::INFINITY, 2e6] {
            assert_eq!(Rate::new(bad, 1).problems("x")[0].field, "x.rate", "{bad}");
        }
        assert_eq!(Rate::new(1.0, 0).problems("x")[0].field, "x.burst");
    }
}
