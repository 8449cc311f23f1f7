//! `Repository`: load an aggregate, decide, append, retry on conflict, snapshot.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::aggregate::Aggregate;
use crate::envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use crate::error::Error;
use crate::event::IntoEvents;
use crate::metadata::Metadata;
use crate::store::{EventStore, ExpectedVersion, StreamQuery};

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
/// counters.execute("c-1", Metadata::by_user("u-1"), |_| Ok::<_, std::convert::Infallible>(Incremented { by: 2 })).await.unwrap();
/// let loaded = counters.load("c-1").await.unwrap();
/// assert_eq!((loaded.total, loaded.version), (2, 1));
/// # });
/// ```
pub struct Repository<A, S> {
    store: S,
    max_retries: u32,
    cache: Option<Arc<StateCache<A>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            cache: self.cache.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// A repository with 5 retries on conflict and no state cache.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_retries: 5,
            cache: None,
            _aggregate: PhantomData,
        }
    }

    /// Sets how many times [`Repository::execute`] reloads and decides again after a conflict.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Keeps up to `capacity` aggregates' state in memory between commands. A command on a
    /// cached aggregate appends at the cached version without reading the stream first; if
    /// another writer got there first, the append conflicts, the missing events are read and
    /// applied, and the command is decided again. Rejections are checked against the stream's
    /// current version, so a stale cache never refuses a command the real state allows.
    pub fn with_state_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(Arc::new(StateCache::new(capacity)));
        self
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
        let state_version = A::SNAPSHOT_EVERY.map(|_| A::STATE_VERSION);
        let (snapshot, events) = self.store.load_stream(&stream, state_version).await?;
        let mut loaded = match snapshot.as_ref().map(restore::<A>) {
            Some(Some(restored)) => restored,
            Some(None) => {
                // The snapshot is unusable and `events` start after it: replay everything.
                let mut loaded = Loaded {
                    state: A::default(),
                    version: 0,
                };
                let events = self.store.read_stream(&stream, &StreamQuery::all()).await?;
                apply_recorded(&mut loaded, &events)?;
                return Ok(loaded);
            }
            None => Loaded {
                state: A::default(),
                version: 0,
            },
        };
        apply_replayed(&mut loaded, &stream, &events)?;
        Ok(loaded)
    }

    /// The state as it was at a version or a moment. A version beyond the stream's end gives
    /// the current state.
    pub async fn load_as_of(&self, id: &str, as_of: AsOf) -> Result<Loaded<A>, Error> {
        let stream = self.stream_id(id);
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
                StreamQuery::from(loaded.version + 1..=version)
            }
            AsOf::Time(time) => StreamQuery::all().until(time),
        };
        let events = self.store.read_stream(&stream, &query).await?;
        apply_recorded(&mut loaded, &events)?;
        Ok(loaded)
    }

    /// The aggregate's history: every stored event, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<RecordedEvent>, Error> {
        self.store
            .read_stream(&self.stream_id(id), &StreamQuery::all())
            .await
    }

    /// Runs a command: loads the aggregate, lets `decide` choose the events (or refuse),
    /// appends them at the loaded version, and on a conflict reloads and decides again, up to
    /// the configured number of retries. Events carry `metadata` (see
    /// [`Metadata::for_events`]). Takes a snapshot when one is due.
    pub async fn execute<R, E, F>(
        &self,
        id: &str,
        metadata: Metadata,
        mut decide: F,
    ) -> Result<Committed, ExecuteError<E>>
    where
        F: FnMut(&A) -> Result<R, E> + Send,
        R: IntoEvents<A::Event>,
    {
        let stream = self.stream_id(id);
        let metadata = metadata.for_events();
        let (mut current, mut fresh) = match self.cache.as_ref().and_then(|c| c.take(id)) {
            Some(cached) => (cached, false),
            None => (self.load(id).await?, true),
        };
        let mut retries_left = self.max_retries;
        loop {
            let events = match decide(&current.state) {
                Ok(decided) => decided.into_events(),
                Err(rejection) => {
                    if !fresh && self.catch_up(&stream, &mut current).await? > 0 {
                        fresh = true;
                        continue;
                    }
                    self.cache_put(id, current);
                    return Err(ExecuteError::Rejected(rejection));
                }
            };
            if events.is_empty() {
                let version = current.version;
                self.cache_put(id, current);
                return Ok(Committed {
                    version,
                    events: Vec::new(),
                });
            }
            let new_events = events
                .iter()
                .map(|e| NewEvent::from_set(e, metadata.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            match self
                .store
                .append(&stream, ExpectedVersion::Exact(current.version), new_events)
                .await
            {
                Ok(recorded) => {
                    let before = current.version;
                    for event in &events {
                        current.state.apply_event(event);
                    }
                    current.version += events.len() as u64;
                    self.snapshot_if_due(&stream, before, &current).await;
                    let version = current.version;
                    self.cache_put(id, current);
                    return Ok(Committed {
                        version,
                        events: recorded,
                    });
                }
                Err(Error::Conflict { .. }) if retries_left > 0 => {
                    retries_left -= 1;
                    tracing::debug!(%stream, retries_left, "conflict, deciding again on fresh state");
                    self.catch_up(&stream, &mut current).await?;
                    fresh = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
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

/// A bounded map of aggregate states, checked out while a command runs.
struct StateCache<A> {
    capacity: usize,
    entries: Mutex<HashMap<String, Loaded<A>>>,
}

impl<A> StateCache<A> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, id: &str) -> Option<Loaded<A>> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    fn put(&self, id: &str, loaded: Loaded<A>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity
            && !entries.contains_key(id)
            && let Some(evict) = entries.keys().next().cloned()
        {
            entries.remove(&evict);
        }
        entries.insert(id.to_owned(), loaded);
    }
}
