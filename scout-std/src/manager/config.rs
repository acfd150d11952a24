//! Settings of the core-agent manager and their `SCOUT_*` environment form.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default `core_agent_dir` (spec §3.2).
pub const DEFAULT_CORE_AGENT_DIR: &str = "/tmp/scout_apm_core";
/// Default `core_agent_version` (spec §2.1).
pub const DEFAULT_CORE_AGENT_VERSION: &str = "v1.6.0";
/// Default `download_url` (spec §2.1).
pub const DEFAULT_DOWNLOAD_URL: &str =
    "https://s3-us-west-1.amazonaws.com/scout-public-downloads/apm_core_agent/release";
/// Default `core_agent_socket_path` (spec §1.1).
pub const DEFAULT_SOCKET_ADDRESS: &str = "tcp://127.0.0.1:6590";
/// Default `core_agent_permissions` (spec §2.2).
pub const DEFAULT_PERMISSIONS: u32 = 0o700;

/// Everything the manager needs to download, verify and launch Scout's core agent.
///
/// The first group of fields mirrors the `core_agent_*` configuration keys of spec §3.2;
/// the second group bounds the time and space the manager may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// `core_agent_dir`: parent of the working directory (default `/tmp/scout_apm_core`).
    pub core_agent_dir: PathBuf,
    /// `core_agent_version`, e.g. `v1.6.0` (default) or `latest`.
    pub core_agent_version: String,
    /// `core_agent_triple`: overrides the detected platform triple when set.
    pub core_agent_triple: Option<String>,
    /// `core_agent_full_name`: overrides `scout_apm_core-<version>-<triple>` when set.
    pub core_agent_full_name: Option<String>,
    /// `download_url`: base URL the archive `<full name>.tgz` is fetched from.
    pub download_url: String,
    /// `core_agent_download`: download the core agent when no verified copy exists.
    pub core_agent_download: bool,
    /// `core_agent_launch`: start the core agent when none answers.
    pub core_agent_launch: bool,
    /// `core_agent_permissions`: mode of the working directory (default `0o700`).
    pub core_agent_permissions: u32,
    /// `core_agent_socket_path`: `tcp://host:port` or a Unix socket path.
    pub socket_address: String,
    /// `core_agent_log_level`: passed as `--log-level` (default `info`).
    pub log_level: String,
    /// `core_agent_log_file`: passed as `--log-file` when set.
    pub log_file: Option<PathBuf>,
    /// `core_agent_config_file`: passed as `--config-file` when set.
    pub config_file: Option<PathBuf>,
    /// `core_agent_ca_cert`: passed as `--ca-cert` when set.
    pub ca_cert: Option<PathBuf>,

    /// TCP connect timeout of the download (default 10 s).
    pub connect_timeout: Duration,
    /// Total time one download attempt may take, body included (default 60 s).
    pub download_timeout: Duration,
    /// Extra download attempts after a failed one (default 3). 4xx answers are not retried.
    pub download_retries: u32,
    /// Wait before the first retry; doubled for each further retry (default 1 s).
    pub retry_backoff: Duration,
    /// How long to wait for another process holding `download.lock` (default 150 s, a bit
    /// more than the 120 s after which an abandoned lock is taken over).
    pub lock_wait: Duration,
    /// How long the launched binary may take to daemonize and exit (default 30 s).
    pub launch_timeout: Duration,
    /// Timeout of the socket probe done before launching (default 2 s).
    pub probe_timeout: Duration,
    /// Largest archive accepted from the server (default 256 MiB).
    pub max_download_bytes: u64,
    /// Largest total size of the extracted archive members (default 512 MiB).
    pub max_extracted_bytes: u64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            core_agent_dir: PathBuf::from(DEFAULT_CORE_AGENT_DIR),
            core_agent_version: DEFAULT_CORE_AGENT_VERSION.to_owned(),
            core_agent_triple: None,
            core_agent_full_name: None,
            download_url: DEFAULT_DOWNLOAD_URL.to_owned(),
            core_agent_download: true,
            core_agent_launch: true,
            core_agent_permissions: DEFAULT_PERMISSIONS,
            socket_address: DEFAULT_SOCKET_ADDRESS.to_owned(),
            log_level: "info".to_owned(),
            log_file: None,
            config_file: None,
            ca_cert: None,
            connect_timeout: Duration::from_secs(10),
            download_timeout: Duration::from_secs(60),
            download_retries: 3,
            retry_backoff: Duration::from_secs(1),
            lock_wait: Duration::from_secs(150),
            launch_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(2),
            max_download_bytes: 256 * 1024 * 1024,
            max_extracted_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Parses a boolean setting: `true/false/yes/no/t/f/1/0` in any case (surrounding spaces ignored).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "t" | "1" => Some(true),
        "false" | "no" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// Parses an octal permission setting such as `700`, `0700` or `0o750` (at most `7777`).
