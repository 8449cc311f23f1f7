//! The global log: every committed event in position order, read in pages, filtered in the
//! store, followed live without ever skipping an event.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::envelope::RecordedEvent;
use crate::error::Error;

/// Which events of the global log to read. The default selects every event.
///
/// Filters run in the store (PostgreSQL and SQLite use indexes on aggregate type and on
/// event name), so a consumer of a few event kinds does not read the rest. A filtered read
/// keeps the never-skip guarantee: [`LogPage::scanned_to`] says how far the log was
/// considered, matching or not.
///
/// ```
/// use es_core::LogFilter;
/// let deposits = LogFilter::all().event_names(["MoneyDeposited"]).aggregate_types(["Account"]);
/// assert!(!deposits.selects_everything());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only events of streams of these aggregate types; `None` for all.
    pub aggregate_types: Option<Vec<String>>,
    /// Only events with these names; `None` for all.
    pub event_names: Option<Vec<String>>,
    /// Only events recorded at or after this time.
    pub recorded_from: Option<DateTime<Utc>>,
    /// Only events with a position below this one.
    pub before_position: Option<u64>,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Restricts to streams of these aggregate types.
    pub fn aggregate_types<I: IntoIterator<Item = N>, N: Into<String>>(mut self, types: I) -> Self {
        self.aggregate_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Restricts to events with these names.
    pub fn event_names<I: IntoIterator<Item = N>, N: Into<String>>(mut self, names: I) -> Self {
        self.event_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Restricts to events recorded at or after `time`.
    pub fn recorded_from(mut self, time: DateTime<Utc>) -> Self {
        self.recorded_from = Some(time);
        self
    }

    /// Restricts to positions below `position`.
    pub fn before(mut self, position: u64) -> Self {
        self.before_position = Some(position);
        self
    }

    /// The union of two filters on types and names (`None` on either side means all).
    /// Time and position bounds are taken from `self`.
    pub fn or(mut self, other: &LogFilter) -> Self {
        fn union(a: Option<Vec<String>>, b: &Option<Vec<String>>) -> Option<Vec<String>> {
            let (mut a, b) = (a?, b.as_ref()?);
            for item in b {
                if !a.contains(item) {
                    a.push(item.clone());
                }
            }
            Some(a)
        }
        // A side that filters on types but not names selects every name of its types: the
        // union then needs both dimensions open on that side, which `None` expresses.
        let types = union(self.aggregate_types.take(), &other.aggregate_types);
        let names = match (&self.event_names, &other.event_names) {
            (Some(_), Some(_)) => union(self.event_names.take(), &other.event_names),
            _ => None,
        };
        self.aggregate_types = types;
        self.event_names = names;
        self
    }

    /// Whether the filter lets every event through.
    pub fn selects_everything(&self) -> bool {
        self == &Self::default()
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.aggregate_types
            .as_ref()
            .is_none_or(|t| t.contains(&event.stream.aggregate_type))
            && self
                .event_names
                .as_ref()
                .is_none_or(|n| n.contains(&event.event_name))
            && self.recorded_from.is_none_or(|t| event.recorded_at >= t)
            && self.before_position.is_none_or(|p| event.position < p)
    }
}

/// One page of the global log.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// The matching events, in position order.
    pub events: Vec<RecordedEvent>,
    /// How far the log was considered: every matching event with a position above the read's
    /// `after` and at most this is in `events`, and none can appear there later. A reader
    /// continues after it; a consumer checkpoints it even when `events` is empty.
    pub scanned_to: u64,
}

/// The global log: every committed event, in position order.
///
/// Semantics every implementation keeps:
/// - [`GlobalLog::read_log`] returns events in position order and never returns an event
///   while an event with a lower position may still commit: a reader that continues after
///   [`LogPage::scanned_to`] sees every event exactly once;
/// - positions strictly increase along the log but may skip numbers (a backend that draws
///   them from a database sequence loses those of rolled-back appends): count events, not
///   position differences;
/// - [`GlobalLog::wakeup`] signals appends, so followers wait without sleeping loops.
pub trait GlobalLog: Send + Sync {
    /// Up to `limit` events matching `filter` with position above `after`.
    fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> impl Future<Output = Result<LogPage, Error>> + Send;

    /// The highest position [`GlobalLog::read_log`] can currently return (0 when empty).
    fn head_position(&self) -> impl Future<Output = Result<u64, Error>> + Send;

    /// A signal that fires after appends commit (in this process, or, through the backend's
    /// notifications, in others), with a polling interval as a fallback.
    fn wakeup(&self) -> Wakeup;
}

macro_rules! forward_global_log {
    ($($ty:ty),*) => {$(
        impl<T: GlobalLog + ?Sized> GlobalLog for $ty {
            fn read_log(
                &self,
                after: u64,
                limit: usize,
                filter: &LogFilter,
            ) -> impl Future<Output = Result<LogPage, Error>> + Send {
                (**self).read_log(after, limit, filter)
            }
            fn head_position(&self) -> impl Future<Output = Result<u64, Error>> + Send {
                (**self).head_position()
            }
            fn wakeup(&self) -> Wakeup {
                (**self).wakeup()
            }
        }
    )*};
}

forward_global_log!(&T, Arc<T>);

