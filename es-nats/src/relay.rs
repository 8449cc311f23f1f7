//! [`JetStreamRelay`]: publishes the global log to a JetStream stream, exactly once, in
//! position order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use es_core::{
    AnyEvent, BatchError, BoxError, Consumer, Delivery, Envelope, Error, EventHandler, GlobalLog,
    ParkedEvent, PoisonPolicy, RetryPolicy,
};

use crate::codec::{headers, position_of};
use crate::conn::{Conn, NatsOptions};
use crate::stream::StreamSettings;
use crate::subject::event_subject;

/// What the relay writes, and how much at once.
#[derive(Debug, Clone)]
pub struct JetStreamRelayConfig {
    /// The stream, created or checked on first use.
    pub stream: StreamSettings,
    /// Events read from the log per batch (default 1,000).
    pub batch_size: usize,
    /// Publishes whose acknowledgement is awaited at once (default 500): the bound on what
    /// is in flight.
    pub max_in_flight: usize,
}

impl Default for JetStreamRelayConfig {
    fn default() -> Self {
        Self::new(StreamSettings::default())
    }
}

impl JetStreamRelayConfig {
    /// The defaults, writing to `stream`.
    pub fn new(stream: StreamSettings) -> Self {
        Self {
            stream,
            batch_size: 1_000,
            max_in_flight: 500,
        }
    }
}

/// Publishes the global log to JetStream: an [`EventHandler`] of every event ([`AnyEvent`])
/// and the [`Delivery`] of its own checkpoint, which is the position in the stream's last
/// message. Run it with [`JetStreamRelay::consumer`].
///
/// Each event is a message on `{prefix}.{AggregateType}.{id}` (escaped, see
/// [`escape`](crate::escape)) whose body is the event's JSON payload and whose headers carry
/// the envelope (see [`codec`](crate::headers)), with `Nats-Msg-Id` = the event id and
/// `Nats-Expected-Last-Sequence` = the stream sequence the relay expects before it, so the
/// stream can never get an event twice or out of order (see the crate docs). Clones share
/// the connection and state.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn run() -> Result<(), es_core::Error> {
/// use es_core::MemoryStore;
/// use es_nats::{JetStreamRelay, JetStreamRelayConfig};
///
/// let relay = JetStreamRelay::new("nats://127.0.0.1:4222", JetStreamRelayConfig::default());
/// let handle = relay.consumer("nats-relay", MemoryStore::new()).spawn();
/// println!("{:?}", handle.status());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JetStreamRelay {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    config: JetStreamRelayConfig,
    state: Mutex<State>,
}

/// What the relay knows of the stream; `last: None` means "read it again".
#[derive(Debug, Default, Clone, Copy)]
struct State {
    /// (position, stream sequence) of the stream's last message.
    last: Option<(u64, u64)>,
    checkpoint: u64,
}

