//! Forgetting conversations in the shared store, and the indexes (`P:{id}:i:{name}`,
//! sets in the slot of their id).
//!
//! A conversation's keys carry its tag, but their names are not all known (its
//! messages' claims and markers name MessageSids): they are found by a scan of every
//! tagged key, on the server or on every primary of a cluster, a page at a time (each
//! page a call bounded by `STATE_TIMEOUT`). That costs a pass over the keyspace per
//! erasure, which is rare; nothing on a webhook's way pays for it.

use super::layout::Layout;
use super::SharedState;
use crate::session::SessionId;
use crate::state::forget::{conversation_of, Forgotten};
use crate::state::local::LocalState;
use crate::state::{Json, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

impl SharedState {
    /// This process's own state, which serves when the server cannot answer.
    pub(in crate::state) fn local_state(&self) -> &Arc<LocalState> {
        &self.local
    }

    pub(in crate::state) async fn add_to_index(
        &self,
        name: &'static str,
        id: &str,
        member: &str,
        ttl: Duration,
    ) {
        let key = self.layout.index(name, id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SADD")
            .arg(&key)
            .arg(member)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis().max(1) as u64)
            .ignore();
        let written = self
            .call("add_to_index", |mut connection| async move {
                pipe.query_async::<()>(&mut connection).await
            })
            .await;
        if written.is_err() {
            self.local.indexes.add(name, id, member, ttl);
        }
    }

    pub(in crate::state) async fn index_members(
        &self,
        name: &'static str,
        id: &str,
    ) -> Vec<String> {
        let key = self.layout.index(name, id);
        let mut members = self
            .command::<Vec<String>>("index_members", redis::cmd("SMEMBERS").arg(key))
            .await
            .unwrap_or_default();
        // And what this process kept while the server could not take it.
        members.extend(self.local.indexes.members(name, id));
        members.sort();
        members.dedup();
        members
    }

    pub(in crate::state) async fn remove_from_index(
        &self,
        name: &'static str,
        id: &str,
        member: &str,
    ) {
        self.local.indexes.remove(name, id, member);
        let key = self.layout.index(name, id);
        let _ = self
            .command::<()>("remove_from_index", redis::cmd("SREM").arg(key).arg(member))
            .await;
    }

    /// Every key matching `pattern`, on the server or on every primary of a cluster.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let targets = self
            .call("scan", |mut link| async move { link.scan_targets().await })
            .await?;
        let mut keys = HashSet::new();
        for target in targets {
            let mut cursor = 0;
            loop {
                let (next, page) = self
                    .call("scan", |mut link| async move {
                        link.scan_page(target, cursor, pattern).await
                    })
                    .await?;
                keys.extend(page);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    pub(in crate::state) async fn all_records(&self, slot: &'static str) -> Vec<(String, Json)> {
        let mut all = self.local.records.all(slot);
        let keys = match self.scan(&self.layout.every_record(slot)).await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::error!(%error, slot, "the shared store could not be scanned for records");
                return all;
            }
        };
        for key in keys {
            let Some((id, _)) = self.layout.parts(&key) else {
                continue;
            };
            let id = id.to_owned();
            if let Ok(Some(json)) = self
                .command::<Option<String>>("get_record", redis::cmd("GET").arg(&key))
                .await
            {
                all.push((id, Json::from(json)));
            }
        }
        all
    }

    pub(in crate::state) async fn forget(
        &self,
        conversations: &HashSet<SessionId>,
        keep: &[&str],
        schedules: &[&'static str],
    ) -> Forgotten {
        let mut forgotten = Forgotten::default();
        match self.scan(&self.layout.every_tagged_key()).await {
            Ok(keys) => {
                for key in keys {
                    self.forget_key(&key, conversations, keep, &mut forgotten)
                        .await;
                }
            }
            Err(error) => {
                tracing::error!(%error, "the shared store could not be scanned: the conversations' keys were not removed");
            }
        }
        for session in conversations {
            let bucket = Layout::bucket_of(session.as_str());
            let [leases, marks] = self.layout.visits(bucket);
            let mut swept = 0;
            for (command, key) in [("ZREM", leases), ("HDEL", marks)] {
                swept += self
                    .command::<u64>("forget", redis::cmd(command).arg(key).arg(session.as_str()))
                    .await
                    .unwrap_or(0);
            }
            if swept > 0 {
                forgotten.count(*session, "sweep");
            }
            for index in schedules {
                let key = self.layout.schedule(index, bucket);
                let removed = self
                    .command::<u64>("forget", redis::cmd("ZREM").arg(key).arg(session.as_str()))
                    .await
                    .unwrap_or(0);
                forgotten.add(*session, "schedule", removed);
            }
        }
        forgotten
    }

    /// Removes `key` if it is filed under one of `conversations` and not of a slot in
    /// `keep`, and counts it by what it is.
    async fn forget_key(
        &self,
        key: &str,
        conversations: &HashSet<SessionId>,
        keep: &[&str],
        forgotten: &mut Forgotten,
    ) {
        let Some((tag, rest)) = self.layout.parts(key) else {
            return;
        };
        let Some(session) = conversation_of(tag).filter(|s| conversations.contains(s)) else {
            return;
        };
        let kind = match rest {
            "c" => "turns",
            "rate" => "rate",
            _ if rest.starts_with("m:") && rest.ends_with(":seen") => "message_seen",
            _ if rest.starts_with("m:") => "message",
            _ if rest.starts_with("n:") => "turn_claim",
            _ => match rest.split_once(':') {
                Some(("r" | "i", name)) => name,
                _ => rest,
            },
        };
        if rest
            .strip_prefix("r:")
            .is_some_and(|slot| keep.contains(&slot))
        {
            forgotten.kept += 1;
            return;
        }
        let removed = self
            .command::<u64>("forget", redis::cmd("UNLINK").arg(key))
            .await
            .unwrap_or(0);
        forgotten.add(session, kind, removed);
    }
}
