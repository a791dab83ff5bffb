//! Per-key limits: requests per minute, tokens per minute, concurrent
//! requests. Each key has one [`Limiter`]; a request that passes holds a
//! [`Permit`] until it ends (answered, failed, or its client gone), which
//! frees its concurrency slot and counts its tokens.
//!
//! Minutes are sliding windows: a request counts against the requests and
//! tokens of the 60 seconds before it, so a burst at the end of one
//! calendar minute cannot be followed by another at the start of the next.
//! Tokens are counted when a request ends (prompt + completion, as the
//! usage the client sees): the request that goes over the limit is served,
//! the next one is refused until enough tokens leave the window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The window of the per-minute limits.
pub const WINDOW: Duration = Duration::from_secs(60);

/// What one key may use. `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u32>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    RequestsPerMinute,
    TokensPerMinute,
    Concurrent,
}

impl LimitKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests per minute",
            Self::TokensPerMinute => "tokens per minute",
            Self::Concurrent => "concurrent requests",
        }
    }
}

/// A refusal: the limit, its value, and when trying again may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub kind: LimitKind,
    pub limit: u64,
    pub retry_after: Duration,
}

#[derive(Debug, Default)]
struct Window {
    /// When each request of the last minute was admitted.
    requests: VecDeque<Instant>,
    /// Tokens of requests that ended in the last minute, and when.
    tokens: VecDeque<(Instant, u64)>,
    token_sum: u64,
    in_flight: u32,
}

impl Window {
    fn forget_before(&mut self, now: Instant) {
        let expired = |at: Instant| now.saturating_duration_since(at) >= WINDOW;
        while self.requests.front().is_some_and(|at| expired(*at)) {
            self.requests.pop_front();
        }
        while let Some(&(at, n)) = self.tokens.front() {
            if !expired(at) {
                break;
            }
            self.token_sum -= n;
            self.tokens.pop_front();
        }
    }
}

/// One key's usage.
#[derive(Debug, Default)]
pub struct Limiter {
    window: Mutex<Window>,
}

/// Time until `at` leaves the window, at least one second (what
/// `Retry-After` can say).
fn until_expired(at: Instant, now: Instant) -> Duration {
    (at + WINDOW)
        .saturating_duration_since(now)
        .max(Duration::from_secs(1))
}

impl Limiter {
    /// Admits one request under `limits` now, or says which limit refuses
    /// it and for how long. A refused request counts against nothing.
    pub fn admit(self: &Arc<Self>, limits: &Limits, now: Instant) -> Result<Permit, Refusal> {
        let mut w = self.window.lock();
        w.forget_before(now);
        if let Some(max) = limits.max_concurrent
            && w.in_flight >= max
        {
            return Err(Refusal {
                kind: LimitKind::Concurrent,
                limit: u64::from(max),
                retry_after: Duration::from_secs(1),
            });
        }
        if let Some(max) = limits.tokens_per_minute
            && w.token_sum >= max
        {
            // Wait until enough tokens leave the window to be under it.
            let mut left = w.token_sum;
            let mut until = now;
            for &(at, n) in &w.tokens {
                left -= n;
                until = at;
                if left < max {
                    break;
                }
            }
            return Err(Refusal {
                kind: LimitKind::TokensPerMinute,
                limit: max,
                retry_after: until_expired(until, now),
            });
        }
        if let Some(max) = limits.requests_per_minute {
            if w.requests.len() >= max as usize {
                let oldest = w.requests.front().copied().unwrap_or(now);
                return Err(Refusal {
                    kind: LimitKind::RequestsPerMinute,
                    limit: u64::from(max),
                    retry_after: until_expired(oldest, now),
                });
            }
            w.requests.push_back(now);
        }
        w.in_flight += 1;
        Ok(Permit {
            limiter: self.clone(),
            count_tokens: limits.tokens_per_minute.is_some(),
            tokens: 0,
        })
    }

    /// Requests of this key running now.
    pub fn in_flight(&self) -> u32 {
        self.window.lock().in_flight
    }

