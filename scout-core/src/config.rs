//! Agent configuration: documented defaults, `const` builders, and `SCOUT_*` environment layering.
//!
//! A complete configuration can be a `const` or `static`, so firmware configures at compile
//! time:
//!
//! ```
//! use scout_core::Config;
//! const CONFIG: Config = Config::new().name("Checkout").key("abc123").monitor(true);
//! assert_eq!(CONFIG.name.as_str(), "Checkout");
//! ```
//!
//! Environment variables override code, which overrides defaults. The core takes the
//! environment as key/value pairs (it has no `std`); a value that does not parse is reported
//! with the variable's name and value (never the value of `SCOUT_KEY`) and every other variable
//! still applies:
//!
//! ```
//! use scout_core::Config;
//! let mut cfg = Config::new().name("From code");
//! let env = [("SCOUT_MONITOR", "Yes"), ("SCOUT_SAMPLE_RATE", "fifty"), ("PATH", "/bin")];
//! let mut errors = 0;
//! let report = cfg.apply_env(env, |e| {
//!     assert_eq!(e.variable, "SCOUT_SAMPLE_RATE");
//!     errors += 1;
//! });
//! assert!(cfg.monitor);
//! assert_eq!(report.applied, 1);
//! assert_eq!(errors, 1);
//! ```
//!
//! Unlike the Python agent (spec §3.3), every boolean key accepts `true/false/yes/no/t/f/1/0` in
//! any case, numbers that do not parse are errors rather than `0.0`, and a value longer than a
//! field's documented capacity is an error, never silently cut.

/// Capacity of short text settings (key, versions, framework names, log level).
pub const SHORT_CAP: usize = 64;
/// Capacity of name-like settings (app name, host name, full name, triple).
pub const NAME_CAP: usize = 255;
/// Capacity of path and URL settings.
pub const PATH_CAP: usize = 512;
/// Capacity of one entry of a list setting (an ignore prefix, an instrument name).
pub const ITEM_CAP: usize = 128;
/// Maximum number of entries in a list or rate-map setting.
pub const LIST_CAP: usize = 16;

/// Text held either by `'static` reference (const builders) or inline (runtime values), with a
/// capacity of `N` bytes.
#[derive(Clone, Copy)]
pub struct Str<const N: usize> {
    repr: StrRepr<N>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum StrRepr<const N: usize> {
    Static(&'static str),
    Inline { buf: [u8; N], len: u16 },
}

impl<const N: usize> Str<N> {
    /// The empty string.
    pub const EMPTY: Self = Self {
        repr: StrRepr::Static(""),
    };

    /// Wraps `'static` text (no capacity limit applies).
    pub const fn from_static(s: &'static str) -> Self {
        Self {
            repr: StrRepr::Static(s),
        }
    }

    /// Copies `s`, or fails if it is longer than `N` bytes.
    pub fn try_from_str(s: &str) -> Result<Self, ErrorKind> {
        if s.len() > N || s.len() > u16::MAX as usize {
            return Err(ErrorKind::TooLong { max: N });
        }
        let mut buf = [0u8; N];
        buf[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self {
            repr: StrRepr::Inline {
                buf,
                len: s.len() as u16,
            },
        })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.repr {
            StrRepr::Static(s) => s,
            StrRepr::Inline { buf, len } => {
                core::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or("")
            }
        }
    }
}

impl<const N: usize> core::fmt::Debug for Str<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> PartialEq for Str<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A list of text entries (`ignore`, `disabled_instruments`, ...).
#[derive(Clone, Copy)]
pub struct List {
    repr: ListRepr,
    path: bool,
}

// Inline storage is the point (no heap in the core); the static variant is just smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum ListRepr {
    Static(&'static [&'static str]),
    Inline {
        items: [Str<ITEM_CAP>; LIST_CAP],
        len: u8,
    },
}

impl List {
    /// The empty list.
    pub const EMPTY: Self = Self {
        repr: ListRepr::Static(&[]),
        path: false,
    };
    const EMPTY_PATHS: Self = Self {
        repr: ListRepr::Static(&[]),
        path: true,
    };

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.repr {
            ListRepr::Static(s) => s.len(),
            ListRepr::Inline { len, .. } => usize::from(*len),
        }
    }
    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The entries. Path lists yield entries with surrounding spaces and leading `/` removed
    /// (`"/health, /admin/"` yields `health`, `admin/`); empty entries are skipped.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let path = self.path;
        (0..self.len()).filter_map(move |i| {
            let raw = match &self.repr {
                ListRepr::Static(s) => s[i],
                ListRepr::Inline { items, .. } => items[i].as_str(),
            };
            let v = if path {
                normalize_path(raw)
            } else {
                raw.trim()
            };
            (!v.is_empty()).then_some(v)
        })
    }
    /// True if `name` starts with any entry.
    pub fn matches_prefix(&self, name: &str) -> bool {
        self.iter().any(|p| name.starts_with(p))
    }

    fn parse(value: &str, path: bool) -> Result<Self, ErrorKind> {
        let mut items = [Str::EMPTY; LIST_CAP];
        let mut len = 0usize;
        for piece in value.split(',') {
            let piece = if path {
                normalize_path(piece)
            } else {
                piece.trim()
            };
            if piece.is_empty() {
                continue;
            }
            if len == LIST_CAP {
                return Err(ErrorKind::TooManyItems { max: LIST_CAP });
            }
            items[len] = Str::try_from_str(piece)?;
            len += 1;
        }
        Ok(Self {
            repr: ListRepr::Inline {
                items,
                len: len as u8,
            },
            path,
        })
    }
}

