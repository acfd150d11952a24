//! Download with a machine-wide lock, retries and verification before install (spec §2.3).

use std::fs;
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::extract::extract_tgz;
use super::names::{download_url, full_name};
use super::verify::{MANIFEST_FILE, Verified, prepare_working_dir, verify, verify_dir};
use super::{ManagerConfig, ManagerError};

/// Name of the lock file inside the working directory.
pub const LOCK_FILE: &str = "download.lock";
/// A lock file whose ctime is older than this is considered abandoned (spec §2.3).
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(120);
const LOCK_POLL: Duration = Duration::from_millis(100);

/// What [`download`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// A verified core agent was already present; nothing was downloaded.
    AlreadyPresent(Verified),
    /// This process downloaded, verified and installed the core agent.
    Downloaded(Verified),
    /// Another process held `download.lock`; its result verified after it finished.
    DownloadedByOther(Verified),
}

impl DownloadOutcome {
    /// The verified core agent.
    pub fn verified(&self) -> &Verified {
        match self {
            Self::AlreadyPresent(v) | Self::Downloaded(v) | Self::DownloadedByOther(v) => v,
        }
    }

    /// The verified core agent, by value.
    pub fn into_verified(self) -> Verified {
        match self {
            Self::AlreadyPresent(v) | Self::Downloaded(v) | Self::DownloadedByOther(v) => v,
        }
    }
}

