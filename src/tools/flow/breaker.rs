//! A circuit breaker per flow URL: after `threshold` consecutive failures new jobs fail fast
//! until `open_for` has passed; then one probe request decides whether it closes again.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe at a time; a probe that never reports (its job was cancelled) stops
    /// blocking others after `open_for`.
    HalfOpen {
        probe_started: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The one request that tests a half-open circuit.
    Probe,
    Rejected {
        retry_in: Duration,
    },
}

#[derive(Debug)]
pub struct Breaker {
    url: String,
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

/// What `/readyz` shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerView {
    pub url: String,
    pub state: &'static str,
    pub consecutive_failures: u32,
}

impl Breaker {
    pub fn new(url: &str, threshold: u32, open_for: Duration) -> Self {
        Self {
            url: url.to_owned(),
            threshold,
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    pub fn record(&self, success: bool) {
        self.record_at(success, Instant::now());
    }

    /// `admit` as of `now` (the tests' clock).
    fn admit_at(&self, now: Instant) -> Admission {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } => {
                if now < until {
                    Admission::Rejected {
                        retry_in: until - now,
                    }
                } else {
                    *state = State::HalfOpen { probe_started: now };
                    tracing::info!(url = %self.url, "flow circuit half-open: probing");
                    Admission::Probe
                }
            }
            State::HalfOpen { probe_started } => {
                if now.duration_since(probe_started) < self.open_for {
                    Admission::Rejected {
                        retry_in: self.open_for - now.duration_since(probe_started),
                    }
                } else {
                    *state = State::HalfOpen { probe_started: now };
                    Admission::Probe
                }
            }
        }
    }

    /// `record` as of `now` (the tests' clock).
    fn record_at(&self, success: bool, now: Instant) {
        let mut state = self.lock();
        let next = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => State::Open {
                until: now + self.open_for,
            },
        };
        match (*state, next) {
            (State::Closed { .. }, State::Open { .. })
            | (State::HalfOpen { .. }, State::Open { .. }) => {
                tracing::warn!(url = %self.url, open_ms = self.open_for.as_millis() as u64, "flow circuit open: failing fast");
            }
            (State::HalfOpen { .. } | State::Open { .. }, State::Closed { .. }) => {
                tracing::info!(url = %self.url, "flow circuit closed");
            }
            _ => {}
        }
        *state = next;
    }

    pub fn view(&self) -> BreakerView {
        let (state, failures) = match *self.lock() {
            State::Closed { failures } => ("closed", failures),
            State::Open { .. } => ("open", self.threshold),
            State::HalfOpen { .. } => ("half_open", self.threshold),
        };
        BreakerView {
            url: self.url.clone(),
            state,
            consecutive_failures: failures,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("breaker lock poisoned")
    }
}

/// Breakers by URL (flows sharing a URL share one).
#[derive(Debug, Default)]
pub struct Breakers {
    by_url: Mutex<BTreeMap<String, Arc<Breaker>>>,
}

impl Breakers {
    pub fn get_or_create(&self, url: &str, threshold: u32, open_for: Duration) -> Arc<Breaker> {
        self.by_url
            .lock()
            .expect("breakers lock poisoned")
            .entry(url.to_owned())
            .or_insert_with(|| Arc::new(Breaker::new(url, threshold, open_for)))
            .clone()
    }

    pub fn views(&self) -> Vec<BreakerView> {
        self.by_url
            .lock()
            .expect("breakers lock poisoned")
            .values()
            .map(|b| b.view())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_a_probe_closes_it() {
        let b = Breaker::new("http://flow", 3, Duration::from_millis(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit_at(t0), Admission::Allowed);
            b.record_at(false, t0);
        }
        b.record_at(true, t0);
        assert_eq!(
            b.view().consecutive_failures,
            0,
            "a success resets the count"
        );
        for _ in 0..3 {
            b.record_at(false, t0);
        }
        assert_eq!(b.view().state, "open");
        assert!(matches!(b.admit_at(t0), Admission::Rejected { .. }));
        // Once `open_for` has passed.
        let later = t0 + Duration::from_millis(40);
        assert_eq!(b.admit_at(later), Admission::Probe);
        assert!(
            matches!(b.admit_at(later), Admission::Rejected { .. }),
            "one probe at a time"
        );
        b.record_at(true, later);
        assert_eq!(b.view().state, "closed");
        assert_eq!(b.admit_at(later), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = Breaker::new("http://flow", 1, Duration::from_millis(10));
        let t0 = Instant::now();
        b.record_at(false, t0);
        // Once `open_for` has passed.
        let later = t0 + Duration::from_millis(15);
        assert_eq!(b.admit_at(later), Admission::Probe);
        b.record_at(false, later);
        assert_eq!(b.view().state, "open");
    }
}
