//! Command line of `scout-local-agent`, compatible with the core agent's `start` (spec 2.5).
//!
//! ```text
//! scout-local-agent start [--daemonize true|false] [--socket PATH | --tcp HOST:PORT]
//!                         [--log-level L] [--log-file F] [--config-file F] [--ca-cert F]
//!                         [--allow-remote] [--refresh SECS] [--export FILE]
//! scout-local-agent probe    [--socket PATH | --tcp HOST:PORT]
//! scout-local-agent summary  [--socket PATH | --tcp HOST:PORT]
//! scout-local-agent shutdown [--socket PATH | --tcp HOST:PORT]
//! ```
//!
//! Exit status: 0 success, 1 runtime failure, 2 usage error, 3 an agent is already running at the
//! address (`start`), 1 when no agent answers (`probe`, `summary`, `shutdown`).
//!
//! `--config-file F` is read as JSON: `{"export": "requests.jsonl"}` (a relative path is relative
//! to the file's directory; `--export` wins). A file that is not such JSON (for example the TOML
//! meant for Scout's core agent) is logged and ignored.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::address::Address;
use super::client;
use super::config::{Limits, LocalAgentConfig};
use super::logger;
use super::server::{LocalAgent, StartError};

/// Exit status: an agent already runs at the address.
pub const EXIT_ALREADY_RUNNING: i32 = 3;
/// Exit status: bad command line.
pub const EXIT_USAGE: i32 = 2;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Usage text.
pub const USAGE: &str = "\
scout-local-agent: a local Scout core agent that shows your traces in the terminal

USAGE:
  scout-local-agent start [OPTIONS]     run the agent (default: foreground, tcp://127.0.0.1:6590)
  scout-local-agent probe [ADDRESS]     print the version of the agent at ADDRESS (CoreAgentVersion)
  scout-local-agent summary [ADDRESS]   print the endpoint table and slowest trace of the agent at ADDRESS
  scout-local-agent shutdown [ADDRESS]  ask the agent at ADDRESS to exit (CoreAgentShutdown)

ADDRESS:
  --socket PATH          Unix socket path
  --tcp HOST:PORT        TCP address (loopback unless --allow-remote)

START OPTIONS:
  --daemonize true|false detach and exit once the agent answers (default false)
  --log-level LEVEL      trace|debug|info|warn|error (default info)
  --log-file FILE        append the log to FILE instead of stderr
  --config-file FILE     JSON settings, e.g. {\"export\": \"requests.jsonl\"}; other content is ignored
  --ca-cert FILE         accepted for compatibility, ignored
  --allow-remote         allow a non-loopback --tcp address
  --refresh SECS         print the summary every SECS seconds when something changed (default 10, 0 = off)
  --export FILE          append one JSON line per finished request to FILE
  --no-summary           do not print summaries (the log still records requests)

Exit status: 0 ok, 1 failure, 2 usage error, 3 already running at that address.
";

/// Options of `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartArgs {
    /// `--daemonize`.
    pub daemonize: bool,
    /// `--socket` / `--tcp`.
    pub address: Address,
    /// `--log-level`.
    pub log_level: log::LevelFilter,
    /// `--log-file`.
    pub log_file: Option<PathBuf>,
    /// `--config-file` (JSON, see [`read_config_file`]).
    pub config_file: Option<PathBuf>,
    /// `--allow-remote`.
    pub allow_remote: bool,
    /// `--refresh` (`None` = off).
    pub refresh: Option<Duration>,
    /// `--export`.
    pub export: Option<PathBuf>,
    /// `--no-summary`.
    pub no_summary: bool,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum CliCommand {
    /// `start`.
    Start(StartArgs),
    /// `probe`.
    Probe(Address),
    /// `summary`.
    Summary(Address),
    /// `shutdown`.
    Shutdown(Address),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{flag}: expected true or false, got {v:?}")),
    }
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<CliCommand, String> {
    let mut it = args.iter().map(String::as_str).peekable();
    let sub = match it.next() {
        None | Some("-h" | "--help" | "help") => return Ok(CliCommand::Help),
        Some("-V" | "--version" | "version") => return Ok(CliCommand::Version),
        Some(s @ ("start" | "probe" | "summary" | "shutdown")) => s,
        Some(other) => return Err(format!("unknown subcommand {other:?}")),
    };
    let mut a = StartArgs {
        daemonize: false,
        address: Address::default_tcp(),
        log_level: log::LevelFilter::Info,
        log_file: None,
        config_file: None,
        allow_remote: false,
        refresh: Some(Duration::from_secs(10)),
        export: None,
        no_summary: false,
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(CliCommand::Help),
            "--socket" | "--socket-path" => {
                let v = value()?;
                if v.is_empty() {
                    return Err("--socket: empty path".into());
                }
                a.address = Address::Unix(PathBuf::from(v));
            }
            "--tcp" => {
                let v = value()?;
                a.address = Address::parse_tcp(v.trim_start_matches("tcp://"))
                    .map_err(|e| format!("--tcp: {e}"))?;
            }
            "--address" => {
                a.address = Address::parse(&value()?).map_err(|e| format!("--address: {e}"))?;
            }
            "--daemonize" => a.daemonize = parse_bool(flag, &value()?)?,
            "--log-level" => {
                let v = value()?;
                a.log_level = logger::parse_level(&v)
                    .ok_or_else(|| format!("--log-level: unknown level {v:?}"))?;
            }
            "--log-file" => a.log_file = Some(PathBuf::from(value()?)),
            "--config-file" => a.config_file = Some(PathBuf::from(value()?)),
            "--ca-cert" => {
                value()?;
            }
            "--allow-remote" => a.allow_remote = true,
            "--refresh" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 1e9)
                    .ok_or_else(|| format!("--refresh: expected seconds, got {v:?}"))?;
                a.refresh = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
            }
            "--export" => a.export = Some(PathBuf::from(value()?)),
            "--no-summary" => a.no_summary = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(match sub {
        "probe" => CliCommand::Probe(a.address),
        "summary" => CliCommand::Summary(a.address),
        "shutdown" => CliCommand::Shutdown(a.address),
        _ => CliCommand::Start(a),
    })
}

/// Runs the command line (arguments after the program name); returns the exit status.
pub fn run(args: Vec<String>) -> i32 {
    let cmd = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scout-local-agent: {e}\n\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    match cmd {
        CliCommand::Help => {
            print!("{USAGE}");
            0
        }
        CliCommand::Version => {
            println!("scout-local-agent {}", env!("CARGO_PKG_VERSION"));
            0
        }
        CliCommand::Probe(addr) => match client::probe(&addr, PROBE_TIMEOUT) {
            Ok(v) => {
                println!("Agent found at {addr}: version {v}");
                0
            }
            Err(e) => {
                println!("No agent found at {addr}: {e}");
                1
            }
        },
        CliCommand::Summary(addr) => match client::summary(&addr, PROBE_TIMEOUT) {
            Ok(s) => {
                print!("{}", s.text);
                0
            }
            Err(e) => {
                eprintln!("scout-local-agent: no local agent summary from {addr}: {e}");
                1
            }
        },
        CliCommand::Shutdown(addr) => match client::request_shutdown(&addr, PROBE_TIMEOUT) {
            Ok(()) => {
                println!("Shutdown requested from the agent at {addr}");
                0
            }
            Err(e) => {
                eprintln!("scout-local-agent: cannot reach an agent at {addr}: {e}");
                1
            }
        },
        CliCommand::Start(a) => start(a, &args),
    }
}

/// Settings read from `--config-file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    /// `export`: the export file (relative paths are resolved against the file's directory).
    pub export: Option<PathBuf>,
}

