//! The `scout.metadata` event sent once per install, and the CPU and memory samplers.

use crate::sender::frame_of;
use scout_core::command::ApplicationEvent;
use scout_core::{Config, RawJson, Value};
use std::time::Instant;

/// The Rust compiler that built the agent (from the build script).
pub const RUSTC_VERSION: &str = env!("SCOUT_RUSTC_VERSION");

fn source() -> String {
    format!("Pid: {}", std::process::id())
}

fn event_frame(event_type: &str, value: Value<'_>) -> Vec<u8> {
    let src = source();
    let ev = ApplicationEvent {
        timestamp: crate::agent::now(),
        event_type,
        event_value: value,
        source: &src,
    };
    frame_of(&ev, Vec::new()).unwrap_or_default()
}

/// The metadata event: the same keys as the Python agent's (spec §1.4.9), with `language`
/// `rust` and the compiler's version.
pub(crate) fn metadata_frame(cfg: &Config, libraries: &[(String, String)]) -> Vec<u8> {
    let ts = crate::agent::now().to_rfc3339();
    let server_time = String::from_utf8_lossy(&ts).into_owned();
    let mut libs: Vec<(String, String)> = vec![
        ("scout-core".into(), scout_core::VERSION.into()),
        ("scout-std".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    libs.extend(libraries.iter().cloned());
    libs.sort();
    libs.dedup();
    let value = serde_json::json!({
        "language": "rust",
        "language_version": RUSTC_VERSION,
        "server_time": server_time,
        "framework": cfg.framework.as_str(),
        "framework_version": cfg.framework_version.as_str(),
        "environment": cfg.environment.map(|e| e.as_str().to_owned()).unwrap_or_default(),
        "app_server": cfg.app_server.as_str(),
        "hostname": cfg.hostname.map(|h| h.as_str().to_owned()),
        "database_engine": "",
        "database_adapter": "",
        "application_name": cfg.name.as_str(),
        "libraries": libs.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "paas": "",
        "application_root": cfg.application_root.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        "scm_subdirectory": cfg.scm_subdirectory.as_str(),
        "git_sha": cfg.revision_sha.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        "version": RUSTC_VERSION,
    });
    let text = value.to_string();
    match RawJson::new(&text) {
        Ok(raw) => event_frame("scout.metadata", Value::Json(raw)),
        Err(_) => Vec::new(),
    }
}

/// CPU and memory samplers (spec §4.10), with the CPU baseline advanced on every sample (the
/// Python agent never advances it, so its figure drifts).
#[derive(Debug)]
pub(crate) struct Samplers {
    last: Option<(Instant, f64)>,
    cpus: f64,
}

impl Samplers {
    pub(crate) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Self { last: None, cpus }
    }

    /// The events due now: `CPU/Utilization` (percent of all cores since the last sample) and
    /// `Memory/Physical` (resident set, MB). A figure that cannot be read is skipped.
    pub(crate) fn sample(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let now = Instant::now();
        if let Some(cpu) = process_cpu_seconds() {
            let pct = match self.last {
                Some((t, c)) => {
                    cpu_percent(now.duration_since(t).as_secs_f64(), cpu - c, self.cpus)
                }
                None => Some(0.0),
            };
            self.last = Some((now, cpu));
            if let Some(p) = pct {
                frames.push(event_frame("CPU/Utilization", Value::Float(p)));
            }
        }
        if let Some(mb) = resident_mb() {
            frames.push(event_frame("Memory/Physical", Value::Float(mb)));
        }
        frames
    }
}

/// Percent of `cpus` cores used: CPU seconds over wall seconds times cores. None when time
/// went backwards (e.g. after a fork).
pub(crate) fn cpu_percent(wall_secs: f64, cpu_secs: f64, cpus: f64) -> Option<f64> {
    if wall_secs <= 0.0 || cpu_secs < 0.0 || cpus <= 0.0 {
        return None;
    }
    Some(cpu_secs / (wall_secs * cpus) * 100.0)
}

/// User + system CPU time of this process, in seconds (Linux `/proc`; ticks at 100 Hz).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident set size in MB (Linux `/proc`).
fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_arithmetic() {
        assert_eq!(cpu_percent(10.0, 5.0, 2.0), Some(25.0));
        assert_eq!(cpu_percent(0.0, 5.0, 2.0), None);
        assert_eq!(cpu_percent(1.0, -1.0, 2.0), None);
    }

    #[test]
    fn samplers_advance_baseline() {
        let mut s = Samplers::new();
        let first = s.sample();
        assert!(!first.is_empty());
        let t0 = s.last.unwrap().0;
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.sample();
        assert!(s.last.unwrap().0 > t0, "baseline moves with every sample");
    }
}
