//! The other side: a durable JetStream consumer as the global log of an es-core consumer,
//! its ack floor as the checkpoint, parked events in a stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, ErrorCode};
use es_core::{
    Delivery, Error, GlobalLog, LogFilter, LogPage, ParkedEvent, RecordedEvent, Wakeup,
    WakeupSender, check_checkpoint, check_name,
};
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::codec::{decode, position_of};
use crate::conn::{Conn, NatsOptions};
use crate::stream::StreamSettings;
use crate::subject::escape;

/// Reads the relayed log from JetStream, for consumers on other machines.
///
/// [`JetStreamSource::durable`] gives the pair a [`Consumer`](es_core::Consumer) needs, both
/// bound to one durable JetStream consumer named after it:
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn run(handler: impl es_core::EventHandler + 'static) -> Result<(), es_core::Error> {
/// use es_nats::{JetStreamSource, StreamSettings};
///
/// let source = JetStreamSource::new("nats://127.0.0.1:4222", StreamSettings::default());
/// let (log, delivery) = source.durable("balances");
/// let handle = es_core::Consumer::new("balances", log, delivery, handler).spawn();
/// println!("{:?}", handle.status());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct JetStreamSource {
    conn: Conn,
    settings: StreamSettings,
    wakeup: WakeupSender,
    watcher: Arc<Watcher>,
}

