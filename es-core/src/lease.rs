//! Single-active leases: at most one runner of a consumer (or of one of its partitions) is
//! active at a time; the others wait and take over when the holder goes away.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::error::Error;

/// A held lease. It is released when dropped. A backend that can lose a lease without being
/// asked (its connection died) reports it through [`Lease::is_held`] and [`Lease::lost`];
/// the holder must then stop before its next write.
pub struct Lease {
    held: watch::Receiver<bool>,
    _release: Box<dyn Send + Sync>,
    released: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("held", &*self.held.borrow())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease that holds while `held` says `true`; dropping the lease drops `release` (whose
    /// `Drop` gives the lease back).
    pub fn new(held: watch::Receiver<bool>, release: impl Send + Sync + 'static) -> Self {
        Self {
            held,
            _release: Box::new(release),
            released: None,
        }
    }

    /// Lets [`Lease::release`] wait for `released`, a future that completes once the backend
    /// has given the lease back after `release` was dropped (for example once a lease row is
    /// deleted), so that another process can take it at once.
    pub fn with_release_done(
        mut self,
        released: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.released = Some(Box::pin(released));
        self
    }

    /// Gives the lease back and waits until the backend has (where it can tell). Dropping a
    /// lease gives it back too, without waiting.
    pub async fn release(mut self) {
        let released = self.released.take();
        drop(self);
        if let Some(released) = released {
            released.await;
        }
    }

    /// Whether the lease still holds.
    pub fn is_held(&self) -> bool {
        // A sender that is gone means whoever kept the lease alive stopped: as `lost` says.
        *self.held.borrow() && self.held.has_changed().is_ok()
    }

    /// Resolves when the lease is lost (never, for a backend that cannot lose one).
    pub async fn lost(&mut self) {
        while *self.held.borrow_and_update() {
            if self.held.changed().await.is_err() {
                // The sender is gone: whoever kept the lease alive stopped.
                return;
            }
        }
    }
}

/// Hands out single-active leases by name.
///
/// Boxed futures keep it object-safe: a consumer holds its lease provider as a trait object,
/// and acquiring a lease is rare.
pub trait Leases: Send + Sync {
    /// Takes the lease `name` if nobody holds it; `None` when another holder has it.
    fn try_acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Lease>, Error>>;
}

impl<T: Leases + ?Sized> Leases for Arc<T> {
    fn try_acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Lease>, Error>> {
        (**self).try_acquire(name)
    }
}

/// Leases within one process. Clones share the same set of held names.
#[derive(Debug, Clone, Default)]
pub struct LocalLeases {
    held: Arc<Mutex<HashSet<String>>>,
}

struct LocalRelease {
    held: Arc<Mutex<HashSet<String>>>,
    name: String,
    // Dropped with the lease; nothing ever sends `false`, since a local lease cannot be lost.
    _alive: watch::Sender<bool>,
}

impl Drop for LocalRelease {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}

impl LocalLeases {
    /// No lease held.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Leases for LocalLeases {
    fn try_acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Lease>, Error>> {
        Box::pin(async move {
            let inserted = self
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned());
            if !inserted {
                return Ok(None);
            }
            let (alive, held) = watch::channel(true);
            Ok(Some(Lease::new(
                held,
                LocalRelease {
                    held: self.held.clone(),
                    name: name.to_owned(),
                    _alive: alive,
                },
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose keeper stopped without saying so must not leave a runner that sees
    /// `lost()` resolve while `is_held()` still says yes (it would loop without waiting).
    #[tokio::test]
    async fn a_lease_whose_keeper_is_gone_is_lost() {
        let (keeper, held) = watch::channel(true);
        let mut lease = Lease::new(held, ());
        assert!(lease.is_held());
        drop(keeper);
        assert!(!lease.is_held());
        tokio::time::timeout(std::time::Duration::from_secs(5), lease.lost())
            .await
            .expect("lost resolves");
    }
}
