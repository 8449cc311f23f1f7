//! Ambiguous commits (issue 10 item 3): a TCP proxy between the pool and PostgreSQL lets the
//! commit through and drops the connection before the reply reaches the client. The store
//! reports `OutcomeUnknown`; `execute_once` runs the command again under its key and returns
//! the first outcome, as does any later retry with that key, and the stream holds one set of
//! events. Once for a plain append (autocommit), once for an append
//! with an inline projection (the reply to `COMMIT` is lost), and once for a group commit
//! (every member learns that its outcome is unknown; each retry returns what was stored).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use es_core::Error;
use es_core::prelude::*;
use es_postgres::{PostgresStore, StoreOptions};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPoolOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// When the armed proxy drops a connection: after the server answered, before the answer is
/// forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillOn {
    /// The first answer that completes a command (an autocommit statement: committed once the
    /// server sends ReadyForQuery).
    FirstCommand,
    /// The answer that completes a `COMMIT`.
    Commit,
    /// The first answer that completes an insert of more than one row (a group commit's
    /// statement; lone one-event appends pass).
    MultiRowInsert,
}

#[derive(Default)]
struct ProxyState {
    armed: Mutex<Option<KillOn>>,
    kills: AtomicUsize,
}

/// A TCP proxy in front of PostgreSQL that parses the server's messages (type byte, length)
/// and, when armed, holds each answer until its ReadyForQuery; if the answer matches, it
/// closes both sides instead of forwarding it.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl Proxy {
    async fn start(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, state) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    match TcpStream::connect((upstream.0.as_str(), upstream.1)).await {
                        Ok(server) => relay(client, server, state).await,
                        Err(e) => panic!("the proxy cannot reach PostgreSQL: {e}"),
                    }
                });
            }
        });
        Self { addr, state }
    }

    fn arm(&self, kill_on: KillOn) {
        *self
            .state
            .armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(kill_on);
    }

    fn kills(&self) -> usize {
        self.state.kills.load(Ordering::SeqCst)
    }
}

/// One server message: its type and its body.
type Message = (u8, Vec<u8>);

fn completes(answer: &[Message], kill_on: KillOn) -> bool {
    answer.iter().any(|(kind, body)| {
        *kind == b'C'
            && match kill_on {
                KillOn::FirstCommand => true,
                KillOn::Commit => body.starts_with(b"COMMIT"),
                KillOn::MultiRowInsert => inserted_rows(body).is_some_and(|n| n > 1),
            }
    })
}

/// The row count of an `INSERT 0 n` command tag.
fn inserted_rows(tag: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(tag).ok()?.trim_end_matches('\0');
    tag.strip_prefix("INSERT 0 ")?.parse().ok()
}

async fn relay(client: TcpStream, server: TcpStream, state: Arc<ProxyState>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buffer = Vec::new();
    let mut held: Vec<Message> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = match server_read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..read]);
        // Frame whole messages: a type byte, then a big-endian length that counts itself.
        while buffer.len() >= 5 {
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() < 1 + length {
                break;
            }
            let message: Vec<u8> = buffer.drain(..1 + length).collect();
            let kind = message[0];
            let armed = *state.armed.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(kill_on) = armed else {
                if client_write.write_all(&message).await.is_err() {
                    upstream.abort();
                    return;
                }
                continue;
            };
            held.push((kind, message[5..].to_vec()));
            if kind != b'Z' {
                continue;
            }
            if completes(&held, kill_on) {
                // The server has answered (and committed); the client never hears it.
                *state.armed.lock().unwrap_or_else(PoisonError::into_inner) = None;
                state.kills.fetch_add(1, Ordering::SeqCst);
                upstream.abort();
                return;
            }
            for (kind, body) in held.drain(..) {
                let length = u32::try_from(body.len() + 4).expect("message length");
                let mut message = vec![kind];
                message.extend_from_slice(&length.to_be_bytes());
                message.extend_from_slice(&body);
                if client_write.write_all(&message).await.is_err() {
                    upstream.abort();
                    return;
                }
            }
        }
    }
    upstream.abort();
}