#[derive(Debug)]
struct Watcher(std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(task) = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl JetStreamSource {
    /// A source reading the stream of `settings` from the NATS at `options`; connects on
    /// first use. The stream must exist (the relay creates it).
    pub fn new(options: impl Into<NatsOptions>, settings: StreamSettings) -> Self {
        Self {
            conn: Conn::new(options.into()),
            settings,
            wakeup: WakeupSender::new(),
            watcher: Arc::new(Watcher(std::sync::Mutex::new(None))),
        }
    }

    /// The log and the delivery of the es-core consumer `name`, bound to the durable
    /// JetStream consumer `escape(name)` (see [`escape`](crate::escape)) on the stream,
    /// created on first use with acknowledgement of everything up to a message
    /// (`AckPolicy::All`). Run exactly one process per name at a time (take a lease).
    pub fn durable(&self, name: &str) -> (JetStreamLog, JetStreamDelivery) {
        self.durable_with(name, DurableSettings::default())
    }

    /// [`JetStreamSource::durable`] with other settings.
    pub fn durable_with(
        &self,
        name: &str,
        settings: DurableSettings,
    ) -> (JetStreamLog, JetStreamDelivery) {
        self.start_watcher();
        let shared = Arc::new(Shared {
            source: self.clone(),
            consumer: name.to_owned(),
            durable_name: escape(name),
            settings,
            state: Mutex::new(Durable::default()),
            reattach: std::sync::atomic::AtomicBool::new(false),
        });
        (
            JetStreamLog {
                shared: shared.clone(),
            },
            JetStreamDelivery { shared },
        )
    }

    /// Subscribes to the relay's head announcements (once), to wake followers at once.
    fn start_watcher(&self) {
        let mut slot = self
            .watcher
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let conn = self.conn.clone();
        let subject = self.settings.head_subject();
        let wakeup = self.wakeup.clone();
        *slot = Some(tokio::spawn(async move {
            loop {
                match conn.get().await {
                    Ok((client, _)) => match client.subscribe(subject.clone()).await {
                        Ok(mut heads) => {
                            while heads.next().await.is_some() {
                                wakeup.notify();
                            }
                        }
                        Err(error) => tracing::debug!(%error, "cannot subscribe to heads"),
                    },
                    Err(error) => tracing::debug!(%error, "head watcher cannot connect"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
}

/// Settings of the durable JetStream consumer behind a [`JetStreamSource::durable`] pair.
#[derive(Debug, Clone)]
pub struct DurableSettings {
    /// How long the server waits for an acknowledgement before delivering again (default
    /// 30 s). Redeliveries are recognised and skipped, so this only bounds wasted traffic.
    pub ack_wait: Duration,
    /// Most messages delivered and not yet acknowledged (default 20,000; at least the
    /// consumer's batch size).
    pub max_ack_pending: i64,
    /// How often followers poll when no head announcement comes (default 1 s).
    pub poll: Duration,
}

impl Default for DurableSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            poll: Duration::from_secs(1),
        }
    }
}

struct Shared {
    source: JetStreamSource,
    consumer: String,
    durable_name: String,
    settings: DurableSettings,
    state: Mutex<Durable>,
    /// Set by [`Delivery::refresh`]: attach again before the next read.
    reattach: std::sync::atomic::AtomicBool,
}

/// What the pair knows of its durable consumer.
#[derive(Default)]
struct Durable {
    /// `None`: (re)attach to the server's consumer before the next read.
    consumer: Option<PullConsumer>,
    /// The checkpoint: the position of the last acknowledged message.
    committed: u64,
    /// The position of the last message handed out (or `committed`).
    delivered: u64,
    /// Delivered, not yet acknowledged: the events and their acknowledgers.
    buffer: VecDeque<(RecordedEvent, Acker)>,
}

/// The global log as a durable JetStream consumer delivers it: one half of
/// [`JetStreamSource::durable`].
///
/// Reads after the checkpoint come from the durable consumer, in stream order; messages
/// the server delivers again (after `ack_wait`) are recognised by position and skipped, and
/// a message whose previous position (`Es-Previous`) was not delivered makes it re-attach to
/// the consumer at its ack floor, or, if the stream no longer holds that message, fail with
/// [`Error::Invalid`] (the consumer fell behind the stream's retention). Reads before the
/// checkpoint (replaying a parked event) look messages up by sequence. The filter applies in
/// this process.
///
/// Use it with its [`JetStreamDelivery`]; with another delivery (a view rebuilt at every
/// start, over [`LocalCheckpoints`](es_core::LocalCheckpoints)) it works too: a read after a
/// position acknowledges what lies before it, and a read from position 0 (a consumer starting
/// over) recreates the durable consumer at the stream's beginning, as
/// [`Consumer::rebuild`](es_core::Consumer::rebuild) does on the pair.
#[derive(Clone)]
pub struct JetStreamLog {
    shared: Arc<Shared>,
}

/// The checkpoint of one es-core consumer as a durable JetStream consumer's ack floor: the
/// other half of [`JetStreamSource::durable`].
///
/// `commit` acknowledges the last message up to the position (acknowledging all before it,
/// `AckPolicy::All`), confirmed by the server (`double_ack`) when the runtime flushes. On
/// start it attaches to the consumer at its ack floor (recreating it there if a crashed
/// process left messages delivered but unacknowledged). At least once: a crash repeats what
/// was handled after the last acknowledgement. Parked events live in the stream
/// [`StreamSettings::parked_stream`], one message per consumer and position.
#[derive(Clone)]
pub struct JetStreamDelivery {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("consumer", &self.shared.consumer)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for JetStreamDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamDelivery")
            .field("consumer", &self.shared.consumer)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn conn(&self) -> &Conn {
        &self.source.conn
    }

    fn stream_name(&self) -> &str {
        &self.source.settings.name
    }

    fn fail(&self, doing: &str, error: &dyn std::fmt::Display) -> Error {
        self.conn().fail(
            &format!(
                "{doing} (consumer `{}` of stream `{}`) on",
                self.durable_name,
                self.stream_name()
            ),
            error,
        )
    }

    fn config(&self, deliver_policy: DeliverPolicy) -> PullConfig {
        PullConfig {
            durable_name: Some(self.durable_name.clone()),
            description: Some(format!("es-nats source for consumer `{}`", self.consumer)),
            deliver_policy,
            ack_policy: AckPolicy::All,
            ack_wait: self.settings.ack_wait,
            max_ack_pending: self.settings.max_ack_pending,
            ..PullConfig::default()
        }
    }

    /// Attaches to the durable consumer at its ack floor: creates it if missing, recreates
    /// it at the ack floor if messages were delivered past it and not acknowledged (by a
    /// process that crashed), and sets the checkpoint to the position at the ack floor.
    async fn attach(&self, state: &mut Durable) -> Result<(), Error> {
        let (_, js) = self.conn().get().await?;
        let stream = self.source.settings.get(self.conn(), &js).await?;
        let info = match stream.consumer_info(&self.durable_name).await {
            Ok(info) => Some(info),
            Err(e) if e.to_string().contains("consumer not found") => None,
            Err(e) => return Err(self.fail("cannot read", &e)),
        };
        let (consumer, floor) = match info {
            None => {
                let consumer = stream
                    .create_consumer(self.config(DeliverPolicy::All))
                    .await
                    .map_err(|e| self.fail("cannot create", &e))?;
                (consumer, 0)
            }
            Some(info) => {
                let floor = info.ack_floor.stream_sequence;
                if info.num_ack_pending > 0 || info.delivered.stream_sequence > floor {
                    stream
                        .delete_consumer(&self.durable_name)
                        .await
                        .map_err(|e| self.fail("cannot delete", &e))?;
                    let consumer = stream
                        .create_consumer(self.config(DeliverPolicy::ByStartSequence {
                            start_sequence: floor.saturating_add(1),
                        }))
                        .await
                        .map_err(|e| self.fail("cannot recreate", &e))?;
                    (consumer, floor)
                } else {
                    let consumer = stream
                        .get_consumer(&self.durable_name)
                        .await
                        .map_err(|e| self.fail("cannot open", &e))?;
                    (consumer, floor)
                }
            }
        };
        let committed = if floor == 0 {
            0
        } else {
            match stream.get_raw_message(floor).await {
                Ok(message) => position_of(Some(&message.headers)).ok_or_else(|| {
                    Error::Invalid(format!(
                        "message {floor} of stream `{}` has no Es-Position header",
                        self.stream_name()
                    ))
                })?,
                // The acknowledged message is gone (retention): the next one says which
                // position came before it.
                Err(_) => match stream.get_raw_message(floor.saturating_add(1)).await {
                    Ok(next) => next
                        .headers
                        .get(crate::codec::PREVIOUS)
                        .and_then(|v| v.as_str().parse().ok())
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "message {} of stream `{}` has no Es-Previous header",
                                floor.saturating_add(1),
                                self.stream_name()
                            ))
                        })?,
                    Err(e) => {
                        return Err(Error::Invalid(format!(
                            "consumer `{}` acknowledged up to sequence {floor} of stream `{}`, \
                             which no longer holds it nor the next message ({e}): the stream's \
                             retention removed events it had not processed",
                            self.durable_name,
                            self.stream_name()
                        )));
                    }
                },
            }
        };
        state.consumer = Some(consumer);
        state.committed = committed;
        state.delivered = committed;
        state.buffer.clear();
        Ok(())
    }

    /// Fetches what the durable consumer has ready (up to `limit` messages) into the buffer.
    /// `Ok(false)`: a gap was seen, and the consumer must be re-attached.
    async fn fetch(&self, state: &mut Durable, limit: usize) -> Result<bool, Error> {
        let Some(consumer) = state.consumer.clone() else {
            return Ok(false);
        };
        let mut batch = consumer
            .fetch()
            .max_messages(limit)
            .messages()
            .await
            .map_err(|e| self.fail("cannot fetch from", &e))?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| self.fail("cannot fetch from", &e))?;
            let sequence = message
                .info()
                .map(|i| i.stream_sequence)
                .unwrap_or_default();
            let (message, acker) = message.split();
            let (event, previous) = decode(message.headers.as_ref(), &message.payload, sequence)?;
            if event.position <= state.delivered {
                continue; // delivered again after ack_wait: already handed out
            }
            if previous != state.delivered {
                return Ok(false);
            }
            state.delivered = event.position;
            state.buffer.push_back((event, acker));
        }
        Ok(true)
    }

    async fn begin(&self) -> Result<u64, Error> {
        let mut state = self.state.lock().await;
        if self
            .reattach
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            state.consumer = None;
        }
        if state.consumer.is_none() {
            self.attach(&mut state).await?;
        }
        Ok(state.committed)
    }

    async fn read(&self, after: u64, limit: usize, filter: &LogFilter) -> Result<LogPage, Error> {
        let mut page = LogPage {
            events: Vec::new(),
            scanned_to: after,
        };
        if limit == 0 {
            return Ok(page);
        }
        let mut state = self.state.lock().await;
        if state.consumer.is_none() {
            self.attach(&mut state).await?;
        }
        if after == 0 && state.committed > 0 && filter.before_position.is_none() {
            // A consumer starting over (a view with in-process checkpoints, rebuilt at every
            // start): start the durable consumer over too.
            self.restart(&mut state).await?;
        }
        if after < state.committed {
            drop(state);
            return self.read_by_sequence(after, limit, filter).await;
        }
        // The runtime reads after its checkpoint: what lies at or before `after` is handled.
        // Acknowledge it here too, so that this log works under any delivery (a view with
        // in-process checkpoints) without the server's pending acknowledgements piling up.
        if state
            .buffer
            .front()
            .is_some_and(|(e, _)| e.position <= after)
        {
            self.acknowledge(&mut state, after, false).await?;
        }
        let buffered = state.buffer.iter().any(|(e, _)| e.position > after);
        if !buffered && after >= state.delivered {
            let mut attached_again = false;
            while !self.fetch(&mut state, limit).await? {
                if attached_again {
                    return Err(Error::Invalid(format!(
                        "stream `{}` does not hold every event after position {}: the durable \
                         consumer `{}` skips some (removed by the stream's retention)",
                        self.stream_name(),
                        state.delivered,
                        self.durable_name
                    )));
                }
                self.attach(&mut state).await?;
                attached_again = true;
            }
        }
        let unread = state.buffer.iter().filter(|(e, _)| e.position > after);
        for (event, _) in unread.take(limit) {
            page.scanned_to = event.position;
            if filter.matches(event) {
                page.events.push(event.clone());
            }
        }
        Ok(page)
    }

    /// Reads before the checkpoint, by stream sequence (slow: one request per message).
    async fn read_by_sequence(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        let (_, js) = self.conn().get().await?;
        let mut stream = self.source.settings.get(self.conn(), &js).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| self.fail("cannot read", &e))?
            .state
            .clone();
        let position_at = |sequence: u64| {
            let stream = stream.clone();
            async move {
                match stream.get_raw_message(sequence).await {
                    Ok(message) => Ok(Some(message)),
                    Err(e) if matches!(e.kind(), async_nats::jetstream::stream::LastRawMessageErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::NO_MESSAGE_FOUND) => {
                        Ok(None)
                    }
                    Err(e) => Err(self.fail("cannot read a message from", &e)),
                }
            }
        };
        // The first sequence whose position is above `after` (positions grow with sequences).
        let (mut low, mut high) = (info.first_sequence, info.last_sequence.saturating_add(1));
        while low < high {
            let middle = low + (high - low) / 2;
            let mut probe = middle;
            let mut found = None;
            while probe < high {
                if let Some(message) = position_at(probe).await? {
                    found = Some(position_of(Some(&message.headers)).unwrap_or(u64::MAX));
                    break;
                }
                probe += 1;
            }
            match found {
                Some(position) if position > after => high = middle,
                Some(_) => low = probe + 1,
                None => high = middle,
            }
        }
        let mut page = LogPage {
            events: Vec::new(),
            scanned_to: after,
        };
        let mut sequence = low;
        let mut considered = 0;
        while considered < limit && sequence <= info.last_sequence {
            if let Some(message) = position_at(sequence).await? {
                let (event, _) = decode(Some(&message.headers), &message.payload, sequence)?;
                considered += 1;
                page.scanned_to = event.position;
                if filter.matches(&event) {
                    page.events.push(event);
                }
            }
            sequence += 1;
        }
        Ok(page)
    }

    async fn head(&self) -> Result<u64, Error> {
        let (_, js) = self.conn().get().await?;
        let stream = self.source.settings.get(self.conn(), &js).await?;
        let last = stream.cached_info().state.last_sequence;
        if last == 0 {
            return Ok(0);
        }
        let message = stream
            .get_raw_message(last)
            .await
            .map_err(|e| self.fail("cannot read the last message", &e))?;
        Ok(position_of(Some(&message.headers)).unwrap_or(0))
    }

    async fn commit(&self, position: u64, flush: bool) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        if position == 0 && state.committed > 0 {
            // A rebuild: start the durable consumer over from the stream's beginning.
            return self.restart(&mut state).await;
        }
        if position < state.committed {
            return Err(Error::Invalid(format!(
                "consumer `{}` cannot move its checkpoint back from {} to {position}: a durable \
                 JetStream consumer's ack floor only moves forward (or back to 0, a rebuild)",
                self.consumer, state.committed
            )));
        }
        self.acknowledge(&mut state, position, flush).await
    }

    /// Acknowledges everything delivered up to `position` (`AckPolicy::All`: the last such
    /// message), confirmed by the server when `flush`.
    async fn acknowledge(
        &self,
        state: &mut Durable,
        position: u64,
        flush: bool,
    ) -> Result<(), Error> {
        let last = state
            .buffer
            .iter()
            .rposition(|(event, _)| event.position <= position);
        if let Some(index) = last {
            let acker = &state.buffer[index].1;
            let acked = if flush {
                acker.double_ack_with(AckKind::Ack).await
            } else {
                acker.ack().await
            };
            acked.map_err(|e| self.fail("cannot acknowledge", &e))?;
            state.buffer.drain(..=index);
        }
        state.committed = state.committed.max(position);
        state.delivered = state.delivered.max(state.committed);
        Ok(())
    }

    /// Recreates the durable consumer at the stream's beginning (checkpoint 0).
    async fn restart(&self, state: &mut Durable) -> Result<(), Error> {
        let (_, js) = self.conn().get().await?;
        let stream = self.source.settings.get(self.conn(), &js).await?;
        match stream.delete_consumer(&self.durable_name).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("consumer not found") => {}
            Err(e) => return Err(self.fail("cannot delete", &e)),
        }
        let consumer = stream
            .create_consumer(self.config(DeliverPolicy::All))
            .await
            .map_err(|e| self.fail("cannot recreate", &e))?;
        state.consumer = Some(consumer);
        state.committed = 0;
        state.delivered = 0;
        state.buffer.clear();
        Ok(())
    }

    async fn parked_stream(&self) -> Result<(async_nats::jetstream::Context, Stream), Error> {
        let (_, js) = self.conn().get().await?;
        let stream = self.source.settings.parked(self.conn(), &js).await?;
        Ok((js, stream))
    }
}

