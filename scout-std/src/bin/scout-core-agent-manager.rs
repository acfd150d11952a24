//! `scout-core-agent-manager`: operator CLI for Scout's core agent.
//!
//! ```text
//! scout-core-agent-manager [-v|-vv] <download|verify|launch|ensure|probe|shutdown>
//! ```
//!
//! Settings come from the `SCOUT_*` environment variables documented in
//! `docs/core-agent-manager.md`. Exit codes: 0 success, 1 the operation failed, 2 usage error,
//! 3 no core agent answered (`probe`, `shutdown`).

use std::io::Write;
use std::process::ExitCode;

use scout_std::manager::{self, DownloadOutcome, LaunchOutcome, ManagerConfig, ManagerError};

const USAGE: &str = "\
usage: scout-core-agent-manager [-v|-vv] <command>

commands:
  download   verify the installed core agent, download it if needed
  verify     check manifest.json and the binary's SHA-256, download nothing
  launch     verify, then start the core agent (exit status 3 of the binary = already running)
  ensure     probe; if nothing answers: verify, download if needed, launch
  probe      ask the core agent at the socket address for its version
  shutdown   ask the core agent at the socket address to exit

options:
  -v         info logging to stderr; -vv debug logging
  -h         this help

settings (environment): SCOUT_CORE_AGENT_DIR, SCOUT_CORE_AGENT_VERSION, SCOUT_CORE_AGENT_TRIPLE,
  SCOUT_CORE_AGENT_FULL_NAME, SCOUT_DOWNLOAD_URL, SCOUT_CORE_AGENT_DOWNLOAD, SCOUT_CORE_AGENT_LAUNCH,
  SCOUT_CORE_AGENT_PERMISSIONS, SCOUT_CORE_AGENT_SOCKET_PATH, SCOUT_CORE_AGENT_LOG_LEVEL,
  SCOUT_CORE_AGENT_LOG_FILE, SCOUT_CORE_AGENT_CONFIG_FILE, SCOUT_CORE_AGENT_CA_CERT

exit codes: 0 success, 1 failure, 2 usage error, 3 no core agent answered (probe, shutdown)";

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;

/// Minimal stderr logger for `-v` / `-vv`.
#[derive(Debug)]
struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.0
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(
                std::io::stderr(),
                "[{} {}] {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let mut verbosity = 0u8;
    let mut command: Option<String> = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-v" => verbosity = verbosity.saturating_add(1),
            "-vv" => verbosity = verbosity.saturating_add(2),
            a if a.starts_with('-') => {
                eprintln!("scout-core-agent-manager: unknown option {a:?}\n\n{USAGE}");
                return ExitCode::from(EXIT_USAGE);
            }
            a => {
                if let Some(prev) = &command {
                    eprintln!(
                        "scout-core-agent-manager: more than one command ({prev:?}, {a:?})\n\n{USAGE}"
                    );
                    return ExitCode::from(EXIT_USAGE);
                }
                command = Some(a.to_owned());
            }
        }
    }
    let level = match verbosity {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    if log::set_boxed_logger(Box::new(StderrLogger(level))).is_ok() {
        log::set_max_level(level);
    }
    let Some(command) = command else {
        eprintln!("scout-core-agent-manager: no command given\n\n{USAGE}");
        return ExitCode::from(EXIT_USAGE);
    };

    let mut cfg = ManagerConfig::default();
    for problem in cfg.apply_env(std::env::vars()) {
        eprintln!("scout-core-agent-manager: warning: {problem} (ignored)");
    }
    let result = match command.as_str() {
        "download" => cmd_download(&cfg),
        "verify" => cmd_verify(&cfg),
        "launch" => cmd_launch(&cfg),
        "ensure" => cmd_ensure(&cfg),
        "probe" => cmd_probe(&cfg),
        "shutdown" => cmd_shutdown(&cfg),
        other => {
            eprintln!("scout-core-agent-manager: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("scout-core-agent-manager: {command} failed: {e}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<(), (u8, ManagerError)>;

fn failed(e: ManagerError) -> (u8, ManagerError) {
    (EXIT_FAILED, e)
}

fn not_answering(e: ManagerError) -> (u8, ManagerError) {
    match e {
        ManagerError::Socket { .. } | ManagerError::Timeout { .. } => (EXIT_NOT_RUNNING, e),
        e => (EXIT_FAILED, e),
    }
}

fn cmd_download(cfg: &ManagerConfig) -> CmdResult {
    let outcome = manager::download(cfg).map_err(failed)?;
    let what = match &outcome {
        DownloadOutcome::AlreadyPresent(_) => "already present, not downloaded",
        DownloadOutcome::Downloaded(_) => "downloaded and verified",
        DownloadOutcome::DownloadedByOther(_) => "downloaded by another process, verified",
    };
    let v = outcome.verified();
    println!(
        "core agent {} {what}: {}",
        v.manifest.core_agent_version,
        v.binary.display()
    );
    Ok(())
}

fn cmd_verify(cfg: &ManagerConfig) -> CmdResult {
    let v = manager::verify(cfg).map_err(failed)?;
    println!(
        "core agent {} verified: {} sha256 {}",
        v.manifest.core_agent_version,
        v.binary.display(),
        v.manifest.core_agent_binary_sha256
    );
    Ok(())
}

fn cmd_launch(cfg: &ManagerConfig) -> CmdResult {
    match manager::launch(cfg).map_err(failed)? {
        LaunchOutcome::Started => println!("core agent started at {}", cfg.socket_address),
        LaunchOutcome::AlreadyRunning => {
            println!("core agent already running (exit status 3)");
        }
    }
    Ok(())
}

fn cmd_ensure(cfg: &ManagerConfig) -> CmdResult {
    let outcome = manager::ensure_running(cfg).map_err(failed)?;
    println!("{outcome:?}");
    Ok(())
}

fn cmd_probe(cfg: &ManagerConfig) -> CmdResult {
    let version = manager::probe(&cfg.socket_address, cfg.probe_timeout).map_err(not_answering)?;
    println!(
        "core agent running at {} (version {})",
        cfg.socket_address,
        version.as_deref().unwrap_or("unknown")
    );
    Ok(())
}

fn cmd_shutdown(cfg: &ManagerConfig) -> CmdResult {
    manager::shutdown(&cfg.socket_address, cfg.probe_timeout).map_err(not_answering)?;
    println!("shutdown sent to core agent at {}", cfg.socket_address);
    Ok(())
}
