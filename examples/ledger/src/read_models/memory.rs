//! The read models in this process's memory: rebuilt from the log at every start by an es-core
//! [`Consumer`] with in-process checkpoints ([`LocalCheckpoints`], nothing written to the
//! store), then kept live on its own task. Queries read a shared value and wait for
//! positions on the consumer's status; they never lock the consumer.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use es_core::{
    AtLeastOnce, BoxError, Consumer, Envelope, Error, EventHandler, GlobalLog, LocalCheckpoints,
    Progress, Status,
};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{OnProgress, ReadModels, ReadSide, Running, Scope};
use crate::effects::{LedgerEvent, effect};

/// The name of the in-memory read models' consumer.
pub const VIEWS: &str = "ledger-views";

type Shared = Arc<RwLock<ReadModels>>;

/// The [`EventHandler`] that applies each event's effect to a shared [`ReadModels`].
#[derive(Debug, Clone, Default)]
pub struct ViewHandler {
    models: Shared,
}

impl ViewHandler {
    /// The read models it keeps, as of now.
    pub fn models(&self) -> ReadModels {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl EventHandler for ViewHandler {
    type Event = LedgerEvent;

    async fn handle(&mut self, _: &mut (), event: &Envelope<LedgerEvent>) -> Result<(), BoxError> {
        let effect = effect(event)?;
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        models.apply(effect)?;
        models.index(&event.record);
        Ok(())
    }

    async fn reset(&mut self, _: &mut ()) -> Result<(), BoxError> {
        *self.models.write().unwrap_or_else(PoisonError::into_inner) = ReadModels::default();
        Ok(())
    }
}

/// A consumer of the read models over `log`, with in-process checkpoints.
pub fn consumer<L: GlobalLog>(
    log: L,
    handler: ViewHandler,
) -> Consumer<ViewHandler, L, AtLeastOnce<LocalCheckpoints>> {
    Consumer::new(
        VIEWS,
        log,
        AtLeastOnce::new(LocalCheckpoints::new()),
        handler,
    )
}

struct Live {
    models: Shared,
    running: Running,
}

/// The read models in memory, caught up with the log at start and kept live.
pub struct MemoryViews<L> {
    log: L,
    live: RwLock<Arc<Live>>,
}

impl<L: GlobalLog + Clone + 'static> MemoryViews<L> {
    /// Replays the whole log into fresh read models, then follows it on a spawned task.
    pub async fn open(log: L) -> Result<Self, Error> {
        let (live, _) = Self::start(log.clone(), &mut |_| {}).await?;
        Ok(Self {
            log,
            live: RwLock::new(Arc::new(live)),
        })
    }

    async fn start(log: L, on_progress: OnProgress<'_>) -> Result<(Live, Progress), Error> {
        let handler = ViewHandler::default();
        let models = handler.models.clone();
        let mut consumer = consumer(log, handler);
        let progress = consumer.rebuild(on_progress).await?;
        Ok((
            Live {
                models,
                running: Running::new(consumer.spawn()),
            },
            progress,
        ))
    }

    fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<L: GlobalLog + Clone + 'static> ReadSide for MemoryViews<L> {
    fn wait_for(&self, position: u64, timeout: Duration) -> BoxFuture<'_, Result<(), Error>> {
        let live = self.live();
        let deadline = tokio::time::Instant::now() + timeout;
        async move { live.running.reached(position, deadline).await.map(drop) }.boxed()
    }

    fn read<'a>(&'a self, scope: Scope<'a>) -> BoxFuture<'a, Result<ReadModels, Error>> {
        let part = self
            .live()
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .select(scope);
        async move { Ok(part) }.boxed()
    }

    fn rebuild<'a>(
        &'a self,
        on_progress: OnProgress<'a>,
    ) -> BoxFuture<'a, Result<Progress, Error>> {
        async move {
            let (live, progress) = Self::start(self.log.clone(), on_progress).await?;
            *self.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
            Ok(progress)
        }
        .boxed()
    }

    fn status(&self) -> Status {
        self.live().running.status()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), Error>> {
        let live = self.live();
        async move { live.running.shutdown().await }.boxed()
    }
}
