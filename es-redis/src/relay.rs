//! [`RedisRelay`]: publishes the global log to Redis Streams, exactly once, in position order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{
    AnyEvent, BatchError, BoxError, Consumer, Delivery, Envelope, Error, EventHandler, GlobalLog,
    ParkedEvent, PoisonPolicy, RetryPolicy,
};
use redis::{RedisResult, Script, Value};

use crate::codec::{FIELDS, field_values, position_of_value, publish_message};
use crate::conn::{Conn, RedisOptions, boxed};
use crate::keys::{Keys, Layout};

const PUBLISH_SCRIPT: &str = include_str!("lua/publish.lua");
pub(crate) const LAST_SCRIPT: &str = include_str!("lua/last.lua");

/// What the relay writes, and how much at once.
#[derive(Debug, Clone)]
pub struct RedisRelayConfig {
    /// Key names.
    pub keys: Keys,
    /// Which streams are written.
    pub layout: Layout,
    /// `Some(prefix)`: also `PUBLISH {prefix}{AggregateType}` each event's JSON (see
    /// [`publish_message`](crate::publish_message)) when it is first written, for live
    /// fan-out (at most once, as Redis pub/sub is). `None` (the default): no PUBLISH.
    pub publish: Option<String>,
    /// `Some(n)`: trim every stream with `MAXLEN ~ n` as it is written. A consumer that falls
    /// further behind than that loses events, and the source says so.
    pub max_len: Option<u64>,
    /// Events per script call; one pipeline carries a whole batch of calls (default 100).
    pub chunk_size: usize,
    /// Events read from the log and sent per round trip (default 1,000): the bound on what
    /// is in flight.
    pub batch_size: usize,
}

impl Default for RedisRelayConfig {
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            layout: Layout::default(),
            publish: None,
            max_len: None,
            chunk_size: 100,
            batch_size: 1_000,
        }
    }
}

impl RedisRelayConfig {
    /// The default configuration with keys under `keys`.
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            ..Self::default()
        }
    }

    /// Sets the layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Also PUBLISHes each event on `{channel_prefix}{AggregateType}` (the system this
    /// replaces used `events:`).
    pub fn publish(mut self, channel_prefix: impl Into<String>) -> Self {
        self.publish = Some(channel_prefix.into());
        self
    }

    /// Trims streams with `MAXLEN ~ max_len`.
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = Some(max_len);
        self
    }
}

/// Publishes the global log to Redis Streams: an [`EventHandler`] of every event
/// ([`AnyEvent`]) and the [`Delivery`] of its own checkpoint, which is the broker's last
/// published position. Run it with [`RedisRelay::consumer`].
///
/// Each event becomes an entry with id `{position}-0` and the fields of
/// [`FIELDS`](crate::FIELDS), written by one Lua script per chunk that skips what Redis
/// already holds and refuses to open a gap (see the crate docs for what "exactly once"
/// means here). Clones share the connection and state.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn run() -> Result<(), es_core::Error> {
/// use es_core::MemoryStore;
/// use es_redis::{Layout, RedisRelay, RedisRelayConfig};
///
/// let store = MemoryStore::new();
/// let relay = RedisRelay::new(
///     "redis://127.0.0.1:6379",
///     RedisRelayConfig::default().layout(Layout::Both).publish("events:"),
/// )?;
/// let handle = relay.consumer("redis-relay", store).spawn();
/// println!("{:?}", handle.status());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRelay {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    config: RedisRelayConfig,
    publish: Script,
    last: Script,
    state: Mutex<State>,
}

/// What the relay knows of the broker; `published: None` means "read it again".
#[derive(Debug, Default, Clone, Copy)]
struct State {
    published: Option<u64>,
    checkpoint: u64,
}

