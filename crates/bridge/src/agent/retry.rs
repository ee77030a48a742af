//! Why an agent call failed, and whether to ask again: one table, from facts the
//! official client reports (the gRPC status, the HTTP status of Google's front end,
//! a timeout, an answer that cannot be read).
//!
//! | class | what the client saw | asked again |
//! |---|---|---|
//! | `UNAVAILABLE` | gRPC UNAVAILABLE; HTTP 502, 503 or 504 from the front end (often an HTML page) | yes, backoff from 100 ms to 2 s |
//! | `RESOURCE_EXHAUSTED` | gRPC RESOURCE_EXHAUSTED; HTTP 429 | yes, backoff from 500 ms to 5 s |
//! | `CONNECTION` | the request could not be sent (refused, DNS) | yes, as `UNAVAILABLE`: the agent never saw it |
//! | `CONNECTION` | the connection broke after the request went out | no: the agent may have taken the turn |
//! | `TIMEOUT` | no answer in time | no: time is up |
//! | `BAD_RESPONSE` | an answer that is not Dialogflow's (garbage, cut short) | no |
//! | `PERMISSION_DENIED`, `NOT_FOUND`, `INVALID_ARGUMENT`, … | any other gRPC status, or its HTTP equivalent | no |
//! | `AUTHENTICATION` | no Google credentials | no |
//!
//! Failures are asked again only within `AGENT_RETRY_WINDOW` (default
//! [`DEFAULT_RETRY_WINDOW`]) of the first attempt, so that a person whose agent keeps
//! failing fast hears the fallback message within seconds, while a single slow answer
//! may still take the whole `AGENT_TIMEOUT`.

use google_cloud_gax::backoff_policy::BackoffPolicy;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::error::Error;
use google_cloud_gax::retry_policy::RetryPolicy;
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_gax::throttle_result::ThrottleResult;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long after the first attempt a failure may still be asked again.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(15);

/// What kind of failure an agent call ended in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    Unavailable,
    ResourceExhausted,
    /// Could not be sent: nothing reached the agent.
    NotSent,
    /// Broke after the request went out.
    Connection,
    Timeout,
    BadResponse,
    Authentication,
    /// Any other gRPC status.
    Status(Code),
}

impl Failure {
    /// Classifies what the official client reported.
    pub fn of(error: &Error) -> Self {
        if let Some(status) = error.status() {
            return match status.code {
                Code::Unavailable => Failure::Unavailable,
                Code::ResourceExhausted => Failure::ResourceExhausted,
                Code::DeadlineExceeded => Failure::Timeout,
                code => Failure::Status(code),
            };
        }
        if let Some(http) = error.http_status_code() {
            return match http {
                502..=504 => Failure::Unavailable,
                429 => Failure::ResourceExhausted,
                408 => Failure::Timeout,
                400 => Failure::Status(Code::InvalidArgument),
                401 => Failure::Status(Code::Unauthenticated),
                403 => Failure::Status(Code::PermissionDenied),
                404 => Failure::Status(Code::NotFound),
                409 => Failure::Status(Code::Aborted),
                501 => Failure::Status(Code::Unimplemented),
                _ => Failure::Status(Code::Internal),
            };
        }
        if error.is_timeout() {
            return Failure::Timeout;
        }
        if error.is_deserialization() {
            return Failure::BadResponse;
        }
        if error.is_authentication() {
            return Failure::Authentication;
        }
        if error.is_exhausted() {
            // A policy gave up: what counts is the failure it gave up on.
            if let Some(inner) =
                std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>())
            {
                return Failure::of(inner);
            }
        }
        // What the client calls transient and before the call (refused, DNS): never
        // reached the agent.
        if error.is_transient_and_before_rpc() {
            return Failure::NotSent;
        }
        Failure::Connection
    }

    /// For logs and metrics (`fallback_reason`, `agent_errors_total{status}`).
    pub fn label(self) -> &'static str {
        match self {
            Failure::Unavailable => "UNAVAILABLE",
            Failure::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Failure::NotSent | Failure::Connection => "CONNECTION",
            Failure::Timeout => "TIMEOUT",
            Failure::BadResponse => "BAD_RESPONSE",
            Failure::Authentication => "AUTHENTICATION",
            Failure::Status(code) => code.name(),
        }
    }

    /// The pause before asking again after the `attempt`-th failure, or `None` if this
    /// failure is not asked again.
    pub fn backoff(self, attempt: u32) -> Option<Duration> {
        let (first, most) = match self {
            Failure::Unavailable | Failure::NotSent => {
                (Duration::from_millis(100), Duration::from_secs(2))
            }
            Failure::ResourceExhausted => (Duration::from_millis(500), Duration::from_secs(5)),
            _ => return None,
        };
        let scaled = first.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
        Some(scaled.min(most))
    }
}

