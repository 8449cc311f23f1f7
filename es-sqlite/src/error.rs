//! From SQLite's result codes to es-core's [`Error`], and the bounded retry of a busy file.

use std::future::Future;
use std::time::{Duration, Instant};

use es_core::Error;

/// SQLite's primary result codes this crate tells apart.
/// <https://www.sqlite.org/rescode.html>
mod code {
    pub(super) const BUSY: i32 = 5;
    pub(super) const LOCKED: i32 = 6;
    pub(super) const TOOBIG: i32 = 18;
    pub(super) const CONSTRAINT: i32 = 19;
    pub(super) const MISMATCH: i32 = 20;
    pub(super) const RANGE: i32 = 25;
    /// `SQLITE_CONSTRAINT_UNIQUE` and `SQLITE_CONSTRAINT_PRIMARYKEY` (extended codes).
    pub(super) const UNIQUE: i32 = 2067;
    pub(super) const PRIMARY_KEY: i32 = 1555;
}

/// The extended result code of a database error.
fn sqlite_code(error: &sqlx::Error) -> Option<i32> {
    match error {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse().ok()),
        _ => None,
    }
}

/// Whether `error` says the file is locked by another connection (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes): the operation did nothing and may be retried.
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    sqlite_code(error).is_some_and(|c| matches!(c & 0xff, code::BUSY | code::LOCKED))
}

/// Whether `error` is a unique-key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    sqlite_code(error).is_some_and(|c| c == code::UNIQUE || c == code::PRIMARY_KEY)
}

/// Maps a failed statement: a value SQLite refuses for good is [`Error::Invalid`], anything
/// else [`Error::Backend`] (nothing was written: the transaction is rolled back).
pub(crate) fn db(error: sqlx::Error) -> Error {
    match sqlite_code(&error).map(|c| c & 0xff) {
        Some(code::TOOBIG | code::CONSTRAINT | code::MISMATCH | code::RANGE) => {
            Error::Invalid(format!("SQLite refused the value: {error}"))
        }
        _ => Error::Backend(Box::new(error)),
    }
}

/// A commit whose result was lost or failed: SQLite may have written the transaction's last
/// WAL frame before the failure, so it is [`Error::OutcomeUnknown`].
pub(crate) fn commit_failed(error: sqlx::Error) -> Error {
    Error::OutcomeUnknown(Box::new(error))
}

/// Still locked after every retry.
#[derive(Debug)]
pub(crate) struct StillBusy {
    waited: Duration,
    source: sqlx::Error,
}

impl std::fmt::Display for StillBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the SQLite file stayed locked by another connection for {:.1?} (nothing was written)",
            self.waited
        )
    }
}

impl std::error::Error for StillBusy {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What an attempt of a retried operation failed with.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The file was locked: nothing was done, try again.
    Busy(sqlx::Error),
    /// Final.
    Error(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Error(error)
    }
}

impl Failure {
    /// A failed statement: busy, or mapped by [`db`].
    pub(crate) fn db(error: sqlx::Error) -> Self {
        if is_busy(&error) {
            Failure::Busy(error)
        } else {
            Failure::Error(db(error))
        }
    }
}

/// Runs `attempt` until it succeeds or fails with something other than a locked file,
/// pausing 1 to 4 ms (with jitter) between tries, for at most `patience` after the first
/// failure; then the busy error becomes [`Error::Backend`] ([`StillBusy`]).
///
/// Each attempt already waits inside SQLite for its connection's `busy_timeout` (a short
/// slice on the writer connection): this loop bounds the whole wait, keeps a waiting
/// process trying often, and covers the cases SQLite does not wait for (a snapshot that went
/// stale, WAL recovery by another process).
pub(crate) async fn retry_busy<T, F, Fut>(patience: Duration, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Error(error)) => return Err(error),
            Err(Failure::Busy(source)) => {
                let waited = started.elapsed();
                if waited >= patience {
                    return Err(Error::Backend(Box::new(StillBusy { waited, source })));
                }
                tracing::debug!(error = %source, ?waited, "SQLite file busy; retrying");
                let jitter = Duration::from_micros(u64::from(jitter_micros()) % 1000);
                tokio::time::sleep(pause.min(patience - waited) + jitter).await;
                pause = (pause * 2).min(Duration::from_millis(3));
            }
        }
    }
}

/// A few bits of noise, so that processes retrying together do not stay in step.
fn jitter_micros() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_errors_are_retried_then_reported_as_backend() {
        let busy = || sqlx::Error::Protocol("simulated".into());
        let mut tries = 0;
        let result: Result<(), Error> = retry_busy(Duration::from_millis(30), || {
            tries += 1;
            async { Err(Failure::Busy(busy())) }
        })
        .await;
        assert!(tries > 1, "retried");
        match result {
            Err(Error::Backend(source)) => {
                assert!(source.to_string().contains("stayed locked"), "{source}")
            }
            other => panic!("expected Backend, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn other_errors_are_final() {
        let mut tries = 0;
        let result: Result<(), Error> = retry_busy(Duration::from_secs(5), || {
            tries += 1;
            async { Err(Failure::Error(Error::Invalid("no".into()))) }
        })
        .await;
        assert_eq!(tries, 1);
        assert!(matches!(result, Err(Error::Invalid(_))));
    }
}
