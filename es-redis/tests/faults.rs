//! Faults against the local Redis: the relay killed at random points (aborted tasks and
//! kill -9 of a child process) while 16 writers append, the broker refusing and dropping
//! connections, and a broker-side consumer crashing and resuming from its checkpoint. The
//! scenarios are shared with es-nats (`relay_testing::scenarios`); `support` says how each
//! one sees Redis.

mod support;

use es_core::GlobalLog;
use es_redis::RedisLog;
use support::*;

/// Not a test on its own: the child process of the killed-relay tests, which relays the log
/// until it is killed with SIGKILL.
#[test]
fn child_relay_process() {
    scenarios::child_relay::<RedisBroker>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_at_random_points_publishes_each_committed_event_once() {
    scenarios::relay_killed_over_memory(RedisBroker::for_faults("killed").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_of_postgresql_killed_at_random_points_publishes_each_committed_event_once() {
    scenarios::relay_killed_over_postgres(
        RedisBroker::for_faults("killed-pg").await,
        "es_redis_test",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusing_then_dropping_connections_loses_nothing() {
    scenarios::outage(&RedisBroker::for_faults("refused").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_side_consumer_crashes_and_resumes_from_its_checkpoint() {
    let broker = RedisBroker::for_faults("consumer").await;
    let head = scenarios::broker_side_consumer_crashes_and_resumes(&broker).await;
    let source = RedisLog::new(redis_url(), broker.keys()).expect("source");
    assert_eq!(source.head_position().await.expect("head"), head);
    broker.cleanup().await;
}
