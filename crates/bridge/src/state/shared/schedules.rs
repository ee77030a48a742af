//! Schedules for sweepers (`P:{b:N}:due:{index}`): sorted sets of ids by the time they
//! are due, spread over the buckets by id, each due id claimed by one instance only
//! (the claim is one script in the bucket's slot).

use super::layout::{Layout, BUCKETS};
use super::SharedState;

impl SharedState {
    pub(in crate::state) async fn schedule(&self, index: &'static str, id: &str, at: u64) {
        let key = self.layout.schedule(index, Layout::bucket_of(id));
        let written = self
            .command::<()>("schedule", redis::cmd("ZADD").arg(key).arg(at).arg(id))
            .await;
        if written.is_err() {
            self.local.schedules.schedule(index, id, at);
        }
    }

    /// Up to `limit` ids due at `now`, each claimed by one instance only: the script
    /// moves an id still due to `now + lease` and answers 1 to that caller alone.
    pub(in crate::state) async fn claim_due(
        &self,
        index: &'static str,
        now: u64,
        limit: usize,
        lease: u64,
    ) -> Vec<String> {
        let mut claimed = self.local.schedules.claim_due(index, now, limit, lease);
        for bucket in 0..BUCKETS {
            let room = limit.saturating_sub(claimed.len());
            if room == 0 {
                break;
            }
            let key = self.layout.schedule(index, bucket);
            claimed.extend(self.claim_due_in(&key, now, room, lease).await);
        }
        claimed
    }

    /// Up to `limit` ids of one bucket's schedule `key` due at `now`, claimed.
    async fn claim_due_in(&self, key: &str, now: u64, limit: usize, lease: u64) -> Vec<String> {
        let mut claimed = Vec::new();
        let due = self
            .command::<Vec<String>>(
                "due",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg(0)
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await
            .unwrap_or_default();
        for id in due {
            let member = id.clone();
            let script = &self.scripts.claim_due;
            let leased = self
                .call("claim", |mut connection| async move {
                    script
                        .key(key)
                        .arg(member)
                        .arg(now)
                        .arg(now.saturating_add(lease))
                        .invoke_async::<i64>(&mut connection)
                        .await
                })
                .await;
            if matches!(leased, Ok(1)) {
                claimed.push(id);
            }
        }
        claimed
    }

    pub(in crate::state) async fn unschedule(&self, index: &'static str, id: &str) {
        self.local.schedules.unschedule(index, id);
        let key = self.layout.schedule(index, Layout::bucket_of(id));
        let _ = self
            .command::<()>("unschedule", redis::cmd("ZREM").arg(key).arg(id))
            .await;
    }
}
