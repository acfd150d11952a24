//! Listening, accepting and serving connections.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::address::Address;
use super::aggregate::EndpointSummary;
use super::config::{Limits, LocalAgentConfig};
use super::model::{AppEvent, Counters, FinishedRequest, ReceivedMessage};
use super::protocol::failure_reply;
use super::state::{Connection, Parsed, State};

/// Why the agent could not start.
#[derive(Debug)]
pub enum StartError {
    /// Another agent answers at this address (TCP address in use, or the Unix socket answers).
    AlreadyRunning(Address),
    /// A non-loopback TCP address without [`LocalAgentConfig::allow_remote`].
    RemoteNotAllowed(Address),
    /// Binding, socket-file or export-file error.
    Io(String, io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyRunning(a) => write!(f, "an agent is already running at {a}"),
            Self::RemoteNotAllowed(a) => write!(
                f,
                "refusing to listen on non-loopback address {a} (pass --allow-remote to allow it)"
            ),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

/// The in-process local core agent. See the [module documentation](super).
#[derive(Debug, Clone, Copy)]
pub struct LocalAgent;

impl LocalAgent {
    /// Binds `config.address` and starts serving on the current tokio runtime.
    pub async fn start(config: LocalAgentConfig) -> Result<LocalAgentHandle, StartError> {
        let export = match &config.export {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        StartError::Io(format!("cannot open export file {}", p.display()), e)
                    })?,
            ),
            None => None,
        };
        let (listener, address, socket_file) = bind(&config).await?;
        let limits = config.limits.clone();
        let kib = u32::try_from(limits.max_inflight_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        let (shutdown_tx, _) = watch::channel(false);
        let (requests_tx, _) = watch::channel(0u64);
        let (messages_tx, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(limits.clone(), config.version.clone(), export)),
            limits,
            honor_shutdown: config.honor_shutdown_command,
            inflight: Arc::new(Semaphore::new(kib as usize)),
            shutdown_tx,
            requests_tx,
            messages_tx,
            open: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
        });
        log::info!(
            "scout local agent {} listening on {address}",
            config.version
        );
        let task = tokio::spawn(accept_loop(Arc::clone(&inner), listener, socket_file));
        Ok(LocalAgentHandle {
            inner,
            address,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }
}

/// A running local agent: inspect what it received, wait for requests, shut it down.
///
/// Dropping the handle does not stop the agent; call [`LocalAgentHandle::shutdown`].
#[derive(Debug)]
pub struct LocalAgentHandle {
    inner: Arc<Inner>,
    address: Address,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    limits: Limits,
    honor_shutdown: bool,
    inflight: Arc<Semaphore>,
    shutdown_tx: watch::Sender<bool>,
    requests_tx: watch::Sender<u64>,
    messages_tx: watch::Sender<u64>,
    open: AtomicUsize,
    next_conn: AtomicU64,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LocalAgentHandle {
    /// The bound address (with the real port when TCP port 0 was asked for).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Snapshot of the retained finished requests, in finishing order.
    pub fn requests(&self) -> Vec<FinishedRequest> {
        self.inner.state().requests()
    }

    /// Snapshot of the retained frames that were valid JSON, in arrival order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.inner.state().messages()
    }

    /// Snapshot of the retained `ApplicationEvent`s, in arrival order.
    pub fn events(&self) -> Vec<AppEvent> {
        self.inner.state().events()
    }

    /// Per-endpoint statistics.
    pub fn endpoints(&self) -> Vec<EndpointSummary> {
        self.inner.state().endpoints()
    }

    /// The terminal summary text (endpoint table and slowest trace).
    pub fn summary(&self) -> String {
        self.inner.state().summary()
    }

    /// Counters, including rejected frames and everything dropped by limits.
    pub fn counters(&self) -> Counters {
        self.inner.state().counters
    }

