//! Queued outbound work that outlives its instance (shared state only). A queued
//! request's work is kept in the store ([`WORK`]) and its id in a bucketed schedule
//! (`outbound`), leased to the instance that queued it: that instance renews the lease
//! while the request waits and while it is sent; when the instance dies the lease runs
//! out and another instance's sweep claims the id (`StateStore::claim_due`, one claimer
//! only) and sends it. At SIGTERM, the work not yet started is left due at once.
//!
//! Never twice: a send records that it started ([`STARTED`]) before anything goes out
//! (before the agent is asked, for an event); work taken over after that is not sent
//! again, as the outbox never repeats a request that went out unanswered: it may or may
//! not have reached the person (or the agent, whose events are not idempotent), and its
//! record says it failed, interrupted.

use super::record::{OutboundRecord, Status, KEPT_FOR, REQUESTS};
use super::request::Content;
use super::{Origin, Outbound, Send};
use crate::outbox::Owing;
use crate::session::SessionId;
use crate::state::{Record, Slot};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The schedule of queued requests, by id.
pub(super) const SCHEDULE: &str = "outbound";

/// The work of a queued request, by id, until it is done.
pub(super) const WORK: Slot<Work> = Slot::new("outbound_work", KEPT_FOR);

/// That a request's send started, by id: it is never sent again.
pub(super) const STARTED: Slot<Started> = Slot::new("outbound_started", KEPT_FOR);

/// The reason a request taken over after its send started gives.
pub(super) const INTERRUPTED: &str = "interrupted: the instance sending it stopped, and it may or may not have gone out, so it is not sent again";

/// What another instance needs to send a queued request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Work {
    person: String,
    from: Origin,
    contact: String,
    status_callback: String,
    content: Content,
    /// The trace of the call that asked for it (`traceparent`'s form), for the send
    /// of the instance that takes it over to link back to. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

impl Record for Work {
    const KIND: &'static str = "outbound_work";
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Started {}

impl Record for Started {
    const KIND: &'static str = "outbound_started";
}

/// A request this instance holds: whether its send started, and while it is held the
/// reply it is owed, so that a shutdown waits (within its grace) until it is sent or
/// left to the other instances.
struct Holding {
    started: bool,
    _owing: Option<Owing>,
}

/// The requests this instance holds (queued or sending).
#[derive(Default)]
pub(super) struct Held {
    ids: std::sync::Mutex<HashMap<String, Holding>>,
}

impl Held {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Holding>) -> T) -> T {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut ids)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Outbound {
    /// The lease of a held request, in the schedule's seconds: at least a second
    /// beyond `STATE_LEASE`, the schedule counting whole seconds.
    fn lease_secs(&self) -> u64 {
        self.lease.as_secs().max(1) + 1
    }

    /// Keeps the work of the queued `send` in the store, leased to this instance.
    pub(super) async fn hold(&self, send: &Send, content: &Content) {
        if !self.durable {
            return;
        }
        let work = Work {
            person: send.person.clone(),
            from: send.from.clone(),
            contact: send.contact.as_str().to_owned(),
            status_callback: send.status_callback.clone(),
            content: content.clone(),
            trace: send.origin.map(|trace| trace.to_traceparent()),
        };
        self.take(&send.id);
        self.state.set(&WORK, &send.id, &work).await;
        let at = now() + self.lease_secs();
        self.state.schedule(SCHEDULE, &send.id, at).await;
    }

    /// Holds `id` in this instance, owing it until it is sent or left.
    fn take(&self, id: &str) {
        let owing = self
            .conversations
            .outbox_of(&self.account_sid)
            .map(|outbox| outbox.owe(id));
        let holding = Holding {
            started: false,
            _owing: owing,
        };
        self.held.with(|ids| ids.insert(id.to_owned(), holding));
    }

    /// Records that the send of `id` starts, from now on never to be sent again:
    /// `false` when it must not, this instance having left it to the others (it was
    /// stopping).
    pub(super) async fn starting(&self, id: &str) -> bool {
        // Erased with its person, at this instance or another: never sent.
        if matches!(self.state.get(&super::erase::ERASED, id).await, Ok(Some(_))) {
            tracing::info!(outbound = %id, "an outbound request was erased with its person before it was sent: it is not sent");
            self.release(id).await;
            return false;
        }
        if !self.durable {
            return true;
        }
        let held = self.held.with(|ids| match ids.get_mut(id) {
            Some(holding) => {
                holding.started = true;
                true
            }
            None => false,
        });
        if held {
            self.state.set(&STARTED, id, &Started {}).await;
        }
        held
    }

