//! `Repository`: load an aggregate, decide, append, retry on conflict, snapshot.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::aggregate::Aggregate;
use crate::command::CommandKey;
use crate::envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use crate::error::Error;
use crate::event::{EventSet, IntoEvents};
use crate::limits::check_stream;
use crate::metadata::Metadata;
use crate::store::{ExpectedVersion, SnapshotStore, StreamQuery};

/// How many aggregates a repository keeps in its state cache unless told otherwise.
pub const DEFAULT_STATE_CACHE: usize = 4096;

/// An aggregate's state together with the stream version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The folded state.
    pub state: A,
    /// The version of the last event applied (0: the aggregate has no events).
    pub version: u64,
}

impl<A> Loaded<A> {
    /// Whether any event exists for this aggregate (up to the loaded point).
    pub fn exists(&self) -> bool {
        self.version > 0
    }
}

impl<A> Deref for Loaded<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.state
    }
}

/// A point in an aggregate's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// After the event with this stream version.
    Version(u64),
    /// After every event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// What a successful [`Repository::execute`] wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The stream version after the append.
    pub version: u64,
    /// The events as recorded, empty when the command decided nothing needed to happen.
    pub events: Vec<RecordedEvent>,
}

/// The state a command first decides on.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The cached state, else the stream as stored.
    Loaded,
    /// The empty state, unread ([`Repository::create`]).
    New,
}

/// Why [`Repository::execute`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The command refused: a domain rule said no. Nothing was written.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The store failed, or the stream stayed contested through every retry.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> ExecuteError<E> {
    /// The domain error, if the command was rejected.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            ExecuteError::Rejected(e) => Some(e),
            ExecuteError::Store(_) => None,
        }
    }
}

