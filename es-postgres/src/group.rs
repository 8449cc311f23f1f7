//! Group commit: appends from concurrent writers that arrive while the store's statements are
//! in flight are sent together, as one statement (one transaction, one announcement, one
//! commit), and each keeps its own outcome.
//!
//! At most [`StoreOptions::group_commit`](crate::StoreOptions::group_commit) plain appends
//! ("lanes") run at once. An append that finds a free lane and nobody waiting runs alone, as
//! without group commit. Otherwise it waits in a queue; whenever a lane frees, one task takes
//! everything queued (distinct streams, up to [`MAX_APPENDS`] appends and [`MAX_EVENTS`]
//! events) and sends it as `sql::append_group`. So a lone writer never waits for a partner,
//! and under load the batches grow by themselves.
//!
//! Each member's outcome is its own:
//! - written by the group: the events as recorded;
//! - refused by the group's checks (its expectation failed, or one of its ids is stored):
//!   nothing of it was written, and it is decided alone by the slow path (`es_append`), which
//!   reports the conflict or returns the stored events of an idempotent retry;
//! - the group's statement refused by the database (a race on a unique key with an append
//!   still open elsewhere, or any other refusal): nothing was written, every member appends
//!   alone;
//! - the connection lost after the statement was sent: every member gets
//!   [`Error::OutcomeUnknown`] (retry with the same ids), as a lone append would.
//!
//! Cancellation: the group runs on a task of its own, so a member whose future is dropped
//! does not cancel the others; a member dropped before its group is formed is left out (never
//! sent); one dropped later was written whole or not at all, as any append.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use es_core::{Error, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres};
use tokio::sync::oneshot;
use uuid::Uuid;

use es_core::Metadata;

use crate::error::{self, Phase};
use crate::rows::{GroupRow, Landed};
use crate::sql::expected_code;
use crate::store::{PostgresStore, recorded};

thread_local! {
    /// Set while a lane's release starts a leader, so that a leader dropped at once (by a
    /// runtime shutting down) does not start another from its own release, and so on.
    static RELEASING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Most appends sent in one group.
pub(crate) const MAX_APPENDS: usize = 64;
/// Most events sent in one group; a larger append always runs alone.
pub(crate) const MAX_EVENTS: usize = 1_000;

/// The queue and lanes of one store.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    lanes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Appends running now: alone in their caller's future, or as a group-leading task.
    running: usize,
    pending: VecDeque<Request>,
}

/// An append waiting for a group.
#[derive(Debug)]
pub(crate) struct Request {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Reply>,
}

/// What the group did with a member.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Written by the group (or alone, by the task, when it was the only member).
    Appended(Vec<RecordedEvent>),
    /// Not written: the member appends alone. `checked`: the group's checks refused it, so
    /// the plain statement would write nothing either and the slow path can run at once.
    Alone {
        events: Vec<NewEvent>,
        checked: bool,
    },
    /// Failed as a lone append would have.
    Failed(Error),
}

/// Whether a caller runs its append itself or waits for a group.
pub(crate) enum Entry {
    /// A lane is the caller's: run the append, then drop the [`Lane`].
    Lane(Lane, Vec<NewEvent>),
    /// Queued: the group's reply comes here.
    Queued(oneshot::Receiver<Reply>),
}

/// A lane held by an append; released on drop, starting a group for whatever queued meanwhile.
pub(crate) struct Lane {
    store: PostgresStore,
    group: Arc<GroupCommit>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.group.release(&self.store, &self.group);
    }
}