    fn end(&self, tokens: Option<u64>, now: Instant) {
        let mut w = self.window.lock();
        w.in_flight = w.in_flight.saturating_sub(1);
        if let Some(n) = tokens.filter(|n| *n > 0) {
            w.tokens.push_back((now, n));
            w.token_sum += n;
        }
    }
}

/// A request admitted under its key's limits: holds a concurrency slot and
/// collects the tokens the request used; dropping it frees the slot and
/// counts the tokens.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    count_tokens: bool,
    tokens: u64,
}

impl Permit {
    /// Counts `n` more tokens for this request.
    pub fn add_tokens(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_add(n);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let tokens = self.count_tokens.then_some(self.tokens);
        self.limiter.end(tokens, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u64>, conc: Option<u32>) -> Limits {
        Limits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrent: conc,
        }
    }

    #[test]
    fn requests_per_minute_slide() {
        let l = Arc::new(Limiter::default());
        let lim = limits(Some(3), None, None);
        let t0 = Instant::now();
        for i in 0..3 {
            drop(l.admit(&lim, t0 + Duration::from_secs(i * 10)).unwrap());
        }
        let refused = l.admit(&lim, t0 + Duration::from_secs(30)).unwrap_err();
        assert_eq!(refused.kind, LimitKind::RequestsPerMinute);
        assert_eq!(refused.limit, 3);
        // The first request leaves the window at t0 + 60 s.
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        assert!(l.admit(&lim, t0 + Duration::from_secs(59)).is_err());
        assert!(l.admit(&lim, t0 + Duration::from_secs(60)).is_ok());
        assert!(l.admit(&lim, t0 + Duration::from_secs(61)).is_err());
    }

    #[test]
    fn concurrency_is_freed_when_the_permit_drops() {
        let l = Arc::new(Limiter::default());
        let lim = limits(None, None, Some(2));
        let now = Instant::now();
        let a = l.admit(&lim, now).unwrap();
        let _b = l.admit(&lim, now).unwrap();
        let refused = l.admit(&lim, now).unwrap_err();
        assert_eq!(
            (refused.kind, refused.limit),
            (LimitKind::Concurrent, 2),
            "{refused:?}"
        );
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        drop(a);
        assert_eq!(l.in_flight(), 1);
        assert!(l.admit(&lim, now).is_ok());
    }

    #[test]
    fn tokens_count_when_a_request_ends() {
        let l = Arc::new(Limiter::default());
        let lim = limits(None, Some(100), None);
        let t0 = Instant::now();
        let mut first = l.admit(&lim, t0).unwrap();
        // Admitted while the first runs: its tokens are not known yet.
        let mut second = l.admit(&lim, t0).unwrap();
        first.add_tokens(70);
        drop(first);
        second.add_tokens(50);
        drop(second);
        let refused = l.admit(&lim, Instant::now()).unwrap_err();
        assert_eq!(
            (refused.kind, refused.limit),
            (LimitKind::TokensPerMinute, 100)
        );
        // Under the limit once the first 70 leave: about a minute from now.
        assert!(refused.retry_after > Duration::from_secs(55), "{refused:?}");
        assert!(l.admit(&lim, Instant::now() + WINDOW).is_ok());
    }

    #[test]
    fn refusals_count_against_nothing_and_no_limits_admit_all() {
        let l = Arc::new(Limiter::default());
        let lim = limits(Some(1), None, Some(1));
        let now = Instant::now();
        let held = l.admit(&lim, now).unwrap();
        for _ in 0..5 {
            assert_eq!(l.admit(&lim, now).unwrap_err().kind, LimitKind::Concurrent);
        }
        drop(held);
        assert_eq!(
            l.admit(&lim, now).unwrap_err().kind,
            LimitKind::RequestsPerMinute
        );
        let free = Arc::new(Limiter::default());
        let permits: Vec<_> = (0..1000)
            .map(|_| free.admit(&Limits::default(), now).unwrap())
            .collect();
        assert_eq!(free.in_flight(), 1000);
        drop(permits);
        assert_eq!(free.in_flight(), 0);
    }
}
