//! One runtime for every consumer of the global log: read models, process managers, relays.
//!
//! - An [`EventHandler`] declares the events it takes ([`LogEvent`], derived from aggregate
//!   types, so the filter is never written as strings) and receives them decoded and upcast,
//!   with their envelope.
//! - A [`Delivery`] says how the checkpoint commits: [`AtLeastOnce`] over any
//!   [`CheckpointStore`](crate::CheckpointStore) (or [`LocalCheckpoints`](crate::LocalCheckpoints)
//!   for views rebuilt at start), or a backend's transactional delivery where the handler's
//!   writes and the checkpoint commit together (exactly once).
//! - A [`Consumer`] runs one handler from any [`GlobalLog`](crate::GlobalLog): catch-up,
//!   rebuild with progress, live following by wake-ups, retries with backoff, parked poison
//!   events, single-active leases, partitions, status and graceful shutdown
//!   ([`Consumer::spawn`] and [`ConsumerHandle`]).

mod delivery;
mod handle;
mod runner;

use std::future::Future;

pub use delivery::{AtLeastOnce, Delivery};
pub use handle::{ConsumerHandle, ConsumerState, Status};
pub use runner::{Consumer, Partition, PoisonPolicy, Progress, RetryPolicy};

use crate::envelope::RecordedEvent;
use crate::error::{BoxError, Error};
use crate::log::LogFilter;

/// What a consumer takes from the global log, decoded.
///
/// `#[derive(Aggregate)]` implements it for the aggregate's event enum (events of streams of
/// that aggregate type); [`log_events!`](crate::log_events) combines several; [`AnyEvent`]
/// takes every event undecoded.
pub trait LogEvent: Sized + Send + Sync + 'static {
    /// The events to read; applied by the store.
    fn filter() -> LogFilter;

    /// Decodes `record`, or `None` when it is not one of these events. A decode error names
    /// the stream, version and event; the consumer parks (or stops on) such an event.
    fn from_record(record: &RecordedEvent) -> Option<Result<Self, Error>>;
}

/// Every event of the log, undecoded (the handler reads [`Envelope::record`]); for relays and
/// generic consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyEvent;

impl LogEvent for AnyEvent {
    fn filter() -> LogFilter {
        LogFilter::all()
    }

    fn from_record(_: &RecordedEvent) -> Option<Result<Self, Error>> {
        Some(Ok(AnyEvent))
    }
}

/// A decoded event with the record it came from (stream, version, position, metadata, time).
#[derive(Debug, Clone)]
pub struct Envelope<E> {
    /// The decoded, upcast event.
    pub event: E,
    /// The stored record.
    pub record: RecordedEvent,
}

impl<E> Envelope<E> {
    /// The event's global position.
    pub fn position(&self) -> u64 {
        self.record.position
    }
}

/// Where a batch failed: the index of the event in the batch, and why.
#[derive(Debug)]
pub struct BatchError {
    /// Index of the failing event in the batch handed to
    /// [`EventHandler::handle_batch`]; the events before it were handled.
    pub index: usize,
    /// The handler's error.
    pub error: BoxError,
}

/// A consumer of the global log: a read model, a process manager or a relay.
///
/// `Tx` is the unit of work its writes go into, given by the consumer's [`Delivery`]: `()`
/// for handlers whose effects live elsewhere (memory, a broker, commands), or a database
/// transaction in which the checkpoint also moves (exactly once). A handler generic over
/// `Tx` runs under any delivery.
///
/// ```
/// use es_core::prelude::*;
/// use es_core::{BoxError, Envelope, EventHandler};
///
/// #[event]
/// pub struct Deposited { pub amount: i64 }
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Deposited))]
/// pub struct Wallet { balance: i64 }
/// impl Apply<Deposited> for Wallet { fn apply(&mut self, e: &Deposited) { self.balance += e.amount; } }
///
/// #[derive(Default)]
/// struct Total(i128);
///
/// impl EventHandler for Total {
///     type Event = WalletEvent;
///     async fn handle(&mut self, _tx: &mut (), e: &Envelope<WalletEvent>) -> Result<(), BoxError> {
///         match &e.event {
///             WalletEvent::Deposited(d) => self.0 += i128::from(d.amount),
///         }
///         Ok(())
///     }
/// }
/// # let _ = Total::default();
/// ```
pub trait EventHandler<Tx: Send = ()>: Send {
    /// The events it takes.
    type Event: LogEvent;

