//! [`Consumer`]: runs one handler over the global log.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::handle::{ConsumerHandle, ConsumerState, Request, Status};
use super::{BatchError, Delivery, Envelope, EventHandler, LogEvent};
use crate::checkpoint::ParkedEvent;
use crate::envelope::{RecordedEvent, StreamId};
use crate::error::{BoxError, Error, Permanent};
use crate::lease::{Lease, Leases};
use crate::limits::check_name;
use crate::log::{GlobalLog, LogFilter};

/// How a failing handler is retried before its event counts as poison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Pause before the second try; doubled after each failure.
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One try, no retry.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// What a consumer does with an event its handler still fails on after every retry, or
/// that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonPolicy {
    /// Store it as a [`ParkedEvent`] (with the error, stream, version and position) and go on
    /// with the log. The default: one bad event never wedges a consumer.
    #[default]
    Park,
    /// Stop the consumer with [`Error::Handler`], its checkpoint just before the event.
    Stop,
}

/// One of `count` partitions of a consumer. Streams are assigned by a stable hash of the
/// stream id, so each stream's events go to one partition, in order. Each partition has its
/// own checkpoint and lease (named `name[index/count]`), so several processes can share the
/// work of one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Partition {
    /// Partition `index` of `count` (`index < count`).
    pub fn new(index: u32, count: u32) -> Result<Self, Error> {
        if index >= count {
            return Err(Error::Invalid(format!(
                "partition {index} of {count} does not exist"
            )));
        }
        Ok(Self { index, count })
    }

    /// Every partition of a consumer split `count` ways.
    pub fn all(count: u32) -> impl Iterator<Item = Partition> {
        (0..count).map(move |index| Partition { index, count })
    }

    /// Whether `stream`'s events belong to this partition.
    pub fn owns(&self, stream: &StreamId) -> bool {
        stable_hash(stream) % u64::from(self.count) == u64::from(self.index)
    }

    /// The partition's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many partitions the consumer has.
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// 64-bit FNV-1a over the stream id: stable across processes, versions and platforms.
fn stable_hash(stream: &StreamId) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let bytes = stream
        .aggregate_type
        .bytes()
        .chain([0xff])
        .chain(stream.aggregate_id.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// How far a catch-up or rebuild has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Events handled so far in this run.
    pub done: u64,
    /// Positions to cover in this run (head minus start when it began): an upper bound of the
    /// events, since positions may skip numbers.
    pub total: u64,
    /// The checkpoint reached.
    pub position: u64,
    /// Time since the run began.
    pub elapsed: Duration,
}

impl Progress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs one [`EventHandler`] over a [`GlobalLog`], with its checkpoint committed by a
/// [`Delivery`].
///
/// ```
/// # futures::executor::block_on(async {
/// use es_core::prelude::*;
/// use es_core::{AtLeastOnce, BoxError, Consumer, Envelope, EventHandler, LocalCheckpoints};
///
/// #[event] pub struct Deposited { pub amount: i64 }
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Deposited))]
/// pub struct Wallet { balance: i64 }
/// impl Apply<Deposited> for Wallet { fn apply(&mut self, e: &Deposited) { self.balance += e.amount; } }
///
/// #[derive(Default)]
/// struct Total(i64);
/// impl EventHandler for Total {
///     type Event = WalletEvent;
///     async fn handle(&mut self, _: &mut (), e: &Envelope<WalletEvent>) -> Result<(), BoxError> {
///         let WalletEvent::Deposited(d) = &e.event;
///         self.0 += d.amount;
///         Ok(())
///     }
/// }
///
/// let store = MemoryStore::new();
/// let wallets = Repository::<Wallet, _>::new(store.clone());
/// wallets.execute("w-1", Metadata::new(), |_| Ok::<_, String>(Deposited { amount: 5 })).await.unwrap();
///
/// // A view rebuilt at every start: its checkpoint lives in this process only.
/// let mut total = Consumer::new("total", store, AtLeastOnce::new(LocalCheckpoints::new()), Total::default());
/// let progress = total.catch_up().await.unwrap();
/// assert_eq!((progress.done, total.handler().0), (1, 5));
/// # });
/// ```
pub struct Consumer<H, L, D> {
    name: String,
    handler: H,
    log: L,
    delivery: D,
    filter: Arc<LogFilter>,
    batch_size: usize,
    retry: RetryPolicy,
    poison: PoisonPolicy,
    partition: Option<Partition>,
    leases: Option<Arc<dyn Leases>>,
    lease_poll: Duration,
    status: watch::Sender<Status>,
}

