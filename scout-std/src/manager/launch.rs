//! Launching the verified core agent binary (spec §2.5).

use std::ffi::OsString;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::socket::Address;
use super::verify::{Verified, verify};
use super::{ManagerConfig, ManagerError};

/// What [`launch`] observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// The binary exited 0: the core agent daemonized.
    Started,
    /// The binary exited 3: a core agent was already running.
    AlreadyRunning,
}

/// The exact arguments passed to the binary (spec §2.5):
/// `start --daemonize true --log-level <level> [--log-file <path>] [--config-file <path>]
/// (--tcp <host:port> | --socket <path>) [--ca-cert <path>]`.
pub fn launch_args(cfg: &ManagerConfig) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["start", "--daemonize", "true", "--log-level"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(cfg.log_level.clone().into());
    if let Some(p) = &cfg.log_file {
        args.push("--log-file".into());
        args.push(p.clone().into());
    }
    if let Some(p) = &cfg.config_file {
        args.push("--config-file".into());
        args.push(p.clone().into());
    }
    match cfg.socket_address.strip_prefix("tcp://") {
        Some(hostport) => {
            args.push("--tcp".into());
            args.push(hostport.into());
        }
        None => {
            args.push("--socket".into());
            args.push(cfg.socket_address.clone().into());
        }
    }
    if let Some(p) = &cfg.ca_cert {
        args.push("--ca-cert".into());
        args.push(p.clone().into());
    }
    args
}

/// Verifies the core agent, then runs it with [`launch_args`] (no shell, stdin and stdout to
/// `/dev/null`, stderr inherited) and waits up to `launch_timeout` for it to daemonize.
/// Exit status 0 is [`LaunchOutcome::Started`], 3 is [`LaunchOutcome::AlreadyRunning`]; any other
/// status, a signal, or a timeout (the child is then killed) is an error.
pub fn launch(cfg: &ManagerConfig) -> Result<LaunchOutcome, ManagerError> {
    let verified = verify(cfg)?;
    launch_verified(cfg, &verified)
}

/// Runs an already verified core agent; see [`launch`].
pub fn launch_verified(
    cfg: &ManagerConfig,
    verified: &Verified,
) -> Result<LaunchOutcome, ManagerError> {
    // Validate the address before running anything.
    Address::parse(&cfg.socket_address)?;
    let binary = &verified.binary;
    let args = launch_args(cfg);
    log::info!(
        "scout core agent: launching {} {}",
        binary.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut tries = 0;
    let mut child = loop {
        let spawned = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(c) => break c,
            // ETXTBSY: a just-written binary can still be open for writing in a child
            // forked by another thread of this process; it goes away quickly.
            Err(e) if e.raw_os_error() == Some(26) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(ManagerError::Spawn {
                    binary: binary.clone(),
                    source,
                });
            }
        }
    };
    let start = Instant::now();
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {
                if start.elapsed() >= cfg.launch_timeout {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ManagerError::Timeout {
                        what: format!(
                            "core agent launch ({} did not exit; killed)",
                            binary.display()
                        ),
                        after: cfg.launch_timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(ManagerError::io(
                    format!("wait for {}", binary.display()),
                    e,
                ));
            }
        }
    };
    match status.code() {
        Some(0) => {
            log::info!("scout core agent: started");
            Ok(LaunchOutcome::Started)
        }
        Some(3) => {
            log::info!("scout core agent: already running (launcher exit status 3)");
            Ok(LaunchOutcome::AlreadyRunning)
        }
        _ => Err(ManagerError::LaunchFailed {
            binary: binary.clone(),
            status: status.to_string(),
        }),
    }
}
