//! A minimal `log` backend for the binary: one line per record to stderr or a file.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use super::timestamp::Timestamp;

struct Logger {
    level: log::LevelFilter,
    out: Mutex<Box<dyn Write + Send>>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} [{}] {}\n",
            Timestamp::now(),
            record.level(),
            record.target(),
            record.args()
        );
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }

    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.flush();
    }
}

/// Parses `trace|debug|info|warn|error|off` (case-insensitive; `warning` accepted).
pub(crate) fn parse_level(s: &str) -> Option<log::LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => log::LevelFilter::Trace,
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" | "warning" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        "off" | "none" => log::LevelFilter::Off,
        _ => return None,
    })
}

/// Installs the logger (appending to `file` if given, else stderr). Fails if a logger is installed.
pub(crate) fn install(level: log::LevelFilter, file: Option<&Path>) -> io::Result<()> {
    let out: Box<dyn Write + Send> = match file {
        Some(p) => Box::new(File::options().create(true).append(true).open(p)?),
        None => Box::new(io::stderr()),
    };
    log::set_boxed_logger(Box::new(Logger {
        level,
        out: Mutex::new(out),
    }))
    .map_err(|e| io::Error::other(e.to_string()))?;
    log::set_max_level(level);
    Ok(())
}
