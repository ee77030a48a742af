//! Cost and loop protection: each agent turn costs money, and two auto-responders
//! writing to each other, or one abusive sender, could run up a bill in an hour.
//!
//! A conversation may send `RATE_LIMIT_PER_CONVERSATION` messages a minute, and the whole
//! bridge may ask the agent `AGENT_CALLS_PER_HOUR` times an hour (if set). A message
//! past either is not sent to the agent; the person is told once to slow down
//! (`RATE_LIMIT_MESSAGE`), then hears nothing until the pace is back. This module is the
//! in-process side (governor's GCRA); with a shared store the same counts are kept in
//! Redis by the admission script, so that they hold across instances.
//!
//! While with a person, the agent's limits do not apply, and a higher one does
//! (`HANDOFF_RATE_LIMIT`, messages a minute): it is counted in the hand-over's record
//! ([`crate::handoff::Pace`]), which the conversation's turns read one at a time.

use crate::session::SessionId;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Messages a minute per conversation; none: no limit.
    pub per_conversation: Option<NonZeroU32>,
    /// Agent calls an hour for the whole bridge; none: no limit.
    pub agent_calls_per_hour: Option<NonZeroU32>,
}

pub const DEFAULT_PER_CONVERSATION: u32 = 20;

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_conversation: NonZeroU32::new(DEFAULT_PER_CONVERSATION),
            agent_calls_per_hour: None,
        }
    }
}

/// Which limit a message went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    Conversation,
    AgentBudget,
    /// `HANDOFF_RATE_LIMIT`, while with a person: counted in the hand-over's record.
    Handoff,
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Scope::Conversation => "conversation",
            Scope::AgentBudget => "agent_budget",
            Scope::Handoff => "handoff",
        }
    }
}

/// A message past a limit: which one, and whether the person is to be told (the first
/// time within a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub tell: bool,
}

/// How long a conversation that was told to slow down is not told again.
pub const TELL_ONCE_PER: Duration = Duration::from_secs(60);
/// Conversations remembered at most, for telling once; the oldest go first.
const TOLD_AT_MOST: usize = 10_000;

/// The in-process limiter.
pub struct Limiter {
    conversations: Option<DefaultKeyedRateLimiter<SessionId>>,
    checks: std::sync::atomic::AtomicU64,
    budget: Option<DefaultDirectRateLimiter>,
    told: Mutex<HashMap<SessionId, Instant>>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            conversations: limits
                .per_conversation
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            checks: std::sync::atomic::AtomicU64::new(0),
            budget: limits
                .agent_calls_per_hour
                .map(|n| RateLimiter::direct(Quota::per_hour(n))),
            told: Mutex::default(),
        }
    }

    /// Counts a message of `session`; `Some` if it is past a limit.
    pub fn check(&self, session: &SessionId) -> Option<Limited> {
        // The keyed limiter keeps a cell per sender: now and then, those back to their
        // full quota are dropped, so that memory stays flat.
        if self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 10_000
            == 9_999
        {
            self.forget_quiet();
        }
        let scope = if self
            .conversations
            .as_ref()
            .is_some_and(|limiter| limiter.check_key(session).is_err())
        {
            Scope::Conversation
        } else if self
            .budget
            .as_ref()
            .is_some_and(|limiter| limiter.check().is_err())
        {
            Scope::AgentBudget
        } else {
            return None;
        };
        Some(Limited {
            scope,
            tell: self.first_told(session),
        })
    }

    /// True the first time within [`TELL_ONCE_PER`] that `session` is limited.
    fn first_told(&self, session: &SessionId) -> bool {
        let now = Instant::now();
        let mut told = self
            .told
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if told.len() >= TOLD_AT_MOST {
            told.retain(|_, at| now.duration_since(*at) < TELL_ONCE_PER);
            // Keyed limiters keep a cell per sender: drop those back to full quota too.
            if let Some(limiter) = &self.conversations {
                limiter.retain_recent();
            }
        }
        if told.len() >= TOLD_AT_MOST {
            return false;
        }
        match told.get(session) {
            Some(at) if now.duration_since(*at) < TELL_ONCE_PER => false,
            _ => {
                told.insert(*session, now);
                true
            }
        }
    }

    /// Forgets `session` (erasing a person): whether it was told it was limited, and
    /// its cell along with every cell back at full quota (governor drops no single
    /// key; a cell holds a time, no content, and goes once its minute is over).
    /// Whether anything of it was held.
    pub fn forget(&self, session: &SessionId) -> bool {
        let told = self
            .told
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(session)
            .is_some();
        self.forget_quiet();
        told
    }

    /// Drops the state of senders back within their quota, so that memory stays flat.
    pub fn forget_quiet(&self) {
        if let Some(limiter) = &self.conversations {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_a_conversation_is_told_once_and_others_go_on() {
        let limiter = Limiter::new(RateLimits {
            per_conversation: NonZeroU32::new(3),
            agent_calls_per_hour: None,
        });
        let busy = SessionId::for_tests("+1", "+2");
        let calm = SessionId::for_tests("+3", "+2");
        for _ in 0..3 {
            assert_eq!(limiter.check(&busy), None);
        }
        assert_eq!(
            limiter.check(&busy),
            Some(Limited {
                scope: Scope::Conversation,
                tell: true
            })
        );
        assert_eq!(
            limiter.check(&busy),
            Some(Limited {
                scope: Scope::Conversation,
                tell: false
            })
        );
        assert_eq!(limiter.check(&calm), None);
    }

    #[test]
    fn the_agent_budget_is_shared_by_every_conversation() {
        let limiter = Limiter::new(RateLimits {
            per_conversation: None,
            agent_calls_per_hour: NonZeroU32::new(2),
        });
        let a = SessionId::for_tests("+1", "+2");
        let b = SessionId::for_tests("+3", "+2");
        assert_eq!(limiter.check(&a), None);
        assert_eq!(limiter.check(&b), None);
        assert_eq!(limiter.check(&a).map(|l| l.scope), Some(Scope::AgentBudget));
        assert_eq!(limiter.check(&b).map(|l| l.tell), Some(true));
    }
}