/// Waits for appends: woken by the store's signal, or after the polling interval, whichever
/// comes first. Something appended after the previous wait returned (or after the `Wakeup`
/// was made) makes the next wait return at once, so a reader that reads and then waits never
/// misses an append.
#[derive(Debug, Clone)]
pub struct Wakeup {
    signal: Option<watch::Receiver<u64>>,
    poll: Duration,
}

impl Wakeup {
    /// Woken by every change of `signal` (its value is not used), polling at least every
    /// `poll`.
    pub fn new(signal: watch::Receiver<u64>, poll: Duration) -> Self {
        Self {
            signal: Some(signal),
            poll,
        }
    }

    /// No signal: every wait lasts `poll`.
    pub fn polling(poll: Duration) -> Self {
        Self { signal: None, poll }
    }

    /// Returns when an append was signalled since the last wait, or after the polling
    /// interval.
    pub async fn wait(&mut self) {
        let poll = self.poll;
        match self.signal.as_mut() {
            Some(signal) => match tokio::time::timeout(poll, signal.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_closed)) => {
                    self.signal = None;
                    tokio::time::sleep(poll).await;
                }
            },
            None => tokio::time::sleep(poll).await,
        }
    }
}

/// The sending side of a store's [`Wakeup`] signal.
#[derive(Debug, Clone)]
pub struct WakeupSender {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for WakeupSender {
    fn default() -> Self {
        Self::new()
    }
}

impl WakeupSender {
    /// A signal nobody listens to yet.
    pub fn new() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A waiter polling at least every `poll`.
    pub fn subscribe(&self, poll: Duration) -> Wakeup {
        Wakeup::new(self.sender.subscribe(), poll)
    }
}

/// Reading and following the global log; available on every [`GlobalLog`].
pub trait GlobalLogExt: GlobalLog {
    /// Up to `limit` events after `after`, unfiltered.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send {
        async move { Ok(self.read_log(after, limit, &LogFilter::all()).await?.events) }
    }

    /// The matching events from `after` (exclusive) to the head as it was when the stream
    /// reached it, fetched in pages of `batch_size`, so that a long scan never sits in memory.
    /// Ends after the first error.
    fn stream_all(
        &self,
        after: u64,
        batch_size: usize,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<RecordedEvent, Error>>
    where
        Self: Clone + Sized + 'static,
    {
        let batch_size = batch_size.max(1);
        let log = self.clone();
        stream::unfold(Some(after), move |cursor| {
            let log = log.clone();
            let filter = filter.clone();
            async move {
                let after = cursor?;
                match log.read_log(after, batch_size, &filter).await {
                    Ok(page) if page.events.is_empty() => None,
                    Ok(page) => Some((Ok(page.events), Some(page.scanned_to))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
        .flat_map(|page| match page {
            Ok(events) => stream::iter(events.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::iter([Err(e)]).right_stream(),
        })
        .boxed()
    }

    /// Every matching event after `after`, without end: first what is stored, then each event
    /// as it commits, woken by [`GlobalLog::wakeup`]. Never skips and never repeats.
    ///
    /// A read error is yielded as an item and the subscription goes on after a pause. A row
    /// that cannot be read ([`Error::BadRow`] with a position) is yielded as an error once and
    /// then passed, so one bad row never stops a follower and is never silently dropped.
    fn subscribe(
        &self,
        after: u64,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<RecordedEvent, Error>>
    where
        Self: Clone + Sized + 'static,
    {
        struct Follow<L> {
            log: L,
            filter: LogFilter,
            after: u64,
            ready: std::collections::VecDeque<Result<RecordedEvent, Error>>,
            wakeup: Wakeup,
            pause: bool,
        }
        let state = Follow {
            wakeup: self.wakeup(),
            log: self.clone(),
            filter,
            after,
            ready: Default::default(),
            pause: false,
        };
        stream::unfold(state, |mut s| async move {
            loop {
                if let Some(item) = s.ready.pop_front() {
                    return Some((item, s));
                }
                if std::mem::take(&mut s.pause) {
                    s.wakeup.wait().await;
                }
                match s.log.read_log(s.after, 500, &s.filter).await {
                    Ok(page) => {
                        let empty = page.events.is_empty();
                        s.after = s.after.max(page.scanned_to);
                        s.ready.extend(page.events.into_iter().map(Ok));
                        if empty {
                            s.wakeup.wait().await;
                        }
                    }
                    Err(
                        error @ Error::BadRow {
                            position: Some(bad),
                            ..
                        },
                    ) => {
                        // Deliver what lies before the bad row, report it, and read on after it.
                        let before = s.filter.clone().before(bad);
                        match s.log.read_log(s.after, usize::MAX, &before).await {
                            Ok(page) => {
                                s.ready.extend(page.events.into_iter().map(Ok));
                                s.ready.push_back(Err(error));
                                s.after = bad;
                            }
                            Err(other) => {
                                s.pause = true;
                                s.ready.push_back(Err(other));
                            }
                        }
                    }
                    Err(error) => {
                        s.pause = true;
                        s.ready.push_back(Err(error));
                    }
                }
            }
        })
        .boxed()
    }
}

impl<L: GlobalLog + ?Sized> GlobalLogExt for L {}
