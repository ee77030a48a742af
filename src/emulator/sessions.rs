//! Session parameters, kept per session until the session's TTL passes without use.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Dialogflow CX's default session lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
struct Session {
    parameters: Map<String, Value>,
    expires_at: Instant,
}

impl Sessions {
    /// Runs `update` on the parameters of `session` (fresh if expired) and keeps the
    /// result for `ttl` from `now`.
    pub fn update<T>(
        &self,
        session: &str,
        ttl: Duration,
        now: Instant,
        update: impl FnOnce(&mut Map<String, Value>) -> T,
    ) -> T {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.retain(|_, s| s.expires_at > now);
        let entry = sessions
            .entry(session.to_owned())
            .or_insert_with(|| Session {
                parameters: Map::new(),
                expires_at: now,
            });
        let result = update(&mut entry.parameters);
        entry.expires_at = now + ttl;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_live_until_the_ttl_passes() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let ttl = Duration::from_secs(60);
        sessions.update("s", ttl, start, |p| p.insert("size".into(), json!("large")));
        let seen = sessions.update("s", ttl, start + Duration::from_secs(59), |p| {
            p.get("size").cloned()
        });
        assert_eq!(seen, Some(json!("large")));
        // Each use starts the lifetime again.
        let later = sessions.update("s", ttl, start + Duration::from_secs(118), |p| {
            p.get("size").cloned()
        });
        assert_eq!(later, Some(json!("large")));
        let expired = sessions.update("s", ttl, start + Duration::from_secs(179), |p| {
            p.get("size").cloned()
        });
        assert_eq!(expired, None);
    }
}
