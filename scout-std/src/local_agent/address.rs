//! Where the local agent listens: a Unix socket path or a TCP address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A core agent address, in the syntax of Scout's `core_agent_socket_path` setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix domain stream socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// Why an address string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

impl Address {
    /// Scout's default address, `tcp://127.0.0.1:6590`.
    pub const DEFAULT_TCP_PORT: u16 = 6590;

    /// The default address `tcp://127.0.0.1:6590`.
    pub fn default_tcp() -> Self {
        Self::Tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Self::DEFAULT_TCP_PORT,
        ))
    }

    /// Parses `tcp://host:port` (host: an IP literal, `[v6]`, or a name such as `localhost`) or a
    /// filesystem path (optionally prefixed `unix://` or `file://`, as the Node agent allows).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError("empty address".into()));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            return Self::parse_tcp(rest.trim_end_matches('/'));
        }
        let path = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("file://"))
            .unwrap_or(s);
        if path.is_empty() || path.contains('\0') {
            return Err(AddressError(format!("invalid socket path {s:?}")));
        }
        Ok(Self::Unix(PathBuf::from(path)))
    }

    /// Parses `host:port` (the argument of `--tcp`).
    pub fn parse_tcp(s: &str) -> Result<Self, AddressError> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Self::Tcp(sa));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(AddressError(format!("expected host:port, got {s:?}")));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| AddressError(format!("invalid port in {s:?}")))?;
        if host.is_empty() {
            return Err(AddressError(format!("missing host in {s:?}")));
        }
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(Self::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        let mut addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| AddressError(format!("cannot resolve {host:?}: {e}")))?;
        addrs
            .find(SocketAddr::is_ipv4)
            .map(Self::Tcp)
            .ok_or_else(|| AddressError(format!("no IPv4 address for {host:?}")))
    }

    /// True for Unix sockets and loopback TCP addresses.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Unix(_) => true,
            Self::Tcp(sa) => sa.ip().is_loopback(),
        }
    }
}

impl fmt::Display for Address {
    /// `tcp://ip:port` or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tcp(sa) => write!(f, "tcp://{sa}"),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            Address::parse("tcp://127.0.0.1:6590").unwrap(),
            Address::default_tcp()
        );
        assert_eq!(
            Address::parse("tcp://localhost:6590").unwrap(),
            Address::default_tcp()
        );
        assert_eq!(
            Address::parse("/tmp/x.sock").unwrap(),
            Address::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Address::parse("unix://rel.sock").unwrap(),
            Address::Unix("rel.sock".into())
        );
        assert!(Address::parse("tcp://127.0.0.1").is_err());
        assert!(Address::parse("tcp://127.0.0.1:99999").is_err());
        assert!(Address::parse("").is_err());
        assert_eq!(Address::default_tcp().to_string(), "tcp://127.0.0.1:6590");
        assert!(Address::default_tcp().is_local());
        assert!(!Address::parse("tcp://0.0.0.0:1").unwrap().is_local());
    }
}
