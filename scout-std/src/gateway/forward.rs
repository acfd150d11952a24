//! Forwarding device requests to the core agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{FrameTx, register_frame};

/// A frame was not taken (queue full or connection gone); the caller counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped;

/// Takes complete core-agent frames (4-byte big-endian length + JSON). Must never block.
pub trait Forward: Send + Sync {
    /// Hands over one frame.
    fn forward(&self, frame: Vec<u8>) -> Result<(), Dropped>;
}

/// One connection to the core agent (TCP `tcp://host:port` or a Unix socket path): sends
/// `Register` first on every (re)connection, then the frames it is given, reconnecting with
/// exponential backoff (100 ms to 5 s); replies are read and discarded. Frames queued while
/// disconnected wait (up to the queue size); the frame being written when a connection fails
/// is lost and counted.
#[derive(Debug)]
pub struct CoreAgentConnection {
    tx: FrameTx,
    lost: Arc<AtomicU64>,
}

impl CoreAgentConnection {
    /// Spawns the connection task on the current tokio runtime.
    pub fn spawn(address: &str, app: &str, key: &str, host: &str, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let lost = Arc::new(AtomicU64::new(0));
        let register = register_frame(app, key, host);
        tokio::spawn(run(address.to_string(), register, rx, Arc::clone(&lost)));
        Self { tx, lost }
    }

    /// Frames lost in failed writes.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Forward for CoreAgentConnection {
    fn forward(&self, frame: Vec<u8>) -> Result<(), Dropped> {
        self.tx.try_send(frame).map_err(|_| Dropped)
    }
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

async fn connect(address: &str) -> std::io::Result<Box<dyn Conn>> {
    if let Some(hp) = address.strip_prefix("tcp://") {
        let s = tokio::net::TcpStream::connect(hp).await?;
        let _ = s.set_nodelay(true);
        return Ok(Box::new(s));
    }
    #[cfg(unix)]
    {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
    }
    #[cfg(not(unix))]
    Err(std::io::Error::other(
        "only tcp:// addresses on this platform",
    ))
}

async fn run(
    address: String,
    register: Vec<u8>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    lost: Arc<AtomicU64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let conn = match connect(&address).await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("core agent {address}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (mut r, mut w) = tokio::io::split(conn);
        // Read and discard replies until the connection closes.
        let drain = tokio::spawn(async move {
            let mut b = vec![0u8; 4096];
            while let Ok(n) = r.read(&mut b).await {
                if n == 0 {
                    break;
                }
            }
        });
        if w.write_all(&register).await.is_err() {
            drain.abort();
            continue;
        }
        backoff = Duration::from_millis(100);
        loop {
            let Some(frame) = rx.recv().await else {
                drain.abort();
                return; // the gateway dropped this forwarder
            };
            if drain.is_finished() || w.write_all(&frame).await.is_err() {
                lost.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        drain.abort();
    }
}