    /// Waits until at least `n` requests have finished; false on timeout.
    pub async fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.requests_tx.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        )
    }

    /// Waits until at least `n` frames have been handled (good or bad); false on timeout.
    pub async fn wait_for_frames(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.messages_tx.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        )
    }

    /// Resolves once shutdown has begun: [`Self::shutdown`] was called or, if honoured, a client
    /// sent `CoreAgentShutdown`.
    pub async fn stopping(&self) {
        stopped(&mut self.inner.shutdown_tx.subscribe()).await;
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.inner.shutdown_tx.borrow()
    }

    /// Stops accepting, closes all connections (after the frame in progress), removes the Unix
    /// socket file and flushes the export file. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shutdown_tx.send_replace(true);
        let task = self.task.lock().await.take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            log::error!("local agent task failed: {e}");
        }
    }
}

/// Resolves when the shutdown flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// The socket file we created and its inode, removed at shutdown if still ours.
struct SocketFile {
    path: PathBuf,
    ino: u64,
}

async fn bind(
    config: &LocalAgentConfig,
) -> Result<(Listener, Address, Option<SocketFile>), StartError> {
    match &config.address {
        Address::Tcp(sa) => {
            if !sa.ip().is_loopback() {
                if !config.allow_remote {
                    return Err(StartError::RemoteNotAllowed(config.address.clone()));
                }
                log::warn!(
                    "listening on non-loopback address {sa} (--allow-remote): anyone who can reach it can send data to this agent"
                );
            }
            let l = TcpListener::bind(sa).await.map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    StartError::AlreadyRunning(config.address.clone())
                } else {
                    StartError::Io(format!("cannot listen on {sa}"), e)
                }
            })?;
            let local = l
                .local_addr()
                .map_err(|e| StartError::Io("local_addr".into(), e))?;
            Ok((Listener::Tcp(l), Address::Tcp(local), None))
        }
        Address::Unix(path) => {
            let (l, ino) = bind_unix(path, &config.address)?;
            l.set_nonblocking(true)
                .map_err(|e| StartError::Io("set_nonblocking".into(), e))?;
            let l = UnixListener::from_std(l)
                .map_err(|e| StartError::Io("registering the socket".into(), e))?;
            Ok((
                Listener::Unix(l),
                config.address.clone(),
                Some(SocketFile {
                    path: path.clone(),
                    ino,
                }),
            ))
        }
    }
}

/// Binds a Unix socket that only this user can use: the directory is created with mode 0700 if
/// missing; the socket is bound inside a private staging directory, set to mode 0600, then linked
/// into place (so it is never reachable with looser permissions, and an existing file is never
/// overwritten). A stale socket file that does not answer is removed first.
fn bind_unix(
    path: &Path,
    address: &Address,
) -> Result<(std::os::unix::net::UnixListener, u64), StartError> {
    let io_err = |what: String| move |e| StartError::Io(what, e);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(io_err(format!("cannot create {}", parent.display())))?;
        log::info!("created socket directory {} (mode 0700)", parent.display());
    }
    let meta =
        std::fs::metadata(&parent).map_err(io_err(format!("cannot stat {}", parent.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "socket directory {} is accessible to other users (mode {:o}); the socket file itself is restricted to mode 0600",
            parent.display(),
            meta.permissions().mode() & 0o7777
        );
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(StartError::Io(
                format!("{} exists and is not a socket", path.display()),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(StartError::AlreadyRunning(address.clone()));
        }
        log::info!("removing stale socket file {}", path.display());
        std::fs::remove_file(path)
            .map_err(io_err(format!("cannot remove stale {}", path.display())))?;
    }
    static STAGING: AtomicU64 = AtomicU64::new(0);
    let staging = parent.join(format!(
        ".sla{}-{}",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed)
    ));
    let staged = staging.join("s");
    let staged_bind = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .and_then(|()| std::os::unix::net::UnixListener::bind(&staged));
    let listener = match staged_bind {
        Ok(l) => {
            let linked = std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| std::fs::hard_link(&staged, path));
            let _ = std::fs::remove_file(&staged);
            let _ = std::fs::remove_dir(&staging);
            match linked {
                Ok(()) => l,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StartError::AlreadyRunning(address.clone()));
                }
                Err(e) => return Err(StartError::Io(format!("cannot bind {}", path.display()), e)),
            }
        }
        Err(e) => {
            let _ = std::fs::remove_dir(&staging);
            log::debug!(
                "staged bind failed ({e}); binding {} directly",
                path.display()
            );
            let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    StartError::AlreadyRunning(address.clone())
                } else {
                    StartError::Io(format!("cannot bind {}", path.display()), e)
                }
            })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(format!("cannot chmod {}", path.display())))?;
            l
        }
    };
    let ino = std::fs::symlink_metadata(path)
        .map(|m| m.ino())
        .unwrap_or(0);
    Ok((listener, ino))
}

