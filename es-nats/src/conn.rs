//! A NATS connection made on first use, so that a relay or a source started while NATS is
//! down reports the error and retries instead of failing; once made, the client reconnects
//! by itself.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::{Client, ConnectOptions};
use es_core::Error;

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: String,
    /// Name the connection carries (shown by the server's monitoring).
    pub client_name: Option<String>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a JetStream API reply or a publish acknowledgement.
    pub request_timeout: Duration,
}

impl NatsOptions {
    /// Options for `url`, with a 5 s connection timeout and a 10 s request timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the name the connection carries.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }
}

impl From<&str> for NatsOptions {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for NatsOptions {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

#[derive(Clone)]
pub(crate) struct Conn {
    options: Arc<NatsOptions>,
    current: Arc<Mutex<Option<(Client, Context)>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.options.url)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(options: NatsOptions) -> Self {
        Self {
            options: Arc::new(options),
            current: Arc::default(),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.options.url
    }

    /// The client and its JetStream context, connecting if needed.
    pub(crate) async fn get(&self) -> Result<(Client, Context), Error> {
        if let Some(current) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(current);
        }
        let mut connect = ConnectOptions::new()
            .connection_timeout(self.options.connect_timeout)
            .request_timeout(Some(self.options.request_timeout))
            .max_reconnects(None);
        if let Some(name) = &self.options.client_name {
            connect = connect.name(name);
        }
        let client = connect
            .connect(self.options.url.as_str())
            .await
            .map_err(|e| {
                Error::Backend(
                    format!("cannot connect to NATS at {}: {e}", self.options.url).into(),
                )
            })?;
        let context = jetstream::ContextBuilder::new()
            .timeout(self.options.request_timeout)
            .max_ack_inflight(10_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let pair = (client, context);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(pair.clone());
        Ok(pair)
    }

    /// A message naming what failed, where, and whether the connection is down.
    pub(crate) fn describe(&self, doing: &str, error: &dyn std::fmt::Display) -> String {
        let state = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(client, _)| client.connection_state());
        let down = match state {
            Some(async_nats::connection::State::Connected) | None => "",
            Some(_) => " (connection lost; reconnecting)",
        };
        format!("{doing} NATS at {}{down}: {error}", self.options.url)
    }

    /// An [`Error::Backend`] from [`Conn::describe`].
    pub(crate) fn fail(&self, doing: &str, error: &dyn std::fmt::Display) -> Error {
        Error::Backend(self.describe(doing, error).into())
    }
}
