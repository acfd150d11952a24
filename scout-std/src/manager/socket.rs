//! Talking to a running core agent: probe and shutdown (spec §1.1, §1.2, §1.4.10).

use std::io;

use crate::exchange::{ExchangeError, Stream};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::ManagerError;

/// Largest reply frame accepted from the core agent.
const MAX_REPLY: u32 = 1024 * 1024;

/// A parsed `core_agent_socket_path` (spec §1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `tcp://host:port`.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Any other value: a Unix domain stream socket path.
    Unix(PathBuf),
}

impl Address {
    /// Parses `tcp://host:port` (split at the first `:`) or a Unix socket path.
    pub fn parse(address: &str) -> Result<Self, ManagerError> {
        let invalid = |reason: &str| ManagerError::InvalidAddress {
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = address.strip_prefix("tcp://") {
            let (host, port) = rest
                .split_once(':')
                .ok_or_else(|| invalid("expected tcp://host:port"))?;
            if host.is_empty() {
                return Err(invalid("empty host"));
            }
            let port = port
                .parse::<u16>()
                .map_err(|_| invalid("port is not a number from 0 to 65535"))?;
            Ok(Self::Tcp {
                host: host.to_owned(),
                port,
            })
        } else if address.is_empty() {
            Err(invalid("empty address"))
        } else {
            Ok(Self::Unix(PathBuf::from(address)))
        }
    }
}

fn connect(addr: &Address, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    match addr {
        Address::Unix(path) => Ok(Box::new(UnixStream::connect(path)?)),
        Address::Tcp { host, port } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
            for sa in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&sa, timeout) {
                    Ok(s) => return Ok(Box::new(s)),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

/// Sends one framed command and reads one framed JSON reply, all within `timeout`.
fn exchange(
    address: &str,
    command: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ManagerError> {
    let addr = Address::parse(address)?;
    let timeout = timeout.max(Duration::from_millis(1));
    let deadline = Instant::now() + timeout;
    let mut stream = connect(&addr, timeout).map_err(|source| ManagerError::Socket {
        address: address.to_owned(),
        source,
    })?;
    let body = format!("{{\"{command}\": {{}}}}");
    let reply = crate::exchange::exchange(&mut *stream, body.as_bytes(), deadline, MAX_REPLY)
        .map_err(|e| match e {
            ExchangeError::Timeout => ManagerError::Timeout {
                what: format!("reply from core agent at {address}"),
                after: timeout,
            },
            ExchangeError::TooLarge(len) => ManagerError::Protocol {
                address: address.to_owned(),
                reason: format!("reply frame of {len} bytes is too large"),
            },
            ExchangeError::Io(source) => ManagerError::Socket {
                address: address.to_owned(),
                source,
            },
        })?;
    serde_json::from_slice(&reply).map_err(|e| ManagerError::Protocol {
        address: address.to_owned(),
        reason: format!("reply is not JSON: {e}"),
    })
}

fn find_version(v: &serde_json::Value) -> Option<String> {
    let obj = v.as_object()?;
    for key in ["version", "raw"] {
        match obj.get(key) {
            Some(serde_json::Value::String(s)) => return Some(s.clone()),
            Some(inner @ serde_json::Value::Object(_)) => {
                if let Some(s) = find_version(inner) {
                    return Some(s);
                }
            }
            _ => {}
        }
    }
    obj.values().find_map(find_version)
}

/// Asks the core agent at `address` for its version (`{"CoreAgentVersion": {}}`).
///
/// `Ok(Some(version))` if it answered with a version, `Ok(None)` if it answered with a framed
/// JSON reply without one, an error if nothing answered within `timeout`.
pub fn probe(address: &str, timeout: Duration) -> Result<Option<String>, ManagerError> {
    let reply = exchange(address, "CoreAgentVersion", timeout)?;
    if !reply.is_object() {
        return Err(ManagerError::Protocol {
            address: address.to_owned(),
            reason: "reply is not a JSON object".to_owned(),
        });
    }
    Ok(find_version(&reply))
}

/// Asks the core agent at `address` to exit (`{"CoreAgentShutdown": {}}`) and waits up to
/// `timeout` for its reply. A connection closed without a reply counts as success.
pub fn shutdown(address: &str, timeout: Duration) -> Result<(), ManagerError> {
    match exchange(address, "CoreAgentShutdown", timeout) {
        Ok(_) => Ok(()),
        Err(ManagerError::Socket { source, .. })
            if source.kind() == io::ErrorKind::UnexpectedEof =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("tcp://127.0.0.1:6590").unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 6590
            }
        );
        assert_eq!(
            Address::parse("/tmp/a.sock").unwrap(),
            Address::Unix("/tmp/a.sock".into())
        );
        assert!(Address::parse("tcp://localhost").is_err());
        assert!(Address::parse("tcp://h:99999").is_err());
        assert!(Address::parse("").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(
            find_version(&json!({"CoreAgentVersion": {"version": "1.6.0"}})),
            Some("1.6.0".into())
        );
        assert_eq!(
            find_version(&json!({"CoreAgentVersion": {"raw": "1.3.0"}})),
            Some("1.3.0".into())
        );
        assert_eq!(
            find_version(&json!({"CoreAgentVersion": {"version": {"raw": "1.4.0"}}})),
            Some("1.4.0".into())
        );
        assert_eq!(find_version(&json!({"Failure": {"message": "x"}})), None);
    }
}
