//! The other side: the log read back from Redis, with checkpoints kept in Redis, so a
//! consumer on another machine runs the same handler code on the broker's copy.

use std::sync::Arc;
use std::time::Duration;

use es_core::{
    AtLeastOnce, CheckpointStore, Error, GlobalLog, LogFilter, LogPage, ParkedEvent, Wakeup,
    WakeupSender, check_checkpoint, check_name,
};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script, Value};

use crate::codec::{decode_entry, entry_position, position_of_id};
use crate::conn::{Conn, RedisOptions, boxed};
use crate::keys::Keys;
use crate::relay::LAST_SCRIPT;

const CHECKPOINT_SCRIPT: &str = include_str!("lua/checkpoint.lua");

/// Most entries one read asks Redis for.
const MAX_READ: usize = 5_000;

/// The relayed log read back from the whole-log stream (`{prefix}$all`, written by a relay
/// with [`Layout::All`](crate::Layout::All) or [`Layout::Both`](crate::Layout::Both)).
///
/// - [`GlobalLog::read_log`] reads by position (`XRANGE` after `{position}-0`) and applies the
///   filter in this process. The stream holds a prefix of the log in position order, so a
///   page that reaches the stream's end is safe to continue after: nothing can appear
///   before an entry already there.
/// - Every entry names the position published before it (field `previous`): a read whose
///   first entry follows a position the reader has not seen (trimmed by `MAXLEN`, or
///   deleted) fails with [`Error::Invalid`] naming both positions, since the consumer fell
///   behind the stream's retention and would skip events.
/// - [`GlobalLog::wakeup`] is signalled by a task that waits on the stream with a blocking
///   `XREAD` on a connection of its own, once per arrival of new entries however many there
///   are, with polling ([`RedisLog::poll_interval`]) as a fallback.
///
/// Clones share the connection and the wake-up task, which stops with the last clone.
#[derive(Clone)]
pub struct RedisLog {
    inner: Arc<LogInner>,
    poll: Duration,
}

struct LogInner {
    conn: Conn,
    stream: String,
    last: Script,
    wakeup: WakeupSender,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("conn", &self.inner.conn)
            .field("stream", &self.inner.stream)
            .finish_non_exhaustive()
    }
}

impl RedisLog {
    /// The log in `keys.all()` on the Redis at `options`. Checks the URL only and connects on
    /// first use; starts the wake-up task when called within a Tokio runtime (outside one,
    /// followers only poll).
    pub fn new(options: impl Into<RedisOptions>, keys: &Keys) -> Result<Self, Error> {
        let conn = Conn::new(options.into())?;
        let stream = keys.all();
        let wakeup = WakeupSender::new();
        let watcher = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(watch(conn.clone(), stream.clone(), wakeup.clone())));
        Ok(Self {
            inner: Arc::new(LogInner {
                conn,
                stream,
                last: Script::new(LAST_SCRIPT),
                wakeup,
                watcher,
            }),
            poll: Duration::from_secs(1),
        })
    }

    /// Sets the longest a follower waits without a wake-up before it reads again (default
    /// 1 s): how late it sees new entries while the wake-up connection is down, or when the
    /// log was made outside a Tokio runtime.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// How long one blocking read waits before it is sent again, in milliseconds.
const BLOCK_MS: u64 = 5_000;

/// Waits on `stream` with blocking reads and signals `wakeup` whenever entries arrive.
///
/// A follower reads after it is woken, so every entry must be followed by a signal sent after
/// it was written, or the follower could read before it and then sleep until the next poll.
/// The task therefore never blocks on `$` ("entries from now on", which misses what is
/// written between two reads): it starts from the stream's newest entry, read when it first
/// connects, signalling once then for whatever was written before it listened; and each
/// round sends, in one pipeline, `XREVRANGE stream + (last COUNT 1` (the newest entry after
/// `last`) and the blocking `XREAD COUNT 1 ... last`, signals if either found one, and goes
/// on from the newest. A burst of N entries costs one or two rounds and signals, not N (one
/// `XREAD COUNT 1` per entry, each waking every follower for an empty read).
async fn watch(conn: Conn, stream: String, wakeup: WakeupSender) {
    let mut failures = 0u32;
    // The newest id that a signal already covers; `None` until read from the stream.
    let mut last: Option<String> = None;
    loop {
        let mut connection = match conn.connect(Some(Duration::from_secs(15))).await {
            Ok(connection) => connection,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(%error, "Redis log wake-ups: cannot connect; retrying");
                tokio::time::sleep(pause(failures)).await;
                continue;
            }
        };
        let error = follow(&mut connection, &stream, &wakeup, &mut last, &mut failures).await;
        failures = failures.saturating_add(1);
        tracing::debug!(%error, "Redis log wake-ups: read failed; reconnecting");
        wakeup.notify();
        tokio::time::sleep(pause(failures)).await;
    }
}

