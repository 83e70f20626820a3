//! The simulated agents' shared connections to the server.
//!
//! A real agent keeps one HTTPS connection to the server and reuses it from one check-in to the
//! next. Fifty thousand such connections do not fit in one benchmark process, so the simulated
//! agents share a fixed number of connections instead, each held by its own HTTP client that
//! trusts only the server's CA (like the agent's pinned client). Agent `i` always uses
//! connection `i % connections`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the simulated agents reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// Long-lived connections with the protocol the server offers by ALPN (HTTP/2 with the
    /// Rampart server), exactly as the real agent's client negotiates it. Requests of the
    /// agents sharing a connection are multiplexed on it.
    KeepAlive,
    /// Long-lived HTTP/1.1 connections, one request at a time on each: a check-in waits for
    /// its connection to be free.
    KeepAliveHttp1,
    /// A new TCP connection and TLS handshake for every request (HTTP/1.1), at most
    /// `connections` at the same time.
    NewConnection,
}

impl ConnectionMode {
    /// Short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionMode::KeepAlive => "keep-alive",
            ConnectionMode::KeepAliveHttp1 => "keep-alive-http1",
            ConnectionMode::NewConnection => "new-connection",
        }
    }
}

struct Slot {
    client: reqwest::Client,
    /// One request at a time on this connection (HTTP/1.1 keep-alive).
    gate: Option<Arc<Semaphore>>,
}

/// The connections, and the right to use one for a request.
pub struct Pool {
    slots: Vec<Slot>,
    /// At most this many connections at once (new-connection mode).
    limit: Option<Arc<Semaphore>>,
    mode: ConnectionMode,
    base: String,
}

/// The use of a connection for one request; dropping it frees the connection.
pub struct Lease {
    /// The client to send the request with.
    pub client: reqwest::Client,
    _permit: Option<OwnedSemaphorePermit>,
}

fn client(
    ca: &reqwest::Certificate,
    mode: ConnectionMode,
    timeout: Duration,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.clone())
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90));
    builder = match mode {
        ConnectionMode::KeepAlive => builder,
        ConnectionMode::KeepAliveHttp1 => builder.http1_only().pool_max_idle_per_host(1),
        ConnectionMode::NewConnection => builder.http1_only().pool_max_idle_per_host(0),
    };
    builder.build().context("building the HTTPS client")
}

impl Pool {
    /// `connections` connections to `base` (`https://host:port`) trusting only `ca_pem`.
    pub fn new(
        base: &str,
        ca_pem: &str,
        mode: ConnectionMode,
        connections: usize,
        timeout: Duration,
    ) -> Result<Pool> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .context("reading the CA certificate")?;
        let connections = connections.max(1);
        let (slots, limit) = match mode {
            ConnectionMode::NewConnection => (
                vec![Slot {
                    client: client(&ca, mode, timeout)?,
                    gate: None,
                }],
                Some(Arc::new(Semaphore::new(connections))),
            ),
            _ => {
                let mut slots = Vec::with_capacity(connections);
                for _ in 0..connections {
                    slots.push(Slot {
                        client: client(&ca, mode, timeout)?,
                        gate: (mode == ConnectionMode::KeepAliveHttp1)
                            .then(|| Arc::new(Semaphore::new(1))),
                    });
                }
                (slots, None)
            }
        };
        Ok(Pool {
            slots,
            limit,
            mode,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The connection mode.
    pub fn mode(&self) -> ConnectionMode {
        self.mode
    }

    /// The URL of API path `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Waits until agent `agent` may send a request, and returns the client to send it with.
    pub async fn acquire(&self, agent: usize) -> Lease {
        let slot = &self.slots[agent % self.slots.len()];
        let gate = slot.gate.as_ref().or(self.limit.as_ref());
        let permit = match gate {
            // the semaphores are never closed
            Some(g) => g.clone().acquire_owned().await.ok(),
            None => None,
        };
        Lease {
            client: slot.client.clone(),
            _permit: permit,
        }
    }

    /// Opens every long-lived connection, one after the other, so that the load starts on
    /// established connections (and a multiplexed connection is not opened twice by a burst).
    /// Returns the HTTP version the server chose.
    pub async fn open_all(&self) -> Result<String> {
        let mut version = String::new();
        for slot in &self.slots {
            let resp = slot
                .client
                .get(self.url(rampart_protocol::api::HEALTH))
                .send()
                .await
                .with_context(|| format!("cannot reach the server at {}", self.base))?;
            version = format!("{:?}", resp.version());
            resp.error_for_status()
                .context("the server's health check failed")?
                .bytes()
                .await?;
        }
        Ok(version)
    }
}
