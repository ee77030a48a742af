//! A [`RetryPolicy`] as the official Google clients' retry, backoff and throttling
//! policies: their own loop does the trying (it knows its transport), but what it asks
//! again, how long it pauses and when it stops are ours.
//!
//! gax asks its retry policy after each failure (`on_error`), then its backoff policy
//! for the pause (`on_failure`); the pause is drawn once, in `on_error`, so that the
//! window is checked against the pause really taken. When the client's throttler holds
//! an attempt back after many failures (`on_throttle`), the window still ends the
//! loop (the shorter one too, while every attempt failed fast), or a fallback would
//! wait for the whole deadline.
//!
//! gax tells a policy of each failure but not when each attempt began: the fast-failure
//! window takes an attempt to have begun when the pause after the one before ended.

use super::{Next, RetryPolicy, Stop, Streak, Verdict};
use google_cloud_gax::backoff_policy::{BackoffPolicy, BackoffPolicyArg};
use google_cloud_gax::error::Error;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::retry_policy::RetryPolicyArg;
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_gax::throttle_result::ThrottleResult;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// gax's policies for one call, made from a [`RetryPolicy`]: see
/// [`RetryPolicy::for_gax`].
#[derive(Debug)]
pub struct GaxPolicies {
    retry: GaxRetry,
    backoff: GaxBackoff,
}

impl RetryPolicy {
    /// The policies of one call through an official Google client that may take
    /// `deadline` in all (each attempt gets what is left of it), its failures judged
    /// by `classify`. Made afresh for each call: they remember the call's last pause.
    pub fn for_gax(&self, classify: fn(&Error) -> Verdict, deadline: Duration) -> GaxPolicies {
        let pause = Arc::new(Mutex::new(None));
        GaxPolicies {
            retry: GaxRetry {
                policy: *self,
                classify,
                deadline,
                pause: Arc::clone(&pause),
                tally: Mutex::default(),
            },
            backoff: GaxBackoff { pause },
        }
    }
}

impl GaxPolicies {
    /// The request with these policies in its options.
    pub fn apply<R: RequestOptionsBuilder>(self, request: R) -> R {
        request
            .with_retry_policy(RetryPolicyArg::from(self.retry))
            .with_backoff_policy(BackoffPolicyArg::from(self.backoff))
    }
}

/// The pause `on_error` drew, for `on_failure` to give.
type Pause = Arc<Mutex<Option<Duration>>>;

#[derive(Debug)]
struct GaxRetry {
    policy: RetryPolicy,
    classify: fn(&Error) -> Verdict,
    deadline: Duration,
    pause: Pause,
    tally: Mutex<Tally>,
}

/// What the fast-failure limit needs to know of the call so far.
#[derive(Debug, Default)]
struct Tally {
    streak: Streak,
    /// When gax last told of a failure or held an attempt back, and the pause it then
    /// took: the next attempt began after both.
    last: Option<(Instant, Duration)>,
}

#[derive(Debug)]
struct GaxBackoff {
    pause: Pause,
}

impl google_cloud_gax::retry_policy::RetryPolicy for GaxRetry {
    fn on_error(&self, state: &RetryState, error: Error) -> RetryResult {
        let verdict = (self.classify)(&error);
        let now = Instant::now();
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let began = tally.last.map_or(state.start, |(at, pause)| {
            at.checked_add(pause).unwrap_or(at)
        });
        tally.streak = tally
            .streak
            .after(&self.policy, now.saturating_duration_since(began));
        let next = self.policy.next_after(
            verdict,
            state.attempt_count,
            state.start.elapsed(),
            tally.streak,
        );
        match next {
            Next::After(pause) => {
                // An event of the agent call's span, when traces are exported.
                tracing::info!(
                    target: crate::telemetry::SPANS,
                    attempt = state.attempt_count,
                    pause_ms = pause.as_millis() as u64,
                    "retry"
                );
                tally.last = Some((now, pause));
                *self.pause.lock().unwrap_or_else(PoisonError::into_inner) = Some(pause);
                RetryResult::Continue(error)
            }
            Next::Stop(Stop::Final) => RetryResult::Permanent(error),
            Next::Stop(Stop::Attempts | Stop::Window | Stop::FastFailures) => {
                RetryResult::Exhausted(error)
            }
        }
    }

    fn on_throttle(&self, state: &RetryState, error: Error) -> ThrottleResult {
        let attempts_left = self
            .policy
            .attempt_limit()
            .is_none_or(|limit| state.attempt_count < limit);
        let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let closed = self
            .policy
            .window_closed_after(state.start.elapsed(), tally.streak);
        if !attempts_left || closed.is_some() {
            return ThrottleResult::Exhausted(error);
        }
        // No attempt was made, and none failed: the next one begins after the same pause
        // again (gax asks the backoff policy, which gives the last pause drawn).
        if let Some((at, _)) = &mut tally.last {
            *at = Instant::now();
        }
        ThrottleResult::Continue(error)
    }

    fn remaining_time(&self, state: &RetryState) -> Option<Duration> {
        Some(self.deadline.saturating_sub(state.start.elapsed()))
    }
}