impl std::fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRelay")
            .field("conn", &self.inner.conn)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisRelay {
    /// A relay to the Redis at `options` (a URL, or [`RedisOptions`]). Checks the URL only:
    /// it connects on first use, so it starts while Redis is down and reports that in its
    /// status.
    pub fn new(options: impl Into<RedisOptions>, config: RedisRelayConfig) -> Result<Self, Error> {
        if config.chunk_size == 0 || config.batch_size == 0 {
            return Err(Error::Invalid(
                "the relay's chunk and batch sizes must be at least 1".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Conn::new(options.into())?,
                config,
                publish: Script::new(PUBLISH_SCRIPT),
                last: Script::new(LAST_SCRIPT),
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisRelayConfig {
        &self.inner.config
    }

    /// A consumer named `name` running this relay over `log`, with the settings a relay
    /// needs: batches of [`RedisRelayConfig::batch_size`], a broker failure retried for as
    /// long as it lasts (backoff from 100 ms to 5 s, the error in
    /// [`Status::last_error`](es_core::Status::last_error)), and an unreadable event stopping
    /// the relay ([`PoisonPolicy::Stop`]) rather than leaving a gap in the broker.
    pub fn consumer<L: GlobalLog>(
        &self,
        name: impl Into<String>,
        log: L,
    ) -> Consumer<RedisRelay, L, RedisRelay> {
        Consumer::new(name, log, self.clone(), self.clone())
            .batch_size(self.inner.config.batch_size)
            .retry(RetryPolicy {
                attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            })
            .on_poison(PoisonPolicy::Stop)
    }

    /// The last position Redis holds, read from Redis (0: nothing published yet).
    pub async fn last_published(&self) -> Result<u64, Error> {
        let keys = &self.inner.config.keys;
        let (key, kind) = if self.inner.config.layout.writes_all() {
            (keys.all(), "stream")
        } else {
            (keys.head(), "head")
        };
        let last: String = self
            .inner
            .conn
            .run(
                &self.inner.last,
                &[&key],
                &[kind],
                "cannot read the last published position from",
            )
            .await?;
        last.parse().map_err(|_| {
            Error::Backend(boxed(format!(
                "Redis at {} answered `{last}` for the last published position",
                self.inner.conn.url()
            )))
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what the relay knows of the broker: the next batch starts from a fresh read.
    fn stale(&self) {
        self.state().published = None;
    }

    /// One EVALSHA of the publish script for `chunk`, whose first event follows `prev`.
    fn chunk_command(&self, chunk: &[Envelope<AnyEvent>], prev: u64) -> Result<redis::Cmd, Error> {
        let config = &self.inner.config;
        let guard = if config.layout.writes_all() {
            config.keys.all()
        } else {
            config.keys.head()
        };
        // The keys first (EVALSHA takes them before the arguments).
        let mut keys = vec![guard];
        let mut key_index: HashMap<&str, usize> = HashMap::new();
        if config.layout.writes_per_type() {
            for envelope in chunk {
                let aggregate_type = envelope.record.stream.aggregate_type.as_str();
                if !key_index.contains_key(aggregate_type) {
                    keys.push(config.keys.per_type(aggregate_type));
                    key_index.insert(aggregate_type, keys.len());
                }
            }
        }
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(self.inner.publish.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(config.layout.script_name())
            .arg(config.max_len.map(|n| n.to_string()).unwrap_or_default())
            .arg(config.publish.as_deref().unwrap_or_default())
            .arg(prev)
            .arg(FIELDS.len())
            .arg(&FIELDS[..]);
        let mut previous = prev;
        for envelope in chunk {
            let event = &envelope.record;
            let index = key_index
                .get(event.stream.aggregate_type.as_str())
                .copied()
                .unwrap_or(0);
            command.arg(event.position).arg(index);
            match config.publish {
                Some(_) => command.arg(publish_message(event)?),
                None => command.arg(""),
            };
            command.arg(&event.stream.aggregate_type);
            for value in field_values(event, previous)? {
                command.arg(value);
            }
            previous = event.position;
        }
        Ok(command)
    }

    /// Publishes `events` (in position order, all after the broker's last position as the
    /// state knows it) in one pipeline. On failure, returns the index of the first event that
    /// may not be in Redis; the state is then stale.
    async fn publish(&self, events: &[Envelope<AnyEvent>]) -> Result<(), BatchError> {
        let fail = |index: usize, error: BoxError| BatchError { index, error };
        let Some(first) = events.first() else {
            return Ok(());
        };
        let known = self.state().published;
        let prev = match known {
            Some(published) => published,
            None => {
                let last = self.last_published().await.map_err(|e| fail(0, e.into()))?;
                self.state().published = Some(last);
                last
            }
        };
        let chunk_size = self.inner.config.chunk_size;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut before = prev;
        for chunk in events.chunks(chunk_size) {
            pipe.add_command(
                self.chunk_command(chunk, before)
                    .map_err(|e| fail(0, e.into()))?,
            );
            before = chunk.last().map_or(before, |e| e.position());
        }
        let conn = &self.inner.conn;
        let mut loaded = false;
        let replies = loop {
            let mut connection = match conn.get().await {
                Ok(connection) => connection,
                Err(error) => {
                    self.stale();
                    return Err(fail(0, error.into()));
                }
            };
            let replies: Vec<RedisResult<Value>> = match pipe.query_async(&mut connection).await {
                Ok(replies) => replies,
                Err(error) => {
                    self.stale();
                    let message = conn.describe(
                        &format!("publishing from position {} to", first.position()),
                        &error,
                    );
                    let _ = conn.fail("", error);
                    return Err(fail(0, boxed(message)));
                }
            };
            let unknown_script = replies
                .first()
                .is_some_and(|r| matches!(r, Err(e) if e.code() == Some("NOSCRIPT")));
            if unknown_script && !loaded {
                // A restarted Redis forgets scripts: load it and send the pipeline again
                // (the script skips whatever the first attempt wrote).
                self.inner
                    .publish
                    .load_async(&mut connection)
                    .await
                    .map_err(|e| {
                        self.stale();
                        fail(
                            0,
                            conn.fail("cannot load the publish script into", e).into(),
                        )
                    })?;
                loaded = true;
                continue;
            }
            break replies;
        };
        for (k, reply) in replies.into_iter().enumerate() {
            let start = k.saturating_mul(chunk_size);
            let last = match reply {
                Ok(Value::Array(parts)) => parts.get(1).and_then(position_of_value),
                Ok(_) => None,
                Err(error) => {
                    self.stale();
                    let at = events.get(start).map_or(0, |e| e.position());
                    return Err(fail(
                        start,
                        boxed(conn.describe(&format!("publishing position {at} to"), &error)),
                    ));
                }
            };
            let Some(last) = last else {
                self.stale();
                return Err(fail(
                    start,
                    boxed(format!(
                        "Redis at {} gave an unexpected reply to the publish script",
                        conn.url()
                    )),
                ));
            };
            self.state().published = Some(last);
        }
        Ok(())
    }
}

impl EventHandler for RedisRelay {
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

impl Delivery for RedisRelay {
    type Tx = ();
    const ATOMIC: bool = false;

    /// The broker's last published position, read from Redis on the first call and after
    /// any failure; in between, the position the relay last committed (which may lie past
    /// the broker's last entry when the log's tail holds no event to relay).
    async fn begin(&self, _consumer: &str) -> Result<((), u64), Error> {
        let state = *self.state();
        if state.published.is_some() {
            return Ok(((), state.checkpoint));
        }
        let last = self.last_published().await?;
        *self.state() = State {
            published: Some(last),
            checkpoint: last,
        };
        Ok(((), last))
    }

    async fn commit(
        &self,
        _tx: (),
        _consumer: &str,
        position: u64,
        _flush: bool,
    ) -> Result<(), Error> {
        let mut state = self.state();
        if state.published.is_some() {
            state.checkpoint = position;
        }
        Ok(())
    }

    async fn rollback(&self, _tx: ()) -> Result<(), Error> {
        Ok(())
    }

    /// Reads the broker again on the next batch (the runtime calls it when it takes the
    /// relay's lease: another relay may have published meanwhile).
    fn refresh(&self, _consumer: &str) {
        self.stale();
    }

    async fn park(&self, _tx: &mut (), consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        Err(Error::Invalid(format!(
            "relay `{consumer}` cannot skip position {}: a relay never leaves a gap in the broker",
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
