//! The features' records (`P:{id}:r:{slot}`, in the slot of their id), each with its time to live: written to
//! this process's state too when the server cannot take them, read from it when the
//! server cannot answer.

use super::SharedState;
use crate::state::Json;
use std::time::Duration;

impl SharedState {
    pub(in crate::state) async fn get_record(&self, slot: &'static str, id: &str) -> Option<Json> {
        let key = self.layout.record(slot, id);
        match self
            .command::<Option<String>>("get_record", redis::cmd("GET").arg(key))
            .await
        {
            Ok(value) => value.map(Json::from),
            Err(_) => self.local.records.get(slot, id),
        }
    }

    pub(in crate::state) async fn set_record(
        &self,
        slot: &'static str,
        id: &str,
        json: Json,
        ttl: Duration,
    ) {
        let key = self.layout.record(slot, id);
        let written = self
            .command::<()>(
                "set_record",
                redis::cmd("SET")
                    .arg(key)
                    .arg(&*json)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await;
        if written.is_err() {
            self.local.records.set(slot, id, json, ttl);
        }
    }

    /// `SET NX`: the record is set unless one is there; the one there is returned.
    /// When the server cannot answer, this process's records decide.
    pub(in crate::state) async fn claim_record(
        &self,
        slot: &'static str,
        id: &str,
        json: Json,
        ttl: Duration,
    ) -> Option<Json> {
        let key = self.layout.record(slot, id);
        let set = self
            .command::<Option<String>>(
                "claim_record",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&*json)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64),
            )
            .await;
        match set {
            Ok(Some(_)) => None,
            // Taken: the winner's record (gone since, if it expired meanwhile: then
            // nothing is there to answer with, and this call counts as the first).
            Ok(None) => self.get_record(slot, id).await,
            Err(_) => self.local.records.claim(slot, id, json, ttl),
        }
    }

    pub(in crate::state) async fn remove_record(&self, slot: &'static str, id: &str) {
        let key = self.layout.record(slot, id);
        self.local.records.remove(slot, id);
        let _ = self
            .command::<()>("remove_record", redis::cmd("DEL").arg(key))
            .await;
    }
}
