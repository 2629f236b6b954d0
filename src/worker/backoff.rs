//! Retry delays: exponential with ±20 % jitter, bounded, honouring a remote hint.
//!
//! A hint (`Retry-After`) is the earliest moment the remote accepts another attempt, so its
//! jitter only ever adds: retrying before it would waste the attempt.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed.
    pub fn delay(&self, attempt: i32, hint: Option<Duration>) -> Duration {
        let exp = attempt.clamp(1, 31) as u32 - 1;
        let nominal = self
            .base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max);
        match hint {
            Some(h) => {
                let floor = h.clamp(self.base, self.max);
                floor.mul_f64(rand::rng().random_range(1.0..=1.2))
            }
            None => jitter(nominal, 0.2),
        }
    }
}

/// `d` scaled by a random factor in [1 - spread, 1 + spread].
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let factor = rand::rng().random_range((1.0 - spread)..=(1.0 + spread));
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for (attempt, nominal) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (40, 60.0)] {
            let d = b.delay(attempt, None).as_secs_f64();
            assert!(
                d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                "{attempt}: {d}"
            );
        }
    }

    #[test]
    fn honours_a_hint_within_bounds() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for _ in 0..1000 {
            let d = b.delay(1, Some(Duration::from_secs(30))).as_secs_f64();
            assert!((30.0..=36.0).contains(&d), "never earlier than asked: {d}");
        }
        let capped = b.delay(1, Some(Duration::from_secs(3600))).as_secs_f64();
        assert!(capped <= 72.0);
    }
}