/// Reads `--config-file`: a JSON object with an optional string `export`. Unknown keys are
/// logged and ignored; anything else (unreadable, not JSON, not an object) is an error that the
/// caller logs without failing, since the file may be meant for Scout's core agent.
pub fn read_config_file(path: &std::path::Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let mut out = FileSettings::default();
    for (key, v) in obj {
        match (key.as_str(), v) {
            ("export", serde_json::Value::String(p)) if !p.is_empty() => {
                let p = PathBuf::from(p);
                out.export = Some(match path.parent() {
                    Some(dir) if p.is_relative() => dir.join(p),
                    _ => p,
                });
            }
            ("export", _) => return Err("\"export\" must be a non-empty string".into()),
            (other, _) => log::warn!("{}: unknown key {other:?} ignored", path.display()),
        }
    }
    Ok(out)
}

fn start(mut a: StartArgs, raw_args: &[String]) -> i32 {
    if let Err(e) = logger::install(a.log_level, a.log_file.as_deref()) {
        eprintln!("scout-local-agent: cannot open log: {e}");
        return 1;
    }
    if let Some(f) = &a.config_file {
        match read_config_file(f) {
            Ok(settings) => {
                log::info!("read settings from {}", f.display());
                if a.export.is_none() {
                    a.export = settings.export;
                }
            }
            Err(e) => log::warn!("--config-file {}: {e}; ignored", f.display()),
        }
    }
    if a.daemonize {
        return daemonize(&a, raw_args);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the tokio runtime: {e}");
            return 1;
        }
    };
    rt.block_on(serve(a))
}

