//! [`StoreOptions`]: how a [`SqliteStore`](crate::SqliteStore) opens its file.

use std::time::Duration;

use es_core::Limits;

/// When a commit reaches the disk (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`, the default: every commit syncs the write-ahead log before the
    /// append returns, so an acknowledged append survives a power loss or an OS crash, not
    /// only a crash of the process.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the log is synced only at checkpoints. A crash of the process
    /// loses nothing, but a power loss or OS crash may lose the last acknowledged appends
    /// (never corrupting the file). Faster where syncs are slow.
    Normal,
}

/// How a [`SqliteStore`](crate::SqliteStore) opens its file.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) durability: Durability,
    pub(crate) busy_timeout: Duration,
    pub(crate) lock_patience: Duration,
    pub(crate) readers: u32,
    pub(crate) change_poll: Duration,
    pub(crate) wakeup_poll: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) limits: Limits,
    pub(crate) create: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            lock_patience: Duration::from_secs(30),
            readers: 4,
            change_poll: Duration::from_millis(50),
            wakeup_poll: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(10),
            limits: Limits::default(),
            create: true,
        }
    }
}

impl StoreOptions {
    /// Defaults: [`Durability::Full`], writes waiting up to 30 s for the file's lock, 4 reader
    /// connections, other processes' commits noticed within 50 ms, leases of 10 s, default
    /// [`Limits`], the file created if missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// When commits reach the disk (default [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a read waits inside SQLite for another connection's lock before it gives up
    /// (`busy_timeout` of the reader connections, default 5 s; reads in WAL mode meet a lock
    /// only while another process recovers the file after a crash). Writes wait in short
    /// slices that the store retries; see [`lock_patience`](Self::lock_patience).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long an operation keeps trying while the file is locked by another connection
    /// (default 30 s) before it fails with [`es_core::Error::Backend`], nothing written.
    /// "database is locked" never reaches the caller as such. Also how long an operation
    /// waits for this store's writer connection while another task of this process holds it
    /// (in a [`Tx`](crate::Tx)).
    pub fn lock_patience(mut self, patience: Duration) -> Self {
        self.lock_patience = patience;
        self
    }

    /// Read-only connections for reads (default 4, at least 1). Writes use one connection
    /// per store: SQLite has one writer at a time.
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How often the store checks whether another connection or process committed
    /// (`PRAGMA data_version`, default 50 ms), to wake this process's followers. Appends made
    /// through this store wake them at once.
    pub fn change_poll(mut self, interval: Duration) -> Self {
        self.change_poll = interval.max(Duration::from_millis(1));
        self
    }

    /// The longest a follower waits before reading the log again when nothing woke it
    /// (default 1 s): a fallback should the change check fail.
    pub fn wakeup_poll(mut self, interval: Duration) -> Self {
        self.wakeup_poll = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a lease lasts without a heartbeat (default 10 s; renewed every quarter of
    /// it). A holder that cannot renew in time reports the lease lost.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(40));
        self
    }

    /// The input limits (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether a missing file is created (default true).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}
