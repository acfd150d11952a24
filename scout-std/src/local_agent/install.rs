//! Installing the local agent as a core agent that [`crate::manager`] verifies and launches.
//!
//! [`install_as_core_agent`] lays out a core agent working directory exactly as a download
//! would (`<dir>/<full name>/core-agent` plus a `manifest.json` with its SHA-256), so the
//! language agent's own launch path (`core_agent_launch = true`, `core_agent_download = false`)
//! starts the local agent instead of Scout's binary. [`Sandbox`] does this in a private
//! temporary directory, which is what the examples and the demo use.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scout_core::Config;

use super::address::Address;
use super::client::{self, RemoteSummary};
use crate::manager::{MANIFEST_FILE, sha256_file};

/// File name of the installed binary (the name Scout's archives use).
pub const CORE_AGENT_BINARY: &str = "core-agent";

/// Environment variable naming the `scout-local-agent` binary for [`find_local_agent_binary`].
pub const LOCAL_AGENT_BIN_ENV: &str = "SCOUT_LOCAL_AGENT_BIN";

/// `core_agent_full_name` used by [`Sandbox`].
pub const SANDBOX_FULL_NAME: &str = concat!("scout_local_agent-v", env!("CARGO_PKG_VERSION"));

fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Installs `local_agent_binary` as the core agent `<core_agent_dir>/<full_name>/core-agent`
/// (mode 0755; the working directory is created with mode 0700, `core_agent_dir` with the
/// default mode) and writes a `manifest.json` with its SHA-256, so that
/// [`crate::manager::verify`] accepts it. Existing files are replaced atomically. Returns the
/// path of the installed binary.
pub fn install_as_core_agent(
    local_agent_binary: &Path,
    core_agent_dir: &Path,
    full_name: &str,
) -> io::Result<PathBuf> {
    if !plain_name(full_name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core agent full name {full_name:?} is not a plain directory name"),
        ));
    }
    if !fs::metadata(local_agent_binary)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file", local_agent_binary.display()),
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .create(core_agent_dir)?;
    let dir = core_agent_dir.join(full_name);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let binary = dir.join(CORE_AGENT_BINARY);
    let tmp = dir.join(format!(".{CORE_AGENT_BINARY}.tmp-{}", std::process::id()));
    let copied = fs::copy(local_agent_binary, &tmp)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
        .and_then(|()| sha256_file(&tmp))
        .and_then(|sha| fs::rename(&tmp, &binary).map(|()| sha));
    let sha = match copied {
        Ok(sha) => sha,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let manifest = serde_json::json!({
        "version": version,
        "core_agent_version": version,
        "core_agent_binary": CORE_AGENT_BINARY,
        "core_agent_binary_sha256": sha,
        "local_agent": true,
    });
    write_atomically(
        &dir.join(MANIFEST_FILE),
        manifest.to_string().as_bytes(),
        0o644,
    )?;
    Ok(binary)
}

/// Finds the `scout-local-agent` binary: the [`LOCAL_AGENT_BIN_ENV`] variable if set, else
/// next to the running executable or one directory up (so an example in
/// `target/<profile>/examples/` finds `target/<profile>/scout-local-agent`).
pub fn find_local_agent_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(LOCAL_AGENT_BIN_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("scout-local-agent"))
        .find(|p| p.is_file())
}

/// A private temporary directory holding the local agent installed as a core agent, a socket
/// path and the settings that make [`crate::install`] launch it through the manager.
///
/// Dropping it shuts the launched agent down (if it still answers) and removes the directory.
///
/// ```no_run
/// use scout_std::local_agent::{Sandbox, find_local_agent_binary};
/// # fn main() -> std::io::Result<()> {
/// let sandbox = Sandbox::create(&find_local_agent_binary().expect("build scout-local-agent"))?;
/// let _agent = scout_std::install(sandbox.configure(scout_std::Config::new().name("Demo").monitor(true)));
/// // ... record transactions, scout_std::flush(..) ...
/// println!("{}", sandbox.summary(std::time::Duration::from_secs(5))?.text);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    core_agent_dir: PathBuf,
    socket: PathBuf,
    binary: PathBuf,
}

