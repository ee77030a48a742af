//! How long a turn waits for another's. Every wait for another turn, delivery or
//! instance has a bound taken from settings the bridge already has, so that one turn
//! stuck past its own timeouts (a hung call, an instance alive but lost) holds up
//! nothing else for good:
//!
//! - a person's message waits for the turns before it in its conversation while they
//!   move; once none has finished for as long as one turn may honestly take
//!   ([`Waits::turn`]), it is answered out of order rather than not at all;
//! - a turn taken over from a dead instance waits the same, then sends what it owes;
//! - the human side's call waits for its turn at most [`Waits::human_turn`] (about
//!   30 s), then is told to try again (503, `Retry-After`), having sent nothing;
//! - a re-delivery waits for its first delivery at most that delivery's own deadline
//!   (`turn.rs`, `Turn::repeat`).

use std::time::Duration;

/// A helpdesk's HTTP client gives up around here: past it, "try again" is the more
/// useful answer than one that comes too late to be read.
const HUMAN_TURN_AT_MOST: Duration = Duration::from_secs(30);

/// The bounds of the waits for other turns, from `STATE_LEASE` and `HANDOFF_RETRY_FOR`.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// `STATE_LEASE`: how long a turn may go without a sign of life before another
    /// instance takes it over.
    lease: Duration,
    /// `HANDOFF_RETRY_FOR` with hand-over on (a turn posts its events for that long),
    /// else nothing.
    posting: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Self::new(Duration::from_secs(30), None)
    }
}

impl Waits {
    pub fn new(lease: Duration, handoff_retry_for: Option<Duration>) -> Self {
        Self {
            lease,
            posting: handoff_retry_for.unwrap_or_default(),
        }
    }

    /// How long a turn whose agent answers within `agent_timeout` waits without the
    /// conversation moving: the longest the turn ahead may honestly take. It asks its
    /// agent (twice when it comes back from a person: the return event first), posts
    /// its hand-over events, and sends its replies or, dead, is taken over, within a
    /// lease. Past that, the turn ahead is stuck past its own timeouts.
    pub fn turn(&self, agent_timeout: Duration) -> Duration {
        agent_timeout * 2 + self.posting + self.lease
    }

    /// How long the human side's call waits for the conversation's turn: a lease, at
    /// most 30 s. A turn ahead that takes longer is at the agent, or stuck; the
    /// helpdesk is told to try again.
    pub fn human_turn(&self) -> Duration {
        self.lease.min(HUMAN_TURN_AT_MOST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_waits_longer_than_the_turn_ahead_may_take_and_the_human_side_at_most_30s() {
        let waits = Waits::new(Duration::from_secs(30), Some(Duration::from_secs(60)));
        assert_eq!(
            waits.turn(Duration::from_secs(35)),
            Duration::from_secs(160)
        );
        assert_eq!(waits.human_turn(), Duration::from_secs(30));
        let short = Waits::new(Duration::from_secs(2), None);
        assert_eq!(short.turn(Duration::from_secs(5)), Duration::from_secs(12));
        assert_eq!(short.human_turn(), Duration::from_secs(2));
        let long = Waits::new(Duration::from_secs(300), None);
        assert_eq!(long.human_turn(), Duration::from_secs(30));
    }
}
