//! Retry delays: exponential, capped, with equal jitter.
//!
//! After attempt `n` (1-based) fails, the next waits
//! `d = min(initial * 2^(n-1), max)` (the WIT `retry-policy`), **with equal
//! jitter**: a uniform pick in `[d/2, d]`. Jitter spreads the retries of many
//! rows that failed together (a dependency went down) so they do not return
//! in one wave; keeping the lower half means the delay is never less than
//! half the policy's, so a backoff always really backs off (full jitter,
//! `[0, d]`, may retry at once).
//!
//! [`delay`] is the pure computation (testable, given the random pick);
//! [`jittered`] draws the pick.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The backoff before the attempt after `attempt` (1-based; `0` is treated as
/// `1`), for a policy of `initial` doubling up to `max`, with `unit` in
/// `[0, 1]` choosing where in the jitter range `[d/2, d]` it falls (`0` →
/// `d/2`, `1` → `d`; out-of-range values are clamped).
pub fn delay(initial: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let exponent = attempt.max(1) - 1;
    let factor = 1u32.checked_shl(exponent).unwrap_or(0);
    let full = if factor == 0 {
        max // 2^exponent overflowed: far past any cap
    } else {
        initial.checked_mul(factor).unwrap_or(max).min(max)
    };
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    let half = full / 2;
    half + (full - half).mul_f64(unit)
}

/// [`delay`] with a random pick: what the worker uses.
pub fn jittered(initial: Duration, max: Duration, attempt: u32) -> Duration {
    delay(initial, max, attempt, random_unit())
}

/// A uniform pick in `[0, 1)`. Jitter needs spread, not cryptographic
/// quality: std's randomly keyed hasher over a counter gives that without a
/// dependency.
fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_per_attempt_from_the_initial_delay() {
        assert_eq!(delay(S, 100 * S, 1, 1.0), S);
        assert_eq!(delay(S, 100 * S, 2, 1.0), 2 * S);
        assert_eq!(delay(S, 100 * S, 3, 1.0), 4 * S);
        assert_eq!(delay(S, 100 * S, 0, 1.0), S, "attempt 0 reads as 1");
    }

    #[test]
    fn is_capped_at_max_even_for_huge_attempts() {
        assert_eq!(delay(S, 10 * S, 5, 1.0), 10 * S);
        assert_eq!(delay(S, 10 * S, 40, 1.0), 10 * S);
        assert_eq!(delay(S, 10 * S, u32::MAX, 1.0), 10 * S);
        assert_eq!(delay(Duration::MAX, 10 * S, 3, 1.0), 10 * S);
    }

    #[test]
    fn equal_jitter_stays_between_half_and_full() {
        assert_eq!(delay(4 * S, 100 * S, 1, 0.0), 2 * S);
        assert_eq!(delay(4 * S, 100 * S, 1, 0.5), 3 * S);
        assert_eq!(delay(4 * S, 100 * S, 1, 7.0), 4 * S, "clamped");
        assert_eq!(delay(4 * S, 100 * S, 1, f64::NAN), 2 * S);
        for attempt in 1..10 {
            let d = jittered(S, 60 * S, attempt);
            let full = (S * (1 << (attempt - 1))).min(60 * S);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn random_picks_spread() {
        let picks: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(picks.iter().all(|p| (0.0..1.0).contains(p)));
        let low = picks.iter().filter(|p| **p < 0.5).count();
        assert!((350..650).contains(&low), "{low} of 1000 below 0.5");
    }

    #[test]
    fn zero_initial_means_no_wait() {
        assert_eq!(delay(Duration::ZERO, S, 3, 0.7), Duration::ZERO);
    }
}