/// Loads and changes aggregates of type `A` stored in `S`.
///
/// Commands are idempotent by key: [`Repository::execute_once`] derives the ids of the events
/// it appends from a [`CommandKey`], so a retry after an ambiguous failure returns the first
/// outcome instead of appending again.
///
/// A bounded state cache is on by default ([`DEFAULT_STATE_CACHE`] aggregates, least recently
/// used evicted first): a command on a cached aggregate appends at the cached version without
/// reading the stream, in one round trip. It stays correct when other processes write: their
/// events make the append conflict, and the command is decided again on the fresh state.
///
/// Commands on one aggregate through one repository (and its clones) take turns, so that
/// they do not conflict with each other: each decides on the state the previous one left,
/// from the cache. Commands on different aggregates run side by side.
///
/// ```
/// # futures::executor::block_on(async {
/// use es_core::prelude::*;
///
/// #[event]
/// pub struct Incremented { pub by: u32 }
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Incremented))]
/// pub struct Counter { total: u32 }
///
/// impl Apply<Incremented> for Counter {
///     fn apply(&mut self, e: &Incremented) { self.total += e.by; }
/// }
///
/// let counters = Repository::<Counter, _>::new(MemoryStore::new());
/// let key = CommandKey::from_text("request-1");
/// let first = counters.execute_once("c-1", key, Metadata::by_user("u-1"), |_| Ok::<_, std::convert::Infallible>(Incremented { by: 2 })).await.unwrap();
/// // The client did not hear back and retries with the same key: nothing is appended twice.
/// let retry = counters.execute_once("c-1", key, Metadata::by_user("u-1"), |_| Ok::<_, std::convert::Infallible>(Incremented { by: 2 })).await.unwrap();
/// assert_eq!(first.events[0].event_id, retry.events[0].event_id);
/// let loaded = counters.load("c-1").await.unwrap();
/// assert_eq!((loaded.total, loaded.version), (2, 1));
/// # });
/// ```
pub struct Repository<A, S> {
    store: S,
    max_retries: u32,
    cache: Option<Arc<StateCache<A>>>,
    turns: Arc<Turns>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            cache: self.cache.clone(),
            turns: self.turns.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate, S: SnapshotStore> Repository<A, S> {
    /// A repository with 5 retries on conflict and a state cache of
    /// [`DEFAULT_STATE_CACHE`] aggregates.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_retries: 5,
            cache: Some(Arc::new(StateCache::new(DEFAULT_STATE_CACHE))),
            turns: Arc::default(),
            _aggregate: PhantomData,
        }
    }

    /// Sets how many times [`Repository::execute`] reloads and decides again after a conflict.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Keeps up to `capacity` aggregates' state in memory between commands (least recently
    /// used evicted first); 0 turns the cache off. Rejections and empty decisions taken on a
    /// cached state are checked against the stream's current version, so a stale cache never
    /// refuses a command the real state allows.
    pub fn with_state_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| Arc::new(StateCache::new(capacity)));
        self
    }

    /// Turns the state cache off: every command reads the stream first.
    pub fn without_state_cache(self) -> Self {
        self.with_state_cache(0)
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stream id of aggregate `id`.
    pub fn stream_id(&self, id: &str) -> StreamId {
        StreamId::new(A::TYPE, id)
    }

    /// The current state: the latest usable snapshot plus the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error> {
        let stream = self.stream_id(id);
        check_stream(&stream)?;
        self.load_stream(&stream).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, Error> {
        let state_version = A::SNAPSHOT_EVERY.map(|_| A::STATE_VERSION);
        let (snapshot, events) = self.store.load_stream(stream, state_version).await?;
        let mut loaded = match snapshot.as_ref().map(restore::<A>) {
            Some(Some(restored)) => restored,
            // The snapshot is unusable and `events` start after it: replay everything.
            Some(None) => return self.replay_all(stream).await,
            None => Loaded {
                state: A::default(),
                version: 0,
            },
        };
        // The store returns a snapshot only if its stream reaches it (SnapshotStore::load_stream);
        // the events after it must then follow on.
        if let Some(snapshot) = &snapshot
            && events
                .first()
                .is_some_and(|next| next.version != snapshot.version + 1)
        {
            tracing::warn!(%stream, snapshot = snapshot.version, "snapshot does not meet its stream; replaying all events");
            return self.replay_all(stream).await;
        }
        apply_replayed(&mut loaded, stream, &events)?;
        Ok(loaded)
    }

    async fn replay_all(&self, stream: &StreamId) -> Result<Loaded<A>, Error> {
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        let events = self.store.read_stream(stream, &StreamQuery::all()).await?;
        apply_recorded(&mut loaded, &events)?;
        Ok(loaded)
    }

    /// The state as it was at a version or a moment. A version beyond the stream's end gives
    /// the current state.
    pub async fn load_as_of(&self, id: &str, as_of: AsOf) -> Result<Loaded<A>, Error> {
        let stream = self.stream_id(id);
        check_stream(&stream)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
        };
        let query = match as_of {
            AsOf::Version(version) => {
                if A::SNAPSHOT_EVERY.is_some()
                    && let Some(snapshot) = self.store.load_snapshot(&stream).await?
                    && snapshot.state_version == A::STATE_VERSION
                    && snapshot.version <= version
                    && let Some(restored) = restore::<A>(&snapshot)
                {
                    loaded = restored;
                }
                StreamQuery::from(loaded.version.saturating_add(1)..=version)
            }
            AsOf::Time(time) => StreamQuery::all().until(time),
        };
        let events = self.store.read_stream(&stream, &query).await?;
        if loaded.version > 0 && events.is_empty() {
            // Started from a snapshot with nothing after it: trust it only if the stream is at
            // least that long.
            if self.store.stream_version(&stream).await? < loaded.version {
                loaded = Loaded {
                    state: A::default(),
                    version: 0,
                };
                let query = match as_of {
                    AsOf::Version(version) => StreamQuery::from(1..=version),
                    AsOf::Time(time) => StreamQuery::all().until(time),
                };
                let events = self.store.read_stream(&stream, &query).await?;
                apply_recorded(&mut loaded, &events)?;
            }
            return Ok(loaded);
        }
        apply_recorded(&mut loaded, &events)?;
        Ok(loaded)
    }

    /// The aggregate's history: every stored event, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<RecordedEvent>, Error> {
        let stream = self.stream_id(id);
        check_stream(&stream)?;
        self.store.read_stream(&stream, &StreamQuery::all()).await
    }

    /// Runs a command under a fresh [`CommandKey`]: loads the aggregate (or takes it from the
    /// cache), lets `decide` choose the events (or refuse), appends them at the loaded
    /// version, and on a conflict reloads and decides again, up to the configured number of
    /// retries. Events carry `metadata` (see [`Metadata::for_events`]). Takes a snapshot when
    /// one is due.
    ///
    /// A command that may be retried after an ambiguous failure (a timeout, a lost connection,
    /// a client that retries) should use [`Repository::execute_once`] with a key the retry
    /// will carry too.
    pub async fn execute<R, E, F>(
        &self,
        id: &str,
        metadata: Metadata,
        decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<R, E> + Send,
        R: IntoEvents<A::Event>,
    {
        self.run(id, CommandKey::new(), true, Start::Loaded, metadata, decide)
            .await
    }

    /// Runs a command at most once per `key`, like [`Repository::execute`] otherwise.
    ///
    /// The ids of the events it appends derive from `key` ([`CommandKey::event_id`]). If a
    /// command with this key already committed (in this process or another), the events it
    /// stored are returned as its outcome and nothing is appended, even if `decide` would now
    /// decide otherwise or refuse. If the outcome of an append cannot be known (the
    /// connection died around the commit), the command runs again under its key, like a
    /// conflict (the same bound on retries): it lands once, or returns the first run's events.
    /// Past the bound the error is [`Error::OutcomeUnknown`]: call again with the same key.
    pub async fn execute_once<R, E, F>(
        &self,
        id: &str,
        key: CommandKey,
        metadata: Metadata,
        decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<R, E> + Send,
        R: IntoEvents<A::Event>,
    {
        self.run(id, key, false, Start::Loaded, metadata, decide)
            .await
    }

    /// Runs a command that usually creates its aggregate, like [`Repository::execute`] but
    /// without reading the stream first: `decide` sees the empty state, and the events are
    /// appended as the stream's first. If the stream exists after all, that append conflicts,
    /// and the command reads the stream and decides again on its real state, as on any
    /// conflict. A command that creates saves a round trip; one that finds its aggregate
    /// costs one more. (Eventuous calls these commands "on new".)
    ///
    /// ```
    /// # use es_core::prelude::*;
    /// # use es_core::{MemoryStore, Repository};
    /// # #[event] pub struct Opened { pub owner: String }
    /// # #[derive(Aggregate, Default)]
    /// # #[aggregate(events(Opened))]
    /// # pub struct Account { open: bool }
    /// # impl Apply<Opened> for Account { fn apply(&mut self, _: &Opened) { self.open = true; } }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let accounts = Repository::<Account, _>::new(MemoryStore::new());
    /// let open = |a: &Account| match a.open {
    ///     false => Ok(Opened { owner: "ada".into() }),
    ///     true => Err("already open"),
    /// };
    /// accounts.create("a-1", Metadata::default(), open).await.unwrap();
    /// // The second finds the account, reads it and refuses.
    /// assert!(accounts.create("a-1", Metadata::default(), open).await.is_err());
    /// # });
    /// ```
    pub async fn create<R, E, F>(
        &self,
        id: &str,
        metadata: Metadata,
        decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<R, E> + Send,
        R: IntoEvents<A::Event>,
    {
        self.run(id, CommandKey::new(), true, Start::New, metadata, decide)
            .await
    }

    /// [`Repository::create`] at most once per `key`, as [`Repository::execute_once`]: a
    /// repeat finds the stream, and with it the first outcome.
    pub async fn create_once<R, E, F>(
        &self,
        id: &str,
        key: CommandKey,
        metadata: Metadata,
        decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<R, E> + Send,
        R: IntoEvents<A::Event>,
    {
        self.run(id, key, false, Start::New, metadata, decide).await
    }

    async fn run<R, E, F>(
        &self,
        id: &str,
        key: CommandKey,
        fresh_key: bool,
        start: Start,
        metadata: Metadata,
        mut decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<R, E> + Send,
        R: IntoEvents<A::Event>,
    {
        let stream = self.stream_id(id);
        let span = tracing::debug_span!("execute", %stream, %key, version = tracing::field::Empty, retries = 0u32);
        async {
            check_stream(&stream)?;
            let _turn = self.turns.take(id).await;
            let metadata = metadata.for_events();
            let cached = match start {
                Start::Loaded => self.cache.as_ref().and_then(|c| c.take(id)),
                // Guessed, as a cached state is: checked by the append, or read on a refusal.
                Start::New => Some(Loaded {
                    state: A::default(),
                    version: 0,
                }),
            };
            let (mut current, mut fresh) = match cached {
                Some(cached) => (cached, false),
                None => (self.load_stream(&stream).await?, true),
            };
            let mut retries = 0u32;
            loop {
                let events = match decide(&current.state) {
                    Ok(decided) => decided.into_events(),
                    Err(rejection) => {
                        if !fresh && self.catch_up(&stream, &mut current).await? > 0 {
                            fresh = true;
                            continue;
                        }
                        if !fresh_key && let Some(done) = self.first_outcome(&stream, key).await? {
                            return Ok(done);
                        }
                        self.cache_put(id, current);
                        return Err(ExecuteError::Rejected(rejection));
                    }
                };
                if events.is_empty() {
                    if !fresh && self.catch_up(&stream, &mut current).await? > 0 {
                        fresh = true;
                        continue;
                    }
                    if !fresh_key && let Some(done) = self.first_outcome(&stream, key).await? {
                        return Ok(done);
                    }
                    let version = current.version;
                    self.cache_put(id, current);
                    return Ok(Committed {
                        version,
                        events: Vec::new(),
                    });
                }
                let new_events = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        NewEvent::from_set(e, metadata.clone()).map(|n| n.with_id(key.event_id(&stream, i)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let sent_lengths: Vec<usize> =
                    new_events.iter().map(|e| e.payload.get().len()).collect();
                match self
                    .store
                    .append(&stream, ExpectedVersion::Exact(current.version), new_events)
                    .await
                {
                    Ok(recorded) => {
                        tracing::Span::current().record("version", recorded.last().map_or(0, |e| e.version));
                        let landed_here = recorded.len() == events.len()
                            && recorded.first().map(|e| e.version) == Some(current.version + 1);
                        if !landed_here {
                            // Stored before by an earlier run of this command, elsewhere in the
                            // stream: the first outcome stands and the cached state is unknown.
                            return Ok(Committed {
                                version: recorded.last().map_or(current.version, |e| e.version),
                                events: recorded,
                            });
                        }
                        let before = current.version;
                        apply_committed(&mut current, &stream, &events, &recorded, &sent_lengths)?;
                        self.snapshot_if_due(&stream, before, &current).await;
                        let version = current.version;
                        self.cache_put(id, current);
                        return Ok(Committed {
                            version,
                            events: recorded,
                        });
                    }
                    Err(Error::Conflict { .. }) if retries < self.max_retries => {
                        retries += 1;
                        tracing::Span::current().record("retries", retries);
                        tracing::debug!(%stream, retries, "conflict, deciding again on fresh state");
                        self.catch_up(&stream, &mut current).await?;
                        fresh = true;
                    }
                    Err(Error::DuplicateEventId { .. }) if !fresh_key => {
                        // This key committed before with other content (the state moved on and
                        // the command now decides differently): the first outcome stands.
                        if let Some(done) = self.first_outcome(&stream, key).await? {
                            return Ok(done);
                        }
                        return Err(ExecuteError::Store(Error::Invalid(format!(
                            "command key {key} collides with events of another command"
                        ))));
                    }
                    Err(Error::OutcomeUnknown(error)) if !fresh_key && retries < self.max_retries => {
                        // The key's event ids make a second append safe: it lands once, or
                        // finds the first one's events and returns them.
                        retries += 1;
                        tracing::Span::current().record("retries", retries);
                        tracing::debug!(%stream, retries, %error, "outcome unknown, running the command again under its key");
                        self.catch_up(&stream, &mut current).await?;
                        fresh = true;
                    }
                    Err(error @ Error::OutcomeUnknown(_)) => return Err(error.into()),
                    Err(error) => {
                        self.cache_put(id, current);
                        return Err(error.into());
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The events a command with `key` stored in `stream`, if it ran before.
    async fn first_outcome(
        &self,
        stream: &StreamId,
        key: CommandKey,
    ) -> Result<Option<Committed>, Error> {
        let Some(first) = self.store.read_event(key.event_id(stream, 0)).await? else {
            return Ok(None);
        };
        if first.stream != *stream {
            return Ok(None);
        }
        let following = self
            .store
            .read_stream(stream, &StreamQuery::from(first.version..))
            .await?;
        let events: Vec<RecordedEvent> = following
            .into_iter()
            .enumerate()
            .take_while(|(i, e)| e.event_id == key.event_id(stream, *i))
            .map(|(_, e)| e)
            .collect();
        Ok(Some(Committed {
            version: events.last().map_or(first.version, |e| e.version),
            events,
        }))
    }

    /// Applies the events stored after `current.version`; returns how many there were.
    async fn catch_up(&self, stream: &StreamId, current: &mut Loaded<A>) -> Result<usize, Error> {
        let events = self
            .store
            .read_stream(stream, &StreamQuery::after(current.version))
            .await?;
        apply_recorded(current, &events)?;
        Ok(events.len())
    }

    async fn snapshot_if_due(&self, stream: &StreamId, before: u64, current: &Loaded<A>) {
        let Some(every) = A::SNAPSHOT_EVERY.filter(|n| *n > 0) else {
            return;
        };
        if before / every == current.version / every {
            return;
        }
        let state = match current.state.encode_state() {
            Some(Ok(state)) => state,
            Some(Err(error)) => {
                tracing::warn!(%stream, %error, "cannot encode snapshot; continuing without");
                return;
            }
            None => return,
        };
        let snapshot = Snapshot {
            stream: stream.clone(),
            version: current.version,
            state_version: A::STATE_VERSION,
            state,
            taken_at: Utc::now(),
        };
        // The events are committed; a failed snapshot only costs a longer load later.
        if let Err(error) = self.store.save_snapshot(snapshot).await {
            tracing::warn!(%stream, %error, "cannot save snapshot; continuing without");
        }
    }

    fn cache_put(&self, id: &str, loaded: Loaded<A>) {
        if let Some(cache) = &self.cache {
            cache.put(id, loaded);
        }
    }
}

/// Applies what an append committed. The decided events are applied as they are, unless the
/// store rewrote a payload on its way in (negative zero; see [`crate::Limits`]): then the
/// stored payload is decoded, so the state equals what a replay gives.
fn apply_committed<A: Aggregate>(
    current: &mut Loaded<A>,
    stream: &StreamId,
    decided: &[A::Event],
    recorded: &[RecordedEvent],
    sent_lengths: &[usize],
) -> Result<(), Error> {
    for ((event, stored), sent) in decided.iter().zip(recorded).zip(sent_lengths) {
        if stored.payload.get().len() == *sent {
            current.state.apply_event(event);
        } else {
            let decoded: A::Event = <A::Event as EventSet>::decode(
                &stored.event_name,
                stored.schema_version,
                &stored.payload,
            )
            .map_err(|source| Error::Decode {
                stream: stream.clone(),
                version: stored.version,
                event_name: stored.event_name.clone(),
                source,
            })?;
            current.state.apply_event(&decoded);
        }
        current.version = stored.version;
    }
    Ok(())
}

/// Decodes a snapshot written by this code's state version. `None` (replay from the start)
/// when the aggregate takes no snapshots, the shape changed, or the state does not decode:
/// a snapshot is only a cache, so a bad one costs time, never correctness.
fn restore<A: Aggregate>(snapshot: &Snapshot) -> Option<Loaded<A>> {
    if snapshot.state_version != A::STATE_VERSION {
        return None;
    }
    match A::decode_state(&snapshot.state)? {
        Ok(state) => Some(Loaded {
            state,
            version: snapshot.version,
        }),
        Err(error) => {
            tracing::warn!(stream = %snapshot.stream, version = snapshot.version, %error, "snapshot does not decode; replaying all events");
            None
        }
    }
}

/// Decodes and applies `events` in order, checking that they continue `loaded` without a gap.
fn apply_recorded<A: Aggregate>(
    loaded: &mut Loaded<A>,
    events: &[RecordedEvent],
) -> Result<(), Error> {
    for recorded in events {
        check_next(loaded, &recorded.stream, recorded.version)?;
        loaded.state.apply_event(&recorded.decode::<A::Event>()?);
        loaded.version = recorded.version;
    }
    Ok(())
}

fn apply_replayed<A: Aggregate>(
    loaded: &mut Loaded<A>,
    stream: &StreamId,
    events: &[ReplayEvent],
) -> Result<(), Error> {
    for event in events {
        check_next(loaded, stream, event.version)?;
        loaded.state.apply_event(&event.decode::<A::Event>(stream)?);
        loaded.version = event.version;
    }
    Ok(())
}

fn check_next<A>(loaded: &Loaded<A>, stream: &StreamId, version: u64) -> Result<(), Error> {
    if version == loaded.version + 1 {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{stream} jumps from version {} to {version}: the store returned a gap",
        loaded.version
    )))
}

/// A bounded map of aggregate states, checked out while a command runs; the least recently
/// used entry is evicted first.
struct StateCache<A> {
    capacity: usize,
    inner: Mutex<CacheInner<A>>,
}

struct CacheInner<A> {
    entries: HashMap<String, (Loaded<A>, u64)>,
    /// Entries by the tick of their last use.
    order: BTreeMap<u64, String>,
    tick: u64,
}

impl<A> StateCache<A> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
            }),
        }
    }

    fn take(&self, id: &str) -> Option<Loaded<A>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (loaded, tick) = inner.entries.remove(id)?;
        inner.order.remove(&tick);
        Some(loaded)
    }

    fn put(&self, id: &str, loaded: Loaded<A>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, old)) = inner.entries.insert(id.to_owned(), (loaded, tick)) {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, id.to_owned());
        while inner.entries.len() > self.capacity {
            let Some((_, evicted)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&evicted);
        }
    }
}

/// Turns of the commands on each aggregate: one at a time per id, the others waiting in
/// line (first come, first served); an id nobody holds or waits for has no entry.
#[derive(Debug, Default)]
struct Turns {
    ids: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A command's turn on one aggregate, given back on drop (also when its future is dropped).
struct Turn<'a> {
    turns: &'a Turns,
    id: &'a str,
    line: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn take<'a>(&'a self, id: &'a str) -> Turn<'a> {
        let line = self.ids().entry(id.to_owned()).or_default().clone();
        let mut turn = Turn {
            turns: self,
            id,
            line: line.clone(),
            held: None,
        };
        turn.held = Some(line.lock_owned().await);
        turn
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut ids = self.turns.ids();
        // The map's and ours only: nobody else holds or waits for this id (clones are made
        // under the map's lock, so none can appear meanwhile).
        if Arc::strong_count(&self.line) == 2 {
            ids.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_evicts_the_least_recently_used() {
        let cache = StateCache::<()>::new(2);
        let entry = |version| Loaded { state: (), version };
        cache.put("a", entry(1));
        cache.put("b", entry(2));
        let a = cache.take("a").expect("a is cached");
        cache.put("a", a);
        cache.put("c", entry(3));
        assert!(cache.take("b").is_none(), "b was used least recently");
        assert_eq!(cache.take("a").map(|l| l.version), Some(1));
        assert_eq!(cache.take("c").map(|l| l.version), Some(3));
    }
}