async fn accept_loop(inner: Arc<Inner>, listener: Listener, socket_file: Option<SocketFile>) {
    let mut shutdown = inner.shutdown_tx.subscribe();
    let mut conns = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            _ = sweep.tick() => inner.state().expire(),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = accept(&listener) => match accepted {
                Ok((stream, peer)) => {
                    let id = inner.next_conn.fetch_add(1, Ordering::Relaxed);
                    if inner.open.load(Ordering::Relaxed) >= inner.limits.max_connections {
                        inner.state().counters.connections_refused += 1;
                        log::warn!("connection {id} from {peer} refused: {} connections open", inner.limits.max_connections);
                        drop(stream);
                        continue;
                    }
                    inner.open.fetch_add(1, Ordering::Relaxed);
                    inner.state().counters.connections += 1;
                    log::debug!("connection {id} accepted from {peer}");
                    let inner2 = Arc::clone(&inner);
                    conns.spawn(async move {
                        let conn = Connection::new(id, peer);
                        match stream {
                            Stream::Tcp(s) => serve(&inner2, conn, s).await,
                            Stream::Unix(s) => serve(&inner2, conn, s).await,
                        }
                        inner2.open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    log::info!("local agent stopping: closing {} connections", conns.len());
    let drained = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    if let Some(f) = socket_file {
        match std::fs::symlink_metadata(&f.path) {
            Ok(m) if m.ino() == f.ino => {
                if let Err(e) = std::fs::remove_file(&f.path) {
                    log::warn!("cannot remove socket file {}: {e}", f.path.display());
                }
            }
            _ => {}
        }
    }
    inner.state().flush();
    log::info!("local agent stopped");
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> io::Result<(Stream, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), peer.to_string()))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), "unix socket".to_owned()))
        }
    }
}

