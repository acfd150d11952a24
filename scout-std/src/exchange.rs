//! One framed request and one framed reply on a connected stream, within a deadline: the
//! client side shared by the core-agent manager (`probe`, `shutdown`) and the local agent's
//! client.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// A connected stream whose timeouts can be set.
pub(crate) trait Stream: Read + Write {
    /// Sets the read and write timeouts.
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Stream for std::net::TcpStream {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

#[cfg(unix)]
impl Stream for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The deadline passed.
    Timeout,
    /// The reply's length prefix exceeds the limit.
    TooLarge(u32),
    /// The socket failed.
    Io(io::Error),
}

/// Writes `body` as one frame and reads one framed reply, all before `deadline`.
pub(crate) fn exchange(
    stream: &mut dyn Stream,
    body: &[u8],
    deadline: Instant,
    max_reply: u32,
) -> Result<Vec<u8>, ExchangeError> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ExchangeError::Timeout)
    };
    let io = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ExchangeError::Timeout
        } else {
            ExchangeError::Io(e)
        }
    };
    let len = u32::try_from(body.len())
        .map_err(|_| ExchangeError::Io(io::Error::other("message too large")))?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream
        .set_timeouts(Some(remaining()?))
        .map_err(ExchangeError::Io)?;
    stream.write_all(&frame).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut head = [0u8; 4];
    stream
        .set_timeouts(Some(remaining()?))
        .map_err(ExchangeError::Io)?;
    stream.read_exact(&mut head).map_err(io)?;
    let n = u32::from_be_bytes(head);
    if n > max_reply {
        return Err(ExchangeError::TooLarge(n));
    }
    let mut reply = vec![0u8; n as usize];
    stream
        .set_timeouts(Some(remaining()?))
        .map_err(ExchangeError::Io)?;
    stream.read_exact(&mut reply).map_err(io)?;
    Ok(reply)
}