    /// Handles one event. An error is retried with backoff, then the event is parked or the
    /// consumer stops ([`PoisonPolicy`]). Delivery is at least once unless `Tx` commits with
    /// the checkpoint: handle a repeat as a no-op.
    fn handle(
        &mut self,
        tx: &mut Tx,
        event: &Envelope<Self::Event>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Handles a batch, in order; override to pipeline (a relay sends a batch in one round
    /// trip). On failure, say which event failed: the ones before it count as handled.
    fn handle_batch(
        &mut self,
        tx: &mut Tx,
        events: &[Envelope<Self::Event>],
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        async move {
            for (index, event) in events.iter().enumerate() {
                self.handle(tx, event)
                    .await
                    .map_err(|error| BatchError { index, error })?;
            }
            Ok(())
        }
    }

    /// Empties the read model before a rebuild, in the unit of work that resets the
    /// checkpoint. The default does nothing (for handlers that keep no state).
    fn reset(&mut self, tx: &mut Tx) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = tx;
        async { Ok(()) }
    }
}

/// Handles `events` with `handle`: the events of one stream one after another, in order, and
/// up to `concurrency` streams at a time. For handlers whose work for different streams is
/// independent, such as a process manager's steps for different transfers; call it from
/// [`EventHandler::handle_batch`]. On failure, returns the earliest event that failed; every
/// event before it was handled (later events of other streams may have been handled too,
/// so use it for handlers that handle a repeat as a no-op).
///
/// ```
/// # use es_core::{BatchError, BoxError, Envelope, EventHandler, AnyEvent, handle_by_stream};
/// pub struct Steps;
/// impl Steps {
///     async fn react(&self, _event: &Envelope<AnyEvent>) -> Result<(), BoxError> { Ok(()) }
/// }
/// impl EventHandler for Steps {
///     type Event = AnyEvent;
///     async fn handle(&mut self, _: &mut (), event: &Envelope<AnyEvent>) -> Result<(), BoxError> {
///         self.react(event).await
///     }
///     async fn handle_batch(&mut self, _: &mut (), events: &[Envelope<AnyEvent>]) -> Result<(), BatchError> {
///         let steps = &*self;
///         handle_by_stream(events, 8, |event| steps.react(event)).await
///     }
/// }
/// # let _ = Steps;
/// ```
pub async fn handle_by_stream<'e, E, F, Fut>(
    events: &'e [Envelope<E>],
    concurrency: usize,
    handle: F,
) -> Result<(), BatchError>
where
    F: Fn(&'e Envelope<E>) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    use futures::StreamExt;

    let mut streams: Vec<Vec<usize>> = Vec::new();
    let mut by_stream = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let stream = *by_stream.entry(&event.record.stream).or_insert_with(|| {
            streams.push(Vec::new());
            streams.len() - 1
        });
        streams[stream].push(index);
    }
    let handle = &handle;
    let failures: Vec<BatchError> = futures::stream::iter(streams)
        .map(|indices| async move {
            for index in indices {
                if let Err(error) = handle(&events[index]).await {
                    return Some(BatchError { index, error });
                }
            }
            None
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(std::future::ready)
        .collect()
        .await;
    match failures.into_iter().min_by_key(|failure| failure.index) {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Declares an enum of several aggregates' event enums and implements [`LogEvent`] for it,
/// so that one consumer takes the events of several aggregate types.
///
/// ```
/// use es_core::prelude::*;
///
/// #[event] pub struct Opened {}
/// #[event] pub struct Requested {}
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Opened))]
/// pub struct Account {}
/// impl Apply<Opened> for Account { fn apply(&mut self, _: &Opened) {} }
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Requested))]
/// pub struct Transfer {}
/// impl Apply<Requested> for Transfer { fn apply(&mut self, _: &Requested) {} }
///
/// es_core::log_events! {
///     /// Everything the ledger's read models consume.
///     pub enum LedgerEvent {
///         Account(AccountEvent),
///         Transfer(TransferEvent),
///     }
/// }
/// assert_eq!(
///     <LedgerEvent as es_core::LogEvent>::filter().aggregate_types,
///     Some(vec!["Account".to_string(), "Transfer".to_string()]),
/// );
/// ```
#[macro_export]
macro_rules! log_events {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident($inner:ty)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis enum $name { $(
            #[allow(missing_docs)]
            $variant($inner),
        )+ }

        impl $crate::LogEvent for $name {
            fn filter() -> $crate::LogFilter {
                let filters = [$(<$inner as $crate::LogEvent>::filter()),+];
                let mut iter = filters.into_iter();
                let first = iter.next().unwrap_or_default();
                iter.fold(first, |all, next| all.or(&next))
            }

            fn from_record(
                record: &$crate::RecordedEvent,
            ) -> ::core::option::Option<::core::result::Result<Self, $crate::Error>> {
                $(
                    if let ::core::option::Option::Some(decoded) =
                        <$inner as $crate::LogEvent>::from_record(record)
                    {
                        return ::core::option::Option::Some(decoded.map($name::$variant));
                    }
                )+
                ::core::option::Option::None
            }
        }
    };
}
