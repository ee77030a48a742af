//! One retry policy for every call the bridge makes again: the agent (through the
//! official client's own loop, see [`gax`]), Twilio's Messages API, the hand-over
//! destination and the shared state store.
//!
//! A [`RetryPolicy`] says how often and for how long: an attempt limit, a time window
//! in which another attempt may still start, and the pauses between attempts
//! ([`Backoff`]: initial, maximum, multiplier, with jitter, so that the instances that
//! failed together do not come back together). Limits compose as google-cloud-rust's
//! gax policies do: `with_attempt_limit` and `with_time_limit` keep the tighter of
//! two. What is worth another try is each call's own business: its [`Classify`] gives
//! every failure a [`Verdict`] (`Retry`, `Throttled`, `RetryAfter`, `Final`), since
//! only the call knows whether its request may have been taken already.
//!
//! A third limit, `with_fast_failure_window`, ends the trying early when the other side
//! is down rather than passing through a blip: while every attempt has failed at once,
//! a shorter window holds, since failures that keep coming back at once say the next
//! will too, and the caller had better give its answer for failure now than at the end
//! of the long window. Once an attempt took longer (the other side was at work), the
//! long window holds. It is a window, not a count, because a client may hold attempts
//! back (gax's throttler does after failures): time is what the caller waits.
//!
//! [`RetryPolicy::run`] is the one loop: it makes the attempts, sleeps, keeps the
//! limits, and tells an optional observer of each retry (for logs and metrics).

pub mod gax;

use rand::RngExt;
use std::future::Future;
use std::time::Duration;

/// The pauses between attempts: `initial` after the first failure, then each one
/// `multiplier` times the one before, never more than `max`; with jitter, each pause is
/// drawn from the top `jitter` fraction of that (`[(1 - jitter) × pause, pause]`).
///
/// The jitter takes from the pause rather than adding to it, so that `max` is a real
/// maximum and the window's arithmetic holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Backoff {
    /// The fraction of each pause left to chance unless said otherwise: enough to
    /// spread instances apart, little enough that a pause keeps its meaning (a 429 still
    /// waits longer than a 502).
    pub const DEFAULT_JITTER: f64 = 0.2;

    /// No pause at all: the next attempt at once.
    pub const NONE: Backoff = Backoff::constant(Duration::ZERO);

    /// Doubling pauses from `initial` up to `max`, with the default jitter.
    pub const fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            multiplier: 2.0,
            jitter: Self::DEFAULT_JITTER,
        }
    }

    /// The same pause every time, with the default jitter.
    pub const fn constant(pause: Duration) -> Self {
        Self {
            initial: pause,
            max: pause,
            multiplier: 1.0,
            jitter: Self::DEFAULT_JITTER,
        }
    }

    /// Each pause `multiplier` times the one before; below 1 (or not a number) is 1.
    pub const fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier >= 1.0 { multiplier } else { 1.0 };
        self
    }

    /// The fraction of each pause left to chance, from 0 (none) to 1 (anywhere from
    /// nothing to the whole pause, as gax's `ExponentialBackoff` does).
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter >= 1.0 {
            1.0
        } else if jitter > 0.0 {
            jitter
        } else {
            0.0
        };
        self
    }

    /// The pause after `failures` failures in a row (1 for the first), before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let max = self.max.max(self.initial);
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let scaling = self.multiplier.powi(exponent);
        // Compared before multiplying: `mul_f64` panics past `Duration::MAX`.
        if scaling >= max.div_duration_f64(self.initial) {
            max
        } else {
            self.initial.mul_f64(scaling)
        }
    }

    /// The pause after `failures` failures in a row, with jitter.
    pub fn pause(&self, failures: u32) -> Duration {
        self.pause_with(failures, &mut rand::rng())
    }

    fn pause_with(&self, failures: u32, rng: &mut impl rand::Rng) -> Duration {
        let delay = self.delay(failures);
        if self.jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        rng.random_range(delay.mul_f64(1.0 - self.jitter)..=delay)
    }
}

/// What a failure means for the next attempt: the call's own judgement (see
/// [`Classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transient: try again after the policy's backoff.
    Retry,
    /// The other side is overloaded (HTTP 429, `RESOURCE_EXHAUSTED`): try again after
    /// the policy's backoff for throttling, which may be slower.
    Throttled,
    /// The other side said when (`Retry-After`): try again after that long, or after
    /// the backoff for throttling if that is longer; never past the window.
    RetryAfter(Duration),
    /// Another try would fail the same way, or must not be made (the request may have
    /// been taken): stop now.
    Final,
}