enum FrameError {
    Eof,
    Shutdown,
    TooLarge(usize),
    Stalled(usize, usize),
    Busy,
    Io(io::Error),
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(inner: &Inner, mut conn: Connection, stream: S) {
    let mut stream = BufReader::with_capacity(64 * 1024, stream);
    let mut shutdown = inner.shutdown_tx.subscribe();
    loop {
        let frame = read_frame(&mut stream, inner, &mut shutdown).await;
        let (reply, close, stop_agent) = match frame {
            Ok((bytes, permit)) => {
                // Decoding needs no lock: only rebuilding and aggregation are serialised.
                let parsed = Parsed::new(&bytes, inner.limits.retain_messages > 0);
                let reply = inner.state().handle_parsed(&mut conn, parsed);
                drop(bytes);
                drop(permit);
                let stop = reply.shutdown && inner.honor_shutdown;
                (reply.bytes, stop, stop)
            }
            Err(FrameError::Eof) => {
                log::debug!("connection {} closed by peer", conn.id);
                break;
            }
            Err(FrameError::Shutdown) => break,
            Err(FrameError::TooLarge(n)) => {
                let msg = format!(
                    "frame of {n} bytes exceeds the limit of {} bytes; closing the connection",
                    inner.limits.max_frame_bytes
                );
                {
                    let mut st = inner.state();
                    st.counters.frames += 1;
                    st.counters.oversized_frames += 1;
                }
                conn.log_bad(&msg);
                (failure_reply(&msg).into(), true, false)
            }
            Err(FrameError::Stalled(got, want)) => {
                {
                    let mut st = inner.state();
                    st.counters.frames += 1;
                    st.counters.stalled_frames += 1;
                }
                conn.log_bad(&format!(
                    "frame stalled after {got} of {want} bytes for {:?}; closing the connection",
                    inner.limits.frame_timeout
                ));
                break;
            }
            Err(FrameError::Busy) => {
                log::warn!(
                    "connection {}: too many bytes in flight on all connections; closing it",
                    conn.id
                );
                (
                    failure_reply("agent busy: too much data in flight").into(),
                    true,
                    false,
                )
            }
            Err(FrameError::Io(e)) => {
                log::debug!("connection {}: read error: {e}", conn.id);
                break;
            }
        };
        inner.messages_tx.send_modify(|n| *n += 1);
        let finished = inner.state().counters.requests;
        inner.requests_tx.send_if_modified(|n| {
            let changed = *n != finished;
            *n = finished;
            changed
        });
        let mut out = Vec::with_capacity(4 + reply.len());
        out.extend_from_slice(&u32::try_from(reply.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&reply);
        let written = tokio::time::timeout(inner.limits.write_timeout, async {
            stream.get_mut().write_all(&out).await?;
            stream.get_mut().flush().await
        })
        .await;
        let write_ok = match written {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                log::debug!("connection {}: write error: {e}", conn.id);
                false
            }
            Err(_) => {
                inner.state().counters.write_failures += 1;
                log::warn!(
                    "connection {}: reply not read by the client within {:?}; closing",
                    conn.id,
                    inner.limits.write_timeout
                );
                false
            }
        };
        if stop_agent {
            inner.shutdown_tx.send_replace(true);
        }
        if close || !write_ok {
            break;
        }
    }
    log::debug!("connection {} done", conn.id);
}

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    inner: &Inner,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), FrameError> {
    let limits = &inner.limits;
    let first = tokio::select! {
        () = stopped(shutdown) => return Err(FrameError::Shutdown),
        b = r.read_u8() => match b {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Eof),
            Err(e) => return Err(FrameError::Io(e)),
        },
    };
    let mut rest = [0u8; 3];
    match tokio::time::timeout(limits.frame_timeout, r.read_exact(&mut rest)).await {
        Err(_) => return Err(FrameError::Stalled(1, 4)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Stalled(1, 4));
        }
        Ok(Err(e)) => return Err(FrameError::Io(e)),
        Ok(Ok(_)) => {}
    }
    let len = u32::from_be_bytes([first, rest[0], rest[1], rest[2]]) as usize;
    if len > limits.max_frame_bytes {
        return Err(FrameError::TooLarge(len));
    }
    let permit = if len > 64 * 1024 {
        let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
        match tokio::time::timeout(
            limits.frame_timeout,
            Arc::clone(&inner.inflight).acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(p)) => Some(p),
            _ => return Err(FrameError::Busy),
        }
    } else {
        None
    };
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    while buf.len() < len {
        let filled = buf.len();
        let target = len.min((filled * 2).max(64 * 1024));
        buf.resize(target, 0);
        match tokio::time::timeout(limits.frame_timeout, r.read(&mut buf[filled..])).await {
            Err(_) => return Err(FrameError::Stalled(filled + 4, len + 4)),
            Ok(Ok(0)) => return Err(FrameError::Stalled(filled + 4, len + 4)),
            Ok(Ok(n)) => buf.truncate(filled + n),
            Ok(Err(e)) => return Err(FrameError::Io(e)),
        }
    }
    Ok((buf, permit))
}
