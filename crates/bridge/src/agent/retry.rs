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
//! may still take the whole `AGENT_TIMEOUT`. The pauses have jitter, and the official
//! client's own loop does the asking: [`policy`] is turned into its retry and backoff
//! policies by [`crate::retry::gax`].
//!
//! An agent that is down for the turn is not asked for the whole window: while every
//! attempt has failed within [`FAST_FAILURE`] of its start (a front end answering 503
//! at once, a refused connection), no attempt starts [`FAST_FAILURE_WINDOW`] or more
//! after the first. With the table's pauses that is six attempts over about 3 s (at
//! 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s, less the jitter), long enough for a blip to pass,
//! while an agent failing at once on every call gives the person the fallback within
//! seconds in every reply mode, rather than at the end of the 15 s window (or, in
//! twiml mode, of the 10 s timeout). It is a window rather than a count because the
//! official client holds retries back after failures (its adaptive throttler): time
//! is what the person waits. Once an attempt took longer (the agent was at work, then
//! failed), the whole `AGENT_RETRY_WINDOW` holds.

use crate::retry::{Backoff, RetryPolicy, Verdict};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::error::Error;
use std::time::Duration;

/// How long after the first attempt a failure may still be asked again: a setting
/// (`AGENT_RETRY_WINDOW`), so its default lives with the settings.
pub use crate::config::DEFAULT_RETRY_WINDOW;

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

    /// The class a label names (the inverse of [`Failure::label`]; `CONNECTION` reads
    /// as a broken connection, the two share it).
    fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "UNAVAILABLE" => Failure::Unavailable,
            "RESOURCE_EXHAUSTED" => Failure::ResourceExhausted,
            "CONNECTION" => Failure::Connection,
            "TIMEOUT" => Failure::Timeout,
            "BAD_RESPONSE" => Failure::BadResponse,
            "AUTHENTICATION" => Failure::Authentication,
            other => Failure::Status(Code::try_from(other).ok()?),
        })
    }

    /// Whether this failure is asked again, and at which pace: the table above.
    pub fn verdict(self) -> Verdict {
        match self {
            Failure::Unavailable | Failure::NotSent => Verdict::Retry,
            Failure::ResourceExhausted => Verdict::Throttled,
            _ => Verdict::Final,
        }
    }

    /// [`Failure::verdict`] of what the official client reported.
    pub fn verdict_of(error: &Error) -> Verdict {
        Failure::of(error).verdict()
    }
}

/// Why a person got the fallback message instead of the agent's answer. Its label is
/// what logs (`fallback_reason`) and stored outcomes say; the labels are those of
/// [`Failure`] plus the bridge's own reasons.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum FallbackReason {
    /// The agent call failed, of this class (never [`Failure::Timeout`]: that is
    /// [`FallbackReason::Timeout`]).
    Agent(Failure),
    /// No answer in time: the agent's own timeout, or the turn's deadline.
    Timeout,
    /// The Dialogflow client could not be made.
    Client,
    /// The turn's task panicked: the webhook answers with the fallback.
    Panic,
    /// The server stopped before the agent answered, with no other way to reply.
    Shutdown,
    /// The turn went away without an answer (its task was dropped).
    Abandoned,
}

impl FallbackReason {
    /// The reason of a failed call of class `failure`.
    pub fn of(failure: Failure) -> Self {
        match failure {
            Failure::Timeout => FallbackReason::Timeout,
            failure => FallbackReason::Agent(failure),
        }
    }

    /// For logs and metrics: a fixed set of labels.
    pub fn label(self) -> &'static str {
        match self {
            FallbackReason::Agent(failure) => failure.label(),
            FallbackReason::Timeout => "TIMEOUT",
            FallbackReason::Client => "CLIENT",
            FallbackReason::Panic => "PANIC",
            FallbackReason::Shutdown => "SHUTDOWN",
            FallbackReason::Abandoned => "ABANDONED",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "CLIENT" => FallbackReason::Client,
            "PANIC" => FallbackReason::Panic,
            "SHUTDOWN" => FallbackReason::Shutdown,
            "ABANDONED" => FallbackReason::Abandoned,
            other => FallbackReason::of(Failure::from_label(other)?),
        })
    }
}

impl From<FallbackReason> for String {
    fn from(reason: FallbackReason) -> Self {
        reason.label().to_owned()
    }
}

impl TryFrom<String> for FallbackReason {
    type Error = String;