/// Which failures of a call are transient and which are final.
pub trait Classify<E> {
    fn classify(&self, error: &E) -> Verdict;
}

impl<E, F> Classify<E> for F
where
    F: Fn(&E) -> Verdict,
{
    fn classify(&self, error: &E) -> Verdict {
        self(error)
    }
}

/// Every failure is worth another try (within the policy's limits).
pub fn always<E>(_: &E) -> Verdict {
    Verdict::Retry
}

/// How often and for how long a call is tried: see the [module](self).
///
/// With no limit it tries transient failures forever; `with_attempt_limit` and
/// `with_time_limit` bound it, and applied twice keep the tighter bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// At most this many attempts, the first included.
    attempts: Option<u32>,
    /// No attempt starts this long or longer after the first one started.
    window: Option<Duration>,
    backoff: Backoff,
    /// After a [`Verdict::Throttled`] or [`Verdict::RetryAfter`].
    throttled: Backoff,
    /// The shorter window while every attempt fails fast.
    fast_failures: Option<FastFailures>,
}

/// The limit of [`RetryPolicy::with_fast_failure_window`]: while every attempt failed
/// within `fast` of its start, no attempt starts `window` or more after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastFailures {
    pub window: Duration,
    pub fast: Duration,
}

/// Whether every attempt of a call so far failed fast, for
/// [`RetryPolicy::with_fast_failure_window`]: kept by the loop that makes the attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    slow: bool,
}

impl Streak {
    /// The streak after a failed attempt that took `took`: broken for good if that was
    /// not fast by `policy`'s measure.
    pub fn after(self, policy: &RetryPolicy, took: Duration) -> Self {
        Self {
            slow: self.slow || policy.fast_failures.is_none_or(|limit| took >= limit.fast),
        }
    }

    /// Whether every attempt so far failed fast.
    pub fn all_fast(self) -> bool {
        !self.slow
    }
}

/// Why [`RetryPolicy::run`] stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The failure was final.
    Final,
    /// The attempt limit was reached.
    Attempts,
    /// The next attempt would have started past the time window.
    Window,
    /// Every attempt failed at once, and the next would have started past the window
    /// for that: the other side is down for now.
    FastFailures,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this pause.
    After(Duration),
    Stop(Stop),
}

/// A call given up on: the last attempt's failure, how many attempts were made, why
/// there was no other.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: u32,
    pub stop: Stop,
}

/// A failed attempt about to be tried again, for an observer.
#[derive(Debug)]
pub struct Retrying<'a, E> {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    pub error: &'a E,
    /// How long until the next attempt.
    pub pause: Duration,
}

impl RetryPolicy {
    /// No limits, `backoff` between attempts (and after throttling, unless
    /// [`RetryPolicy::with_throttled_backoff`] says otherwise).
    pub const fn new(backoff: Backoff) -> Self {
        Self {
            attempts: None,
            window: None,
            backoff,
            throttled: backoff,
            fast_failures: None,
        }
    }

    /// At most `attempts` attempts in all (at least one), or fewer if already limited
    /// to fewer.
    pub const fn with_attempt_limit(mut self, attempts: u32) -> Self {
        let attempts = if attempts == 0 { 1 } else { attempts };
        self.attempts = match self.attempts {
            Some(limit) if limit < attempts => Some(limit),
            _ => Some(attempts),
        };
        self
    }

    /// No attempt starts `window` or more after the first started (an attempt under
    /// way is not cut short), or sooner if already limited to a shorter window.
    pub const fn with_time_limit(mut self, window: Duration) -> Self {
        self.window = match self.window {
            Some(limit) if limit.as_nanos() < window.as_nanos() => Some(limit),
            _ => Some(window),
        };
        self
    }

    /// While every attempt has failed within `fast` of its start, no attempt starts
    /// `window` or more after the first (or sooner if already limited to a shorter
    /// one).
    pub const fn with_fast_failure_window(mut self, window: Duration, fast: Duration) -> Self {
        self.fast_failures = match self.fast_failures {
            Some(limit) if limit.window.as_nanos() < window.as_nanos() => Some(limit),
            _ => Some(FastFailures { window, fast }),
        };
        self
    }

    /// The pauses after the other side asked to slow down.
    pub const fn with_throttled_backoff(mut self, throttled: Backoff) -> Self {
        self.throttled = throttled;
        self
    }

    /// The attempt limit, if any.
    pub fn attempt_limit(&self) -> Option<u32> {
        self.attempts
    }