    /// The request `id` is done (its record written): no one holds it any more.
    pub(super) async fn release(&self, id: &str) {
        if !self.durable {
            return;
        }
        self.state.unschedule(SCHEDULE, id).await;
        self.state.remove(&WORK, id).await;
        self.held.with(|ids| ids.remove(id));
    }

    /// While the state is shared: every `every`, renews the leases of the requests
    /// this instance holds (once half the lease went by) and claims those whose
    /// instance stopped renewing theirs; at shutdown, leaves those not started to the
    /// other instances at once.
    pub async fn take_over_queued(self: std::sync::Arc<Self>, every: Duration) {
        if !self.durable {
            return;
        }
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = self.conversations.stopping() => return self.leave_unstarted().await,
            }
            if renewed.elapsed() >= self.lease / 2 {
                renewed = Instant::now();
                let held: Vec<String> = self.held.with(|ids| ids.keys().cloned().collect());
                let at = now() + self.lease_secs();
                for id in held {
                    self.state.schedule(SCHEDULE, &id, at).await;
                }
            }
            let due = self
                .state
                .claim_due(SCHEDULE, now(), 100, self.lease_secs())
                .await;
            for id in due {
                if self.held.with(|ids| ids.contains_key(&id)) {
                    continue;
                }
                self.resume(id).await;
            }
        }
    }

    /// Work whose instance stopped renewing it: sent from here if its send never
    /// started, else recorded as interrupted.
    async fn resume(self: &std::sync::Arc<Self>, id: String) {
        let Ok(work) = self.state.get(&WORK, &id).await else {
            return; // Unreadable (logged, counted): claimed again when the lease ends.
        };
        let Some(work) = work else {
            // Done already (or expired): nothing is owed.
            return self.state.unschedule(SCHEDULE, &id).await;
        };
        let Ok(started) = self.state.get(&STARTED, &id).await else {
            return;
        };
        if started.is_some() {
            tracing::error!(outbound = %id, "took over an outbound request whose send had started at an instance that stopped: it may or may not have gone out, and is not sent again");
            let record = OutboundRecord {
                kind: work.content.kind().to_owned(),
                status: Status::Failed,
                account_sid: self.account_sid.clone(),
                message_sids: Vec::new(),
                error_code: None,
                reason: Some(INTERRUPTED.to_owned()),
            };
            self.state.set(&REQUESTS, &id, &record).await;
            return self.release(&id).await;
        }
        let Some(contact) = SessionId::parse(&work.contact) else {
            return self.release(&id).await;
        };
        let route = match (&work.content, &work.from) {
            (Content::Event { .. }, Origin::Number(number)) => self
                .conversations
                .route_of_sender(&self.account_sid, number),
            _ => None,
        };
        tracing::info!(outbound = %id, "took over a queued outbound request of an instance that stopped");
        self.take(&id);
        let send = Send {
            id,
            person: work.person,
            from: work.from,
            contact,
            route,
            status_callback: work.status_callback,
            origin: work
                .trace
                .as_deref()
                .and_then(crate::telemetry::Trace::from_traceparent),
        };
        self.queue(send, work.content);
    }

    /// At shutdown: the held requests whose send did not start are due at once, for
    /// the other instances.
    async fn leave_unstarted(&self) {
        // Their owed replies are settled (the guards dropped) once they are left.
        let unstarted: Vec<(String, Holding)> = self.held.with(|ids| {
            let unstarted: Vec<String> = ids
                .iter()
                .filter(|(_, holding)| !holding.started)
                .map(|(id, _)| id.clone())
                .collect();
            unstarted
                .into_iter()
                .filter_map(|id| ids.remove(&id).map(|holding| (id, holding)))
                .collect()
        });
        if !unstarted.is_empty() {
            tracing::info!(
                left = unstarted.len(),
                "stopping: queued outbound requests not yet sent are left to the other instances"
            );
        }
        for (id, _holding) in unstarted {
            self.state.schedule(SCHEDULE, &id, 0).await;
        }
    }

    /// Whether this instance still holds the request `id` (always, without shared
    /// state).
    pub(super) fn holds(&self, id: &str) -> bool {
        !self.durable || self.held.with(|ids| ids.contains_key(id))
    }
}
