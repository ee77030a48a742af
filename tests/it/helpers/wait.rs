//! Waiting for conditions, never for time: a failed wait says what it last saw.

use super::*;

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `probe` is ready (`Ok`), looking again every 20 ms, and gives what it
/// found; after `timeout`, fails the test with `what` it waited for and what the probe
/// last saw (its `Err`). A test waits for a condition with this, not for a fixed time:
/// it goes on as soon as the condition holds, and a condition that never comes fails
/// with what was there instead, rather than hanging.
pub async fn eventually<T, S, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    S: std::fmt::Debug,
    Fut: std::future::Future<Output = Result<T, S>>,
{
    let started = Instant::now();
    let mut last = None;
    loop {
        // A probe that hangs (a request no one answers) is cut short at the deadline too.
        let left = timeout.saturating_sub(started.elapsed()).max(POLL);
        match tokio::time::timeout(left, probe()).await {
            Ok(Ok(found)) => return found,
            Ok(Err(seen)) => last = Some(seen),
            Err(_) => {}
        }
        if started.elapsed() >= timeout {
            match last {
                Some(seen) => panic!("waited {timeout:?} for {what}; last seen: {seen:#?}"),
                None => panic!("waited {timeout:?} for {what}; the probe never answered"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lets `window` pass, for a claim that something does *not* happen (no second reply):
/// no signal says "never", so such a claim is checked over a short window, after the
/// last thing that could have led to it was seen to happen.
pub async fn quiet_window(window: Duration) {
    tokio::time::sleep(window).await;
}

/// `value`, ready for [`eventually`] when `ready` says so: `Ok(value)`, else `Err(value)`
/// (what the failure shows).
pub fn ready_if<S>(value: S, ready: impl FnOnce(&S) -> bool) -> Result<S, S> {
    if ready(&value) {
        Ok(value)
    } else {
        Err(value)
    }
}

/// The value of `series` (its name and labels, as `/metrics` writes them) in
/// `metrics`; 0 when it is not there yet.
pub fn series_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The requests `emulator` has received, once there are at least `count` (within
/// 10 s): the agent has the question, so the turn is under way.
pub async fn agent_asked(emulator: &Emulator, count: usize) -> Vec<RecordedRequest> {
    eventually(
        &format!("{count} request(s) to the agent"),
        Duration::from_secs(10),
        || async { ready_if(emulator.requests(), |asked| asked.len() >= count) },
    )
    .await
}