/// The outcome of one step.
enum Step {
    /// The checkpoint moved to this position, handling this many events.
    Advanced { to: u64, handled: u64 },
    /// Nothing after the checkpoint yet.
    Idle,
}

impl<H, L, D> Consumer<H, L, D>
where
    D: Delivery,
    H: EventHandler<D::Tx>,
    L: GlobalLog,
{
    /// A consumer named `name` (its checkpoint key) reading `log`, committing through
    /// `delivery`. Defaults: batches of 500, [`RetryPolicy::default`], [`PoisonPolicy::Park`],
    /// no lease, one partition.
    pub fn new(name: impl Into<String>, log: L, delivery: D, handler: H) -> Self {
        let name = name.into();
        Self {
            status: watch::Sender::new(Status::new(&name)),
            name,
            handler,
            log,
            delivery,
            filter: Arc::new(H::Event::filter()),
            batch_size: 500,
            retry: RetryPolicy::default(),
            poison: PoisonPolicy::default(),
            partition: None,
            leases: None,
            lease_poll: Duration::from_millis(500),
        }
    }

    /// Events read per batch (default 500).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How a failing handler is retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            attempts: retry.attempts.max(1),
            ..retry
        };
        self
    }

    /// What happens to an event that still fails after the retries.
    pub fn on_poison(mut self, policy: PoisonPolicy) -> Self {
        self.poison = policy;
        self
    }

    /// Runs as `partition`: only streams of that partition, with a checkpoint and lease of its
    /// own (`name[index/count]`).
    pub fn partition(mut self, partition: Partition) -> Self {
        let base = self.name.split('[').next().unwrap_or_default().to_owned();
        self.name = format!("{base}[{}/{}]", partition.index, partition.count);
        self.status.send_modify(|s| s.name = self.name.clone());
        self.partition = Some(partition);
        self
    }

    /// Holds a single-active lease named like the checkpoint while running: another runner of
    /// the same consumer waits, trying again every `poll` (the longest a takeover waits after
    /// the holder goes away).
    pub fn lease(mut self, leases: impl Leases + 'static, poll: Duration) -> Self {
        self.leases = Some(Arc::new(leases));
        self.lease_poll = poll;
        self
    }

    /// Narrows what is read further than the handler's event types (for example to some
    /// event names), in the store.
    pub fn filter(mut self, filter: LogFilter) -> Self {
        self.filter = Arc::new(filter);
        self
    }

    /// The checkpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handler, to query a read model it keeps.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Mutable access to the handler.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Gives the handler back.
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The events this consumer parked.
    pub fn parked(&self) -> impl Future<Output = Result<Vec<ParkedEvent>, Error>> + Send + '_ {
        self.delivery.parked(&self.name)
    }

    /// Handles everything after the checkpoint up to the head as it was when the run began,
    /// then returns. Holds the lease while it runs, if one is configured; fails with
    /// [`Error::Busy`] if another runner holds it.
    pub async fn catch_up(&mut self) -> Result<Progress, Error> {
        self.catch_up_with(|_| {}).await
    }

    /// [`Consumer::catch_up`], calling `on_progress` after every batch.
    pub async fn catch_up_with(
        &mut self,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        check_name(&self.name, "consumer name")?;
        let lease = self.lease_once().await?;
        let began = Instant::now();
        let head = self.log.head_position().await?;
        let start = self.checkpoint().await?;
        let mut progress = Progress {
            done: 0,
            total: head.saturating_sub(start),
            position: start,
            elapsed: Duration::ZERO,
        };
        while progress.position < head {
            match self.step().await? {
                Step::Idle => break,
                Step::Advanced { to, handled } => {
                    progress.done += handled;
                    progress.position = to;
                    progress.elapsed = began.elapsed();
                    on_progress(progress);
                }
            }
        }
        self.delivery.flush(&self.name).await?;
        if let Some(lease) = lease {
            lease.release().await;
        }
        progress.elapsed = began.elapsed();
        self.set_state(ConsumerState::Live, |s| s.head = s.head.max(head));
        Ok(progress)
    }

    /// Empties the read model ([`EventHandler::reset`]) and resets the checkpoint and parked
    /// events in one unit of work, then replays the whole log, calling `on_progress` after
    /// every batch.
    pub async fn rebuild(
        &mut self,
        on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        check_name(&self.name, "consumer name")?;
        {
            let lease = self.lease_once().await?;
            let (mut tx, _) = self.delivery.begin(&self.name).await?;
            if let Err(source) = self.handler.reset(&mut tx).await {
                self.delivery.rollback(tx).await?;
                return Err(Error::Handler {
                    consumer: self.name.clone(),
                    position: 0,
                    source,
                });
            }
            for parked in self.delivery.parked(&self.name).await? {
                self.delivery
                    .unpark(&mut tx, &self.name, parked.position)
                    .await?;
            }
            self.delivery.commit(tx, &self.name, 0, true).await?;
            self.status.send_modify(|s| s.checkpoint = 0);
            if let Some(lease) = lease {
                lease.release().await;
            }
        }
        let progress = self.catch_up_with(on_progress).await?;
        tracing::info!(consumer = %self.name, events = progress.done, seconds = progress.elapsed.as_secs_f64(), rate = progress.rate(), "consumer rebuilt");
        Ok(progress)
    }

    /// Handles the parked event at `position` again and unparks it if the handler succeeds
    /// (in the same unit of work). Returns whether it was parked.
    pub async fn replay_parked(&mut self, position: u64) -> Result<bool, Error> {
        let parked = self.delivery.parked(&self.name).await?;
        if !parked.iter().any(|p| p.position == position) {
            return Ok(false);
        }
        let only = LogFilter::all().before(position.saturating_add(1));
        let page = self
            .log
            .read_log(position.saturating_sub(1), 1, &only)
            .await?;
        let (mut tx, checkpoint) = self.delivery.begin(&self.name).await?;
        if let Some(record) = page.events.into_iter().find(|e| e.position == position)
            && let Some(decoded) = H::Event::from_record(&record)
        {
            let envelope = match decoded {
                Ok(event) => Envelope { event, record },
                Err(error) => {
                    self.delivery.rollback(tx).await?;
                    return Err(error);
                }
            };
            if let Err(failure) = self
                .handler
                .handle_batch(&mut tx, std::slice::from_ref(&envelope))
                .await
            {
                self.delivery.rollback(tx).await?;
                return Err(self.handler_error(position, failure.error));
            }
        }
        self.delivery.unpark(&mut tx, &self.name, position).await?;
        self.delivery
            .commit(tx, &self.name, checkpoint, true)
            .await?;
        Ok(true)
    }

    async fn checkpoint(&mut self) -> Result<u64, Error> {
        let (tx, position) = self.delivery.begin(&self.name).await?;
        self.delivery.rollback(tx).await?;
        Ok(position)
    }

    async fn lease_once(&mut self) -> Result<Option<Lease>, Error> {
        let Some(leases) = &self.leases else {
            return Ok(None);
        };
        match leases.try_acquire(&self.name).await? {
            Some(lease) => {
                self.delivery.refresh(&self.name);
                Ok(Some(lease))
            }
            None => Err(Error::Busy(format!(
                "another runner holds the lease of consumer `{}`",
                self.name
            ))),
        }
    }

    fn set_state(&self, state: ConsumerState, also: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            s.state = state;
            also(s);
        });
    }

    fn handler_error(&self, position: u64, source: BoxError) -> Error {
        Error::Handler {
            consumer: self.name.clone(),
            position,
            source,
        }
    }

    /// One batch: read after the checkpoint, handle, commit. An unreadable row is passed:
    /// what lies before it is handled, and it is treated as poison.
    async fn step(&mut self) -> Result<Step, Error> {
        let filter = self.filter.clone();
        match self.read_and_handle(&filter).await? {
            Ok(step) => Ok(step),
            Err(bad_row) => self.pass_bad_row(bad_row).await,
        }
    }

    /// One batch under `filter`; `Err` (inside `Ok`) when the read hit an unreadable row
    /// after the checkpoint, described as the event to park.
    async fn read_and_handle(
        &mut self,
        filter: &LogFilter,
    ) -> Result<Result<Step, ParkedEvent>, Error> {
        let (tx, checkpoint) = self.delivery.begin(&self.name).await?;
        // Everything up to the stored checkpoint is handled, though maybe not by this runner
        // (a restart, or another runner sharing it): waiters for those positions may go.
        if checkpoint > self.status.borrow().checkpoint {
            self.status
                .send_modify(|s| s.checkpoint = s.checkpoint.max(checkpoint));
        }
        let page = match self.log.read_log(checkpoint, self.batch_size, filter).await {
            Ok(page) => page,
            Err(error) => {
                self.delivery.rollback(tx).await?;
                return match error {
                    Error::BadRow {
                        position: Some(bad),
                        ref stream,
                        version,
                        ..
                    } if bad > checkpoint => Ok(Err(ParkedEvent {
                        position: bad,
                        event_id: None,
                        stream: stream.clone(),
                        version,
                        event_name: String::new(),
                        error: error.to_string(),
                        attempts: 1,
                        parked_at: chrono::Utc::now(),
                    })),
                    error => Err(error),
                };
            }
        };
        let span = tracing::debug_span!("consumer_batch", consumer = %self.name, after = checkpoint, to = page.scanned_to, events = page.events.len());
        async move {
            if page.events.is_empty() {
                if page.scanned_to > checkpoint {
                    self.delivery
                        .commit(tx, &self.name, page.scanned_to, true)
                        .await?;
                    self.committed(page.scanned_to, 0, Duration::ZERO);
                    return Ok(Step::Advanced {
                        to: page.scanned_to,
                        handled: 0,
                    });
                }
                self.delivery.rollback(tx).await?;
                return Ok(Step::Idle);
            }
            self.handle_page(tx, checkpoint, page.events, page.scanned_to)
                .await
        }
        .instrument(span)
        .await
        .map(Ok)
    }

    /// Decodes and handles one page read after `checkpoint`, and commits up to `scanned_to`.
    async fn handle_page(
        &mut self,
        mut tx: D::Tx,
        checkpoint: u64,
        records: Vec<RecordedEvent>,
        scanned_to: u64,
    ) -> Result<Step, Error> {
        let began = Instant::now();
        let mut envelopes = Vec::with_capacity(records.len());
        let mut undecodable = None;
        for record in records {
            if self.partition.is_some_and(|p| !p.owns(&record.stream)) {
                continue;
            }
            match H::Event::from_record(&record) {
                None => {}
                Some(Ok(event)) => envelopes.push(Envelope { event, record }),
                Some(Err(error)) => {
                    undecodable = Some((record, error));
                    break;
                }
            }
        }
        if let Err(failure) = self.handler.handle_batch(&mut tx, &envelopes).await {
            self.delivery.rollback(tx).await?;
            return self.recover(checkpoint, &envelopes, failure).await;
        }
        let handled = envelopes.len() as u64;
        match undecodable {
            None => {
                self.delivery
                    .commit(tx, &self.name, scanned_to, false)
                    .await?;
                self.committed(scanned_to, handled, began.elapsed());
                Ok(Step::Advanced {
                    to: scanned_to,
                    handled,
                })
            }
            Some((record, error)) => {
                let before = record.position - 1;
                self.delivery.commit(tx, &self.name, before, false).await?;
                self.committed(before, handled, began.elapsed());
                let parked = ParkedEvent::of(&record, &error, 1);
                self.poison(parked, error.into()).await?;
                Ok(Step::Advanced {
                    to: record.position,
                    handled,
                })
            }
        }
    }

    /// After `failure` in a batch read after `checkpoint`: keeps what was handled before the
    /// failing event, retries that event with backoff, then treats it as poison.
    async fn recover(
        &mut self,
        checkpoint: u64,
        envelopes: &[Envelope<H::Event>],
        failure: BatchError,
    ) -> Result<Step, Error> {
        let Some(failing) = envelopes.get(failure.index) else {
            return Err(Error::Invalid(format!(
                "consumer `{}`'s handler reported a failure at index {} of a batch of {}",
                self.name,
                failure.index,
                envelopes.len()
            )));
        };
        let before = failing.position() - 1;
        let handled_before = failure.index as u64;
        if before > checkpoint {
            let (mut tx, current) = self.delivery.begin(&self.name).await?;
            if current != checkpoint {
                // Another runner moved on meanwhile.
                self.delivery.rollback(tx).await?;
                return Ok(Step::Advanced {
                    to: current,
                    handled: 0,
                });
            }
            if D::ATOMIC
                && let Err(again) = self
                    .handler
                    .handle_batch(&mut tx, &envelopes[..failure.index])
                    .await
            {
                self.delivery.rollback(tx).await?;
                let position = envelopes
                    .get(again.index)
                    .map_or(failing.position(), |e| e.position());
                return Err(self.handler_error(position, again.error));
            }
            self.delivery.commit(tx, &self.name, before, false).await?;
            self.committed(before, handled_before, Duration::ZERO);
        }
        let mut error = failure.error;
        let mut attempts = 1;
        while attempts < self.retry.attempts && !error.is::<Permanent>() {
            self.set_state(ConsumerState::Retrying, |s| {
                s.last_error = Some(format!("position {}: {error}", failing.position()));
            });
            tracing::warn!(consumer = %self.name, position = failing.position(), stream = %failing.record.stream, version = failing.record.version, attempt = attempts, %error, "handler failed; retrying");
            tokio::time::sleep(self.retry.backoff(attempts)).await;
            attempts += 1;
            let (mut tx, current) = self.delivery.begin(&self.name).await?;
            if current != before {
                self.delivery.rollback(tx).await?;
                return Ok(Step::Advanced {
                    to: current,
                    handled: handled_before,
                });
            }
            match self
                .handler
                .handle_batch(&mut tx, std::slice::from_ref(failing))
                .await
            {
                Ok(()) => {
                    self.delivery
                        .commit(tx, &self.name, failing.position(), false)
                        .await?;
                    self.committed(failing.position(), 1, Duration::ZERO);
                    return Ok(Step::Advanced {
                        to: failing.position(),
                        handled: handled_before + 1,
                    });
                }
                Err(again) => {
                    self.delivery.rollback(tx).await?;
                    error = again.error;
                }
            }
        }
        let parked = ParkedEvent::of(&failing.record, &error, attempts);
        self.poison(parked, error).await?;
        Ok(Step::Advanced {
            to: failing.position(),
            handled: handled_before,
        })
    }

    /// Handles what lies before an unreadable row, then treats the row as poison.
    async fn pass_bad_row(&mut self, parked: ParkedEvent) -> Result<Step, Error> {
        let bad = parked.position;
        let before = self.filter.as_ref().clone().before(bad);
        let mut handled = 0;
        loop {
            match self.read_and_handle(&before).await? {
                Ok(Step::Idle) => break,
                Ok(Step::Advanced { to, handled: n }) => {
                    handled += n;
                    if to >= bad - 1 {
                        break;
                    }
                }
                Err(other) => {
                    return Err(Error::Invalid(format!(
                        "consumer `{}`: unreadable rows at positions {} and {bad}",
                        self.name, other.position
                    )));
                }
            }
        }
        let error: BoxError = parked.error.clone().into();
        self.poison(parked, error).await?;
        Ok(Step::Advanced { to: bad, handled })
    }

    /// Parks `parked` and moves the checkpoint past it, or stops, per the policy.
    async fn poison(&mut self, parked: ParkedEvent, error: BoxError) -> Result<(), Error> {
        let position = parked.position;
        match self.poison {
            PoisonPolicy::Stop => {
                tracing::error!(consumer = %self.name, position, stream = %parked.stream, version = parked.version, %error, "consumer stopped on an event it cannot handle");
                Err(self.handler_error(position, error))
            }
            PoisonPolicy::Park => {
                tracing::error!(consumer = %self.name, position, stream = %parked.stream, version = parked.version, %error, "event parked");
                let (mut tx, _) = self.delivery.begin(&self.name).await?;
                self.delivery.park(&mut tx, &self.name, &parked).await?;
                self.delivery.commit(tx, &self.name, position, true).await?;
                self.status.send_modify(|s| {
                    s.parked += 1;
                    s.checkpoint = s.checkpoint.max(position);
                    s.last_error = Some(format!("parked position {position}: {error}"));
                });
                Ok(())
            }
        }
    }

    fn committed(&self, position: u64, handled: u64, took: Duration) {
        self.status.send_modify(|s| {
            s.checkpoint = s.checkpoint.max(position);
            s.head = s.head.max(position);
            s.lag = s.head.saturating_sub(s.checkpoint);
            s.handled += handled;
            if handled > 0 && !took.is_zero() {
                let rate = handled as f64 / took.as_secs_f64();
                s.events_per_second = if s.events_per_second == 0.0 {
                    rate
                } else {
                    0.8 * s.events_per_second + 0.2 * rate
                };
            }
            if !matches!(s.state, ConsumerState::Retrying) {
                s.last_error = None;
            }
        });
    }
}

