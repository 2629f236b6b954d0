//! How many claimed jobs may wait on this instance for a slot: enough to keep the slots busy
//! while the next claim is on its way when tools are cheap, none when they are slow.
//!
//! A claim is a round trip of L seconds; a slot runs one tool call of T seconds at a time. With
//! C slots, C·L/T calls end while one claim is in flight (Little's law), so claiming that many
//! ahead keeps cheap tools (system.echo, the memory tools: microseconds to a millisecond) from
//! idling on the claim round trip, which is what bounded the drain with fixed small claims.
//! It is Graphile Worker's local queue, sized from what this instance measures rather than by
//! a setting. Slow tools (T ≫ L) get no prefetch, so one instance never sits on work another
//! could start; and once the slots stop turning over (every slot on a long call) the prefetch
//! is off until one frees, whatever the averages still say.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Weight of the newest sample in the moving averages: about the last ten samples count.
const WEIGHT: f64 = 0.2;

/// Exponentially weighted moving average of durations, in seconds; NaN until the first one.
struct Average(AtomicU64);

impl Average {
    fn new() -> Self {
        Self(AtomicU64::new(f64::NAN.to_bits()))
    }

    fn record(&self, sample: Duration) {
        let s = sample.as_secs_f64();
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let old = f64::from_bits(bits);
                let new = if old.is_nan() {
                    s
                } else {
                    old + WEIGHT * (s - old)
                };
                Some(new.to_bits())
            });
    }

    fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.0.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }
}

pub struct Pace {
    attempt: Average,
    claim: Average,
    last_release: Mutex<Option<Instant>>,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            attempt: Average::new(),
            claim: Average::new(),
            last_release: Mutex::new(None),
        }
    }
}

impl Pace {
    /// A tool call ended after `took` (from getting its slot to its return) at `now`.
    pub fn attempt_ended(&self, took: Duration, now: Instant) {
        self.attempt.record(took);
        *self.last_release.lock().expect("pace lock poisoned") = Some(now);
    }

    /// A claim statement's round trip.
    pub fn claimed(&self, took: Duration) {
        self.claim.record(took);
    }

    /// Whether some call ended within `window` before `now`: the slots are turning over,
    /// however slowly, rather than all held by long calls.
    pub fn turning_over(&self, window: Duration, now: Instant) -> bool {
        self.last_release
            .lock()
            .expect("pace lock poisoned")
            .is_some_and(|at| now.saturating_duration_since(at) <= window)
    }

    /// How many claimed jobs may wait here beyond the free slots, at most `max`.
    pub fn prefetch(&self, slots: usize, max: usize, now: Instant) -> usize {
        let (Some(call), Some(claim)) = (self.attempt.get(), self.claim.get()) else {
            return 0;
        };
        // Slots that have not turned over for a few claim round trips hold long calls.
        let stale_after = Duration::from_secs_f64((4.0 * claim).max(0.1));
        if !self.turning_over(stale_after, now) || max == 0 {
            return 0;
        }
        // `as` saturates: an instant call gives `max`; less than one whole call gives none.
        let ahead = (slots as f64 * claim / call.max(1e-9)).floor() as usize;
        ahead.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_ahead_before_anything_is_measured() {
        let pace = Pace::default();
        let now = Instant::now();
        assert_eq!(pace.prefetch(64, 448, now), 0);
        pace.claimed(ms(5));
        assert_eq!(pace.prefetch(64, 448, now), 0, "no call measured yet");
    }

    #[test]
    fn what_the_slots_finish_during_one_claim() {
        let pace = Pace::default();
        let now = Instant::now();
        pace.claimed(ms(5));
        pace.attempt_ended(ms(10), now);
        // 8 slots × 5 ms / 10 ms = 4 calls end while a claim is out.
        assert_eq!(pace.prefetch(8, 448, now), 4);
        // Cheap calls: capped.
        let cheap = Pace::default();
        cheap.claimed(ms(5));
        cheap.attempt_ended(Duration::from_micros(20), now);
        assert_eq!(cheap.prefetch(64, 448, now), 448);
        assert_eq!(cheap.prefetch(64, 0, now), 0, "prefetch switched off");
        cheap.attempt_ended(Duration::ZERO, now);
        assert_eq!(cheap.prefetch(64, 448, now), 448, "no division by zero");
    }

    #[test]
    fn slow_calls_get_none() {
        let pace = Pace::default();
        let now = Instant::now();
        pace.claimed(ms(5));
        pace.attempt_ended(Duration::from_secs(2), now);
        assert_eq!(
            pace.prefetch(4, 448, now),
            0,
            "4 × 5 ms / 2 s is not one call"
        );
        assert_eq!(pace.prefetch(1024, 448, now), 2, "1024 × 5 ms / 2 s");
    }

    #[test]
    fn none_once_the_slots_stop_turning_over() {
        let pace = Pace::default();
        let then = Instant::now();
        pace.claimed(ms(5));
        pace.attempt_ended(Duration::from_micros(50), then);
        assert_eq!(pace.prefetch(64, 448, then + ms(50)), 448);
        // No call has ended for longer than 4 claim round trips (at least 100 ms): every slot
        // holds a long call, however cheap the earlier ones were.
        assert_eq!(pace.prefetch(64, 448, then + ms(150)), 0);
        assert!(pace.turning_over(ms(1000), then + ms(999)));
        assert!(!pace.turning_over(ms(1000), then + ms(1001)));
        assert!(
            !Pace::default().turning_over(ms(1000), then),
            "nothing ended yet"
        );
    }

    #[test]
    fn the_average_follows_recent_samples() {
        let avg = Average::new();
        assert_eq!(avg.get(), None);
        avg.record(ms(100));
        assert!((avg.get().unwrap() - 0.1).abs() < 1e-9);
        for _ in 0..50 {
            avg.record(ms(10));
        }
        assert!((avg.get().unwrap() - 0.01).abs() < 1e-3);
    }
}
