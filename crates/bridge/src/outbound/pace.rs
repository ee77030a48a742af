//! `OUTBOUND_PER_SECOND`: the pace of outbound sends, and their order. Queued requests
//! wait in one line, first come first served, and each takes its place in the second
//! when it reaches the head: bridge-wide with a shared store (one counter per second
//! there, one round trip a send), this process's own pace when the store fails or there
//! is none. Only outbound sends wait here: a person's answers never do.

use crate::state::StateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// The pace, as set.
pub(super) struct Pace {
    per_second: NonZeroU32,
    /// The fallback: this process's share when the store cannot count.
    local: DefaultDirectRateLimiter,
    state: StateStore,
}

impl Pace {
    pub(super) fn new(per_second: NonZeroU32, state: StateStore) -> Self {
        Self {
            per_second,
            local: RateLimiter::direct(Quota::per_second(per_second)),
            state,
        }
    }

    /// Waits until one more send fits this second. Called by one task at a time (the
    /// line's), so that sends go in the order they were queued.
    pub(super) async fn until_ready(&self) {
        loop {
            match self.state.pace(self.per_second).await {
                Some(None) => return,
                Some(Some(wait)) => tokio::time::sleep(wait).await,
                None => return self.local.until_ready().await,
            }
        }
    }
}