impl std::fmt::Debug for JetStreamRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamRelay")
            .field("conn", &self.inner.conn)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl JetStreamRelay {
    /// A relay to the NATS at `options` (a URL, or [`NatsOptions`]). Connects on first use,
    /// so it starts while NATS is down and reports that in its status.
    pub fn new(options: impl Into<NatsOptions>, config: JetStreamRelayConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: Conn::new(options.into()),
                config: JetStreamRelayConfig {
                    batch_size: config.batch_size.max(1),
                    max_in_flight: config.max_in_flight.max(1),
                    ..config
                },
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JetStreamRelayConfig {
        &self.inner.config
    }

    /// A consumer named `name` running this relay over `log`, with the settings a relay
    /// needs: batches of [`JetStreamRelayConfig::batch_size`], a broker failure retried for
    /// as long as it lasts (backoff from 100 ms to 5 s, the error in
    /// [`Status::last_error`](es_core::Status::last_error)), and an unreadable event stopping
    /// the relay ([`PoisonPolicy::Stop`]) rather than leaving a gap in the stream.
    pub fn consumer<L: GlobalLog>(
        &self,
        name: impl Into<String>,
        log: L,
    ) -> Consumer<JetStreamRelay, L, JetStreamRelay> {
        Consumer::new(name, log, self.clone(), self.clone())
            .batch_size(self.inner.config.batch_size)
            .retry(RetryPolicy {
                attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            })
            .on_poison(PoisonPolicy::Stop)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stale(&self) {
        self.state().last = None;
    }

    /// The last position the stream holds, read from the stream (0: nothing yet), creating
    /// or checking the stream first.
    pub async fn last_published(&self) -> Result<u64, Error> {
        Ok(self.read_last().await?.0)
    }

    /// (position, sequence) of the stream's last message.
    async fn read_last(&self) -> Result<(u64, u64), Error> {
        let conn = &self.inner.conn;
        let settings = &self.inner.config.stream;
        let (_, js) = conn.get().await?;
        let stream = settings.ensure(conn, &js).await?;
        let info = stream.cached_info();
        let sequence = info.state.last_sequence;
        if sequence == 0 {
            return Ok((0, 0));
        }
        let message = stream.get_raw_message(sequence).await.map_err(|e| {
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) || e.to_string().contains("no message found")
            {
                Error::Invalid(format!(
                    "the last message (sequence {sequence}) of stream `{}` at {} is gone \
                     (removed by retention or deleted), so the relay cannot tell which \
                     position it holds; see StreamSettings::retention",
                    settings.name,
                    conn.url()
                ))
            } else {
                conn.fail(&format!("cannot read stream `{}` from", settings.name), &e)
            }
        })?;
        let position = position_of(Some(&message.headers)).ok_or_else(|| {
            Error::Invalid(format!(
                "the last message (sequence {sequence}, subject {}) of stream `{}` at {} has \
                 no Es-Position header: something other than the relay writes to it",
                message.subject,
                settings.name,
                conn.url()
            ))
        })?;
        Ok((position, sequence))
    }

    async fn publish(&self, events: &[Envelope<AnyEvent>]) -> Result<(), BatchError> {
        let fail = |index: usize, error: BoxError| BatchError { index, error };
        if events.is_empty() {
            return Ok(());
        }
        let known = self.state().last;
        let (mut previous, mut sequence) = match known {
            Some(last) => last,
            None => {
                let last = self.read_last().await.map_err(|e| fail(0, e.into()))?;
                self.state().last = Some(last);
                last
            }
        };
        let conn = &self.inner.conn;
        let (client, js) = conn.get().await.map_err(|e| fail(0, e.into()))?;
        let prefix = &self.inner.config.stream.subject_prefix;
        let max_in_flight = self.inner.config.max_in_flight;
        let mut pending: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        let mut expected = sequence;
        let mut duplicates = false;
        let result = async {
            for (index, envelope) in events.iter().enumerate() {
                let event = &envelope.record;
                let message = PublishMessage::build()
                    .headers(headers(event, previous).map_err(|e| fail(index, e.into()))?)
                    .payload(event.payload.get().to_owned().into())
                    .expected_last_sequence(expected);
                let subject = event_subject(
                    prefix,
                    &event.stream.aggregate_type,
                    &event.stream.aggregate_id,
                );
                let ack = js.send_publish(subject, message).await.map_err(|e| {
                    fail(
                        pending.front().map_or(index, |(i, _)| *i),
                        conn.describe(&format!("publishing position {} to", event.position), &e)
                            .into(),
                    )
                })?;
                pending.push_back((index, ack));
                previous = event.position;
                expected += 1;
                while pending.len() >= max_in_flight {
                    self.settle(&mut pending, events, &mut sequence, &mut duplicates)
                        .await?;
                }
            }
            while !pending.is_empty() {
                self.settle(&mut pending, events, &mut sequence, &mut duplicates)
                    .await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if !duplicates => {
                let last = events.last().map_or(previous, |e| e.position());
                self.state().last = Some((last, sequence));
                // Wake sources up at once (a hint: they also poll).
                let _ = client
                    .publish(
                        self.inner.config.stream.head_subject(),
                        last.to_string().into(),
                    )
                    .await;
                Ok(())
            }
            Ok(()) => {
                self.stale();
                Ok(())
            }
            Err(failure) => {
                self.stale();
                Err(failure)
            }
        }
    }

    /// Awaits the oldest acknowledgement.
    async fn settle(
        &self,
        pending: &mut VecDeque<(usize, PublishAckFuture)>,
        events: &[Envelope<AnyEvent>],
        sequence: &mut u64,
        duplicates: &mut bool,
    ) -> Result<(), BatchError> {
        let Some((index, ack)) = pending.pop_front() else {
            return Ok(());
        };
        match ack.await {
            Ok(ack) => {
                // A duplicate (an event the stream already had, within its dedupe window) is
                // not stored again; what follows it expected one sequence more, so the state
                // is read again after this batch.
                *duplicates |= ack.duplicate;
                *sequence = ack.sequence;
                Ok(())
            }
            Err(error) => {
                let position = events.get(index).map_or(0, |e| e.position());
                Err(BatchError {
                    index,
                    error: self
                        .inner
                        .conn
                        .describe(&format!("publishing position {position} to"), &error)
                        .into(),
                })
            }
        }
    }
}

impl EventHandler for JetStreamRelay {
    type Event = AnyEvent;

    async fn handle(&mut self, _tx: &mut (), event: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        self.publish(std::slice::from_ref(event))
            .await
            .map_err(|failure| failure.error)
    }

    async fn handle_batch(
        &mut self,
        _tx: &mut (),
        events: &[Envelope<AnyEvent>],
    ) -> Result<(), BatchError> {
        self.publish(events).await
    }
}

impl Delivery for JetStreamRelay {
    type Tx = ();
    const ATOMIC: bool = false;

    /// The position in the stream's last message, read from the stream on the first call
    /// and after any failure; in between, the position the relay last committed.
    async fn begin(&self, _consumer: &str) -> Result<((), u64), Error> {
        let state = *self.state();
        if state.last.is_some() {
            return Ok(((), state.checkpoint));
        }
        let last = self.read_last().await?;
        let mut state = self.state();
        state.last = Some(last);
        state.checkpoint = last.0;
        Ok(((), last.0))
    }

    async fn commit(
        &self,
        _tx: (),
        _consumer: &str,
        position: u64,
        _flush: bool,
    ) -> Result<(), Error> {
        let mut state = self.state();
        if state.last.is_some() {
            state.checkpoint = position;
        }
        Ok(())
    }

    async fn rollback(&self, _tx: ()) -> Result<(), Error> {
        Ok(())
    }

    /// Reads the stream again on the next batch (the runtime calls it when it takes the
    /// relay's lease: another relay may have published meanwhile).
    fn refresh(&self, _consumer: &str) {
        self.stale();
    }

    async fn park(&self, _tx: &mut (), consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        Err(Error::Invalid(format!(
            "relay `{consumer}` cannot skip position {}: a relay never leaves a gap in the stream",
            parked.position
        )))
    }

    async fn unpark(&self, _tx: &mut (), _consumer: &str, _position: u64) -> Result<bool, Error> {
        Ok(false)
    }

    async fn parked(&self, _consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        Ok(Vec::new())
    }
}