impl core::fmt::Debug for List {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn normalize_path(s: &str) -> &str {
    s.trim().trim_start_matches('/').trim()
}

/// Prefix-to-rate pairs (`sample_endpoints`, `sample_jobs`).
#[derive(Clone, Copy)]
pub struct RateMap {
    repr: RateRepr,
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum RateRepr {
    Static(&'static [(&'static str, f64)]),
    Inline {
        items: [(Str<ITEM_CAP>, f64); LIST_CAP],
        len: u8,
    },
}

impl RateMap {
    /// No entries.
    pub const EMPTY: Self = Self {
        repr: RateRepr::Static(&[]),
    };

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.repr {
            RateRepr::Static(s) => s.len(),
            RateRepr::Inline { len, .. } => usize::from(*len),
        }
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `(prefix, rate)` pairs; prefixes path-normalised, rates in `[0, 1]`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        (0..self.len()).map(move |i| {
            let (p, r) = match &self.repr {
                RateRepr::Static(s) => (s[i].0, s[i].1),
                RateRepr::Inline { items, .. } => (items[i].0.as_str(), items[i].1),
            };
            (normalize_path(p), normalize_rate(r))
        })
    }
    /// The rate of the longest prefix of `name`, if any.
    pub fn rate_for(&self, name: &str) -> Option<f64> {
        self.iter()
            .filter(|(p, _)| name.starts_with(p))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, r)| r)
    }

    fn parse(value: &str) -> Result<Self, ErrorKind> {
        let mut items = [(Str::EMPTY, 0.0); LIST_CAP];
        let mut len = 0usize;
        for pair in value.split(',') {
            if pair.trim().is_empty() {
                continue;
            }
            let mut it = pair.splitn(2, ':');
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                return Err(ErrorKind::InvalidRateMap);
            };
            let k = normalize_path(k);
            let rate = parse_rate(v).map_err(|_| ErrorKind::InvalidRateMap)?;
            if len == LIST_CAP {
                return Err(ErrorKind::TooManyItems { max: LIST_CAP });
            }
            items[len] = (Str::try_from_str(k)?, rate);
            len += 1;
        }
        Ok(Self {
            repr: RateRepr::Inline {
                items,
                len: len as u8,
            },
        })
    }
}

impl core::fmt::Debug for RateMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Rates above 1 are percentages; the result is clamped to `[0, 1]`.
const fn normalize_rate(r: f64) -> f64 {
    let r = if r > 1.0 { r / 100.0 } else { r };
    if r < 0.0 || r.is_nan() {
        0.0
    } else if r > 1.0 {
        1.0
    } else {
        r
    }
}

/// How the `path` request tag reports query strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UriReporting {
    /// Path plus query parameters, sensitive values replaced by `[FILTERED]` (default).
    FilteredParams,
    /// Path only.
    Path,
}

/// Why a setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not a known setting.
    UnknownKey,
    /// Not one of true/false/yes/no/t/f/1/0.
    InvalidBool,
    /// Not a finite number.
    InvalidNumber,
    /// Not a rate: a number from 0 to 1, or a percentage up to 100.
    InvalidRate,
    /// Not `prefix:rate` pairs separated by commas.
    InvalidRateMap,
    /// Not an octal permission mode such as 700.
    InvalidOctal,
    /// Not one of the accepted words.
    InvalidChoice,
    /// Longer than the field holds.
    TooLong {
        /// Capacity in bytes.
        max: usize,
    },
    /// More entries than the list holds.
    TooManyItems {
        /// Capacity in entries.
        max: usize,
    },
}

impl core::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownKey => f.write_str("unknown setting"),
            Self::InvalidBool => f.write_str("not a boolean (expected true/false/yes/no/t/f/1/0)"),
            Self::InvalidNumber => f.write_str("not a number"),
            Self::InvalidRate => f.write_str("not a rate (0 to 1, or a percentage from 0 to 100)"),
            Self::InvalidRateMap => f.write_str("not a list of prefix:rate pairs"),
            Self::InvalidOctal => f.write_str("not an octal permission mode (e.g. 700)"),
            Self::InvalidChoice => f.write_str("not one of the accepted values"),
            Self::TooLong { max } => write!(f, "longer than {max} bytes"),
            Self::TooManyItems { max } => write!(f, "more than {max} entries"),
        }
    }
}

/// A refused environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvError<'a> {
    /// The variable, e.g. `SCOUT_MONITOR`.
    pub variable: &'a str,
    /// Its value, or `None` for secret settings (`SCOUT_KEY`), which are never shown.
    pub value: Option<&'a str>,
    /// What is wrong with it.
    pub kind: ErrorKind,
}

impl core::fmt::Display for EnvError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.value {
            Some(v) => write!(f, "{}={:?} ignored: {}", self.variable, v, self.kind),
            None => write!(f, "{} ignored: {}", self.variable, self.kind),
        }
    }
}

/// What [`Config::apply_env`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EnvReport {
    /// Variables applied.
    pub applied: u32,
    /// Variables refused (each was passed to the error callback).
    pub rejected: u32,
    /// `SCOUT_*` variables that name no setting (ignored).
    pub unknown: u32,
    /// Deprecated aliases not applied because the current name was also set.
    pub overridden: u32,
}