/// The retry policy of one call: asks again what [`Failure::backoff`] allows, within
/// the retry window, and lets each attempt use what is left of `timeout`. It remembers
/// the last failure for [`Backoff`].
#[derive(Debug)]
pub struct Policy {
    window: Duration,
    timeout: Duration,
    last: Arc<Mutex<Option<Failure>>>,
}

/// The backoff of one call, chosen by the failure its [`Policy`] saw last.
#[derive(Debug)]
pub struct Backoff {
    last: Arc<Mutex<Option<Failure>>>,
}

/// The policies of one call that may take `timeout` in all, asking again within
/// `window`.
pub fn policies(timeout: Duration, window: Duration) -> (Policy, Backoff) {
    let last = Arc::new(Mutex::new(None));
    (
        Policy {
            window: window.min(timeout),
            timeout,
            last: Arc::clone(&last),
        },
        Backoff { last },
    )
}

impl RetryPolicy for Policy {
    fn on_error(&self, state: &RetryState, error: Error) -> RetryResult {
        let failure = Failure::of(&error);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
        let Some(pause) = failure.backoff(state.attempt_count) else {
            return RetryResult::Permanent(error);
        };
        // The last attempt starts within the window (which is within the timeout).
        if state.start.elapsed() + pause >= self.window {
            return RetryResult::Exhausted(error);
        }
        RetryResult::Continue(error)
    }

    /// The client's throttler may hold an attempt back after many failures: past the
    /// window, that ends the loop too, or the fallback would wait for the timeout.
    fn on_throttle(&self, state: &RetryState, error: Error) -> ThrottleResult {
        if state.start.elapsed() >= self.window {
            return ThrottleResult::Exhausted(error);
        }
        ThrottleResult::Continue(error)
    }

    fn remaining_time(&self, state: &RetryState) -> Option<Duration> {
        Some(self.timeout.saturating_sub(state.start.elapsed()))
    }
}

impl BackoffPolicy for Backoff {
    fn on_failure(&self, state: &RetryState) -> Duration {
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.and_then(|failure| failure.backoff(state.attempt_count))
            .unwrap_or(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;

    fn status(code: Code) -> Error {
        Error::service(Status::default().set_code(code))
    }

    fn http(code: u16) -> Error {
        Error::http(code, Default::default(), "<html>Bad Gateway</html>".into())
    }

    #[test]
    fn failures_are_classed_from_what_the_client_saw() {
        assert_eq!(
            Failure::of(&status(Code::Unavailable)),
            Failure::Unavailable
        );
        assert_eq!(Failure::of(&http(502)), Failure::Unavailable);
        assert_eq!(Failure::of(&http(503)), Failure::Unavailable);
        assert_eq!(Failure::of(&http(504)), Failure::Unavailable);
        assert_eq!(Failure::of(&http(429)), Failure::ResourceExhausted);
        assert_eq!(
            Failure::of(&status(Code::ResourceExhausted)),
            Failure::ResourceExhausted
        );
        assert_eq!(Failure::of(&http(403)).label(), "PERMISSION_DENIED");
        assert_eq!(Failure::of(&status(Code::NotFound)).label(), "NOT_FOUND");
        assert_eq!(
            Failure::of(&Error::deser("not JSON")).label(),
            "BAD_RESPONSE"
        );
        assert_eq!(Failure::of(&Error::timeout("slow")).label(), "TIMEOUT");
    }

    #[test]
    fn only_what_the_agent_did_not_take_is_asked_again_with_its_own_backoff() {
        assert!(Failure::Unavailable.backoff(1) < Failure::ResourceExhausted.backoff(1));
        assert_eq!(
            Failure::ResourceExhausted.backoff(9),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            Failure::Unavailable.backoff(9),
            Some(Duration::from_secs(2))
        );
        for failure in [
            Failure::Connection,
            Failure::Timeout,
            Failure::BadResponse,
            Failure::Status(Code::InvalidArgument),
            Failure::Status(Code::Internal),
            Failure::Status(Code::PermissionDenied),
        ] {
            assert_eq!(failure.backoff(1), None, "{failure:?}");
        }
    }

    #[test]
    fn failures_are_asked_again_within_the_window_only() {
        let (policy, backoff) = policies(Duration::from_secs(35), DEFAULT_RETRY_WINDOW);
        let now = RetryState::new(false).set_attempt_count(1u32);
        assert!(policy.on_error(&now, http(502)).is_continue());
        assert_eq!(backoff.on_failure(&now), Duration::from_millis(100));
        assert!(policy.on_error(&now, http(429)).is_continue());
        assert_eq!(backoff.on_failure(&now), Duration::from_millis(500));
        let late = now
            .clone()
            .set_start(std::time::Instant::now() - Duration::from_secs(15));
        assert!(matches!(
            policy.on_error(&late, http(502)),
            RetryResult::Exhausted(_)
        ));
        assert!(matches!(
            policy.on_error(&now, http(500)),
            RetryResult::Permanent(_)
        ));
        // A slow answer still has the whole timeout.
        assert!(policy.remaining_time(&now) > Some(Duration::from_secs(30)));
    }
}
