//! Session parameters, kept per session until the session's TTL passes without use.
//!
//! Sessions are indexed by when they expire, so that expiring them costs the same at
//! ten sessions as at a hundred thousand, and their number is bounded: a long
//! benchmark does not make every request slower nor the emulator larger.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Dialogflow CX's default session lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// At most this many live sessions; past it, the one closest to expiring goes.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// (expires at, session), soonest first.
    expiry: BTreeSet<(Instant, String)>,
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
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.expire(now);
        let mut entry = match inner.sessions.remove(session) {
            Some(entry) => {
                inner.expiry.remove(&(entry.expires_at, session.to_owned()));
                entry
            }
            None => {
                inner.make_room();
                Session {
                    parameters: Map::new(),
                    expires_at: now,
                }
            }
        };
        let result = update(&mut entry.parameters);
        entry.expires_at = now + ttl;
        inner.expiry.insert((entry.expires_at, session.to_owned()));
        inner.sessions.insert(session.to_owned(), entry);
        result
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sessions
            .len()
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((expires_at, _)) = self.expiry.first() {
            if *expires_at > now {
                break;
            }
            self.drop_first();
        }
    }

    fn make_room(&mut self) {
        while self.sessions.len() >= MAX_SESSIONS {
            self.drop_first();
        }
    }

    fn drop_first(&mut self) {
        if let Some((_, session)) = self.expiry.pop_first() {
            self.sessions.remove(&session);
        }
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

    #[test]
    fn expired_sessions_go_and_their_number_is_bounded() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let ttl = Duration::from_secs(60);
        for i in 0..MAX_SESSIONS + 10 {
            sessions.update(&format!("s{i}"), ttl, start, |_| ());
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        sessions.update("late", ttl, start + Duration::from_secs(61), |_| ());
        assert_eq!(sessions.len(), 1, "every other session expired");
    }
}
