//! What the page shows, as one ordered log of events that it reads by long polling.
//!
//! Long polling rather than Server-Sent Events: the page asks for the events after the
//! last one it has, so a reload, a second tab or a dropped connection resumes exactly
//! where it stopped and nothing is skipped; a stream would need the same numbering to
//! resume, plus a broadcast channel that drops events for slow readers.

use serde_json::Value;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// The events so far, numbered from 1 in the order they happened.
#[derive(Default)]
pub struct Log {
    events: Mutex<Vec<Value>>,
    grew: Notify,
}

/// Events a page holds at most; a longer session forgets its beginning.
const KEPT: usize = 5000;

impl Log {
    /// Adds `event` (a JSON object) with the next number as its `id`.
    pub fn push(&self, mut event: Value) {
        {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            let id = events.last().and_then(|e| e["id"].as_u64()).unwrap_or(0) + 1;
            event["id"] = id.into();
            if events.len() >= KEPT {
                events.remove(0);
            }
            events.push(event);
        }
        self.grew.notify_waiters();
    }

    /// The events numbered above `after`; waits up to `patience` for one when there
    /// are none yet.
    pub async fn after(&self, after: u64, patience: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let grew = self.grew.notified();
            let newer = self.newer(after);
            if !newer.is_empty() {
                return newer;
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn newer(&self, after: u64) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| e["id"].as_u64().unwrap_or(0) > after)
            .cloned()
            .collect()
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Value> {
        self.newer(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn events_are_numbered_and_read_after_a_number() {
        let log = Log::default();
        log.push(json!({"kind": "a"}));
        log.push(json!({"kind": "b"}));
        let after_one = log.after(1, Duration::ZERO).await;
        assert_eq!(after_one, vec![json!({"kind": "b", "id": 2})]);
        assert!(log.after(2, Duration::from_millis(10)).await.is_empty());
        let log = std::sync::Arc::new(log);
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.after(2, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        log.push(json!({"kind": "c"}));
        let woken = waiting.await.unwrap();
        assert_eq!(woken[0]["id"], 3);
    }
}