impl Sandbox {
    /// Creates the directory (mode 0700, under the system temporary directory) and installs
    /// `local_agent_binary` in it with [`install_as_core_agent`].
    pub fn create(local_agent_binary: &Path) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let root = loop {
            let candidate = base.join(format!(
                "scout-local-agent-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::DirBuilder::new().mode(0o700).create(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        };
        let core_agent_dir = root.join("core_agent");
        let binary =
            match install_as_core_agent(local_agent_binary, &core_agent_dir, SANDBOX_FULL_NAME) {
                Ok(b) => b,
                Err(e) => {
                    let _ = fs::remove_dir_all(&root);
                    return Err(e);
                }
            };
        Ok(Self {
            socket: root.join("agent.sock"),
            root,
            core_agent_dir,
            binary,
        })
    }

    /// [`find_local_agent_binary`], then [`Self::create`].
    pub fn create_default() -> io::Result<Self> {
        let bin = find_local_agent_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "scout-local-agent not found next to this program; build it with \
                     `cargo build -p scout-std --bin scout-local-agent` or set {LOCAL_AGENT_BIN_ENV}"
                ),
            )
        })?;
        Self::create(&bin)
    }

    /// For examples: `Ok(None)` when `SCOUT_CORE_AGENT_SOCKET_PATH` (or its alias
    /// `SCOUT_SOCKET_PATH`) names the core agent to use, otherwise [`Self::create_default`].
    pub fn unless_configured() -> io::Result<Option<Self>> {
        let configured = ["SCOUT_CORE_AGENT_SOCKET_PATH", "SCOUT_SOCKET_PATH"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if configured {
            Ok(None)
        } else {
            Self::create_default().map(Some)
        }
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `core_agent_dir` of the installation.
    pub fn core_agent_dir(&self) -> &Path {
        &self.core_agent_dir
    }

    /// The installed `core-agent` binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The Unix socket the launched agent listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The socket as an [`Address`].
    pub fn address(&self) -> Address {
        Address::Unix(self.socket.clone())
    }

    /// The local agent's log file (written once the manager launched it).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("core-agent.log")
    }

    /// `config` with the core agent settings pointing at this sandbox: its directory, full name,
    /// socket and log file, `core_agent_download` off and `core_agent_launch` on.
    pub fn configure(&self, mut config: Config) -> Config {
        let settings = [
            ("core_agent_dir", self.core_agent_dir.to_string_lossy()),
            ("core_agent_full_name", SANDBOX_FULL_NAME.into()),
            ("core_agent_socket_path", self.socket.to_string_lossy()),
            (
                "core_agent_log_file",
                self.log_file().to_string_lossy().into_owned().into(),
            ),
            ("core_agent_download", "false".into()),
            ("core_agent_launch", "true".into()),
        ];
        for (key, value) in settings {
            if let Err(e) = config.set(key, &value) {
                log::warn!("sandbox: cannot set {key} = {value:?}: {e:?}");
            }
        }
        config
    }

    /// The launched agent's summary ([`client::summary`]).
    pub fn summary(&self, timeout: Duration) -> io::Result<RemoteSummary> {
        client::summary(&self.address(), timeout)
    }

    /// Waits until the launched agent answers, up to `timeout`; false if it never did.
    pub fn wait_until_running(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if client::probe(&self.address(), Duration::from_millis(500)).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Asks the launched agent to exit (`CoreAgentShutdown`) and waits up to `timeout` for its
    /// process to end. `Ok(false)` if no agent answered.
    pub fn shutdown(&self, timeout: Duration) -> io::Result<bool> {
        shutdown_and_wait(&self.address(), timeout)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(Duration::from_secs(5)) {
            log::warn!("sandbox: the local agent did not stop cleanly: {e}");
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// True while process `pid` exists and is not a zombie (Linux `/proc`; elsewhere unknown: false).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends `CoreAgentShutdown` to the local agent at `address` and waits up to `timeout` until its
/// process has exited (its pid comes from the summary reply) and, for a Unix socket, the socket
/// file is gone. `Ok(false)` if nothing answered at `address`.
pub fn shutdown_and_wait(address: &Address, timeout: Duration) -> io::Result<bool> {
    let short = timeout.min(Duration::from_secs(2));
    let pid = match client::summary(address, short) {
        Ok(s) => s.pid,
        Err(_) => match client::probe(address, short) {
            Ok(_) => None,
            Err(_) => return Ok(false),
        },
    };
    client::request_shutdown(address, short)?;
    let deadline = Instant::now() + timeout;
    loop {
        let socket_gone = match address {
            Address::Unix(p) => !p.exists(),
            Address::Tcp(_) => client::probe(address, Duration::from_millis(200)).is_err(),
        };
        if socket_gone && !pid.is_some_and(process_alive) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the local agent at {address} did not exit within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