pub fn parse_octal_mode(value: &str) -> Option<u32> {
    let v = value.trim();
    let v = v.strip_prefix("0o").unwrap_or(v);
    if v.is_empty() || v.len() > 5 {
        return None;
    }
    let mode = u32::from_str_radix(v, 8).ok()?;
    (mode <= 0o7777).then_some(mode)
}

fn non_empty(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

impl ManagerConfig {
    /// Applies `SCOUT_*` settings from `(name, value)` pairs, e.g. `std::env::vars()`.
    ///
    /// Recognised names: `SCOUT_CORE_AGENT_DIR`, `SCOUT_CORE_AGENT_VERSION`,
    /// `SCOUT_CORE_AGENT_TRIPLE`, `SCOUT_CORE_AGENT_FULL_NAME`, `SCOUT_DOWNLOAD_URL`,
    /// `SCOUT_CORE_AGENT_DOWNLOAD`, `SCOUT_CORE_AGENT_LAUNCH`, `SCOUT_CORE_AGENT_PERMISSIONS`,
    /// `SCOUT_CORE_AGENT_SOCKET_PATH`, `SCOUT_CORE_AGENT_LOG_LEVEL`, `SCOUT_CORE_AGENT_LOG_FILE`,
    /// `SCOUT_CORE_AGENT_CONFIG_FILE`, `SCOUT_CORE_AGENT_CA_CERT`, plus the deprecated aliases
    /// `SCOUT_SOCKET_PATH`, `SCOUT_LOG_LEVEL`, `SCOUT_LOG_FILE`, `SCOUT_CONFIG_FILE`, which win
    /// when set (spec §3.2). Other names are ignored. Empty values of optional settings unset them.
    ///
    /// A value that cannot be parsed leaves that setting unchanged and yields one message in the
    /// returned list; all other settings are still applied.
    pub fn apply_env<I>(&mut self, vars: I) -> Vec<String>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SCOUT_"))
            .collect();
        let get = |primary: &str, alias: Option<&str>| -> Option<&String> {
            alias
                .and_then(|a| vars.get(a))
                .or_else(|| vars.get(primary))
        };
        let mut errors = Vec::new();

        if let Some(v) = get("SCOUT_CORE_AGENT_DIR", None) {
            match non_empty(v) {
                Some(v) => self.core_agent_dir = PathBuf::from(v),
                None => errors.push("SCOUT_CORE_AGENT_DIR is empty".to_owned()),
            }
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_VERSION", None) {
            match non_empty(v) {
                Some(v) => self.core_agent_version = v,
                None => errors.push("SCOUT_CORE_AGENT_VERSION is empty".to_owned()),
            }
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_TRIPLE", None) {
            self.core_agent_triple = non_empty(v);
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_FULL_NAME", None) {
            self.core_agent_full_name = non_empty(v);
        }
        if let Some(v) = get("SCOUT_DOWNLOAD_URL", None) {
            match non_empty(v) {
                Some(v) => self.download_url = v,
                None => errors.push("SCOUT_DOWNLOAD_URL is empty".to_owned()),
            }
        }
        for (name, field) in [
            ("SCOUT_CORE_AGENT_DOWNLOAD", &mut self.core_agent_download),
            ("SCOUT_CORE_AGENT_LAUNCH", &mut self.core_agent_launch),
        ] {
            if let Some(v) = vars.get(name) {
                match parse_bool(v) {
                    Some(b) => *field = b,
                    None => errors.push(format!(
                        "{name}={v:?} is not a boolean (use true/false, yes/no, t/f or 1/0)"
                    )),
                }
            }
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_PERMISSIONS", None) {
            match parse_octal_mode(v) {
                Some(m) => self.core_agent_permissions = m,
                None => errors.push(format!(
                    "SCOUT_CORE_AGENT_PERMISSIONS={v:?} is not an octal mode such as 700"
                )),
            }
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_SOCKET_PATH", Some("SCOUT_SOCKET_PATH")) {
            match non_empty(v) {
                Some(v) => self.socket_address = v,
                None => errors.push("SCOUT_CORE_AGENT_SOCKET_PATH is empty".to_owned()),
            }
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_LOG_LEVEL", Some("SCOUT_LOG_LEVEL")) {
            match non_empty(v) {
                Some(v) => self.log_level = v,
                None => errors.push("SCOUT_CORE_AGENT_LOG_LEVEL is empty".to_owned()),
            }
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_LOG_FILE", Some("SCOUT_LOG_FILE")) {
            self.log_file = non_empty(v).map(PathBuf::from);
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_CONFIG_FILE", Some("SCOUT_CONFIG_FILE")) {
            self.config_file = non_empty(v).map(PathBuf::from);
        }
        if let Some(v) = get("SCOUT_CORE_AGENT_CA_CERT", None) {
            self.ca_cert = non_empty(v).map(PathBuf::from);
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "Yes", "t", "1", " T "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "No", "F", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_bool(""), None);
    }

    #[test]
    fn octal() {
        assert_eq!(parse_octal_mode("700"), Some(0o700));
        assert_eq!(parse_octal_mode("0750"), Some(0o750));
        assert_eq!(parse_octal_mode("0o755"), Some(0o755));
        assert_eq!(parse_octal_mode("800"), None);
        assert_eq!(parse_octal_mode("77777"), None);
        assert_eq!(parse_octal_mode(""), None);
    }

    #[test]
    fn env_applies_good_values_and_reports_bad_ones() {
        let mut cfg = ManagerConfig::default();
        let errors = cfg.apply_env(vars(&[
            ("SCOUT_CORE_AGENT_DIR", "/opt/scout"),
            ("SCOUT_CORE_AGENT_DOWNLOAD", "nope"),
            ("SCOUT_CORE_AGENT_LAUNCH", "No"),
            ("SCOUT_CORE_AGENT_PERMISSIONS", "9"),
            ("SCOUT_CORE_AGENT_SOCKET_PATH", "/run/a.sock"),
            ("SCOUT_SOCKET_PATH", "/run/b.sock"),
            ("SCOUT_CORE_AGENT_LOG_FILE", ""),
            ("SCOUT_CORE_AGENT_CA_CERT", "/etc/ca.pem"),
            ("SCOUT_KEY", "secret"),
            ("PATH", "/bin"),
        ]));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("SCOUT_CORE_AGENT_DOWNLOAD"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("SCOUT_CORE_AGENT_PERMISSIONS"))
        );
        assert!(!errors.iter().any(|e| e.contains("secret")));
        assert_eq!(cfg.core_agent_dir, PathBuf::from("/opt/scout"));
        assert!(cfg.core_agent_download);
        assert!(!cfg.core_agent_launch);
        assert_eq!(cfg.core_agent_permissions, 0o700);
        assert_eq!(cfg.socket_address, "/run/b.sock");
        assert_eq!(cfg.log_file, None);
        assert_eq!(cfg.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
    }
}