    /// The time window, if any.
    pub fn time_limit(&self) -> Option<Duration> {
        self.window
    }

    /// The fast-failure limit, if any.
    pub fn fast_failure_limit(&self) -> Option<FastFailures> {
        self.fast_failures
    }

    /// What follows `attempts` attempts, the last of which failed as `verdict` says,
    /// `elapsed` after the first started.
    pub fn next(&self, verdict: Verdict, attempts: u32, elapsed: Duration) -> Next {
        // Nothing told of how fast the attempts failed: the long window.
        self.next_after(verdict, attempts, elapsed, Streak { slow: true })
    }

    /// As [`RetryPolicy::next`], the attempts having failed fast or not as `streak`
    /// (the last one counted) says.
    pub fn next_after(
        &self,
        verdict: Verdict,
        attempts: u32,
        elapsed: Duration,
        streak: Streak,
    ) -> Next {
        let pause = match verdict {
            Verdict::Final => return Next::Stop(Stop::Final),
            Verdict::Retry => self.backoff.pause(attempts),
            Verdict::Throttled => self.throttled.pause(attempts),
            Verdict::RetryAfter(after) => after.max(self.throttled.pause(attempts)),
        };
        if self.attempts.is_some_and(|limit| attempts >= limit) {
            return Next::Stop(Stop::Attempts);
        }
        match self.window_closed_after(elapsed.saturating_add(pause), streak) {
            Some(stop) => Next::Stop(stop),
            None => Next::After(pause),
        }
    }

    /// Whether an attempt starting `elapsed` after the first would be past the window.
    pub fn window_closed(&self, elapsed: Duration) -> bool {
        self.window.is_some_and(|window| elapsed >= window)
    }

    /// Which window, if any, an attempt starting `elapsed` after the first would be
    /// past, the attempts so far having failed as `streak` says.
    pub fn window_closed_after(&self, elapsed: Duration, streak: Streak) -> Option<Stop> {
        if self.window_closed(elapsed) {
            return Some(Stop::Window);
        }
        let fast_window = self.fast_failures.filter(|_| streak.all_fast());
        fast_window
            .is_some_and(|limit| elapsed >= limit.window)
            .then_some(Stop::FastFailures)
    }

    /// Runs `attempt` (given its number, 1 for the first) until it succeeds or the
    /// policy gives up; `classify` says which failures are worth another try.
    pub async fn run<T, E, Fut>(
        &self,
        classify: impl Classify<E>,
        attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, GaveUp<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_observed(classify, |_| {}, attempt).await
    }

