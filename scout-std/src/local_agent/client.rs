//! A tiny blocking client for `probe`, `shutdown` (both work against the real core agent too)
//! and the local agent's `LocalAgentSummary` extension.

use std::io;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::exchange::{ExchangeError, Stream, exchange};

use serde_json::{Value, json};

use super::address::Address;

/// Largest reply accepted by this client (summaries of many endpoints can be large).
const MAX_REPLY: u32 = 16 * 1024 * 1024;

fn connect(address: &Address, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    match address {
        Address::Tcp(sa) => Ok(Box::new(TcpStream::connect_timeout(sa, timeout)?)),
        Address::Unix(p) => Ok(Box::new(UnixStream::connect(p)?)),
    }
}

/// Sends one framed message and reads one framed reply.
pub fn roundtrip(address: &Address, message: &Value, timeout: Duration) -> io::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut c = connect(address, timeout)?;
    let body = serde_json::to_vec(message)?;
    let reply = exchange(&mut *c, &body, deadline, MAX_REPLY).map_err(|e| match e {
        ExchangeError::Timeout => io::Error::new(io::ErrorKind::TimedOut, "no reply in time"),
        ExchangeError::TooLarge(n) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reply of {n} bytes is too large"),
        ),
        ExchangeError::Io(e) => e,
    })?;
    serde_json::from_slice(&reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Asks the agent at `address` for its version (`CoreAgentVersion`).
pub fn probe(address: &Address, timeout: Duration) -> io::Result<String> {
    let reply = roundtrip(address, &json!({"CoreAgentVersion": {}}), timeout)?;
    if let Some(f) = reply.get("Failure") {
        return Err(io::Error::other(format!("agent replied Failure: {f}")));
    }
    let inner = reply.get("CoreAgentVersion").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {reply}"),
        )
    })?;
    Ok(match inner.get("version") {
        Some(Value::String(v)) => v.clone(),
        Some(Value::Object(o)) => o
            .get("raw")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        _ => "unknown".to_owned(),
    })
}

/// Asks the agent at `address` to exit (`CoreAgentShutdown`).
pub fn request_shutdown(address: &Address, timeout: Duration) -> io::Result<()> {
    let reply = roundtrip(address, &json!({"CoreAgentShutdown": {}}), timeout)?;
    if reply.get("Failure").is_some() {
        return Err(io::Error::other(format!("agent replied {reply}")));
    }
    Ok(())
}

/// What a local agent answered to `{"LocalAgentSummary": {}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSummary {
    /// The summary text (endpoint table and slowest trace), as the agent prints it.
    pub text: String,
    /// Requests finished so far.
    pub requests: u64,
    /// Primitive commands applied so far.
    pub commands: u64,
    /// Frames rejected so far.
    pub bad_frames: u64,
    /// Requests started and not finished.
    pub pending: u64,
    /// Process id of the agent.
    pub pid: Option<u32>,
    /// The agent's version.
    pub version: String,
}

/// Asks the local agent at `address` for its summary (`LocalAgentSummary`, an extension of the
/// protocol that Scout's core agent does not know: it replies `Failure` or closes).
pub fn summary(address: &Address, timeout: Duration) -> io::Result<RemoteSummary> {
    let reply = roundtrip(address, &json!({"LocalAgentSummary": {}}), timeout)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply to LocalAgentSummary: {reply}"),
        )
    };
    let inner = reply.get("LocalAgentSummary").ok_or_else(bad)?;
    if inner.get("result").and_then(Value::as_str) != Some("Success") {
        return Err(bad());
    }
    let num = |k: &str| inner.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(RemoteSummary {
        text: inner
            .get("summary")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned(),
        requests: num("requests"),
        commands: num("commands"),
        bad_frames: num("bad_frames"),
        pending: num("pending"),
        pid: inner
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok()),
        version: inner
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
    })
}
