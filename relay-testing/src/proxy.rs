//! A TCP proxy that refuses and drops connections on demand.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy in front of a server, which can refuse connections (nothing listens on its
/// port) and drop the ones it carries.
#[derive(Debug)]
pub struct Proxy {
    /// The port it listens on (when open).
    pub port: u16,
    target: SocketAddr,
    listener: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to `target` on a free port, closed: connections to it are refused.
    pub async fn closed(target: SocketAddr) -> Self {
        let probe = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let port = probe.local_addr().expect("local addr").port();
        drop(probe);
        Self {
            port,
            target,
            listener: Mutex::new(None),
            connections: Arc::default(),
        }
    }

    /// Starts accepting connections and forwarding them.
    pub async fn open(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy port again");
        let target = self.target;
        let connections = self.connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().expect("lock").push(connection);
            }
        });
        *self.listener.lock().expect("lock") = Some(task);
    }

    /// Stops accepting: new connections are refused.
    pub fn close(&self) {
        if let Some(task) = self.listener.lock().expect("lock").take() {
            task.abort();
        }
    }

    /// Drops every connection it carries (both sides see the connection close).
    pub fn drop_connections(&self) {
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
        self.drop_connections();
    }
}