impl GlobalLog for JetStreamLog {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        self.shared.read(after, limit, filter).await
    }

    async fn head_position(&self) -> Result<u64, Error> {
        self.shared.head().await
    }

    fn wakeup(&self) -> Wakeup {
        self.shared
            .source
            .wakeup
            .subscribe(self.shared.settings.poll)
    }
}

impl JetStreamDelivery {
    fn check(&self, consumer: &str) -> Result<(), Error> {
        if consumer == self.shared.consumer {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "this delivery is bound to consumer `{}`, not `{consumer}`: make one per consumer \
                 with JetStreamSource::durable",
                self.shared.consumer
            )))
        }
    }
}

impl Delivery for JetStreamDelivery {
    type Tx = ();
    const ATOMIC: bool = false;

    async fn begin(&self, consumer: &str) -> Result<((), u64), Error> {
        self.check(consumer)?;
        Ok(((), self.shared.begin().await?))
    }

    async fn commit(
        &self,
        _tx: (),
        consumer: &str,
        position: u64,
        flush: bool,
    ) -> Result<(), Error> {
        self.check(consumer)?;
        self.shared.commit(position, flush).await
    }

    async fn rollback(&self, _tx: ()) -> Result<(), Error> {
        Ok(())
    }

    /// Attaches to the durable consumer again before the next batch (the runtime calls it
    /// when it takes the consumer's lease: another process may have moved the ack floor).
    fn refresh(&self, consumer: &str) {
        if consumer == self.shared.consumer {
            self.shared
                .reattach
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn park(&self, _tx: &mut (), consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_checkpoint(consumer, parked.position)?;
        let json = serde_json::to_vec(parked).map_err(Error::Encode)?;
        let (js, _) = self.shared.parked_stream().await?;
        let subject = self
            .shared
            .source
            .settings
            .parked_subject(consumer, parked.position);
        js.publish(subject, json.into())
            .await
            .map_err(|e| self.shared.fail("cannot park an event", &e))?
            .await
            .map_err(|e| self.shared.fail("cannot park an event", &e))?;
        Ok(())
    }

    async fn unpark(&self, _tx: &mut (), consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        let (_, stream) = self.shared.parked_stream().await?;
        let subject = self
            .shared
            .source
            .settings
            .parked_subject(consumer, position);
        let purged = stream
            .purge()
            .filter(subject)
            .await
            .map_err(|e| self.shared.fail("cannot unpark an event", &e))?;
        Ok(purged.purged > 0)
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        check_name(consumer, "consumer name")?;
        let (_, stream) = self.shared.parked_stream().await?;
        let mut reader = stream
            .create_consumer(PullConfig {
                filter_subject: format!(
                    "{}.>",
                    self.shared.source.settings.parked_prefix(consumer)
                ),
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..PullConfig::default()
            })
            .await
            .map_err(|e| self.shared.fail("cannot list parked events", &e))?;
        let total = reader
            .info()
            .await
            .map_err(|e| self.shared.fail("cannot list parked events", &e))?
            .num_pending;
        let mut parked = Vec::new();
        while (parked.len() as u64) < total {
            let mut batch = reader
                .fetch()
                .max_messages(1_000)
                .messages()
                .await
                .map_err(|e| self.shared.fail("cannot list parked events", &e))?;
            let before = parked.len();
            while let Some(message) = batch.next().await {
                let message =
                    message.map_err(|e| self.shared.fail("cannot list parked events", &e))?;
                let event: ParkedEvent = serde_json::from_slice(&message.payload).map_err(|e| {
                    Error::Backend(
                        format!("parked event `{}` is unreadable: {e}", message.subject).into(),
                    )
                })?;
                parked.push(event);
            }
            if parked.len() == before {
                break;
            }
        }
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }
}