/// Signals `wakeup` for every arrival of entries after `last` on `stream` (see [`watch`]),
/// until a read fails; returns the failure.
async fn follow(
    connection: &mut MultiplexedConnection,
    stream: &str,
    wakeup: &WakeupSender,
    last: &mut Option<String>,
    failures: &mut u32,
) -> RedisError {
    loop {
        let from = match last.clone() {
            Some(id) => id,
            None => {
                let newest: Value = match redis::cmd("XREVRANGE")
                    .arg(stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(connection)
                    .await
                {
                    Ok(newest) => newest,
                    Err(error) => return error,
                };
                let id = first_id(&newest).unwrap_or_else(|| "0-0".to_owned());
                *last = Some(id.clone());
                wakeup.notify();
                id
            }
        };
        let (newer, read): (Value, Value) = match redis::pipe()
            .cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg(format!("({from}"))
            .arg("COUNT")
            .arg(1)
            .cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(stream)
            .arg(&from)
            .query_async(connection)
            .await
        {
            Ok(replies) => replies,
            Err(error) => return error,
        };
        *failures = 0;
        // XREVRANGE ran first: what it found is the newest of both; without it, the entry
        // XREAD waited for is (entries written after it come in the next round).
        if let Some(id) = first_id(&newer).or_else(|| newest_id(&read)) {
            *last = Some(id);
            wakeup.notify();
        }
    }
}

fn pause(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32.checked_shl(failures.min(7)).unwrap_or(128))
        .min(Duration::from_secs(5))
}

/// The id of the last entry in an XREAD reply (`[[stream, [[id, fields], ...]]]`, or a map in
/// RESP3).
fn newest_id(reply: &Value) -> Option<String> {
    let entries = match reply {
        Value::Array(streams) => match streams.first()? {
            Value::Array(pair) => pair.get(1)?,
            _ => return None,
        },
        Value::Map(streams) => &streams.first()?.1,
        _ => return None,
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    entry_id(entries.last()?)
}

/// The id of the first entry in an XRANGE or XREVRANGE reply (`[[id, fields], ...]`).
fn first_id(reply: &Value) -> Option<String> {
    let Value::Array(entries) = reply else {
        return None;
    };
    entry_id(entries.first()?)
}

/// The id of an entry (`[id, fields]`).
fn entry_id(entry: &Value) -> Option<String> {
    let Value::Array(entry) = entry else {
        return None;
    };
    match entry.first()? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

impl GlobalLog for RedisLog {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        if limit == 0 {
            return Ok(LogPage {
                events: Vec::new(),
                scanned_to: after,
            });
        }
        let count = limit.min(MAX_READ).to_string();
        let mut connection = self.inner.conn.get().await?;
        let entries: Vec<Value> = redis::cmd("XRANGE")
            .arg(&self.inner.stream)
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.inner.conn.fail("cannot read the log from", e))?;
        let mut page = LogPage {
            events: Vec::with_capacity(entries.len()),
            scanned_to: after,
        };
        for entry in &entries {
            if let (Some(before), Some(position)) = (filter.before_position, entry_position(entry))
                && position >= before
            {
                // Nothing lies between the last entry read and this one.
                page.scanned_to = page.scanned_to.max(before.saturating_sub(1));
                break;
            }
            let (event, previous) = decode_entry(entry)?;
            if previous > page.scanned_to {
                return Err(Error::Invalid(format!(
                    "the Redis stream `{}` no longer holds every event after position {}: the \
                     entry at position {} follows position {previous}, which is gone (trimmed or \
                     deleted: the stream's retention is shorter than this reader's lag)",
                    self.inner.stream, page.scanned_to, event.position
                )));
            }
            page.scanned_to = event.position;
            if filter.matches(&event) {
                page.events.push(event);
            }
        }
        Ok(page)
    }

    async fn head_position(&self) -> Result<u64, Error> {
        let last: String = self
            .inner
            .conn
            .run(
                &self.inner.last,
                &[&self.inner.stream],
                &["stream"],
                "cannot read the head of the log from",
            )
            .await?;
        last.parse().map_err(|_| unexpected(&self.inner.conn))
    }

    fn wakeup(&self) -> Wakeup {
        self.inner.wakeup.subscribe(self.poll)
    }
}

fn unexpected(conn: &Conn) -> Error {
    Error::Backend(boxed(format!(
        "Redis at {} gave an unexpected reply",
        conn.url()
    )))
}

