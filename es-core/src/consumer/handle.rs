//! A running consumer, seen from outside: its status, read-your-writes waits, parked events,
//! shutdown.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::ParkedEvent;
use crate::error::Error;

/// What a consumer is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Not started yet.
    Starting,
    /// Another runner holds the lease; this one takes over when it goes away.
    WaitingForLease,
    /// Reading and handling events.
    Running,
    /// Caught up with the log, waiting for appends.
    Live,
    /// A read or commit failed; retrying with backoff (see [`Status::last_error`]).
    Retrying,
    /// Stopped on an event it could not handle, under [`PoisonPolicy::Stop`](crate::PoisonPolicy::Stop).
    Stopped,
    /// Shut down on request.
    ShutDown,
}

/// A consumer's progress and health.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The consumer's checkpoint name (with its partition, if any).
    pub name: String,
    /// What it is doing.
    pub state: ConsumerState,
    /// Everything up to this position is handled and committed.
    pub checkpoint: u64,
    /// The log's head when last read.
    pub head: u64,
    /// Positions between the checkpoint and the head: an upper bound of the events behind
    /// (positions may skip numbers).
    pub lag: u64,
    /// Events handled per second, averaged over recent batches.
    pub events_per_second: f64,
    /// Events handled since the consumer started.
    pub handled: u64,
    /// Events parked since the consumer started.
    pub parked: u64,
    /// The last failure, if any (cleared by the next success).
    pub last_error: Option<String>,
}

impl Status {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: ConsumerState::Starting,
            checkpoint: 0,
            head: 0,
            lag: 0,
            events_per_second: 0.0,
            handled: 0,
            parked: 0,
            last_error: None,
        }
    }
}

/// Requests to a running consumer, served between batches.
pub(crate) enum Request {
    Parked(oneshot::Sender<Result<Vec<ParkedEvent>, Error>>),
    Replay(u64, oneshot::Sender<Result<bool, Error>>),
}

/// A consumer running on its own task ([`Consumer::spawn`](crate::Consumer::spawn)).
///
/// Dropping the handle asks the consumer to shut down after its current batch.
pub struct ConsumerHandle {
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) task: Option<JoinHandle<Result<(), Error>>>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl ConsumerHandle {
    /// The consumer's current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until the consumer has handled and committed everything up to `position` (for
    /// read-your-writes: pass the position an append returned). Driven by the consumer's
    /// progress, with no polling. Fails if the consumer stopped or shut down first, or with
    /// [`Error::Timeout`] after `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), Error> {
        wait_for(self.status.clone(), position, timeout).await
    }

    /// The events the consumer parked.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, Error> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Parked(reply), answer).await?
    }

    /// Handles the parked event at `position` again (after the cause was fixed) and removes it
    /// from the parked events if the handler succeeds. Returns whether it was parked. A failure
    /// is returned and the event stays parked.
    pub async fn replay_parked(&self, position: u64) -> Result<bool, Error> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Replay(position, reply), answer)
            .await?
    }

    async fn request<T>(&self, request: Request, answer: oneshot::Receiver<T>) -> Result<T, Error> {
        let gone = || {
            Error::Invalid(format!(
                "consumer `{}` is not running",
                self.status.borrow().name
            ))
        };
        self.requests.send(request).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Asks the consumer to stop after its current batch, and waits until it has (its lease
    /// released and checkpoint saved). Returns the error it stopped on, if any.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Invalid(format!("consumer task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Waits until the status shows `position` committed, the consumer ended, or `timeout`.
pub(crate) async fn wait_for(
    mut status: watch::Receiver<Status>,
    position: u64,
    timeout: Duration,
) -> Result<(), Error> {
    let name = status.borrow().name.clone();
    let reached = status.wait_for(|s| {
        s.checkpoint >= position
            || matches!(s.state, ConsumerState::Stopped | ConsumerState::ShutDown)
    });
    match tokio::time::timeout(timeout, reached).await {
        Ok(Ok(s)) if s.checkpoint >= position => Ok(()),
        Ok(Ok(s)) => Err(Error::Invalid(format!(
            "consumer `{name}` ended ({:?}) at position {} before reaching {position}{}",
            s.state,
            s.checkpoint,
            s.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))),
        Ok(Err(_)) => Err(Error::Invalid(format!("consumer `{name}` is gone"))),
        Err(_) => Err(Error::Timeout(format!(
            "consumer `{name}` did not reach position {position} within {timeout:?}"
        ))),
    }
}