impl BackoffPolicy for GaxBackoff {
    fn on_failure(&self, _state: &RetryState) -> Duration {
        self.pause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Backoff as Pace;
    use google_cloud_gax::error::rpc::{Code, Status};
    use google_cloud_gax::retry_policy::RetryPolicy as _;
    use std::time::Instant;

    fn classify(error: &Error) -> Verdict {
        match error.status().map(|s| s.code) {
            Some(Code::Unavailable) => Verdict::Retry,
            Some(Code::ResourceExhausted) => Verdict::Throttled,
            _ => Verdict::Final,
        }
    }

    fn status(code: Code) -> Error {
        Error::service(Status::default().set_code(code))
    }

    fn policies() -> GaxPolicies {
        RetryPolicy::new(Pace::exponential(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .with_throttled_backoff(Pace::exponential(
            Duration::from_millis(500),
            Duration::from_secs(5),
        ))
        .with_time_limit(Duration::from_secs(15))
        .for_gax(classify, Duration::from_secs(35))
    }

    #[test]
    fn gax_pauses_as_the_policy_says_for_each_failure() {
        let GaxPolicies { retry, backoff } = policies();
        let now = RetryState::new(false).set_attempt_count(1u32);
        assert!(retry
            .on_error(&now, status(Code::Unavailable))
            .is_continue());
        let pause = backoff.on_failure(&now);
        assert!(
            (Duration::from_millis(80)..=Duration::from_millis(100)).contains(&pause),
            "{pause:?}"
        );
        assert!(retry
            .on_error(&now, status(Code::ResourceExhausted))
            .is_continue());
        let pause = backoff.on_failure(&now);
        assert!(
            (Duration::from_millis(400)..=Duration::from_millis(500)).contains(&pause),
            "{pause:?}"
        );
        assert!(matches!(
            retry.on_error(&now, status(Code::Internal)),
            RetryResult::Permanent(_)
        ));
    }

    #[test]
    fn gax_asks_again_within_the_window_only_and_attempts_have_the_deadline() {
        let GaxPolicies { retry, .. } = policies();
        let now = RetryState::new(false).set_attempt_count(1u32);
        let late = now
            .clone()
            .set_start(Instant::now() - Duration::from_secs(15));
        assert!(matches!(
            retry.on_error(&late, status(Code::Unavailable)),
            RetryResult::Exhausted(_)
        ));
        // A slow answer still has the whole deadline.
        assert!(retry.remaining_time(&now) > Some(Duration::from_secs(30)));
    }

    #[test]
    fn gax_has_the_shorter_window_while_every_attempt_fails_fast() {
        let GaxPolicies { retry, .. } = RetryPolicy::new(Pace::NONE)
            .with_time_limit(Duration::from_secs(15))
            .with_fast_failure_window(Duration::from_secs(3), Duration::from_secs(1))
            .for_gax(classify, Duration::from_secs(35));
        let now = RetryState::new(false).set_attempt_count(1u32);
        assert!(retry
            .on_error(&now, status(Code::Unavailable))
            .is_continue());
        let later = now
            .clone()
            .set_start(Instant::now() - Duration::from_secs(4));
        // The client's throttler held the next attempt back: the window still holds.
        assert!(matches!(
            retry.on_throttle(&later, status(Code::Unavailable)),
            ThrottleResult::Exhausted(_)
        ));
        assert!(matches!(
            retry.on_error(&later.set_attempt_count(2u32), status(Code::Unavailable)),
            RetryResult::Exhausted(_)
        ));
        // An attempt that took 2 s: the agent was at work, the long window holds.
        let GaxPolicies { retry, .. } = RetryPolicy::new(Pace::NONE)
            .with_time_limit(Duration::from_secs(15))
            .with_fast_failure_window(Duration::from_secs(3), Duration::from_secs(1))
            .for_gax(classify, Duration::from_secs(35));
        let slow = RetryState::new(false)
            .set_attempt_count(1u32)
            .set_start(Instant::now() - Duration::from_secs(4));
        assert!(retry
            .on_error(&slow, status(Code::Unavailable))
            .is_continue());
    }

    #[test]
    fn the_window_holds_when_the_throttler_holds_attempts_back() {
        let GaxPolicies { retry, .. } = policies();
        let now = RetryState::new(false).set_attempt_count(3u32);
        assert!(matches!(
            retry.on_throttle(&now, status(Code::Unavailable)),
            ThrottleResult::Continue(_)
        ));
        let late = now
            .clone()
            .set_start(Instant::now() - Duration::from_secs(16));
        assert!(matches!(
            retry.on_throttle(&late, status(Code::Unavailable)),
            ThrottleResult::Exhausted(_)
        ));
        let limited = RetryPolicy::new(Pace::NONE)
            .with_attempt_limit(3)
            .for_gax(classify, Duration::from_secs(35));
        assert!(matches!(
            limited.retry.on_throttle(&now, status(Code::Unavailable)),
            ThrottleResult::Exhausted(_)
        ));
    }
}