    fn try_from(label: String) -> Result<Self, Self::Error> {
        FallbackReason::from_label(&label)
            .ok_or_else(|| format!("no fallback reason is labelled {label:?}"))
    }
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// While every attempt failed fast, none starts this long or longer after the first:
/// the agent is down for this turn.
pub const FAST_FAILURE_WINDOW: Duration = Duration::from_secs(4);

/// A failure that came back within this long of its attempt's start is fast: no agent
/// was at work on it.
pub const FAST_FAILURE: Duration = Duration::from_secs(1);

/// The agent's retry policy: the table's pauses, within `window` of the first attempt,
/// or [`FAST_FAILURE_WINDOW`] while every attempt fails fast.
pub fn policy(window: Duration) -> RetryPolicy {
    RetryPolicy::new(Backoff::exponential(
        Duration::from_millis(100),
        Duration::from_secs(2),
    ))
    .with_throttled_backoff(Backoff::exponential(
        Duration::from_millis(500),
        Duration::from_secs(5),
    ))
    .with_time_limit(window)
    .with_fast_failure_window(FAST_FAILURE_WINDOW, FAST_FAILURE)
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
    fn fallback_reasons_keep_their_labels_and_read_back_from_them() {
        let reasons = [
            FallbackReason::of(Failure::Unavailable),
            FallbackReason::of(Failure::Status(Code::PermissionDenied)),
            FallbackReason::of(Failure::Timeout),
            FallbackReason::Client,
            FallbackReason::Panic,
            FallbackReason::Shutdown,
            FallbackReason::Abandoned,
        ];
        let labels: Vec<&str> = reasons.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "UNAVAILABLE",
                "PERMISSION_DENIED",
                "TIMEOUT",
                "CLIENT",
                "PANIC",
                "SHUTDOWN",
                "ABANDONED"
            ]
        );
        for reason in reasons {
            let stored = serde_json::to_string(&reason).unwrap();
            assert_eq!(
                serde_json::from_str::<FallbackReason>(&stored).unwrap(),
                reason
            );
        }
        assert!(serde_json::from_str::<FallbackReason>("\"NOPE\"").is_err());
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
    fn only_what_the_agent_did_not_take_is_asked_again_at_its_own_pace() {
        assert_eq!(Failure::Unavailable.verdict(), Verdict::Retry);
        assert_eq!(Failure::NotSent.verdict(), Verdict::Retry);
        assert_eq!(Failure::ResourceExhausted.verdict(), Verdict::Throttled);
        assert_eq!(Failure::verdict_of(&http(502)), Verdict::Retry);
        for failure in [
            Failure::Connection,
            Failure::Timeout,
            Failure::BadResponse,
            Failure::Authentication,
            Failure::Status(Code::InvalidArgument),
            Failure::Status(Code::Internal),
            Failure::Status(Code::PermissionDenied),
        ] {
            assert_eq!(failure.verdict(), Verdict::Final, "{failure:?}");
        }
    }

    #[test]
    fn a_throttled_agent_waits_longer_and_every_pause_has_its_ceiling() {
        use crate::retry::{Next, Stop};
        let policy = policy(DEFAULT_RETRY_WINDOW);
        let pause = |verdict, failures| match policy.next(verdict, failures, Duration::ZERO) {
            Next::After(pause) => pause,
            Next::Stop(stop) => panic!("stopped: {stop:?}"),
        };
        for _ in 0..50 {
            assert!(pause(Verdict::Retry, 1) <= Duration::from_millis(100));
            // At least 400 ms: a 429 waits longer than any first UNAVAILABLE pause.
            assert!(pause(Verdict::Throttled, 1) >= Duration::from_millis(400));
            assert!(pause(Verdict::Retry, 9) <= Duration::from_secs(2));
            assert!(pause(Verdict::Throttled, 9) <= Duration::from_secs(5));
        }
        assert_eq!(
            policy.next(Verdict::Retry, 1, DEFAULT_RETRY_WINDOW),
            Next::Stop(Stop::Window)
        );
    }

    #[test]
    fn an_agent_failing_at_once_every_time_is_down_for_the_turn_within_seconds() {
        use crate::retry::{Next, Stop, Streak};
        let policy = policy(DEFAULT_RETRY_WINDOW);
        let fast = Duration::from_millis(30);
        let (mut streak, mut elapsed, mut attempts) = (Streak::default(), Duration::ZERO, 0);
        let stop = loop {
            attempts += 1;
            elapsed += fast;
            streak = streak.after(&policy, fast);
            match policy.next_after(Verdict::Retry, attempts, elapsed, streak) {
                Next::After(pause) => elapsed += pause,
                Next::Stop(stop) => break stop,
            }
        };
        assert_eq!(stop, Stop::FastFailures);
        assert!((5..=7).contains(&attempts), "{attempts} attempts");
        assert!(elapsed < FAST_FAILURE_WINDOW, "{elapsed:?}");
        // An agent at work on an attempt is asked again within the whole window.
        let slow = streak.after(&policy, FAST_FAILURE);
        assert!(!slow.all_fast());
        assert!(matches!(
            policy.next_after(Verdict::Retry, attempts, elapsed, slow),
            Next::After(_)
        ));
    }
}