/// The agent's settings. Field docs give each default; see the crate docs for the layering.
#[derive(Clone, Copy)]
pub struct Config {
    /// Master switch; nothing is recorded or sent without it. Default `false`.
    pub monitor: bool,
    /// Organisation key (secret: never logged). Default empty.
    pub key: Str<SHORT_CAP>,
    /// Application name. Default `"Rust App"`.
    pub name: Str<NAME_CAP>,
    /// Host name reported to Scout. Default: the OS host name (std), none on devices.
    pub hostname: Option<Str<NAME_CAP>>,
    /// Deployed revision. Default: `SCOUT_REVISION_SHA`, then `HEROKU_SLUG_COMMIT`, then a
    /// build-time SHA (std).
    pub revision_sha: Option<Str<SHORT_CAP>>,
    /// Application root directory. Default: the working directory (std).
    pub application_root: Option<Str<PATH_CAP>>,
    /// Subdirectory of the repository holding the application. Default empty.
    pub scm_subdirectory: Str<PATH_CAP>,
    /// Framework name reported in metadata. Default empty.
    pub framework: Str<SHORT_CAP>,
    /// Framework version reported in metadata. Default empty.
    pub framework_version: Str<SHORT_CAP>,
    /// Application server reported in metadata. Default empty.
    pub app_server: Str<SHORT_CAP>,
    /// Environment name (error reports). Default none.
    pub environment: Option<Str<SHORT_CAP>>,
    /// Tag web requests with the client's IP (`user_ip`). Default `true`.
    pub collect_remote_ip: bool,
    /// How the `path` tag reports query strings. Default filtered parameters.
    pub uri_reporting: UriReporting,
    /// Web path prefixes whose requests are ignored (deprecated in favour of
    /// `ignore_endpoints`, still honoured). Default empty.
    pub ignore: List,
    /// Endpoint name prefixes that are never reported. Default empty.
    pub ignore_endpoints: List,
    /// Job name prefixes that are never reported. Default empty.
    pub ignore_jobs: List,
    /// Share of transactions reported, 0 to 1 (values above 1 are percentages). Default 1.
    pub sample_rate: f64,
    /// Share of endpoints reported; overrides `sample_rate` for web transactions.
    pub endpoint_sample_rate: Option<f64>,
    /// Share of jobs reported; overrides `sample_rate` for background jobs.
    pub job_sample_rate: Option<f64>,
    /// Per-endpoint-prefix rates (`"users:40,health:0"`); the longest matching prefix wins.
    pub sample_endpoints: RateMap,
    /// Per-job-prefix rates.
    pub sample_jobs: RateMap,
    /// Names of library instruments not to install. Default empty.
    pub disabled_instruments: List,
    /// Log full payloads at debug level (never the key). Default `false`.
    pub log_payload_content: bool,
    /// How long shutdown may wait to flush queued data, in seconds; 0 disables the wait.
    /// Default 2.
    pub shutdown_timeout_seconds: f64,
    /// Print a line to stderr when shutdown waits for queued data. Default `true`.
    pub shutdown_message_enabled: bool,
    /// Where the core agent is downloaded. Default `/tmp/scout_apm_core`.
    pub core_agent_dir: Str<PATH_CAP>,
    /// Download the core agent when it is missing. Default `true`.
    pub core_agent_download: bool,
    /// Launch the core agent when none is running. Default `true`.
    pub core_agent_launch: bool,
    /// Core agent version to download. Default `v1.6.0`.
    pub core_agent_version: Str<SHORT_CAP>,
    /// Platform triple of the core agent build. Default: detected.
    pub core_agent_triple: Option<Str<NAME_CAP>>,
    /// Full name `scout_apm_core-<version>-<triple>`. Default: derived.
    pub core_agent_full_name: Option<Str<NAME_CAP>>,
    /// Base URL of core agent downloads. Default Scout's release bucket.
    pub download_url: Str<PATH_CAP>,
    /// Core agent address: a Unix socket path or `tcp://host:port`. Default
    /// `tcp://127.0.0.1:6590`. Alias: `socket_path`.
    pub core_agent_socket_path: Str<PATH_CAP>,
    /// Core agent log level (trace, debug, info, warn, error). Default `info`. Alias:
    /// `log_level`.
    pub core_agent_log_level: Str<SHORT_CAP>,
    /// Core agent log file. Default none. Alias: `log_file`.
    pub core_agent_log_file: Option<Str<PATH_CAP>>,
    /// Core agent config file. Default none. Alias: `config_file`.
    pub core_agent_config_file: Option<Str<PATH_CAP>>,
    /// CA certificate file for the core agent's uploads. Default none.
    pub core_agent_ca_cert: Option<Str<PATH_CAP>>,
    /// Mode of the core agent directory (octal). Default `0o700`.
    pub core_agent_permissions: u32,
    /// Report errors to Scout's error service. Default `true`.
    pub errors_enabled: bool,
    /// Error service base URL. Default `https://errors.scoutapm.com`.
    pub errors_host: Str<PATH_CAP>,
    /// Errors per upload. Default 5.
    pub errors_batch_size: u32,
    /// Completed spans per request after which new spans are not recorded (counted). Default
    /// 1 500, as the Python agent.
    pub span_limit: u32,
    /// Spans slower than this get a `stack` backtrace tag, in milliseconds. Default 500.
    pub backtrace_threshold_ms: u32,
}

/// Every setting name, as used in code and (upper-cased, `SCOUT_` prefixed) in the environment.
pub const KEYS: &[&str] = &[
    "monitor",
    "key",
    "name",
    "hostname",
    "revision_sha",
    "application_root",
    "scm_subdirectory",
    "framework",
    "framework_version",
    "app_server",
    "environment",
    "collect_remote_ip",
    "uri_reporting",
    "ignore",
    "ignore_endpoints",
    "ignore_jobs",
    "sample_rate",
    "endpoint_sample_rate",
    "job_sample_rate",
    "sample_endpoints",
    "sample_jobs",
    "disabled_instruments",
    "log_payload_content",
    "shutdown_timeout_seconds",
    "shutdown_message_enabled",
    "core_agent_dir",
    "core_agent_download",
    "core_agent_launch",
    "core_agent_version",
    "core_agent_triple",
    "core_agent_full_name",
    "download_url",
    "core_agent_socket_path",
    "socket_path",
    "core_agent_log_level",
    "log_level",
    "core_agent_log_file",
    "log_file",
    "core_agent_config_file",
    "config_file",
    "core_agent_ca_cert",
    "core_agent_permissions",
    "errors_enabled",
    "errors_host",
    "errors_batch_size",
    "span_limit",
    "backtrace_threshold_ms",
];