impl<H, L, D> Consumer<H, L, D>
where
    D: Delivery + 'static,
    D::Tx: 'static,
    H: EventHandler<D::Tx> + 'static,
    L: GlobalLog + 'static,
{
    /// Runs the consumer on its own task until shut down: takes the lease (waiting while
    /// another runner holds it), catches up, then follows the log as appends wake it. Read
    /// and commit failures are retried with backoff for as long as it runs; a poison event is
    /// parked or stops it ([`PoisonPolicy`]). Dropping the returned handle shuts it down.
    pub fn spawn(self) -> ConsumerHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (requests_tx, requests_rx) = mpsc::channel(16);
        let status = self.status.subscribe();
        let task = tokio::spawn(self.run(stop_rx, requests_rx));
        ConsumerHandle {
            status,
            stop: stop_tx,
            requests: requests_tx,
            task: Some(task),
        }
    }

    async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut requests: mpsc::Receiver<Request>,
    ) -> Result<(), Error> {
        check_name(&self.name, "consumer name")?;
        let mut wakeup = self.log.wakeup();
        if let Ok(head) = self.log.head_position().await {
            self.status.send_modify(|s| s.head = head);
        }
        let mut failures = 0u32;
        let mut lease: Option<Lease> = None;
        let result = 'outer: loop {
            lease = match self.wait_for_lease(&mut stop).await {
                Ok(Some(lease)) => lease,
                Ok(None) => break Ok(()),
                Err(error) => {
                    failures += 1;
                    self.set_state(ConsumerState::Retrying, |s| {
                        s.last_error = Some(error.to_string())
                    });
                    tracing::warn!(consumer = %self.name, %error, "cannot take the lease; retrying");
                    if sleep_or_stop(backoff(failures), &mut stop).await {
                        break Ok(());
                    }
                    continue;
                }
            };
            self.set_state(ConsumerState::Running, |_| {});
            loop {
                if *stop.borrow() {
                    break 'outer Ok(());
                }
                if lease.as_ref().is_some_and(|l| !l.is_held()) {
                    tracing::warn!(consumer = %self.name, "lease lost; waiting to take it again");
                    // Another runner may move the checkpoint from now on; saving ours could
                    // move it back, so it is dropped (at least once: events may repeat).
                    self.delivery.refresh(&self.name);
                    lease = None;
                    continue 'outer;
                }
                while let Ok(request) = requests.try_recv() {
                    self.serve(request).await;
                }
                match self.step().await {
                    Ok(Step::Advanced { .. }) => {
                        failures = 0;
                        self.set_state(ConsumerState::Running, |_| {});
                    }
                    Ok(Step::Idle) => {
                        failures = 0;
                        if let Err(error) = self.delivery.flush(&self.name).await {
                            tracing::warn!(consumer = %self.name, %error, "cannot save the checkpoint; retrying later");
                        }
                        if let Ok(head) = self.log.head_position().await {
                            self.status.send_modify(|s| {
                                s.head = head;
                                s.lag = head.saturating_sub(s.checkpoint);
                            });
                        }
                        self.set_state(ConsumerState::Live, |_| {});
                        tokio::select! {
                            () = wakeup.wait() => {}
                            _ = stop.changed() => {}
                            request = requests.recv() => {
                                if let Some(request) = request {
                                    self.serve(request).await;
                                }
                            }
                            () = lost(&mut lease) => {}
                        }
                    }
                    Err(error @ (Error::Handler { .. } | Error::Invalid(_))) => {
                        self.set_state(ConsumerState::Stopped, |s| {
                            s.last_error = Some(error.to_string())
                        });
                        break 'outer Err(error);
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(consumer = %self.name, %error, failures, "consumer batch failed; retrying");
                        self.set_state(ConsumerState::Retrying, |s| {
                            s.last_error = Some(error.to_string())
                        });
                        if sleep_or_stop(backoff(failures), &mut stop).await {
                            break 'outer Ok(());
                        }
                    }
                }
            }
        };
        if let Err(error) = self.delivery.flush(&self.name).await {
            tracing::warn!(consumer = %self.name, %error, "cannot save the checkpoint at shutdown");
        }
        if let Some(lease) = lease.take() {
            lease.release().await;
        }
        if result.is_ok() {
            self.set_state(ConsumerState::ShutDown, |_| {});
        }
        result
    }

    /// Takes the lease, waiting while another runner holds it. `Ok(None)`: asked to stop.
    async fn wait_for_lease(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Option<Lease>>, Error> {
        let Some(leases) = &self.leases else {
            return Ok(Some(None));
        };
        loop {
            if *stop.borrow() {
                return Ok(None);
            }
            if let Some(lease) = leases.try_acquire(&self.name).await? {
                tracing::info!(consumer = %self.name, "lease taken");
                self.delivery.refresh(&self.name);
                return Ok(Some(Some(lease)));
            }
            self.set_state(ConsumerState::WaitingForLease, |_| {});
            if sleep_or_stop(self.lease_poll, stop).await {
                return Ok(None);
            }
        }
    }

    async fn serve(&mut self, request: Request) {
        match request {
            Request::Parked(reply) => {
                let _ = reply.send(self.parked().await);
            }
            Request::Replay(position, reply) => {
                let _ = reply.send(self.replay_parked(position).await);
            }
        }
    }
}

