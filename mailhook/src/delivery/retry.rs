//! The retry policy of webhook deliveries: pure, so every rule is unit-tested. Exponential
//! backoff from 30 s, doubling, each delay capped at 4 hours, with ±20 % jitter so retries of
//! many messages to one receiver spread out; 15 attempts in all, about a day
//! (30 s + 1 m + … + 128 m ≈ 4.3 h, then five 4 h waits).

use std::time::Duration;

/// Attempts a delivery gets, the first included.
pub const MAX_ATTEMPTS: i32 = 15;
/// Delay before the second attempt.
const BASE: Duration = Duration::from_secs(30);
/// Longest delay between two attempts, also the ceiling of an honoured `Retry-After`.
const MAX_DELAY: Duration = Duration::from_secs(4 * 3600);
/// Shortest delay, also the floor of an honoured `Retry-After`.
const MIN_DELAY: Duration = Duration::from_secs(1);
/// Jitter: the delay is scaled by a factor in 1 ± JITTER.
const JITTER: f64 = 0.2;

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// An HTTP response: its status and `Retry-After` in seconds, when given as such.
    Status { code: u16, retry_after: Option<u64> },
    /// No response: connection refused or reset, DNS failure, TLS failure, timeout.
    Network,
    /// Never sent: the target is not allowed (non-public address, bad URL).
    Refused,
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    RetryIn(Duration),
    Failed,
}

/// The decision after attempt number `attempt` (1 = the first) got `response`; `jitter` is a
/// uniform random number in [0, 1) drawn by the caller.
pub fn decide(attempt: i32, response: &Response, jitter: f64) -> Decision {
    let retry_after = match response {
        Response::Status { code, .. } if (200..300).contains(code) => return Decision::Delivered,
        Response::Status { code, retry_after } if is_retryable(*code) => *retry_after,
        Response::Network => None,
        Response::Status { .. } | Response::Refused => return Decision::Failed,
    };
    if attempt >= MAX_ATTEMPTS {
        return Decision::Failed;
    }
    let delay = match retry_after {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_DELAY, MAX_DELAY),
        None => backoff(attempt, jitter),
    };
    Decision::RetryIn(delay)
}

impl Decision {
    /// `delivery_record`'s `outcome` and `retry_seconds` for this decision.
    pub fn record_args(&self) -> (&'static str, Option<i32>) {
        match self {
            Decision::Delivered => ("delivered", None),
            Decision::RetryIn(d) => (
                "retry",
                Some(i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)),
            ),
            Decision::Failed => ("failed", None),
        }
    }
}

/// 408, 429 and 5xx may succeed later; 3xx (redirects are not followed) and other 4xx will not.
fn is_retryable(code: u16) -> bool {
    code == 408 || code == 429 || (500..600).contains(&code)
}

/// The jittered exponential delay after attempt `attempt`.
fn backoff(attempt: i32, jitter: f64) -> Duration {
    let doublings = u32::try_from(attempt.clamp(1, 30) - 1).unwrap_or(0);
    let raw = BASE
        .saturating_mul(1u32 << doublings.min(20))
        .min(MAX_DELAY);
    let factor = 1.0 - JITTER + 2.0 * JITTER * jitter.clamp(0.0, 1.0);
    raw.mul_f64(factor)
        .clamp(MIN_DELAY, MAX_DELAY.mul_f64(1.0 + JITTER))
}

/// `Retry-After` as delta-seconds; an HTTP date or garbage is ignored (the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Response {
        Response::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn success_and_final_failures() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(decide(1, &status(code), 0.5), Decision::Delivered, "{code}");
        }
        for code in [301, 302, 307, 400, 401, 403, 404, 405, 410, 413, 422] {
            assert_eq!(decide(1, &status(code), 0.5), Decision::Failed, "{code}");
        }
        assert_eq!(decide(1, &Response::Refused, 0.5), Decision::Failed);
    }

    #[test]
    fn retried_responses() {
        for r in [
            status(408),
            status(429),
            status(500),
            status(502),
            status(503),
            status(599),
            Response::Network,
        ] {
            assert!(matches!(decide(1, &r, 0.5), Decision::RetryIn(_)), "{r:?}");
        }
    }

    #[test]
    fn exponential_with_cap_and_jitter() {
        let d = |attempt, jitter| match decide(attempt, &Response::Network, jitter) {
            Decision::RetryIn(d) => d,
            other => panic!("attempt {attempt}: {other:?}"),
        };
        assert_eq!(d(1, 0.5), Duration::from_secs(30));
        assert_eq!(d(2, 0.5), Duration::from_secs(60));
        assert_eq!(d(3, 0.5), Duration::from_secs(120));
        assert_eq!(d(10, 0.5), MAX_DELAY);
        assert_eq!(d(14, 0.5), MAX_DELAY);
        assert_eq!(d(1, 0.0), Duration::from_secs(24));
        assert!(d(1, 0.999) > Duration::from_secs(35) && d(1, 0.999) <= Duration::from_secs(36));
        // out-of-range jitter is clamped, never negative or huge
        assert_eq!(d(1, -5.0), Duration::from_secs(24));
        assert_eq!(d(1, 7.0), Duration::from_secs(36));
    }

    #[test]
    fn about_a_day_in_total() {
        let total: Duration = (1..MAX_ATTEMPTS)
            .map(|a| match decide(a, &Response::Network, 0.5) {
                Decision::RetryIn(d) => d,
                other => panic!("attempt {a}: {other:?}"),
            })
            .sum();
        assert!(total > Duration::from_secs(22 * 3600), "{total:?}");
        assert!(total < Duration::from_secs(26 * 3600), "{total:?}");
        assert_eq!(
            decide(MAX_ATTEMPTS, &Response::Network, 0.5),
            Decision::Failed
        );
        assert_eq!(decide(MAX_ATTEMPTS, &status(503), 0.5), Decision::Failed);
    }

    #[test]
    fn retry_after_honoured_within_bounds() {
        let with = |secs| Response::Status {
            code: 429,
            retry_after: Some(secs),
        };
        assert_eq!(
            decide(1, &with(120), 0.5),
            Decision::RetryIn(Duration::from_secs(120))
        );
        assert_eq!(decide(1, &with(0), 0.5), Decision::RetryIn(MIN_DELAY));
        assert_eq!(
            decide(1, &with(10_000_000), 0.5),
            Decision::RetryIn(MAX_DELAY)
        );
        assert_eq!(parse_retry_after(" 17 "), Some(17));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("99999999999999"), None);
        assert_eq!(parse_retry_after(""), None);
    }
}