/// Ensures a verified core agent exists in the working directory, downloading it if needed.
///
/// Verifies first; downloads only when verification fails for a reason a download can fix and
/// `core_agent_download` is true. Exactly one process on the machine downloads at a time
/// (`download.lock`); the others wait up to `lock_wait` and use its result. The archive is
/// extracted into a private temporary directory and the binary and manifest are moved into
/// place only after the SHA-256 matches, so nothing unverified is ever left to execute.
pub fn download(cfg: &ManagerConfig) -> Result<DownloadOutcome, ManagerError> {
    match verify(cfg) {
        Ok(v) => return Ok(DownloadOutcome::AlreadyPresent(v)),
        Err(e) if e.needs_download() => {
            if !cfg.core_agent_download {
                return Err(ManagerError::DownloadDisabled {
                    reason: e.to_string(),
                });
            }
            log::debug!("scout core agent: download needed: {e}");
        }
        Err(e) => return Err(e),
    }
    let dir = prepare_working_dir(cfg)?;
    let lock_path = dir.join(LOCK_FILE);
    let start = Instant::now();
    let mut waited = false;
    loop {
        if let Some(lock) = Lock::try_acquire(&lock_path)? {
            // Someone may have finished between our verification and taking the lock.
            if let Ok(v) = verify_dir(&dir) {
                return Ok(if waited {
                    DownloadOutcome::DownloadedByOther(v)
                } else {
                    DownloadOutcome::AlreadyPresent(v)
                });
            }
            let result = fetch_and_install(cfg, &dir, &lock);
            drop(lock);
            return result.map(DownloadOutcome::Downloaded);
        }
        if !waited {
            log::info!(
                "scout core agent: another process is downloading ({} exists); waiting up to {} s",
                lock_path.display(),
                cfg.lock_wait.as_secs()
            );
            waited = true;
        }
        loop {
            if start.elapsed() >= cfg.lock_wait {
                return Err(ManagerError::LockTimeout {
                    path: lock_path,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(LOCK_POLL);
            match fs::symlink_metadata(&lock_path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Ok(m) if is_stale(&m) => break,
                _ => {}
            }
        }
        if let Ok(v) = verify_dir(&dir) {
            log::info!("scout core agent: another process installed it");
            return Ok(DownloadOutcome::DownloadedByOther(v));
        }
    }
}

fn is_stale(meta: &fs::Metadata) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ctime = u64::try_from(meta.ctime()).unwrap_or(0);
    now.saturating_sub(ctime) > LOCK_STALE_AFTER.as_secs()
}

/// An exclusively created `download.lock`, removed on drop if it is still ours.
#[derive(Debug)]
struct Lock {
    path: PathBuf,
    file: fs::File,
}

impl Lock {
    fn try_acquire(path: &Path) -> Result<Option<Self>, ManagerError> {
        if let Ok(meta) = fs::symlink_metadata(path)
            && is_stale(&meta)
        {
            // Re-check just before removing, so a lock another waiter has just re-created
            // (new inode, fresh ctime) is left alone.
            let same = fs::symlink_metadata(path)
                .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev() && is_stale(&m));
            if same {
                log::warn!(
                    "scout core agent: removing stale lock {} (older than {} s)",
                    path.display(),
                    LOCK_STALE_AFTER.as_secs()
                );
                let _ = fs::remove_file(path);
            }
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                Ok(Some(Self {
                    path: path.to_owned(),
                    file,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(ManagerError::io(format!("create {}", path.display()), e)),
        }
    }

    /// Updates the lock's timestamps so waiting processes do not consider it stale.
    fn refresh(&self) {
        let _ = self.file.set_modified(SystemTime::now());
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let ours = match (fs::symlink_metadata(&self.path), self.file.metadata()) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if ours && let Err(e) = fs::remove_file(&self.path) {
            log::warn!(
                "scout core agent: cannot remove {}: {e}",
                self.path.display()
            );
        }
    }
}

/// A private directory inside the working directory, removed with its contents on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn create(parent: &Path) -> Result<Self, ManagerError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!(".extract-{}-{nanos}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| ManagerError::io(format!("create directory {}", path.display()), e))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn fetch_and_install(
    cfg: &ManagerConfig,
    dir: &Path,
    lock: &Lock,
) -> Result<Verified, ManagerError> {
    let url = download_url(cfg);
    let name = full_name(cfg);
    let part = dir.join(format!("{name}.tgz.part"));
    let tgz = dir.join(format!("{name}.tgz"));
    log::info!("scout core agent: downloading {url}");
    let started = Instant::now();
    let fetched = fetch_with_retries(cfg, &url, &part, lock);
    let bytes = match fetched {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
    };
    log::info!(
        "scout core agent: downloaded {bytes} bytes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fs::rename(&part, &tgz).map_err(|e| {
        let _ = fs::remove_file(&part);
        ManagerError::io(format!("rename {} to {}", part.display(), tgz.display()), e)
    })?;
    let installed = install_from_archive(cfg, dir, &tgz);
    if installed.is_err() {
        let _ = fs::remove_file(&tgz);
    }
    installed
}

fn install_from_archive(
    cfg: &ManagerConfig,
    dir: &Path,
    tgz: &Path,
) -> Result<Verified, ManagerError> {
    let tmp = TempDir::create(dir)?;
    extract_tgz(tgz, &tmp.0, cfg.max_extracted_bytes)?;
    let staged = verify_dir(&tmp.0)?;
    let binary_name = staged.manifest.core_agent_binary.clone();
    let meta = fs::metadata(&staged.binary)
        .map_err(|e| ManagerError::io(format!("stat {}", staged.binary.display()), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o100 == 0 {
        fs::set_permissions(&staged.binary, fs::Permissions::from_mode(mode | 0o100)).map_err(
            |e| ManagerError::io(format!("set permissions of {}", staged.binary.display()), e),
        )?;
    }
    for file in [binary_name.as_str(), MANIFEST_FILE] {
        let from = tmp.0.join(file);
        let to = dir.join(file);
        fs::rename(&from, &to).map_err(|e| {
            ManagerError::io(format!("rename {} to {}", from.display(), to.display()), e)
        })?;
    }
    drop(tmp);
    let verified = verify_dir(dir)?;
    log::info!(
        "scout core agent: installed version {} at {}",
        verified.manifest.core_agent_version,
        verified.binary.display()
    );
    Ok(verified)
}

/// Runs a future to completion on a private current-thread runtime. When called from inside a
/// tokio runtime it uses a scoped helper thread, so it never panics with "runtime within runtime".
pub(crate) fn block_on<F>(fut: F) -> Result<F::Output, ManagerError>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(fut))
            .map_err(|e| ManagerError::Internal(format!("cannot create tokio runtime: {e}")))
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .unwrap_or_else(|_| Err(ManagerError::Internal("download thread panicked".into())))
        })
    } else {
        run()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

fn fetch_with_retries(
    cfg: &ManagerConfig,
    url: &str,
    dest: &Path,
    lock: &Lock,
) -> Result<u64, ManagerError> {
    block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.download_timeout)
            .user_agent(concat!("scout-apm-rust/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ManagerError::Http {
                url: url.to_owned(),
                message: format!("cannot create HTTP client: {}", error_chain(&e)),
            })?;
        let mut attempt = 0u32;
        loop {
            lock.refresh();
            let result = match tokio::time::timeout(
                cfg.download_timeout,
                fetch_once(&client, cfg, url, dest),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err((
                    ManagerError::Timeout {
                        what: format!("download of {url}"),
                        after: cfg.download_timeout,
                    },
                    true,
                )),
            };
            match result {
                Ok(n) => return Ok(n),
                Err((e, retryable)) => {
                    if !retryable || attempt >= cfg.download_retries {
                        return Err(e);
                    }
                    let delay = cfg.retry_backoff.saturating_mul(1u32 << attempt.min(16));
                    attempt += 1;
                    log::warn!(
                        "scout core agent: {e}; retry {attempt} of {} in {:.1} s",
                        cfg.download_retries,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    })?
}

/// One GET streamed to `dest`. The error's flag says whether a retry may help.
async fn fetch_once(
    client: &reqwest::Client,
    cfg: &ManagerConfig,
    url: &str,
    dest: &Path,
) -> Result<u64, (ManagerError, bool)> {
    let map = |e: reqwest::Error| {
        let err = if e.is_timeout() {
            ManagerError::Timeout {
                what: format!("download of {url}"),
                after: if e.is_connect() {
                    cfg.connect_timeout
                } else {
                    cfg.download_timeout
                },
            }
        } else {
            ManagerError::Http {
                url: url.to_owned(),
                message: error_chain(&e),
            }
        };
        (err, true)
    };
    let mut resp = client.get(url).send().await.map_err(map)?;
    let status = resp.status().as_u16();
    if status != 200 {
        let retryable = status >= 500 || status == 408 || status == 429;
        return Err((
            ManagerError::HttpStatus {
                url: url.to_owned(),
                status,
            },
            retryable,
        ));
    }
    let too_large = || {
        (
            ManagerError::TooLarge {
                what: format!("download of {url}"),
                limit: cfg.max_download_bytes,
            },
            false,
        )
    };
    if resp
        .content_length()
        .is_some_and(|n| n > cfg.max_download_bytes)
    {
        return Err(too_large());
    }
    let io_err = |what: &str, e: io::Error| {
        (
            ManagerError::io(format!("{what} {}", dest.display()), e),
            false,
        )
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(dest)
        .map_err(|e| io_err("create", e))?;
    let mut written: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(map)? {
        written = written.saturating_add(chunk.len() as u64);
        if written > cfg.max_download_bytes {
            return Err(too_large());
        }
        file.write_all(&chunk).map_err(|e| io_err("write", e))?;
    }
    file.sync_all().map_err(|e| io_err("write", e))?;
    Ok(written)
}
