//! The features' records (`P:r:{slot}:{id}`), each with its time to live: written to
//! this process's state too when the server cannot take them, read from it when the
//! server cannot answer.

use super::SharedState;
use crate::state::Json;
use std::sync::Arc;
use std::time::Duration;

impl SharedState {
    pub(in crate::state) async fn get_record(&self, slot: &'static str, id: &str) -> Option<Json> {
        let key = self.key(&["r", slot, id]);
        match self
            .call("get_record", |mut connection| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
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
        let key = self.key(&["r", slot, id]);
        let value = Arc::clone(&json);
        let written = self
            .call("set_record", |mut connection| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(&*value)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if written.is_err() {
            self.local.records.set(slot, id, json, ttl);
        }
    }

    pub(in crate::state) async fn remove_record(&self, slot: &'static str, id: &str) {
        let key = self.key(&["r", slot, id]);
        self.local.records.remove(slot, id);
        let _ = self
            .call("remove_record", |mut connection| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
    }
}
