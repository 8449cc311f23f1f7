//! Cancellation storms (issue 10): 20,000 appends and 20,000 commands from 32 tasks, each
//! raced against a random deadline (see `DropClock`), against the real server. Afterwards every acknowledged write is stored
//! exactly once, every batch is whole or absent, a live follower saw exactly the stored log in
//! order, and no backend of the test sits idle inside a transaction.
//!
//! Run with `--nocapture` to see the counts.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::prelude::*;
use es_core::testing::conformance::events;
use es_core::{Error, ExecuteError, LogFilter, RecordedEvent};
use es_postgres::{PostgresStore, StoreOptions};
use futures::StreamExt;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

const TASKS: u64 = 32;
const ATTEMPTS: u64 = 20_000;
/// Tasks (of `TASKS`) that append through a store with an inline projection, so that their
/// appends run in transactions (`PgTx`) that the drops interrupt at every step.
const INLINE_TASKS: u64 = 8;

/// The storms share two cores with everything else: one at a time.
static ONE_STORM_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What happened to one attempt.
enum Outcome {
    Acknowledged(Vec<RecordedEvent>),
    Dropped,
}

/// Waits until `store`'s pool holds no connection outside it (dropped transactions' closes
/// done), then until no backend of this test (by `application_name`) is inside a
/// transaction; fails if one stays. There is no signal for either, so both are bounded polls.
async fn assert_no_open_transaction(stores: &[&PostgresStore]) {
    let waiting = Instant::now();
    for store in stores {
        while store.pool().num_idle() != store.pool().size() as usize {
            assert!(
                waiting.elapsed() < Duration::from_secs(30),
                "the pool never settled: {} idle of {}",
                store.pool().num_idle(),
                store.pool().size()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let application_name = stores[0].schema();
    let waiting = Instant::now();
    loop {
        let open = common::idle_in_transaction(application_name).await;
        if open.is_empty() {
            return;
        }
        // A session whose close is in flight ends within moments; a connection left in the
        // pool inside a transaction stays.
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "backends idle in transaction: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When to drop the next attempt: every fourth attempt after 0 to 3 ms (mostly while it
/// waits for a connection or for `BEGIN`), the others at a moment drawn uniformly from a
/// window that adapts so that about a fifth of them complete (it grows by 5% after a drop
/// and shrinks by 20% after an acknowledgement). So drops land in every phase (acquire,
/// `BEGIN`, the statements, `COMMIT`, the reply). Under 32 tasks on two shared cores an
/// append takes tens of milliseconds, so a 0 to 3 ms window alone would drop nearly
/// everything before it reached the server.
struct DropClock {
    rng: common::Rng,
    window: Duration,
    attempt: u64,
}

impl DropClock {
    fn new(seed: u64) -> Self {
        Self {
            rng: common::Rng::new(seed),
            window: Duration::from_millis(3),
            attempt: 0,
        }
    }

    fn next_deadline(&mut self) -> Duration {
        self.attempt += 1;
        let window = if self.attempt.is_multiple_of(4) {
            Duration::from_millis(3)
        } else {
            self.window
        };
        let micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.below(micros.saturating_add(1)))
    }

    fn acknowledged(&mut self) {
        self.window = self.window.mul_f64(0.8).max(Duration::from_millis(1));
    }

    fn dropped(&mut self) {
        self.window = self.window.mul_f64(1.05).min(Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellation_storm_of_appends_with_a_live_follower() {
    let _alone = ONE_STORM_AT_A_TIME.lock().await;
    let store = common::fresh_fast_store(
        StoreOptions::new().poll_interval(Duration::from_millis(200)),
        24,
    )
    .await;
    let counts = common::StreamCounts::install(&store).await;
    let inline = common::reopen(&store, StoreOptions::new(), 8).with_inline_projection(counts);

    let follower = {
        let mut sub = store.subscribe(0, LogFilter::all());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(item) = sub.next().await {
                let e = item.expect("the follower reads without errors");
                if e.stream.aggregate_type == "End" {
                    return seen;
                }
                seen.push((e.position, e.event_id));
            }
            seen
        })
    };

    let began = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = if task < INLINE_TASKS {
            inline.clone()
        } else {
            store.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut clock = DropClock::new(0x5eed ^ task.wrapping_mul(0x9e37_79b9));
            let mut attempts = Vec::new();
            for i in 0..ATTEMPTS / TASKS {
                let stream = StreamId::new("Storm", format!("t{task}-s{}", clock.rng.below(8)));
                let batch = events("E", i, 1 + clock.rng.below(3));
                let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                let outcome = match tokio::time::timeout(
                    clock.next_deadline(),
                    store.append(&stream, ExpectedVersion::Any, batch),
                )
                .await
                {
                    Ok(Ok(recorded)) => {
                        clock.acknowledged();
                        Outcome::Acknowledged(recorded)
                    }
                    Ok(Err(error)) => panic!("an append failed instead of being dropped: {error}"),
                    Err(_elapsed) => {
                        clock.dropped();
                        Outcome::Dropped
                    }
                };
                attempts.push((ids, outcome));
            }
            attempts
        }));
    }
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.extend(task.await.expect("storm task"));
    }
    let took = began.elapsed();
    store
        .append(
            &StreamId::new("End", "end"),
            ExpectedVersion::NoStream,
            events("End", 0, 1),
        )
        .await
        .expect("end marker");
    let seen = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the follower reaches the end marker")
        .expect("follower task");

    let stored: Vec<RecordedEvent> = store
        .stream_all(0, 5_000, LogFilter::all().aggregate_types(["Storm"]))
        .map(|e| e.expect("read the log"))
        .collect()
        .await;
    let stored_ids: HashMap<Uuid, &RecordedEvent> =
        stored.iter().map(|e| (e.event_id, e)).collect();
    assert_eq!(stored_ids.len(), stored.len(), "no event is stored twice");

    let (mut acknowledged, mut dropped, mut dropped_but_stored) = (0u64, 0u64, 0u64);
    let mut attempted_ids = HashSet::new();
    for (ids, outcome) in &attempts {
        attempted_ids.extend(ids.iter().copied());
        let present = ids.iter().filter(|id| stored_ids.contains_key(id)).count();
        assert!(
            present == 0 || present == ids.len(),
            "a batch is stored whole or not at all ({present} of {})",
            ids.len()
        );
        match outcome {
            Outcome::Acknowledged(recorded) => {
                acknowledged += 1;
                assert_eq!(present, ids.len(), "an acknowledged append is stored");
                for event in recorded {
                    let stored = stored_ids[&event.event_id];
                    assert_eq!(
                        (stored.position, stored.version, &stored.stream),
                        (event.position, event.version, &event.stream),
                        "stored as acknowledged"
                    );
                }
            }
            Outcome::Dropped => {
                dropped += 1;
                if present > 0 {
                    dropped_but_stored += 1;
                }
            }
        }
    }
    assert!(
        stored_ids.keys().all(|id| attempted_ids.contains(id)),
        "nothing stored that was not appended"
    );
    assert_eq!(
        seen,
        stored
            .iter()
            .map(|e| (e.position, e.event_id))
            .collect::<Vec<_>>(),
        "the follower saw exactly the stored log, in order"
    );
    // The inline read model moved with exactly the stored events of its streams.
    let counted: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT aggregate_id, events, last_version FROM \"{}\".inline_streams",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .expect("inline read model");
    let mut per_stream: HashMap<&str, u64> = HashMap::new();
    for e in &stored {
        *per_stream
            .entry(e.stream.aggregate_id.as_str())
            .or_default() += 1;
    }
    for (id, events, last_version) in &counted {
        assert_eq!(
            (
                per_stream.get(id.as_str()).copied(),
                u64::try_from(*last_version).ok()
            ),
            (u64::try_from(*events).ok(), u64::try_from(*events).ok()),
            "inline read model of {id}"
        );
    }
    assert!(!counted.is_empty(), "the inline tasks stored something");
    assert_no_open_transaction(&[&store, &inline]).await;
    println!(
        "append storm: {} attempted, {acknowledged} acknowledged, {dropped} dropped \
         ({dropped_but_stored} of them committed anyway), {} appends stored ({} events), \
         follower saw {} events; {took:?}",
        attempts.len(),
        acknowledged + dropped_but_stored,
        stored.len(),
        seen.len()
    );
    assert!(
        acknowledged > 0 && dropped > 0,
        "the storm both acknowledged and dropped"
    );
}

/// Money in, with a nonce that makes every deposit distinct.
#[event]
pub struct Deposited {
    /// How much.
    pub amount: i64,
    /// Random: tells deposits apart in the account's trail.
    pub nonce: u64,
}

/// An account that counts its deposits and folds their nonces, in order, into a trail: two
/// states with the same trail applied the same events in the same order.
#[derive(Aggregate, Default, Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[aggregate(name = "StormAccount", events(Deposited))]
pub struct Account {
    balance: i64,
    deposits: u64,
    trail: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.deposits += 1;
        self.trail = (self.trail ^ e.nonce).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

const ACCOUNTS: u64 = 64;

/// The same storm through `Repository::execute` with its state cache on: every acknowledged
/// command is stored once, and the cache never holds an event that did not commit (the state
/// a command sees from the cache equals a fresh load).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellation_storm_of_commands_through_the_cached_repository() {
    let _alone = ONE_STORM_AT_A_TIME.lock().await;
    let store = common::fresh_fast_store(StoreOptions::new(), 32).await;
    let accounts = Repository::<Account, _>::new(store.clone());
    let began = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let mut clock = DropClock::new(0xacc0 ^ task.wrapping_mul(0x9e37_79b9));
            let (mut acknowledged, mut dropped) = (Vec::new(), 0u64);
            for _ in 0..ATTEMPTS / TASKS {
                let id = format!("a{}", clock.rng.below(ACCOUNTS));
                let nonce = clock.rng.next();
                match tokio::time::timeout(
                    clock.next_deadline(),
                    accounts.execute(&id, Metadata::by_user("storm"), move |_| {
                        Ok::<_, std::convert::Infallible>(Deposited { amount: 1, nonce })
                    }),
                )
                .await
                {
                    Ok(Ok(committed)) => {
                        clock.acknowledged();
                        acknowledged.extend(committed.events);
                    }
                    Ok(Err(ExecuteError::Store(Error::Conflict { .. }))) => {}
                    Ok(Err(error)) => panic!("a command failed instead of being dropped: {error}"),
                    Err(_elapsed) => {
                        clock.dropped();
                        dropped += 1;
                    }
                }
            }
            (acknowledged, dropped)
        }));
    }
    let (mut acknowledged, mut dropped) = (Vec::new(), 0u64);
    for task in tasks {
        let (a, d) = task.await.expect("storm task");
        acknowledged.extend(a);
        dropped += d;
    }
    let took = began.elapsed();

    let stored: Vec<RecordedEvent> = store
        .stream_all(0, 5_000, LogFilter::all())
        .map(|e| e.expect("read the log"))
        .collect()
        .await;
    let stored_ids: HashMap<Uuid, &RecordedEvent> =
        stored.iter().map(|e| (e.event_id, e)).collect();
    assert_eq!(stored_ids.len(), stored.len(), "no event is stored twice");
    for event in &acknowledged {
        let stored = stored_ids
            .get(&event.event_id)
            .unwrap_or_else(|| panic!("acknowledged event {} is not stored", event.event_id));
        assert_eq!(
            (stored.position, stored.version, &stored.stream),
            (event.position, event.version, &event.stream)
        );
    }

    // The state a command sees from the cache may lag behind the stream (the repository
    // catches up on a conflict), but it must be the state of a prefix of the stored events:
    // an event that did not commit would change its trail.
    let fresh = Repository::<Account, _>::new(store.clone()).without_state_cache();
    for n in 0..ACCOUNTS {
        let id = format!("a{n}");
        let seen: Arc<Mutex<Vec<Account>>> = Arc::default();
        let observer = seen.clone();
        accounts
            .execute(&id, Metadata::by_user("check"), move |a| {
                observer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(*a);
                Ok::<_, std::convert::Infallible>(Vec::<Deposited>::new())
            })
            .await
            .expect("observe the cached state");
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (Some(first), Some(last)) = (seen.first(), seen.last()) else {
            panic!("{id}: the command never decided");
        };
        let prefix = fresh
            .load_as_of(&id, AsOf::Version(first.deposits))
            .await
            .expect("load a prefix");
        assert_eq!(
            (prefix.version, prefix.state),
            (first.deposits, *first),
            "{id}: the cached state is a committed prefix"
        );
        let loaded = fresh.load(&id).await.expect("fresh load");
        assert_eq!(
            *last, loaded.state,
            "{id}: after catching up, the committed state"
        );
        let stream_events = stored
            .iter()
            .filter(|e| e.stream.aggregate_id == id)
            .count() as u64;
        assert_eq!(
            (loaded.deposits, loaded.version),
            (stream_events, stream_events)
        );
    }
    assert_no_open_transaction(&[&store]).await;
    println!(
        "repository storm: {} attempted, {} acknowledged, {dropped} dropped, {} stored; {took:?}",
        ATTEMPTS / TASKS * TASKS,
        acknowledged.len(),
        stored.len()
    );
    assert!(!acknowledged.is_empty() && dropped > 0);
}