/// Deprecated aliases and the setting each stands for. The current name wins when both are set.
const ALIASES: [(&str, &str); 4] = [
    ("socket_path", "core_agent_socket_path"),
    ("log_level", "core_agent_log_level"),
    ("log_file", "core_agent_log_file"),
    ("config_file", "core_agent_config_file"),
];

/// The environment variables of [`ALIASES`], in the same order.
const ALIAS_VARIABLES: [&str; 4] = [
    "SCOUT_SOCKET_PATH",
    "SCOUT_LOG_LEVEL",
    "SCOUT_LOG_FILE",
    "SCOUT_CONFIG_FILE",
];

/// Default download location of Scout's core agent.
pub const DEFAULT_DOWNLOAD_URL: &str =
    "https://s3-us-west-1.amazonaws.com/scout-public-downloads/apm_core_agent/release";

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("monitor", &self.monitor)
            .field("key", &KeyPrefix(self.key.as_str()))
            .field("name", &self.name)
            .field("hostname", &self.hostname)
            .field("revision_sha", &self.revision_sha)
            .field("application_root", &self.application_root)
            .field("scm_subdirectory", &self.scm_subdirectory)
            .field("framework", &self.framework)
            .field("environment", &self.environment)
            .field("collect_remote_ip", &self.collect_remote_ip)
            .field("uri_reporting", &self.uri_reporting)
            .field("ignore", &self.ignore)
            .field("ignore_endpoints", &self.ignore_endpoints)
            .field("ignore_jobs", &self.ignore_jobs)
            .field("sample_rate", &self.sample_rate)
            .field("endpoint_sample_rate", &self.endpoint_sample_rate)
            .field("job_sample_rate", &self.job_sample_rate)
            .field("sample_endpoints", &self.sample_endpoints)
            .field("sample_jobs", &self.sample_jobs)
            .field("disabled_instruments", &self.disabled_instruments)
            .field("shutdown_timeout_seconds", &self.shutdown_timeout_seconds)
            .field("core_agent_dir", &self.core_agent_dir)
            .field("core_agent_download", &self.core_agent_download)
            .field("core_agent_launch", &self.core_agent_launch)
            .field("core_agent_version", &self.core_agent_version)
            .field("core_agent_triple", &self.core_agent_triple)
            .field("download_url", &self.download_url)
            .field("core_agent_socket_path", &self.core_agent_socket_path)
            .field("core_agent_log_level", &self.core_agent_log_level)
            .field(
                "core_agent_permissions",
                &format_args!("{:o}", self.core_agent_permissions),
            )
            .field("span_limit", &self.span_limit)
            .field("backtrace_threshold_ms", &self.backtrace_threshold_ms)
            .finish_non_exhaustive()
    }
}

/// Shows only the first three characters of a key, as the Python agent logs it.
#[derive(Clone, Copy)]
pub struct KeyPrefix<'a>(pub &'a str);

impl core::fmt::Debug for KeyPrefix<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let end = self
            .0
            .char_indices()
            .nth(3)
            .map_or(self.0.len(), |(i, _)| i);
        if self.0.is_empty() {
            f.write_str("(empty)")
        } else {
            write!(f, "{}***", &self.0[..end])
        }
    }
}