/// Money in.
#[event]
pub struct Deposited {
    /// How much.
    pub amount: i64,
}

/// An account.
#[derive(Aggregate, Default, Serialize, Deserialize)]
#[aggregate(name = "Account", events(Deposited))]
pub struct Account {
    balance: i64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

/// A store on a fresh schema whose connections go through a new proxy (notifications off, so
/// that only the commands' own statements pass the proxy), and a direct store on the schema.
async fn behind_proxy() -> (Proxy, PostgresStore, PostgresStore) {
    behind_proxy_with(StoreOptions::new(), 2).await
}

async fn behind_proxy_with(
    options: StoreOptions,
    connections: u32,
) -> (Proxy, PostgresStore, PostgresStore) {
    let direct = common::fresh_store().await;
    let upstream = common::test_options("es_pg_test_proxy");
    let proxy = Proxy::start((upstream.get_host().to_owned(), upstream.get_port())).await;
    let store_options = options;
    let proxied_options = common::test_options(direct.schema())
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .ssl_mode(PgSslMode::Disable);
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_lazy_with(proxied_options);
    let proxied = PostgresStore::from_pool_with(
        pool,
        store_options
            .schema(direct.schema())
            .notify(false)
            .listen(false),
    )
    .expect("valid options");
    (proxy, proxied, direct)
}

fn deposit(amount: i64) -> impl FnMut(&Account) -> Result<Deposited, std::convert::Infallible> {
    move |_| Ok(Deposited { amount })
}

/// Runs the ambiguous commit through `accounts` (whose store goes through `proxy`) and checks
/// the retry; `direct` reads the truth.
async fn ambiguous_commit_then_retry(
    proxy: &Proxy,
    accounts: &Repository<Account, PostgresStore>,
    direct: &PostgresStore,
    kill_on: KillOn,
) {
    let meta = Metadata::by_user("u-1");
    // Warm the state cache, so that the command below sends exactly one write.
    accounts
        .execute_once("acc", CommandKey::new(), meta.clone(), deposit(10))
        .await
        .expect("first command");
    let key = CommandKey::from_text("request-42");
    proxy.arm(kill_on);
    let first = accounts
        .execute_once("acc", key, meta.clone(), deposit(5))
        .await
        .expect("the repository resolves the unknown outcome under the key");
    assert_eq!(proxy.kills(), 1, "the proxy dropped exactly that reply");
    let stream = StreamId::new("Account", "acc");
    let stored = direct
        .read_stream(&stream, &StreamQuery::all())
        .await
        .expect("read");
    assert_eq!(stored.len(), 2, "the lost reply's commit happened");
    assert_eq!(stored[1].event_id, key.event_id(&stream, 0));

    let retried = accounts
        .execute_once("acc", key, meta.clone(), deposit(5))
        .await
        .expect("the retry with the same key");
    let from_elsewhere = Repository::<Account, _>::new(direct.clone())
        .execute_once("acc", key, meta, deposit(5))
        .await
        .expect("the same key from another process");
    for committed in [&first, &retried, &from_elsewhere] {
        assert_eq!(committed.version, 2, "the first outcome's version");
        assert_eq!(
            committed
                .events
                .iter()
                .map(|e| (e.event_id, e.version, e.position))
                .collect::<Vec<_>>(),
            [(stored[1].event_id, stored[1].version, stored[1].position)],
            "the first outcome's events"
        );
    }
    let after = direct
        .read_stream(&stream, &StreamQuery::all())
        .await
        .expect("read");
    assert_eq!(after.len(), 2, "one set of events");
    assert_eq!(
        Repository::<Account, _>::new(direct.clone())
            .load("acc")
            .await
            .expect("load")
            .balance,
        15
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_an_append_is_unknown_and_the_retry_returns_the_first_outcome() {
    let (proxy, proxied, direct) = behind_proxy().await;
    let accounts = Repository::<Account, _>::new(proxied);
    ambiguous_commit_then_retry(&proxy, &accounts, &direct, KillOn::FirstCommand).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_a_commit_with_an_inline_projection_is_unknown_and_retried_once() {
    let (proxy, proxied, direct) = behind_proxy().await;
    let counts = common::StreamCounts::install(&direct).await;
    let accounts = Repository::<Account, _>::new(proxied.with_inline_projection(counts));
    ambiguous_commit_then_retry(&proxy, &accounts, &direct, KillOn::Commit).await;
    let (events, last): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT events, last_version FROM \"{}\".inline_streams WHERE aggregate_id = 'acc'",
        direct.schema()
    )))
    .fetch_one(direct.pool())
    .await
    .expect("inline read model");
    assert_eq!(
        (events, last),
        (2, 2),
        "the inline read model counted each event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_reply_to_a_group_commit_is_unknown_to_every_member_and_each_retry_converges() {
    let (proxy, proxied, direct) = behind_proxy_with(StoreOptions::new().group_commit(1), 6).await;
    // Hold the proxied store's one lane: its append waits on a row a direct transaction holds.
    let held = StreamId::new("Lane", "held");
    let mut blocker = direct.begin().await.expect("begin");
    direct
        .append_in(
            &mut blocker,
            &held,
            ExpectedVersion::Any,
            vec![es_core::testing::conformance::event("B", 0)],
        )
        .await
        .expect("blocker");
    let waiting = {
        let (proxied, held) = (proxied.clone(), held.clone());
        tokio::spawn(async move {
            proxied
                .append(
                    &held,
                    ExpectedVersion::Any,
                    vec![es_core::testing::conformance::event("W", 1)],
                )
                .await
        })
    };
    let observer = common::pool("es_pg_test_observer", 1);
    let looking = std::time::Instant::now();
    loop {
        let waits: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(direct.schema())
        .fetch_one(&observer)
        .await
        .expect("read pg_stat_activity");
        if waits > 0 {
            break;
        }
        assert!(
            looking.elapsed() < std::time::Duration::from_secs(30),
            "the append never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Three members queue behind it; their group's reply will be lost.
    let members: Vec<(StreamId, Vec<es_core::NewEvent>)> = (0..3)
        .map(|i| {
            (
                StreamId::new("Member", format!("m{i}")),
                es_core::testing::conformance::events("E", i * 10, 1 + i),
            )
        })
        .collect();
    let mut pending = Vec::new();
    for (stream, events) in &members {
        let (proxied, stream, events) = (proxied.clone(), stream.clone(), events.clone());
        let mut append: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            Box::pin(async move {
                proxied
                    .append(&stream, ExpectedVersion::NoStream, events)
                    .await
            });
        assert!(futures::poll!(append.as_mut()).is_pending());
        pending.push(append);
    }
    proxy.arm(KillOn::MultiRowInsert);
    blocker.rollback().await.expect("rollback");
    waiting
        .await
        .expect("task")
        .expect("the lone append passes the proxy");
    let outcomes = futures::future::join_all(pending).await;
    assert_eq!(proxy.kills(), 1, "the proxy dropped the group's reply");
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(Error::OutcomeUnknown(_))),
            "every member of the lost group learns its outcome is unknown: {outcome:?}"
        );
    }
    for (stream, events) in &members {
        let stored = direct
            .read_stream(stream, &StreamQuery::all())
            .await
            .expect("read");
        assert_eq!(
            stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "the lost group committed {stream} whole"
        );
        let retried = proxied
            .append(stream, ExpectedVersion::NoStream, events.clone())
            .await
            .expect("the retry with the same ids");
        assert_eq!(
            retried
                .iter()
                .map(|e| (e.event_id, e.position))
                .collect::<Vec<_>>(),
            stored
                .iter()
                .map(|e| (e.event_id, e.position))
                .collect::<Vec<_>>(),
            "the retry returns the first outcome"
        );
        assert_eq!(
            direct.stream_version(stream).await.expect("version"),
            events.len() as u64,
            "one set of events"
        );
    }
}