async fn serve(a: StartArgs) -> i32 {
    let mut config = LocalAgentConfig::new(a.address.clone());
    config.allow_remote = a.allow_remote;
    config.export = a.export.clone();
    config.limits = Limits::daemon();
    let agent = match LocalAgent::start(config).await {
        Ok(h) => h,
        Err(e @ StartError::AlreadyRunning(_)) => {
            log::error!("{e}");
            eprintln!("scout-local-agent: {e}");
            return EXIT_ALREADY_RUNNING;
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("scout-local-agent: {e}");
            return 1;
        }
    };
    let terminal = std::io::stdout().is_terminal();
    let show = |text: &str, clear: bool| {
        if a.no_summary {
            return;
        }
        let mut out = std::io::stdout().lock();
        if clear && terminal {
            let _ = out.write_all(b"\x1b[2J\x1b[H");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        if a.log_file.is_some() {
            log::info!("summary:\n{text}");
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot listen for SIGTERM: {e}");
            None
        }
    };
    let period = a.refresh.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = agent.counters();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT received"); break; }
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                log::info!("SIGTERM received");
                break;
            }
            () = agent.stopping() => break,
            _ = tick.tick() => {
                let now = agent.counters();
                if a.refresh.is_some() && now != last {
                    last = now;
                    show(&agent.summary(), true);
                }
            }
        }
    }
    agent.shutdown().await;
    show(&agent.summary(), false);
    0
}

/// Re-runs this executable with `--daemonize false`, detached, and waits until it answers.
fn daemonize(a: &StartArgs, raw_args: &[String]) -> i32 {
    if matches!(&a.address, Address::Tcp(sa) if sa.port() == 0) {
        log::error!("--daemonize true needs a fixed TCP port");
        return EXIT_USAGE;
    }
    if let Ok(v) = client::probe(&a.address, PROBE_TIMEOUT) {
        log::info!("an agent (version {v}) is already running at {}", a.address);
        return EXIT_ALREADY_RUNNING;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            log::error!("cannot find the current executable: {e}");
            return 1;
        }
    };
    // raw_args[0] is "start"; drop any --daemonize and re-add it as false.
    let mut args: Vec<String> = vec!["start".into(), "--daemonize".into(), "false".into()];
    let mut rest = raw_args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--daemonize" {
            rest.next();
        } else if !arg.starts_with("--daemonize=") {
            args.push(arg.clone());
        }
    }
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log::error!("cannot start the daemon: {e}");
            return 1;
        }
    };
    let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let code = status.code().unwrap_or(1);
                log::error!("the daemon exited early with status {code}");
                return if code == EXIT_ALREADY_RUNNING {
                    EXIT_ALREADY_RUNNING
                } else {
                    1
                };
            }
            Ok(None) => {}
            Err(e) => log::warn!("cannot poll the daemon: {e}"),
        }
        if client::probe(&a.address, Duration::from_millis(500)).is_ok() {
            log::info!("daemon (pid {}) is listening on {}", child.id(), a.address);
            return 0;
        }
        if Instant::now() > deadline {
            log::error!("the daemon did not answer within {DAEMON_READY_TIMEOUT:?}; stopping it");
            let _ = child.kill();
            let _ = child.wait();
            return 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CliCommand, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn python_launch_argv() {
        let CliCommand::Start(a) = parse(
            "start --daemonize true --log-level info --log-file /l --config-file /c --tcp 127.0.0.1:6590 --ca-cert /ca",
        )
        .unwrap() else {
            panic!()
        };
        assert!(a.daemonize);
        assert_eq!(a.address, Address::default_tcp());
        assert_eq!(a.log_file, Some(PathBuf::from("/l")));
        let CliCommand::Start(a) = parse("start --socket=/s.sock --refresh 0").unwrap() else {
            panic!()
        };
        assert_eq!(a.address, Address::Unix("/s.sock".into()));
        assert_eq!(a.refresh, None);
        assert_eq!(
            parse("probe --tcp localhost:1").unwrap(),
            CliCommand::Probe(Address::parse("tcp://127.0.0.1:1").unwrap())
        );
        assert!(parse("start --daemonize maybe").is_err());
        assert!(parse("start --tcp").is_err());
        assert!(parse("start --bogus").is_err());
        assert!(parse("frobnicate").is_err());
        assert_eq!(parse("").unwrap(), CliCommand::Help);
        assert_eq!(
            parse("summary --socket /s").unwrap(),
            CliCommand::Summary(Address::Unix("/s".into()))
        );
    }

    #[test]
    fn config_file() {
        let dir = std::env::temp_dir().join(format!("sla-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.json");
        std::fs::write(&f, r#"{"export": "out.jsonl", "other": 1}"#).unwrap();
        assert_eq!(
            read_config_file(&f).unwrap().export,
            Some(dir.join("out.jsonl"))
        );
        std::fs::write(&f, r#"{"export": "/abs/out.jsonl"}"#).unwrap();
        assert_eq!(
            read_config_file(&f).unwrap().export,
            Some(PathBuf::from("/abs/out.jsonl"))
        );
        std::fs::write(&f, "[debug]\ningest_url = \"x\"\n").unwrap();
        assert!(read_config_file(&f).is_err());
        std::fs::write(&f, r#"{"export": 5}"#).unwrap();
        assert!(read_config_file(&f).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