    /// As [`RetryPolicy::run`], telling `observe` of each failure about to be tried
    /// again, before the pause.
    pub async fn run_observed<T, E, Fut>(
        &self,
        classify: impl Classify<E>,
        mut observe: impl FnMut(&Retrying<'_, E>),
        mut attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, GaveUp<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        // Tokio's clock, so that tests with paused time see the pauses pass.
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let mut streak = Streak::default();
        loop {
            attempts += 1;
            let this_one = tokio::time::Instant::now();
            let error = match attempt(attempts).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            streak = streak.after(self, this_one.elapsed());
            let verdict = classify.classify(&error);
            match self.next_after(verdict, attempts, started.elapsed(), streak) {
                Next::Stop(stop) => {
                    return Err(GaveUp {
                        error,
                        attempts,
                        stop,
                    })
                }
                Next::After(pause) => {
                    // An event of the span the call runs in, when traces are exported.
                    tracing::info!(
                        target: crate::telemetry::SPANS,
                        attempt = attempts,
                        pause_ms = pause.as_millis() as u64,
                        "retry"
                    );
                    observe(&Retrying {
                        attempt: attempts,
                        error: &error,
                        pause,
                    });
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::time::Instant;

    const SECOND: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An attempt that fails `failures` times with `error`, taking `takes` each, then
    /// succeeds; it counts the attempts.
    fn failing<'a, E: Copy + 'a>(
        calls: &'a Cell<u32>,
        failures: u32,
        error: E,
        takes: Duration,
    ) -> impl FnMut(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<u32, E>> + 'a>> + 'a {
        move |attempt| {
            Box::pin(async move {
                calls.set(calls.get() + 1);
                assert_eq!(attempt, calls.get(), "attempts are numbered from 1");
                tokio::time::sleep(takes).await;
                if attempt <= failures {
                    Err(error)
                } else {
                    Ok(attempt)
                }
            })
        }
    }

    #[test]
    fn the_backoff_grows_by_its_multiplier_up_to_its_maximum() {
        let backoff = Backoff::exponential(ms(100), SECOND).with_jitter(0.0);
        let pauses: Vec<_> = (1..=6).map(|n| backoff.pause(n)).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(800), SECOND, SECOND]);
        assert_eq!(backoff.delay(u32::MAX), SECOND, "no overflow");
        let tripled = Backoff::exponential(ms(10), SECOND).with_multiplier(3.0);
        assert_eq!(tripled.delay(3), ms(90));
        assert_eq!(Backoff::constant(ms(5)).delay(40), ms(5));
        assert_eq!(Backoff::NONE.pause(3), Duration::ZERO);
        // A multiplier below one would shrink the pauses: it is taken as one.
        assert_eq!(
            Backoff::exponential(ms(10), SECOND)
                .with_multiplier(0.5)
                .delay(4),
            ms(10)
        );
    }

    #[test]
    fn jitter_stays_within_its_share_of_the_pause() {
        let backoff = Backoff::exponential(ms(1000), ms(1000));
        let low = ms(800);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let pause = backoff.pause(1);
            assert!((low..=ms(1000)).contains(&pause), "{pause:?}");
            seen.insert(pause);
        }
        assert!(seen.len() > 10, "the pauses spread: {seen:?}");
        let full = backoff.with_jitter(1.0);
        assert!((0..200).all(|_| full.pause(1) <= ms(1000)));
        assert!((0..200).any(|_| full.pause(1) < ms(500)));
        assert_eq!(backoff.with_jitter(-3.0).pause(1), ms(1000));
    }

    #[test]
    fn limits_compose_and_the_tighter_wins() {
        let policy = RetryPolicy::new(Backoff::NONE)
            .with_attempt_limit(5)
            .with_time_limit(SECOND)
            .with_attempt_limit(9)
            .with_time_limit(ms(200));
        assert_eq!(policy.attempt_limit(), Some(5));
        assert_eq!(policy.time_limit(), Some(ms(200)));
        assert_eq!(
            RetryPolicy::new(Backoff::NONE)
                .with_attempt_limit(0)
                .attempt_limit(),
            Some(1),
            "the first attempt is always made"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_tried_again_up_to_the_attempt_limit() {
        let policy = RetryPolicy::new(Backoff::exponential(ms(100), SECOND).with_jitter(0.0))
            .with_attempt_limit(4);
        let calls = Cell::new(0);
        let started = Instant::now();
        let ok = policy
            .run(always, failing(&calls, 3, "503", Duration::ZERO))
            .await;
        assert_eq!(ok.ok(), Some(4));
        assert_eq!(started.elapsed(), ms(100 + 200 + 400));
        let calls = Cell::new(0);
        let gave_up = policy
            .run(always, failing(&calls, 9, "503", Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!(
            (gave_up.error, gave_up.attempts, gave_up.stop),
            ("503", 4, Stop::Attempts)
        );
        assert_eq!(calls.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_failure_stops_at_once() {
        let policy = RetryPolicy::new(Backoff::constant(SECOND));
        let calls = Cell::new(0);
        let started = Instant::now();
        let gave_up = policy
            .run(
                |e: &u16| {
                    if *e == 400 {
                        Verdict::Final
                    } else {
                        Verdict::Retry
                    }
                },
                failing(&calls, 9, 400u16, Duration::ZERO),
            )
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (1, Stop::Final));
        assert_eq!(started.elapsed(), Duration::ZERO, "no pause after it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_holds_even_when_attempts_are_slow() {
        // Each attempt takes 4 s: the third would start at 8.2 s, past the window.
        let policy =
            RetryPolicy::new(Backoff::constant(ms(100)).with_jitter(0.0)).with_time_limit(ms(8000));
        let calls = Cell::new(0);
        let started = Instant::now();
        let gave_up = policy
            .run(always, failing(&calls, 99, "slow", 4 * SECOND))
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (2, Stop::Window));
        assert_eq!(started.elapsed(), ms(8100), "no sleep past the window");
        // Fast failures: as many as the window holds, the last starting inside it.
        let policy =
            RetryPolicy::new(Backoff::constant(ms(100)).with_jitter(0.0)).with_time_limit(SECOND);
        let calls = Cell::new(0);
        let started = Instant::now();
        let gave_up = policy
            .run(always, failing(&calls, 99, "fast", Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (10, Stop::Window));
        assert!(started.elapsed() < SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_but_bounded_by_the_window() {
        let policy = RetryPolicy::new(Backoff::constant(ms(100)).with_jitter(0.0))
            .with_time_limit(5 * SECOND);
        let told = |after: u64| move |_: &&str| Verdict::RetryAfter(Duration::from_secs(after));
        let calls = Cell::new(0);
        let started = Instant::now();
        let ok = policy
            .run(told(2), failing(&calls, 1, "429", Duration::ZERO))
            .await;
        assert_eq!(ok.ok(), Some(2));
        assert_eq!(started.elapsed(), 2 * SECOND, "waited as asked");
        // Asked to wait past the window: given up at once, not slept through.
        let calls = Cell::new(0);
        let started = Instant::now();
        let gave_up = policy
            .run(told(60), failing(&calls, 1, "429", Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (1, Stop::Window));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // A Retry-After shorter than the backoff for throttling waits the backoff.
        let policy = RetryPolicy::new(Backoff::NONE)
            .with_throttled_backoff(Backoff::constant(ms(500)).with_jitter(0.0));
        let calls = Cell::new(0);
        let started = Instant::now();
        policy
            .run(
                |_: &&str| Verdict::RetryAfter(ms(1)),
                failing(&calls, 1, "429", Duration::ZERO),
            )
            .await
            .ok();
        assert_eq!(started.elapsed(), ms(500));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_has_its_own_pace() {
        let policy = RetryPolicy::new(Backoff::constant(ms(100)).with_jitter(0.0))
            .with_throttled_backoff(Backoff::constant(ms(500)).with_jitter(0.0));
        let calls = Cell::new(0);
        let started = Instant::now();
        policy
            .run(
                |e: &u16| match e {
                    429 => Verdict::Throttled,
                    _ => Verdict::Retry,
                },
                failing(&calls, 2, 429u16, Duration::ZERO),
            )
            .await
            .ok();
        assert_eq!(started.elapsed(), ms(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_all_come_back_at_once_have_a_shorter_window() {
        let policy = RetryPolicy::new(Backoff::constant(ms(100)).with_jitter(0.0))
            .with_time_limit(15 * SECOND)
            .with_fast_failure_window(SECOND, ms(500))
            .with_fast_failure_window(5 * SECOND, ms(500));
        assert_eq!(policy.fast_failure_limit().map(|l| l.window), Some(SECOND));
        // 20 ms each and 100 ms between: the tenth would start at 1.08 s.
        let calls = Cell::new(0);
        let started = Instant::now();
        let gave_up = policy
            .run(always, failing(&calls, 99, "503", ms(20)))
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (9, Stop::FastFailures));
        assert_eq!(started.elapsed(), ms(9 * 20 + 8 * 100));
        // Slow failures: the other side is at work, the long window holds.
        let calls = Cell::new(0);
        let gave_up = policy
            .run(always, failing(&calls, 99, "503", 2 * SECOND))
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (8, Stop::Window));
        // One slow failure is enough for the long window; and a success is a success.
        let gave_up = policy
            .run(always, |attempt| async move {
                let takes = if attempt == 3 { ms(600) } else { ms(20) };
                tokio::time::sleep(takes).await;
                Err::<(), _>("503")
            })
            .await
            .unwrap_err();
        assert_eq!(gave_up.stop, Stop::Window);
        assert!(gave_up.attempts > 20, "{}", gave_up.attempts);
        let calls = Cell::new(0);
        let ok = policy.run(always, failing(&calls, 2, "503", ms(20))).await;
        assert_eq!(ok.ok(), Some(3));
        // Without it, fast failures go on to the window.
        let unlimited = RetryPolicy::new(Backoff::constant(ms(100)).with_jitter(0.0))
            .with_time_limit(2 * SECOND);
        let calls = Cell::new(0);
        let gave_up = unlimited
            .run(always, failing(&calls, 99, "503", ms(20)))
            .await
            .unwrap_err();
        assert_eq!((gave_up.attempts, gave_up.stop), (17, Stop::Window));
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_of_each_retry_and_not_of_the_last_failure() {
        let policy = RetryPolicy::new(Backoff::constant(ms(10))).with_attempt_limit(3);
        let calls = Cell::new(0);
        let mut heard = Vec::new();
        let gave_up = policy
            .run_observed(
                always,
                |retry: &Retrying<'_, &str>| {
                    assert!((ms(8)..=ms(10)).contains(&retry.pause));
                    heard.push((retry.attempt, *retry.error));
                },
                failing(&calls, 9, "down", Duration::ZERO),
            )
            .await
            .unwrap_err();
        assert_eq!(heard, vec![(1, "down"), (2, "down")]);
        assert_eq!(gave_up.attempts, 3);
    }
}