impl GroupCommit {
    pub(crate) fn new(lanes: usize) -> Self {
        Self {
            lanes: lanes.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a lane for an append, or queues it.
    pub(crate) fn enter(
        self: &Arc<Self>,
        store: &PostgresStore,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Entry {
        let mut state = self.lock();
        if state.running < self.lanes && state.pending.is_empty() {
            state.running += 1;
            return Entry::Lane(
                Lane {
                    store: store.clone(),
                    group: self.clone(),
                },
                events,
            );
        }
        let (reply, receiver) = oneshot::channel();
        state.pending.push_back(Request {
            stream: stream.clone(),
            expected,
            events,
            reply,
        });
        if state.running < self.lanes {
            // Only if a leader could not be started earlier (see `release`).
            state.running += 1;
            drop(state);
            start_leader(store, self);
        }
        Entry::Queued(receiver)
    }

    /// Gives a lane back; if appends are waiting, a task takes the lane to send them.
    fn release(&self, store: &PostgresStore, this: &Arc<GroupCommit>) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        if state.pending.is_empty() || state.running >= self.lanes {
            return;
        }
        if RELEASING.get() {
            // A leader task was dropped as soon as it was spawned (its runtime is shutting
            // down) and this is its lane: hand the queue back instead of spawning again.
            drop(state);
            self.disband();
            return;
        }
        state.running += 1;
        drop(state);
        RELEASING.set(true);
        start_leader(store, this);
        RELEASING.set(false);
    }

    /// The next group: queued appends to distinct streams, in arrival order, within the
    /// limits; members whose caller is gone are dropped unsent.
    fn take_group(&self) -> Vec<Request> {
        let mut state = self.lock();
        let mut group = Vec::new();
        let mut streams = HashSet::new();
        let mut deferred = VecDeque::new();
        let mut events = 0;
        while let Some(request) = state.pending.pop_front() {
            if request.reply.is_closed() {
                continue;
            }
            if group.len() == MAX_APPENDS || events + request.events.len() > MAX_EVENTS {
                state.pending.push_front(request);
                break;
            }
            if !streams.insert(request.stream.clone()) {
                deferred.push_back(request);
                continue;
            }
            events += request.events.len();
            group.push(request);
        }
        while let Some(request) = deferred.pop_back() {
            state.pending.push_front(request);
        }
        drop(state);
        // Streams in one order in every group, so two groups in flight never wait on each
        // other's rows in opposite orders (a deadlock PostgreSQL would break after a second).
        group.sort_by(|a, b| a.stream.cmp(&b.stream));
        group
    }

    /// Hands every queued append back to its caller to run alone (no runtime to lead on).
    fn disband(&self) {
        let pending: Vec<Request> = self.lock().pending.drain(..).collect();
        for request in pending {
            let _ = request.reply.send(Reply::Alone {
                events: request.events,
                checked: false,
            });
        }
    }
}

/// Starts a task that sends groups until the queue is empty. Its lane is already counted.
fn start_leader(store: &PostgresStore, group: &Arc<GroupCommit>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(lead(Lane {
                store: store.clone(),
                group: group.clone(),
            }));
        }
        Err(_) => {
            // Never expected (appends run on tokio); the members must not wait forever.
            group.disband();
            let mut state = group.lock();
            state.running = state.running.saturating_sub(1);
        }
    }
}

async fn lead(lane: Lane) {
    // Dropping `lane` at the end (or in a panic) releases it, starting a new leader for
    // anything queued after the last group was taken.
    let store = lane.store.clone();
    loop {
        let group = lane.group.take_group();
        if group.is_empty() {
            break;
        }
        store.send_group(group).await;
    }
    drop(lane);
}

/// A copy of `error` for each member of a group that failed as a whole.
fn replicate(error: &Error) -> Error {
    match error {
        Error::OutcomeUnknown(source) => Error::OutcomeUnknown(source.to_string().into()),
        Error::Backend(source) => Error::Backend(source.to_string().into()),
        Error::Invalid(message) => Error::Invalid(message.clone()),
        other => Error::Backend(other.to_string().into()),
    }
}

/// Whether a failure of the group's statement leaves nothing written and is worth appending
/// alone: the database refused it (a unique key raced, a value refused), as opposed to a lost
/// connection, whose outcome is unknown.
fn refused(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            !matches!(code.get(..2), Some("08" | "57" | "58"))
        }
        _ => false,
    }
}

/// The group as the arrays `sql::append_group` binds.
struct GroupColumns<'a> {
    types: Vec<&'a str>,
    ids: Vec<&'a str>,
    expected: Vec<i64>,
    member: Vec<i32>,
    event_ids: Vec<Uuid>,
    names: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<Json<&'a RawValue>>,
    metadata: Vec<Json<&'a Metadata>>,
    offsets: Vec<i32>,
}

impl<'a> GroupColumns<'a> {
    fn new(group: &'a [Request]) -> Result<Self, Error> {
        let events: usize = group.iter().map(|r| r.events.len()).sum();
        let mut columns = GroupColumns {
            types: Vec::with_capacity(group.len()),
            ids: Vec::with_capacity(group.len()),
            expected: Vec::with_capacity(group.len()),
            member: Vec::with_capacity(events),
            event_ids: Vec::with_capacity(events),
            names: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
            offsets: Vec::with_capacity(events),
        };
        for (k, request) in (1i32..).zip(group) {
            columns.types.push(&request.stream.aggregate_type);
            columns.ids.push(&request.stream.aggregate_id);
            columns.expected.push(expected_code(request.expected)?);
            for (offset, event) in (1i32..).zip(&request.events) {
                columns.member.push(k);
                columns.event_ids.push(event.event_id);
                columns.names.push(&event.event_name);
                // Limits::check_append keeps schema versions within i32.
                columns
                    .schema_versions
                    .push(i32::try_from(event.schema_version).map_err(|_| {
                        Error::Invalid(format!(
                            "schema version {} exceeds i32",
                            event.schema_version
                        ))
                    })?);
                columns.payloads.push(Json(&*event.payload));
                columns.metadata.push(Json(&event.metadata));
                columns.offsets.push(offset);
            }
        }
        Ok(columns)
    }
}

