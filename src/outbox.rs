//! Replies sent through Twilio's Messages API, one conversation at a time.
//!
//! Each conversation has a queue, worked by its own task while it has work: replies
//! to one person go out in the order their messages came, while conversations do not
//! wait for each other. Every reply owed is tracked until sent, so that at shutdown the
//! bridge can wait for them, and name the ones it could not send.

use crate::reply::ReplyMessage;
use crate::session::SessionId;
use crate::twilio::messages_api::{MessagesApi, SendError, Sender};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Work for a conversation's queue; it runs after the work queued before it.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A job, and the MessageSid whose replies it owes.
type Queued = (String, Job);

/// Per-conversation queues of work, and the replies still owed.
pub struct Outbox {
    api: MessagesApi,
    messaging_service_sid: Option<String>,
    queues: Mutex<HashMap<SessionId, mpsc::UnboundedSender<Queued>>>,
    /// MessageSids whose replies are still owed, with how many jobs each has pending.
    owed: Mutex<HashMap<String, usize>>,
    settled: Notify,
}

/// How many replies went out, and why the last one that did not failed.
#[derive(Debug)]
pub struct Sent {
    pub sent: usize,
    pub last_error: Option<SendError>,
}

/// Who gets the replies, and from which number.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub to: String,
    pub our_number: String,
    /// The incoming message the replies answer, for logs.
    pub message_sid: String,
    /// Where Twilio reports whether each reply was delivered.
    pub status_callback: String,
}

impl Outbox {
    pub fn new(api: MessagesApi, messaging_service_sid: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            api,
            messaging_service_sid,
            queues: Mutex::default(),
            owed: Mutex::default(),
            settled: Notify::new(),
        })
    }

    /// Runs `job` after every job already queued for `session`. `message_sid` is owed a
    /// reply until the job ends.
    pub fn enqueue(self: &Arc<Self>, session: &SessionId, message_sid: &str, job: Job) {
        *lock(&self.owed).entry(message_sid.to_owned()).or_default() += 1;
        let job = (message_sid.to_owned(), job);
        let mut queues = lock(&self.queues);
        // A send fails only when the worker has just ended: start a new one.
        let job = match queues.get(session) {
            Some(queue) => match queue.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (queue, jobs) = mpsc::unbounded_channel();
        let _ = queue.send(job);
        queues.insert(*session, queue);
        tokio::spawn(Arc::clone(self).work(*session, jobs));
    }

    async fn work(self: Arc<Self>, session: SessionId, mut jobs: mpsc::UnboundedReceiver<Queued>) {
        loop {
            let (message_sid, job) = {
                // Under the lock, so that nothing is queued between "empty" and "gone".
                let mut queues = lock(&self.queues);
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        queues.remove(&session);
                        return;
                    }
                }
            };
            // On a task of its own, so that a panic loses this job alone, not the
            // conversation's queue behind it.
            if let Err(panicked) = tokio::spawn(job).await {
                tracing::error!(
                    message_sid = %message_sid,
                    error = %panicked,
                    "sending replies panicked: they are lost"
                );
            }
            self.settle(&message_sid);
        }
    }

    fn settle(&self, message_sid: &str) {
        let mut owed = lock(&self.owed);
        if let Some(count) = owed.get_mut(message_sid) {
            *count -= 1;
            if *count == 0 {
                owed.remove(message_sid);
            }
        }
        if owed.is_empty() {
            self.settled.notify_waiters();
        }
    }

    /// Sends `messages` in order; a failure is logged and does not stop the rest.
    pub async fn send(&self, recipient: &Recipient, messages: &[ReplyMessage]) -> Sent {
        let from = match &self.messaging_service_sid {
            Some(sid) => Sender::MessagingService(sid.clone()),
            None => Sender::Number(recipient.our_number.clone()),
        };
        let mut sent = 0;
        let mut last_error = None;
        for message in messages {
            match self
                .api
                .send(
                    &recipient.to,
                    &from,
                    message,
                    Some(&recipient.status_callback),
                )
                .await
            {
                Ok(_) => sent += 1,
                Err(error) => {
                    let (status, code) = match &error {
                        SendError::Refused { status, code, .. } => (*status, *code),
                        SendError::GaveUp { .. } | SendError::Unknown(_) => (0, 0),
                    };
                    tracing::error!(
                        message_sid = %recipient.message_sid,
                        status,
                        twilio_error = code,
                        error = %error,
                        "a reply could not be sent through the Messages API"
                    );
                    last_error = Some(error);
                }
            }
        }
        Sent { sent, last_error }
    }

    /// Waits up to `grace` for every owed reply; returns the MessageSids still owed.
    pub async fn drain(&self, grace: Duration) -> Vec<String> {
        let wait = async {
            loop {
                let settled = self.settled.notified();
                if lock(&self.owed).is_empty() {
                    return;
                }
                settled.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        let mut owed: Vec<String> = lock(&self.owed).keys().cloned().collect();
        owed.sort();
        owed
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::twilio::messages_api::ApiCredentials;

    #[tokio::test]
    async fn a_panicking_job_loses_itself_only() {
        let credentials = ApiCredentials {
            account_sid: "AC1".into(),
            username: "AC1".into(),
            passwords: vec![Secret::new("token")],
        };
        let api = MessagesApi::new("http://127.0.0.1:9", credentials).unwrap();
        let outbox = Outbox::new(api, None);
        let session = SessionId::for_conversation("AC1", "+15551234567", "+18005550000");
        let (done, next_ran) = tokio::sync::oneshot::channel();
        outbox.enqueue(&session, "SM1", Box::pin(async { panic!("a bug") }));
        outbox.enqueue(
            &session,
            "SM2",
            Box::pin(async move {
                let _ = done.send(());
            }),
        );
        assert!(tokio::time::timeout(Duration::from_secs(5), next_ran)
            .await
            .is_ok_and(|ran| ran.is_ok()));
        // Both are settled: nothing is left owed for shutdown to wait on.
        assert!(outbox.drain(Duration::from_secs(1)).await.is_empty());
    }
}
