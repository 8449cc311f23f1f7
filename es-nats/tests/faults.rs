//! Faults against the local NATS: the relay killed at random points (aborted tasks and
//! kill -9 of a child process) while 16 writers append, the broker refusing and dropping
//! connections, and a broker-side consumer crashing and resuming from its checkpoint. The
//! scenarios are shared with es-redis (`relay_testing::scenarios`); `support` says how each
//! one sees JetStream.

mod support;

use es_core::Delivery;
use es_nats::JetStreamSource;
use support::*;

/// Not a test on its own: the child process of the killed-relay tests, which relays the log
/// until it is killed with SIGKILL.
#[test]
fn child_relay_process() {
    scenarios::child_relay::<NatsBroker>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_at_random_points_publishes_each_committed_event_once() {
    scenarios::relay_killed_over_memory(NatsBroker::for_faults("killed").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_of_postgresql_killed_at_random_points_publishes_each_committed_event_once() {
    scenarios::relay_killed_over_postgres(
        NatsBroker::for_faults("killed_pg").await,
        "es_nats_test",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusing_then_dropping_connections_loses_nothing() {
    scenarios::outage(&NatsBroker::for_faults("refused").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_side_consumer_crashes_and_resumes_from_its_checkpoint() {
    let broker = NatsBroker::for_faults("consumer").await;
    let head = scenarios::broker_side_consumer_crashes_and_resumes(&broker).await;
    // A new process attaching to the durable consumer resumes from the final position.
    let (_, delivery) =
        JetStreamSource::new(nats_url(), broker.settings().clone()).durable("balances");
    assert_eq!(
        delivery.begin("balances").await.expect("attach").1,
        head,
        "the ack floor is the final checkpoint"
    );
    broker.cleanup().await;
}
