//! The agent's local control socket (`ROOT/var/lib/rampart/agent/control.sock`, mode 0600):
//! one JSON request and one JSON reply per connection, from root on this host only. It is how
//! `rampart agent note` and `rampart agent unload` reach the running agent, which does the work
//! itself: with self-protection on, no other process may write the agent's files.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A request to the running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Write `count` operator notes into the event stream.
    Note {
        /// The note's text.
        text: String,
        /// How many numbered notes.
        count: u32,
    },
    /// The live state: events waiting in the outbox, protections.
    Status,
    /// Lift self-protection for a while with the policy's unload password.
    Unload {
        /// The unload password.
        password: String,
    },
    /// Lift self-protection for a while with a one-time maintenance token signed by the server.
    UnloadWithToken {
        /// The token from `rampart agents maintenance-token`.
        token: String,
    },
    /// Ransomware protection's state and counts.
    RansomwareStatus,
    /// Every ransomware incident on this agent.
    RansomwareIncidents,
    /// Restore the files of one incident (again).
    RansomwareRestore {
        /// The incident's id (`rw-…`).
        id: String,
    },
    /// What the vault of originals holds.
    RansomwareVault,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, in words.
    pub message: String,
    /// Events waiting in the outbox (answer to [`Request::Status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// The protections' state right now (answer to [`Request::Status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protections: Option<Vec<rampart_protocol::checkin::ProtectionStatus>>,
    /// What a request asked for (incidents, the vault), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Reply {
    /// A request carried out.
    pub fn done(message: String) -> Reply {
        Reply {
            ok: true,
            message,
            pending: None,
            protections: None,
            data: None,
        }
    }

    /// A request carried out, with what it asked for.
    pub fn with_data(message: String, data: serde_json::Value) -> Reply {
        Reply {
            data: Some(data),
            ..Reply::done(message)
        }
    }

    /// A request refused, with the reason.
    pub fn refused(message: &str) -> Reply {
        Reply {
            ok: false,
            message: message.to_owned(),
            pending: None,
            protections: None,
            data: None,
        }
    }
}

/// Sends `request` to the agent listening at `socket`. `Ok(None)`: no agent is listening.
pub async fn request(socket: &Path, request: &Request) -> std::io::Result<Option<Reply>> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    serde_json::from_str(&reply)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads one request from a connection; `None` if it is not one.
pub(crate) async fn read_request(stream: &mut UnixStream) -> Option<Request> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(64 * 1024);
    reader.read_line(&mut line).await.ok()?;
    serde_json::from_str(&line).ok()
}

/// Writes the reply.
pub(crate) async fn write_reply(stream: &mut UnixStream, reply: &Reply) {
    let mut line = serde_json::to_string(reply).expect("replies serialize");
    line.push('\n');
    let _ = stream.write_all(line.as_bytes()).await;
}