macro_rules! const_setters {
    ($( $(#[$doc:meta])* $field:ident : $kind:tt ),* $(,)?) => {
        $( const_setters!(@one $(#[$doc])* $field $kind); )*
    };
    (@one $(#[$doc:meta])* $field:ident str) => {
        $(#[$doc])*
        pub const fn $field(mut self, value: &'static str) -> Self {
            self.$field = Str::from_static(value);
            self
        }
    };
    (@one $(#[$doc:meta])* $field:ident opt_str) => {
        $(#[$doc])*
        pub const fn $field(mut self, value: &'static str) -> Self {
            self.$field = Some(Str::from_static(value));
            self
        }
    };
    (@one $(#[$doc:meta])* $field:ident bool) => {
        $(#[$doc])*
        pub const fn $field(mut self, value: bool) -> Self {
            self.$field = value;
            self
        }
    };
    (@one $(#[$doc:meta])* $field:ident u32) => {
        $(#[$doc])*
        pub const fn $field(mut self, value: u32) -> Self {
            self.$field = value;
            self
        }
    };
    (@one $(#[$doc:meta])* $field:ident list) => {
        $(#[$doc])*
        pub const fn $field(mut self, value: &'static [&'static str]) -> Self {
            self.$field.repr = ListRepr::Static(value);
            self
        }
    };
    (@one $(#[$doc:meta])* $field:ident rates) => {
        $(#[$doc])*
        pub const fn $field(mut self, value: &'static [(&'static str, f64)]) -> Self {
            self.$field = RateMap { repr: RateRepr::Static(value) };
            self
        }
    };
}

impl Config {
    /// The documented defaults.
    pub const fn new() -> Self {
        Self {
            monitor: false,
            key: Str::EMPTY,
            name: Str::from_static("Rust App"),
            hostname: None,
            revision_sha: None,
            application_root: None,
            scm_subdirectory: Str::EMPTY,
            framework: Str::EMPTY,
            framework_version: Str::EMPTY,
            app_server: Str::EMPTY,
            environment: None,
            collect_remote_ip: true,
            uri_reporting: UriReporting::FilteredParams,
            ignore: List::EMPTY_PATHS,
            ignore_endpoints: List::EMPTY_PATHS,
            ignore_jobs: List::EMPTY_PATHS,
            sample_rate: 1.0,
            endpoint_sample_rate: None,
            job_sample_rate: None,
            sample_endpoints: RateMap::EMPTY,
            sample_jobs: RateMap::EMPTY,
            disabled_instruments: List::EMPTY,
            log_payload_content: false,
            shutdown_timeout_seconds: 2.0,
            shutdown_message_enabled: true,
            core_agent_dir: Str::from_static("/tmp/scout_apm_core"),
            core_agent_download: true,
            core_agent_launch: true,
            core_agent_version: Str::from_static("v1.6.0"),
            core_agent_triple: None,
            core_agent_full_name: None,
            download_url: Str::from_static(DEFAULT_DOWNLOAD_URL),
            core_agent_socket_path: Str::from_static("tcp://127.0.0.1:6590"),
            core_agent_log_level: Str::from_static("info"),
            core_agent_log_file: None,
            core_agent_config_file: None,
            core_agent_ca_cert: None,
            core_agent_permissions: 0o700,
            errors_enabled: true,
            errors_host: Str::from_static("https://errors.scoutapm.com"),
            errors_batch_size: 5,
            span_limit: 1500,
            backtrace_threshold_ms: 500,
        }
    }

    const_setters! {
        /// Sets `monitor`.
        monitor: bool,
        /// Sets `key`.
        key: str,
        /// Sets `name`.
        name: str,
        /// Sets `hostname`.
        hostname: opt_str,
        /// Sets `revision_sha`.
        revision_sha: opt_str,
        /// Sets `application_root`.
        application_root: opt_str,
        /// Sets `scm_subdirectory`.
        scm_subdirectory: str,
        /// Sets `framework`.
        framework: str,
        /// Sets `framework_version`.
        framework_version: str,
        /// Sets `app_server`.
        app_server: str,
        /// Sets `environment`.
        environment: opt_str,
        /// Sets `collect_remote_ip`.
        collect_remote_ip: bool,
        /// Sets `ignore`.
        ignore: list,
        /// Sets `ignore_endpoints`.
        ignore_endpoints: list,
        /// Sets `ignore_jobs`.
        ignore_jobs: list,
        /// Sets `sample_endpoints`.
        sample_endpoints: rates,
        /// Sets `sample_jobs`.
        sample_jobs: rates,
        /// Sets `disabled_instruments`.
        disabled_instruments: list,
        /// Sets `log_payload_content`.
        log_payload_content: bool,
        /// Sets `shutdown_message_enabled`.
        shutdown_message_enabled: bool,
        /// Sets `core_agent_dir`.
        core_agent_dir: str,
        /// Sets `core_agent_download`.
        core_agent_download: bool,
        /// Sets `core_agent_launch`.
        core_agent_launch: bool,
        /// Sets `core_agent_version`.
        core_agent_version: str,
        /// Sets `core_agent_triple`.
        core_agent_triple: opt_str,
        /// Sets `core_agent_full_name`.
        core_agent_full_name: opt_str,
        /// Sets `download_url`.
        download_url: str,
        /// Sets `core_agent_socket_path`.
        core_agent_socket_path: str,
        /// Sets `core_agent_log_level`.
        core_agent_log_level: str,
        /// Sets `core_agent_log_file`.
        core_agent_log_file: opt_str,
        /// Sets `core_agent_config_file`.
        core_agent_config_file: opt_str,
        /// Sets `core_agent_ca_cert`.
        core_agent_ca_cert: opt_str,
        /// Sets `core_agent_permissions` (e.g. `0o700`).
        core_agent_permissions: u32,
        /// Sets `errors_enabled`.
        errors_enabled: bool,
        /// Sets `errors_host`.
        errors_host: str,
        /// Sets `errors_batch_size`.
        errors_batch_size: u32,
        /// Sets `span_limit`.
        span_limit: u32,
        /// Sets `backtrace_threshold_ms`.
        backtrace_threshold_ms: u32,
    }

    /// Sets `uri_reporting`.
    pub const fn uri_reporting(mut self, value: UriReporting) -> Self {
        self.uri_reporting = value;
        self
    }
    /// Sets `sample_rate` (values above 1 are percentages; clamped to `[0, 1]`).
    pub const fn sample_rate(mut self, value: f64) -> Self {
        self.sample_rate = normalize_rate(value);
        self
    }
    /// Sets `endpoint_sample_rate`.
    pub const fn endpoint_sample_rate(mut self, value: f64) -> Self {
        self.endpoint_sample_rate = Some(normalize_rate(value));
        self
    }
    /// Sets `job_sample_rate`.
    pub const fn job_sample_rate(mut self, value: f64) -> Self {
        self.job_sample_rate = Some(normalize_rate(value));
        self
    }
    /// Sets `shutdown_timeout_seconds`.
    pub const fn shutdown_timeout_seconds(mut self, value: f64) -> Self {
        self.shutdown_timeout_seconds = value;
        self
    }

    /// Sets one setting from text, by name (as in code: `"sample_rate"`; deprecated aliases
    /// accepted), with the same conversions as the environment. On error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ErrorKind> {
        let key = ALIASES
            .iter()
            .find(|(a, _)| *a == key)
            .map_or(key, |(_, k)| *k);
        match key {
            "monitor" => self.monitor = parse_bool(value)?,
            "key" => self.key = Str::try_from_str(value)?,
            "name" => self.name = Str::try_from_str(value)?,
            "hostname" => self.hostname = opt_str(value)?,
            "revision_sha" => self.revision_sha = opt_str(value)?,
            "application_root" => self.application_root = opt_str(value)?,
            "scm_subdirectory" => self.scm_subdirectory = Str::try_from_str(value)?,
            "framework" => self.framework = Str::try_from_str(value)?,
            "framework_version" => self.framework_version = Str::try_from_str(value)?,
            "app_server" => self.app_server = Str::try_from_str(value)?,
            "environment" => self.environment = opt_str(value)?,
            "collect_remote_ip" => self.collect_remote_ip = parse_bool(value)?,
            "uri_reporting" => {
                self.uri_reporting = match value.trim() {
                    v if v.eq_ignore_ascii_case("filtered_params") => UriReporting::FilteredParams,
                    v if v.eq_ignore_ascii_case("path") => UriReporting::Path,
                    _ => return Err(ErrorKind::InvalidChoice),
                }
            }
            "ignore" => self.ignore = List::parse(value, true)?,
            "ignore_endpoints" => self.ignore_endpoints = List::parse(value, true)?,
            "ignore_jobs" => self.ignore_jobs = List::parse(value, true)?,
            "sample_rate" => self.sample_rate = parse_rate(value)?,
            "endpoint_sample_rate" => self.endpoint_sample_rate = opt_rate(value)?,
            "job_sample_rate" => self.job_sample_rate = opt_rate(value)?,
            "sample_endpoints" => self.sample_endpoints = RateMap::parse(value)?,
            "sample_jobs" => self.sample_jobs = RateMap::parse(value)?,
            "disabled_instruments" => self.disabled_instruments = List::parse(value, false)?,
            "log_payload_content" => self.log_payload_content = parse_bool(value)?,
            "shutdown_timeout_seconds" => {
                let v = parse_f64(value)?;
                if v < 0.0 {
                    return Err(ErrorKind::InvalidNumber);
                }
                self.shutdown_timeout_seconds = v;
            }
            "shutdown_message_enabled" => self.shutdown_message_enabled = parse_bool(value)?,
            "core_agent_dir" => self.core_agent_dir = Str::try_from_str(value)?,
            "core_agent_download" => self.core_agent_download = parse_bool(value)?,
            "core_agent_launch" => self.core_agent_launch = parse_bool(value)?,
            "core_agent_version" => self.core_agent_version = Str::try_from_str(value)?,
            "core_agent_triple" => self.core_agent_triple = opt_str(value)?,
            "core_agent_full_name" => self.core_agent_full_name = opt_str(value)?,
            "download_url" => self.download_url = Str::try_from_str(value)?,
            "core_agent_socket_path" => self.core_agent_socket_path = Str::try_from_str(value)?,
            "core_agent_log_level" => {
                let v = value.trim();
                let level = ["trace", "debug", "info", "warn", "error"]
                    .into_iter()
                    .find(|l| l.eq_ignore_ascii_case(v))
                    .ok_or(ErrorKind::InvalidChoice)?;
                self.core_agent_log_level = Str::from_static(level);
            }
            "core_agent_log_file" => self.core_agent_log_file = opt_str(value)?,
            "core_agent_config_file" => self.core_agent_config_file = opt_str(value)?,
            "core_agent_ca_cert" => self.core_agent_ca_cert = opt_str(value)?,
            "core_agent_permissions" => {
                let v =
                    u32::from_str_radix(value.trim(), 8).map_err(|_| ErrorKind::InvalidOctal)?;
                if v > 0o7777 {
                    return Err(ErrorKind::InvalidOctal);
                }
                self.core_agent_permissions = v;
            }
            "errors_enabled" => self.errors_enabled = parse_bool(value)?,
            "errors_host" => self.errors_host = Str::try_from_str(value)?,
            "errors_batch_size" => self.errors_batch_size = parse_u32(value)?,
            "span_limit" => self.span_limit = parse_u32(value)?,
            "backtrace_threshold_ms" => self.backtrace_threshold_ms = parse_u32(value)?,
            _ => return Err(ErrorKind::UnknownKey),
        }
        Ok(())
    }

    /// Applies `SCOUT_<KEY>` variables from `vars` (other variables are skipped). Each refused
    /// value is passed to `on_error` and leaves its setting unchanged; all others apply. A
    /// deprecated alias (`SCOUT_SOCKET_PATH`, `SCOUT_LOG_LEVEL`, ...) applies only when the
    /// current name is not also set.
    pub fn apply_env<'a, I, K, V, F>(&mut self, vars: I, mut on_error: F) -> EnvReport
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str> + 'a,
        V: AsRef<str> + 'a,
        F: FnMut(EnvError<'_>),
    {
        let mut report = EnvReport::default();
        let mut canonical_set = [false; ALIASES.len()];
        // Aliases wait until every variable was seen: they apply only if the current name was
        // not set, wherever it came in the list. Their values are kept here (no heap).
        let mut pending: [Option<([u8; PATH_CAP], usize)>; ALIASES.len()] = [None; ALIASES.len()];
        let mut pending_too_long = [false; ALIASES.len()];
        let mut lower = [0u8; 64];
        for (k, v) in vars {
            let (var, value) = (k.as_ref(), v.as_ref());
            let Some(rest) = var.strip_prefix("SCOUT_") else {
                continue;
            };
            if rest.is_empty() || rest.len() > lower.len() {
                report.unknown += 1;
                continue;
            }
            for (dst, src) in lower.iter_mut().zip(rest.bytes()) {
                *dst = src.to_ascii_lowercase();
            }
            let Ok(key) = core::str::from_utf8(&lower[..rest.len()]) else {
                report.unknown += 1;
                continue;
            };
            if let Some(i) = ALIASES.iter().position(|(_, c)| *c == key) {
                canonical_set[i] = true;
            }
            if let Some(i) = ALIASES.iter().position(|(a, _)| *a == key) {
                if pending[i].is_some() || pending_too_long[i] {
                    // The same alias twice: the later one wins, the earlier one is overridden.
                    report.overridden += 1;
                }
                if value.len() > PATH_CAP {
                    pending[i] = None;
                    pending_too_long[i] = true;
                } else {
                    let mut buf = [0u8; PATH_CAP];
                    buf[..value.len()].copy_from_slice(value.as_bytes());
                    pending[i] = Some((buf, value.len()));
                    pending_too_long[i] = false;
                }
                continue;
            }
            self.apply_one(key, var, value, &mut report, &mut on_error);
        }
        for (i, (alias, _)) in ALIASES.iter().enumerate() {
            if pending[i].is_none() && !pending_too_long[i] {
                continue;
            }
            if canonical_set[i] {
                report.overridden += 1;
                continue;
            }
            let variable = ALIAS_VARIABLES[i];
            match &pending[i] {
                Some((buf, len)) => {
                    let value = core::str::from_utf8(&buf[..*len]).unwrap_or("");
                    self.apply_one(alias, variable, value, &mut report, &mut on_error);
                }
                None => {
                    report.rejected += 1;
                    on_error(EnvError {
                        variable,
                        value: None,
                        kind: ErrorKind::TooLong { max: PATH_CAP },
                    });
                }
            }
        }
        report
    }

    fn apply_one<F: FnMut(EnvError<'_>)>(
        &mut self,
        key: &str,
        var: &str,
        value: &str,
        report: &mut EnvReport,
        on_error: &mut F,
    ) {
        match self.set(key, value) {
            Ok(()) => report.applied += 1,
            Err(ErrorKind::UnknownKey) => report.unknown += 1,
            Err(kind) => {
                report.rejected += 1;
                let secret = key == "key";
                on_error(EnvError {
                    variable: var,
                    value: (!secret).then_some(value),
                    kind,
                });
            }
        }
    }

    /// The address of the core agent, parsed.
    pub fn core_agent_address(&self) -> Address<'_> {
        Address::parse(self.core_agent_socket_path.as_str())
    }

    /// The configured key shown safely (first three characters).
    pub fn key_prefix(&self) -> KeyPrefix<'_> {
        KeyPrefix(self.key.as_str())
    }
}

/// A core agent address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address<'a> {
    /// `tcp://host:port`: the `host:port` part.
    Tcp(&'a str),
    /// A Unix socket path (`unix://` and `file://` prefixes removed).
    Unix(&'a str),
}

impl<'a> Address<'a> {
    /// Parses `tcp://host:port` or a Unix socket path.
    pub fn parse(s: &'a str) -> Self {
        if let Some(rest) = s.strip_prefix("tcp://") {
            Address::Tcp(rest)
        } else {
            Address::Unix(
                s.strip_prefix("unix://")
                    .or(s.strip_prefix("file://"))
                    .unwrap_or(s),
            )
        }
    }
}

fn opt_str<const N: usize>(value: &str) -> Result<Option<Str<N>>, ErrorKind> {
    if value.is_empty() {
        Ok(None)
    } else {
        Str::try_from_str(value).map(Some)
    }
}

/// Parses a boolean: true/false/yes/no/t/f/1/0 in any case, surrounding spaces ignored.
pub fn parse_bool(value: &str) -> Result<bool, ErrorKind> {
    let v = value.trim();
    for t in ["true", "yes", "t", "1"] {
        if v.eq_ignore_ascii_case(t) {
            return Ok(true);
        }
    }
    for f in ["false", "no", "f", "0"] {
        if v.eq_ignore_ascii_case(f) {
            return Ok(false);
        }
    }
    Err(ErrorKind::InvalidBool)
}

fn parse_f64(value: &str) -> Result<f64, ErrorKind> {
    let v: f64 = value.trim().parse().map_err(|_| ErrorKind::InvalidNumber)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ErrorKind::InvalidNumber)
    }
}

fn parse_u32(value: &str) -> Result<u32, ErrorKind> {
    value.trim().parse().map_err(|_| ErrorKind::InvalidNumber)
}

/// Parses a rate: 0 to 1, or a percentage above 1 up to 100.
fn parse_rate(value: &str) -> Result<f64, ErrorKind> {
    let v = parse_f64(value).map_err(|_| ErrorKind::InvalidRate)?;
    if !(0.0..=100.0).contains(&v) {
        return Err(ErrorKind::InvalidRate);
    }
    Ok(normalize_rate(v))
}

fn opt_rate(value: &str) -> Result<Option<f64>, ErrorKind> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        parse_rate(value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATIC_CFG: Config = Config::new()
        .name("Firmware")
        .key("SECRETKEY123")
        .monitor(true)
        .ignore_endpoints(&["/health", " admin/ "])
        .sample_endpoints(&[("/users", 40.0)])
        .core_agent_permissions(0o750);

    #[test]
    fn defaults_match_docs() {
        let c = Config::new();
        assert!(!c.monitor);
        assert_eq!(c.name.as_str(), "Rust App");
        assert_eq!(c.core_agent_socket_path.as_str(), "tcp://127.0.0.1:6590");
        assert_eq!(c.core_agent_version.as_str(), "v1.6.0");
        assert_eq!(c.core_agent_dir.as_str(), "/tmp/scout_apm_core");
        assert_eq!(c.core_agent_log_level.as_str(), "info");
        assert_eq!(c.core_agent_permissions, 0o700);
        assert_eq!(c.sample_rate, 1.0);
        assert_eq!(c.shutdown_timeout_seconds, 2.0);
        assert_eq!(c.span_limit, 1500);
        assert!(c.collect_remote_ip && c.core_agent_download && c.core_agent_launch);
    }

    #[test]
    fn const_builder() {
        const { assert!(STATIC_CFG.monitor) };
        assert_eq!(
            STATIC_CFG
                .ignore_endpoints
                .iter()
                .collect::<heapless::Vec<_, 4>>(),
            ["health", "admin/"]
        );
        assert_eq!(STATIC_CFG.sample_endpoints.rate_for("users/7"), Some(0.4));
        assert_eq!(STATIC_CFG.core_agent_permissions, 0o750);
    }

    #[test]
    fn every_bool_form() {
        for t in ["true", "TRUE", "Yes", "t", "T", "1", " yes "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "No", "f", "F", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), Err(ErrorKind::InvalidBool));
        assert_eq!(parse_bool(""), Err(ErrorKind::InvalidBool));
    }

    #[test]
    fn env_layering_and_errors() {
        let mut c = STATIC_CFG;
        let long_key = "x".repeat_n(100);
        let env = [
            ("SCOUT_NAME", "From env"),
            ("SCOUT_MONITOR", "nope"),
            ("SCOUT_KEY", long_key.as_str()),
            ("SCOUT_SAMPLE_RATE", "25"),
            ("SCOUT_IGNORE", "/health, /admin/,,"),
            ("SCOUT_ERRORS_ENABLED", "false"),
            ("SCOUT_CORE_AGENT_PERMISSIONS", "755"),
            ("SCOUT_SAMPLE_JOBS", "email:50,bad"),
            ("SCOUT_UNKNOWN_THING", "1"),
            ("HOME", "/root"),
        ];
        let mut seen: heapless::Vec<(heapless::String<64>, bool), 8> = heapless::Vec::new();
        let report = c.apply_env(env.iter().map(|(k, v)| (*k, *v)), |e| {
            let mut s = heapless::String::new();
            s.push_str(e.variable).unwrap();
            seen.push((s, e.value.is_some())).unwrap();
        });
        assert_eq!(c.name.as_str(), "From env");
        assert!(c.monitor, "refused value keeps the code value");
        assert_eq!(c.key.as_str(), "SECRETKEY123");
        assert_eq!(c.sample_rate, 0.25);
        assert_eq!(
            c.ignore.iter().collect::<heapless::Vec<_, 4>>(),
            ["health", "admin/"]
        );
        assert!(!c.errors_enabled);
        assert_eq!(c.core_agent_permissions, 0o755);
        assert!(c.sample_jobs.is_empty());
        assert_eq!(
            report,
            EnvReport {
                applied: 5,
                rejected: 3,
                unknown: 1,
                overridden: 0
            }
        );
        assert_eq!(seen.len(), 3);
        let key_err = seen.iter().find(|(v, _)| v == "SCOUT_KEY").unwrap();
        assert!(!key_err.1, "the key's value is never reported");
    }

    #[test]
    fn alias_precedence() {
        for order in [
            [
                ("SCOUT_SOCKET_PATH", "/old.sock"),
                ("SCOUT_CORE_AGENT_SOCKET_PATH", "/new.sock"),
            ],
            [
                ("SCOUT_CORE_AGENT_SOCKET_PATH", "/new.sock"),
                ("SCOUT_SOCKET_PATH", "/old.sock"),
            ],
        ] {
            let mut c = Config::new();
            c.apply_env(order, |_| panic!());
            assert_eq!(c.core_agent_socket_path.as_str(), "/new.sock");
        }
        // An alias that comes first is not applied, nor reported, when the current name is set.
        let mut c = Config::new();
        let r = c.apply_env(
            [
                ("SCOUT_SOCKET_PATH", "bad\u{0}"),
                ("SCOUT_CORE_AGENT_SOCKET_PATH", "/new.sock"),
                ("SCOUT_LOG_LEVEL", "loud"),
            ],
            |e| assert_eq!(e.variable, "SCOUT_LOG_LEVEL"),
        );
        assert_eq!(c.core_agent_socket_path.as_str(), "/new.sock");
        assert_eq!((r.applied, r.rejected, r.overridden), (1, 1, 1));
        let mut c = Config::new();
        c.apply_env([("SCOUT_LOG_LEVEL", "DEBUG")], |_| panic!());
        assert_eq!(c.core_agent_log_level.as_str(), "debug");
    }

    #[test]
    fn too_long_is_an_error() {
        let mut c = Config::new();
        let long = "n".repeat_n(300);
        assert_eq!(
            c.set("name", &long),
            Err(ErrorKind::TooLong { max: NAME_CAP })
        );
        assert_eq!(c.name.as_str(), "Rust App");
        let many = "a,".repeat_n(17);
        assert_eq!(
            c.set("ignore", &many),
            Err(ErrorKind::TooManyItems { max: LIST_CAP })
        );
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("50"), Ok(0.5));
        assert_eq!(parse_rate("1"), Ok(1.0));
        assert_eq!(parse_rate("101"), Err(ErrorKind::InvalidRate));
        assert_eq!(parse_rate("-1"), Err(ErrorKind::InvalidRate));
        assert_eq!(parse_rate("nan"), Err(ErrorKind::InvalidRate));
        let mut c = Config::new();
        c.set("sample_endpoints", "/users:40, users/admin:0")
            .unwrap();
        assert_eq!(c.sample_endpoints.rate_for("users/admin/x"), Some(0.0));
        assert_eq!(c.sample_endpoints.rate_for("users/7"), Some(0.4));
        assert_eq!(c.sample_endpoints.rate_for("orders"), None);
    }

    #[test]
    fn addresses_and_key_prefix() {
        assert_eq!(
            Address::parse("tcp://127.0.0.1:6590"),
            Address::Tcp("127.0.0.1:6590")
        );
        assert_eq!(Address::parse("/tmp/a.sock"), Address::Unix("/tmp/a.sock"));
        assert_eq!(
            Address::parse("unix:///tmp/a.sock"),
            Address::Unix("/tmp/a.sock")
        );
        let c = Config::new().key("abcdef");
        // The key never appears in Debug output, only its first three characters.
        let mut s: heapless::String<4096> = heapless::String::new();
        core::fmt::write(&mut s, format_args!("{:?}", c)).unwrap();
        assert!(!s.contains("abcdef"), "{s}");
        assert!(s.contains("key: abc***"), "{s}");
        let mut p: heapless::String<32> = heapless::String::new();
        core::fmt::write(&mut p, format_args!("{}", c.key_prefix())).unwrap();
        assert_eq!(p, "abc***");
    }

    trait RepeatN {
        fn repeat_n(&self, n: usize) -> heapless::String<512>;
    }
    impl RepeatN for str {
        fn repeat_n(&self, n: usize) -> heapless::String<512> {
            let mut s = heapless::String::new();
            for _ in 0..n {
                s.push_str(self).unwrap();
            }
            s
        }
    }
}
