//! Management of Scout's downloaded core agent: download, verify, extract, launch.
//!
//! [`ensure_running`] is the blocking entry point: it probes the configured socket, and if no
//! core agent answers it verifies the installed copy, downloads it if needed (verifying the
//! SHA-256 against the manifest before anything is executed) and launches it. Every step is
//! also available on its own ([`verify`], [`download`], [`launch`], [`probe`], [`shutdown`]).
//!
//! Nothing here panics or logs the Scout key (the manager never sees it). Failures are
//! returned as [`ManagerError`] and logged through the `log` crate by [`ensure_running`].
//! Run it off the application's path (a background thread): it may block for the configured
//! download, lock and launch timeouts.

mod config;
mod download;
mod error;
mod extract;
mod launch;
mod names;
mod socket;
mod verify;

pub use config::{
    DEFAULT_CORE_AGENT_DIR, DEFAULT_CORE_AGENT_VERSION, DEFAULT_DOWNLOAD_URL, DEFAULT_PERMISSIONS,
    DEFAULT_SOCKET_ADDRESS, ManagerConfig, parse_bool, parse_octal_mode,
};
pub use download::{DownloadOutcome, LOCK_FILE, LOCK_STALE_AFTER, download};
pub use error::ManagerError;
pub use launch::{LaunchOutcome, launch, launch_args, launch_verified};
pub use names::{
    detect_triple, download_url, full_name, is_valid_triple, triple, triple_for, working_dir,
};
pub use socket::{Address, probe, shutdown};
pub use verify::{MANIFEST_FILE, Manifest, Verified, sha256_file, verify};

/// What [`ensure_running`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A core agent already answered on the socket; nothing was verified or launched.
    AlreadyRunning {
        /// The version it reported, if any.
        version: Option<String>,
    },
    /// The core agent binary was launched and exited 0 (it daemonized).
    Launched {
        /// True if this call downloaded the binary (or waited for another process to).
        downloaded: bool,
    },
    /// The binary exited 3: another process had already started a core agent.
    LaunchReportedRunning {
        /// True if this call downloaded the binary (or waited for another process to).
        downloaded: bool,
    },
    /// No core agent answered and `core_agent_launch` is false, so nothing was done.
    LaunchDisabled,
}

/// Makes sure a core agent is running at `cfg.socket_address`. Blocking.
///
/// 1. Probe the socket (`probe_timeout`): if a core agent answers, return
///    [`Outcome::AlreadyRunning`] without launching anything.
/// 2. If `core_agent_launch` is false, return [`Outcome::LaunchDisabled`].
/// 3. Verify the installed copy; if that fails, download (when `core_agent_download` is on),
///    which verifies again before installing.
/// 4. Launch the verified binary; exit status 3 counts as running.
///
/// Every failure is logged (one clear line) and returned.
pub fn ensure_running(cfg: &ManagerConfig) -> Result<Outcome, ManagerError> {
    let result = ensure_running_inner(cfg);
    match &result {
        Ok(outcome) => log::debug!("scout core agent: {outcome:?}"),
        Err(e) => log::error!("scout core agent: {e}"),
    }
    result
}

fn ensure_running_inner(cfg: &ManagerConfig) -> Result<Outcome, ManagerError> {
    let address = &cfg.socket_address;
    Address::parse(address)?;
    match probe(address, cfg.probe_timeout) {
        Ok(version) => {
            log::info!(
                "scout core agent: already running at {address} (version {})",
                version.as_deref().unwrap_or("unknown")
            );
            return Ok(Outcome::AlreadyRunning { version });
        }
        Err(e) => log::debug!("scout core agent: no answer at {address}: {e}"),
    }
    if !cfg.core_agent_launch {
        log::info!(
            "scout core agent: none answers at {address} and core_agent_launch is off; not launching"
        );
        return Ok(Outcome::LaunchDisabled);
    }
    let outcome = download(cfg)?;
    let downloaded = !matches!(outcome, DownloadOutcome::AlreadyPresent(_));
    let verified = outcome.into_verified();
    Ok(match launch_verified(cfg, &verified)? {
        LaunchOutcome::Started => Outcome::Launched { downloaded },
        LaunchOutcome::AlreadyRunning => Outcome::LaunchReportedRunning { downloaded },
    })
}