async fn lost(lease: &mut Option<Lease>) {
    match lease {
        Some(lease) => lease.lost().await,
        None => std::future::pending().await,
    }
}

/// Pause after `failures` consecutive failures of the runtime itself: 100 ms doubling to 10 s.
fn backoff(failures: u32) -> Duration {
    RetryPolicy {
        attempts: u32::MAX,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
    }
    .backoff(failures)
}

/// Sleeps for `pause`; `true` if asked to stop meanwhile.
async fn sleep_or_stop(pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_ALICE_HASH: u64 = 16_188_359_540_745_057_539;

    #[test]
    fn partitions_split_streams_stably_and_completely() {
        let streams: Vec<_> = (0..1000)
            .map(|i| StreamId::new("T", format!("s-{i}")))
            .collect();
        let mut counts = [0; 4];
        for stream in &streams {
            let owners: Vec<_> = Partition::all(4).filter(|p| p.owns(stream)).collect();
            assert_eq!(owners.len(), 1, "{stream} has exactly one partition");
            counts[owners[0].index() as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "roughly even: {counts:?}");
        // Pinned: changing the hash would move streams between partitions of running consumers.
        assert_eq!(
            stable_hash(&StreamId::new("Account", "alice")),
            PINNED_ALICE_HASH
        );
        assert!(Partition::new(4, 4).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let policy = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        let pauses: Vec<_> = (1..=5).map(|f| policy.backoff(f).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 50, 50]);
    }
}
