//! A Redis connection made on first use and remade after it breaks, so that a relay or a
//! source started while Redis is down reports the error and retries instead of failing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{BoxError, Error};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db` (see the `redis` crate for the URL forms).
    pub url: String,
    /// Name the connections carry (`CLIENT SETNAME`), shown by `CLIENT LIST`.
    pub client_name: Option<String>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a reply; a reply that does not come in time counts as a broken
    /// connection.
    pub response_timeout: Duration,
}

impl RedisOptions {
    /// Options for `url`, with a 5 s connection timeout and a 10 s response timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the name the connections carry (`CLIENT SETNAME`).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }
}

impl From<&str> for RedisOptions {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for RedisOptions {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

#[derive(Clone)]
pub(crate) struct Conn {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    options: RedisOptions,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.inner.options.url)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Checks the URL; connects on first use.
    pub(crate) fn new(options: RedisOptions) -> Result<Self, Error> {
        let client = Client::open(options.url.as_str())
            .map_err(|e| Error::Invalid(format!("bad Redis URL `{}`: {e}", options.url)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                options,
                current: Mutex::new(None),
            }),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.inner.options.url
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shared connection, made if there is none.
    pub(crate) async fn get(&self) -> Result<MultiplexedConnection, Error> {
        if let Some(connection) = self.slot().clone() {
            return Ok(connection);
        }
        let connection = self
            .connect(Some(self.inner.options.response_timeout))
            .await?;
        *self.slot() = Some(connection.clone());
        Ok(connection)
    }

    /// A connection of its own (for blocking reads), with the given response timeout.
    pub(crate) async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, Error> {
        let options = &self.inner.options;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(response_timeout);
        let mut connection = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error("cannot connect to", e))?;
        if let Some(name) = &options.client_name {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .exec_async(&mut connection)
                .await
                .map_err(|e| self.error("cannot name the connection to", e))?;
        }
        Ok(connection)
    }

    /// Turns a failed call into an [`Error::Backend`] that names the server, and forgets the
    /// connection if the failure broke it.
    pub(crate) fn fail(&self, doing: &str, error: RedisError) -> Error {
        if breaks_connection(&error) {
            self.slot().take();
        }
        self.error(doing, error)
    }

    fn error(&self, doing: &str, error: RedisError) -> Error {
        Error::Backend(self.describe(doing, &error).into())
    }

    /// A message naming what failed, where: `"cannot connect to Redis at URL: ..."`.
    pub(crate) fn describe(&self, doing: &str, error: &RedisError) -> String {
        let why = if error.is_connection_refusal() {
            "connection refused".to_owned()
        } else if error.is_timeout() {
            format!("timed out ({error})")
        } else if error.is_connection_dropped() {
            format!("connection lost ({error})")
        } else {
            error.to_string()
        };
        format!("{doing} Redis at {}: {why}", self.inner.options.url)
    }

    /// Runs `script` with `keys` and `args`, loading it first if the server does not know it
    /// (a restarted server forgets its scripts).
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
        doing: &str,
    ) -> Result<T, Error> {
        let mut connection = self.get().await?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.fail(doing, e))
    }
}

/// Whether `error` means the connection cannot be used any more.
pub(crate) fn breaks_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

/// A boxed error carrying `message`.
pub(crate) fn boxed(message: String) -> BoxError {
    message.into()
}