impl PostgresStore {
    /// A plain append through group commit (see the module docs).
    pub(crate) async fn append_grouped(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let Some(group) = &self.inner.group else {
            return self.append_pooled(stream, expected, events, true).await;
        };
        let receiver = match group.enter(self, stream, expected, events) {
            Entry::Lane(lane, events) => {
                let result = self.append_pooled(stream, expected, events, true).await;
                drop(lane);
                return result;
            }
            Entry::Queued(receiver) => receiver,
        };
        match receiver.await {
            Ok(Reply::Appended(recorded)) => Ok(recorded),
            Ok(Reply::Alone { events, checked }) => {
                self.append_pooled(stream, expected, events, !checked).await
            }
            Ok(Reply::Failed(error)) => Err(error),
            Err(_) => Err(Error::OutcomeUnknown(
                "the group-commit task ended before it replied (its runtime shut down)".into(),
            )),
        }
    }

    /// Sends one group and replies to each member.
    async fn send_group(&self, mut group: Vec<Request>) {
        if group.len() == 1 {
            let Some(request) = group.pop() else { return };
            let result = self
                .append_pooled(&request.stream, request.expected, request.events, true)
                .await;
            let _ = request.reply.send(match result {
                Ok(recorded) => Reply::Appended(recorded),
                Err(error) => Reply::Failed(error),
            });
            return;
        }
        match self.write_group(&group).await {
            Ok(mut landed) => {
                let mut appended = false;
                for request in group {
                    let mine: Vec<Option<Landed>> = request
                        .events
                        .iter()
                        .map(|e| landed.remove(&e.event_id))
                        .collect();
                    let written = mine.iter().filter(|l| l.is_some()).count();
                    let reply = if written == 0 {
                        Reply::Alone {
                            events: request.events,
                            checked: true,
                        }
                    } else if written < mine.len() {
                        // The statement inserts every event of an admitted append or none.
                        Reply::Failed(Error::OutcomeUnknown(
                            format!(
                                "the group append reported only part of the append to {}",
                                request.stream
                            )
                            .into(),
                        ))
                    } else {
                        appended = true;
                        let mine = mine.into_iter().flatten().collect();
                        match recorded(&request.stream, request.events, mine) {
                            Ok(recorded) => Reply::Appended(recorded),
                            Err(error) => Reply::Failed(Error::OutcomeUnknown(Box::new(error))),
                        }
                    };
                    let _ = request.reply.send(reply);
                }
                if appended {
                    self.inner.signals.committed();
                }
            }
            Err(GroupFailure::Refused) => {
                for request in group {
                    let _ = request.reply.send(Reply::Alone {
                        events: request.events,
                        checked: false,
                    });
                }
            }
            Err(GroupFailure::Failed(error)) => {
                for request in group {
                    let _ = request.reply.send(Reply::Failed(replicate(&error)));
                }
            }
        }
    }

    /// Runs the group's statement; where each written event landed, by id.
    async fn write_group(&self, group: &[Request]) -> Result<HashMap<Uuid, Landed>, GroupFailure> {
        let columns = GroupColumns::new(group).map_err(|_| GroupFailure::Refused)?;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| GroupFailure::Failed(error::acquire(e)))?;
        let rows: Vec<GroupRow> = match sqlx::query_as::<Postgres, GroupRow>(AssertSqlSafe(
            self.inner.sql.append_group.clone(),
        ))
        .bind(&columns.types)
        .bind(&columns.ids)
        .bind(&columns.expected)
        .bind(&columns.member)
        .bind(&columns.event_ids)
        .bind(&columns.names)
        .bind(&columns.schema_versions)
        .bind(&columns.payloads)
        .bind(&columns.metadata)
        .bind(&columns.offsets)
        .fetch_all(&mut *conn)
        .await
        {
            Ok(rows) => rows,
            Err(e) if refused(&e) => return Err(GroupFailure::Refused),
            Err(e) => return Err(GroupFailure::Failed(error::classify(e, Phase::Committing))),
        };
        let streams: HashMap<Uuid, &StreamId> = group
            .iter()
            .flat_map(|r| r.events.iter().map(move |e| (e.event_id, &r.stream)))
            .collect();
        let mut landed = HashMap::with_capacity(rows.len());
        for row in rows {
            let Some(stream) = streams.get(&row.event_id) else {
                return Err(GroupFailure::Failed(Error::OutcomeUnknown(
                    "the group append returned an event that is not in the group".into(),
                )));
            };
            let id = row.event_id;
            let at = row
                .landed(stream)
                .map_err(|e| GroupFailure::Failed(Error::OutcomeUnknown(Box::new(e))))?;
            landed.insert(id, at);
        }
        Ok(landed)
    }
}

/// Why a group wrote nothing it can report.
enum GroupFailure {
    /// Refused by the database (or by the check of a column): nothing written; append alone.
    Refused,
    /// Failed as a whole, as a lone append would have.
    Failed(Error),
}