/// Checkpoints and parked events of broker-side consumers, kept in Redis.
///
/// A consumer's checkpoint is the last-delivered id of a consumer group named after the
/// consumer on the whole-log stream, moved with `XGROUP SETID` (created on first save):
/// `XINFO GROUPS` shows every consumer's position and lag. The runtime reads by position
/// and retries itself, so the group's pending-entries list is not used (nothing is
/// delivered through `XREADGROUP`, and nothing needs `XACK`). Parked events live in a hash
/// per consumer ([`Keys::parked`]), one JSON [`ParkedEvent`] per position.
///
/// Use it with [`AtLeastOnce`]: at-least-once delivery, the checkpoint saved at most once
/// per interval and whenever the consumer catches up.
#[derive(Clone)]
pub struct RedisCheckpoints {
    conn: Conn,
    keys: Keys,
    stream: String,
    save: Arc<Script>,
}

impl std::fmt::Debug for RedisCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCheckpoints")
            .field("conn", &self.conn)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl RedisCheckpoints {
    /// Checkpoints on `keys.all()` of the Redis at `options`; connects on first use.
    pub fn new(options: impl Into<RedisOptions>, keys: &Keys) -> Result<Self, Error> {
        Ok(Self {
            conn: Conn::new(options.into())?,
            stream: keys.all(),
            keys: keys.clone(),
            save: Arc::new(Script::new(CHECKPOINT_SCRIPT)),
        })
    }

    /// At-least-once delivery over these checkpoints (saved at most once a second).
    pub fn delivery(self) -> AtLeastOnce<Self> {
        AtLeastOnce::new(self)
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, Error> {
        self.conn.get().await
    }
}

impl CheckpointStore for RedisCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        check_name(name, "consumer name")?;
        let mut connection = self.connection().await?;
        let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut connection)
            .await;
        let groups = match reply {
            Ok(groups) => groups,
            Err(error) if error.detail().is_some_and(|d| d.contains("no such key")) => {
                return Ok(None);
            }
            Err(error) => return Err(self.conn.fail("cannot read the checkpoints from", error)),
        };
        let Value::Array(groups) = groups else {
            return Err(unexpected(&self.conn));
        };
        for group in &groups {
            let fields: Vec<(&Value, &Value)> = match group {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|p| Some((p.first()?, p.get(1)?)))
                    .collect(),
                Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
                _ => continue,
            };
            let field = |wanted: &str| {
                fields.iter().find_map(|(k, v)| {
                    matches!(k, Value::BulkString(b) if b == wanted.as_bytes())
                        .then_some(*v)
                        .or_else(|| {
                            matches!(k, Value::SimpleString(s) if s == wanted).then_some(*v)
                        })
                })
            };
            let is_this = match field("name") {
                Some(Value::BulkString(b)) => b == name.as_bytes(),
                Some(Value::SimpleString(s)) => s == name,
                _ => false,
            };
            if !is_this {
                continue;
            }
            let id = match field("last-delivered-id") {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err(unexpected(&self.conn)),
            };
            return position_of_id(&id)
                .map(Some)
                .ok_or_else(|| unexpected(&self.conn));
        }
        Ok(None)
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        check_checkpoint(name, position)?;
        let id = format!("{position}-0");
        let _: Value = self
            .conn
            .run(
                &self.save,
                &[&self.stream],
                &[name, &id],
                "cannot save a checkpoint to",
            )
            .await?;
        Ok(())
    }

    async fn park(&self, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_checkpoint(consumer, parked.position)?;
        let json = serde_json::to_string(parked).map_err(Error::Encode)?;
        let mut connection = self.connection().await?;
        redis::cmd("HSET")
            .arg(self.keys.parked(consumer))
            .arg(parked.position)
            .arg(json)
            .exec_async(&mut connection)
            .await
            .map_err(|e| self.conn.fail("cannot park an event in", e))
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        check_name(consumer, "consumer name")?;
        let mut connection = self.connection().await?;
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(self.keys.parked(consumer))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.conn.fail("cannot read parked events from", e))?;
        let mut parked = values
            .iter()
            .map(|json| {
                serde_json::from_str::<ParkedEvent>(json).map_err(|e| {
                    Error::Backend(boxed(format!(
                        "a parked event of `{consumer}` in Redis at {} is unreadable: {e}",
                        self.conn.url()
                    )))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }

    async fn unpark(&self, consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        let mut connection = self.connection().await?;
        let removed: u64 = redis::cmd("HDEL")
            .arg(self.keys.parked(consumer))
            .arg(position)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.conn.fail("cannot unpark an event in", e))?;
        Ok(removed > 0)
    }
}
