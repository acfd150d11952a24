//! Arbitrary `(variable, value)` pairs through `Config::apply_env`, and `(key, value)` pairs
//! through `Config::set`. Variables are biased toward `SCOUT_` + real setting names (any case)
//! and values toward the forms each setting parses.
//!
//! Invariants: no panic; `applied + rejected + unknown` equals the number of `SCOUT_`
//! variables; every refused variable reaches the callback once and leaves its setting (and
//! every other) unchanged; the result equals applying the variables one by one with `set`,
//! where a deprecated alias applies only when its current name is not also set (anywhere in
//! the list); no error's text contains the value of `SCOUT_KEY` and `Config`'s `Debug` never
//! shows the key; `set` refuses only unknown names with `UnknownKey`, changes nothing when it
//! fails and is idempotent; parsed settings stay in range.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use scout_core::Config;
use scout_core::config::{ErrorKind, KEYS, LIST_CAP, NAME_CAP, PATH_CAP, SHORT_CAP, Str};

const TYPICAL: &[&str] = &[
    "true",
    "false",
    "YES",
    " no ",
    "t",
    "F",
    "1",
    "0",
    "maybe",
    "",
    " ",
    "0.5",
    "50",
    "100",
    "101",
    "-1",
    "-0",
    "nan",
    "inf",
    "1e400",
    "1e-400",
    "  25 ",
    "755",
    "0o755",
    "8",
    "7777",
    "17777",
    "filtered_params",
    "PATH",
    "Path",
    "debug",
    "TRACE",
    "warn ",
    "verbose",
    "/health, /admin/,,",
    "a,b,c",
    "x:1",
    "users:40, users/admin:0",
    "bad",
    "email:50,bad",
    "tcp://127.0.0.1:6590",
    "unix:///tmp/a.sock",
    "4294967295",
    "4294967296",
    "é",
    "\u{0}",
    "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q",
    ":5",
    "x:101",
    "x:-1",
    "x:nan",
];

/// The deprecated aliases and their current names (as documented in `config.rs`).
const ALIASES: [(&str, &str); 4] = [
    ("socket_path", "core_agent_socket_path"),
    ("log_level", "core_agent_log_level"),
    ("log_file", "core_agent_log_file"),
    ("config_file", "core_agent_config_file"),
];

#[derive(Arbitrary, Debug)]
enum KeySel<'a> {
    /// `SCOUT_` + a real setting name, upper-cased (0), lower-cased (1) or mixed.
    Known {
        i: u8,
        case: u8,
    },
    Scout(&'a str),
    Raw(&'a str),
}

impl KeySel<'_> {
    fn name(&self) -> String {
        match self {
            KeySel::Known { i, case } => {
                let k = KEYS[usize::from(*i) % KEYS.len()];
                let k = match case % 3 {
                    0 => k.to_ascii_uppercase(),
                    1 => k.to_owned(),
                    _ => k
                        .chars()
                        .enumerate()
                        .map(|(j, c)| {
                            if j % 2 == 0 {
                                c.to_ascii_uppercase()
                            } else {
                                c
                            }
                        })
                        .collect(),
                };
                format!("SCOUT_{k}")
            }
            KeySel::Scout(s) => format!("SCOUT_{s}"),
            KeySel::Raw(s) => (*s).to_owned(),
        }
    }
    /// As a `set` key: the setting name itself.
    fn setting(&self) -> String {
        match self {
            KeySel::Known { i, .. } => KEYS[usize::from(*i) % KEYS.len()].to_owned(),
            KeySel::Scout(s) | KeySel::Raw(s) => (*s).to_owned(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ValSel<'a> {
    Raw(&'a str),
    Typical(u8),
    /// `n` copies of a character: exceeds (or just fits) a capacity.
    Long {
        n: u16,
        c: char,
    },
    /// A typical value with a suffix.
    Mixed(u8, &'a str),
}

impl ValSel<'_> {
    fn value(&self) -> String {
        match self {
            ValSel::Raw(s) => (*s).to_owned(),
            ValSel::Typical(i) => TYPICAL[usize::from(*i) % TYPICAL.len()].to_owned(),
            ValSel::Long { n, c } => std::iter::repeat_n(*c, usize::from(*n % 600)).collect(),
            ValSel::Mixed(i, s) => format!("{}{s}", TYPICAL[usize::from(*i) % TYPICAL.len()]),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    from_builder: bool,
    env: Vec<(KeySel<'a>, ValSel<'a>)>,
    sets: Vec<(KeySel<'a>, ValSel<'a>)>,
}

const BUILT: Config = Config::new()
    .name("Firmware")
    .key("SECRETKEY123")
    .monitor(true)
    .ignore_endpoints(&["/health", " admin/ "])
    .sample_endpoints(&[("/users", 40.0)])
    .core_agent_socket_path("/run/scout.sock")
    .core_agent_permissions(0o750);

/// Every setting, as text: two configs are equal iff their fingerprints are.
fn fp(c: &Config) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|\
         {:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|\
         {:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        c.monitor,
        c.key,
        c.name,
        c.hostname,
        c.revision_sha,
        c.application_root,
        c.scm_subdirectory,
        c.framework,
        c.framework_version,
        c.app_server,
        c.environment,
        c.collect_remote_ip,
        c.uri_reporting,
        c.ignore,
        c.ignore_endpoints,
        c.ignore_jobs,
        c.sample_rate,
        c.endpoint_sample_rate,
        c.job_sample_rate,
        c.sample_endpoints,
        c.sample_jobs,
        c.disabled_instruments,
        c.log_payload_content,
        c.shutdown_timeout_seconds,
        c.shutdown_message_enabled,
        c.core_agent_dir,
        c.core_agent_download,
        c.core_agent_launch,
        c.core_agent_version,
        c.core_agent_triple,
        c.core_agent_full_name,
        c.download_url,
        c.core_agent_socket_path,
        c.core_agent_log_level,
        c.core_agent_log_file,
        c.core_agent_config_file,
        c.core_agent_ca_cert,
        c.core_agent_permissions,
        c.errors_enabled,
        c.errors_host,
        c.errors_batch_size,
        c.span_limit,
        c.backtrace_threshold_ms,
    )
}

fn in_unit(r: f64) -> bool {
    (0.0..=1.0).contains(&r)
}

/// Settings parsed from text stay within their documented ranges and capacities.
fn check_ranges(c: &Config) {
    assert!(in_unit(c.sample_rate), "sample_rate {}", c.sample_rate);
    assert!(c.endpoint_sample_rate.is_none_or(in_unit));
    assert!(c.job_sample_rate.is_none_or(in_unit));
    for (_, r) in c.sample_endpoints.iter().chain(c.sample_jobs.iter()) {
        assert!(in_unit(r));
    }
    assert!(c.shutdown_timeout_seconds.is_finite() && c.shutdown_timeout_seconds >= 0.0);
    assert!(c.core_agent_permissions <= 0o7777);
    for l in [
        &c.ignore,
        &c.ignore_endpoints,
        &c.ignore_jobs,
        &c.disabled_instruments,
    ] {
        assert!(l.len() <= LIST_CAP);
    }
    assert!(c.sample_endpoints.len() <= LIST_CAP && c.sample_jobs.len() <= LIST_CAP);
    assert!(c.key.as_str().len() <= SHORT_CAP);
    assert!(c.name.as_str().len() <= NAME_CAP);
    assert!(c.core_agent_socket_path.as_str().len() <= PATH_CAP);
    assert!(
        ["trace", "debug", "info", "warn", "error"].contains(&c.core_agent_log_level.as_str()),
        "log level {:?}",
        c.core_agent_log_level
    );
}

#[derive(Debug, PartialEq)]
struct Err_ {
    variable: String,
    value: Option<String>,
    kind: ErrorKind,
}

fuzz_target!(|input: Input<'_>| {
    let start = if input.from_builder {
        BUILT
    } else {
        Config::new()
    };
    let env: Vec<(String, String)> = input
        .env
        .iter()
        .take(64)
        .map(|(k, v)| (k.name(), v.value()))
        .collect();

    // --- apply_env -------------------------------------------------------------------
    let mut c = start;
    let mut errors = Vec::new();
    let mut texts = Vec::new();
    let report = c.apply_env(env.iter().map(|(k, v)| (k.as_str(), v.as_str())), |e| {
        texts.push((e.to_string(), e.variable.to_owned(), e.kind));
        errors.push(Err_ {
            variable: e.variable.to_owned(),
            value: e.value.map(str::to_owned),
            kind: e.kind,
        });
    });

    // The model, as documented: every SCOUT_ variable through `set`, in order, except the
    // deprecated aliases, which apply afterwards (their last value), and only when their
    // current name is not set anywhere in the list; skipped aliases count as `overridden`.
    let setting = |var: &str| var.strip_prefix("SCOUT_").map(str::to_ascii_lowercase);
    let mut m = start;
    let (mut applied, mut rejected, mut unknown, mut overridden) = (0u32, 0u32, 0u32, 0u32);
    let mut want_errors = Vec::new();
    let n_scout = env.iter().filter(|(k, _)| k.starts_with("SCOUT_")).count();
    let mut first_rejected = None;
    let mut pending: Vec<Option<&String>> = vec![None; ALIASES.len()];
    let apply = |m: &mut Config,
                 key: &str,
                 var: String,
                 value: &String,
                 counts: (&mut u32, &mut u32, &mut u32),
                 errs: &mut Vec<Err_>| {
        match m.set(key, value) {
            Ok(()) => *counts.0 += 1,
            Err(ErrorKind::UnknownKey) => *counts.2 += 1,
            Err(kind) => {
                *counts.1 += 1;
                errs.push(Err_ {
                    variable: var,
                    value: (key != "key").then(|| value.clone()),
                    kind,
                });
            }
        }
    };
    for (i, (var, value)) in env.iter().enumerate() {
        let Some(key) = setting(var) else { continue };
        if let Some(a) = ALIASES.iter().position(|(alias, _)| *alias == key) {
            if pending[a].is_some() {
                overridden += 1;
            }
            pending[a] = Some(value);
            continue;
        }
        let before = rejected;
        apply(
            &mut m,
            &key,
            var.clone(),
            value,
            (&mut applied, &mut rejected, &mut unknown),
            &mut want_errors,
        );
        // (Removing a refused current name would let its alias apply: skip those.)
        if rejected > before && first_rejected.is_none() && !ALIASES.iter().any(|(_, c)| *c == key)
        {
            first_rejected = Some(i);
        }
    }
    for (a, (alias, current)) in ALIASES.iter().enumerate() {
        let Some(value) = pending[a] else { continue };
        if env
            .iter()
            .any(|(k, _)| setting(k).as_deref() == Some(*current))
        {
            overridden += 1;
            continue;
        }
        let var = format!("SCOUT_{}", alias.to_ascii_uppercase());
        if value.len() > PATH_CAP {
            rejected += 1;
            want_errors.push(Err_ {
                variable: var,
                value: None,
                kind: ErrorKind::TooLong { max: PATH_CAP },
            });
            continue;
        }
        apply(
            &mut m,
            alias,
            var,
            value,
            (&mut applied, &mut rejected, &mut unknown),
            &mut want_errors,
        );
    }
    assert_eq!(fp(&c), fp(&m), "apply_env != the documented model");
    assert_eq!(errors, want_errors, "refused variables");
    assert_eq!(
        (
            report.applied,
            report.rejected,
            report.unknown,
            report.overridden
        ),
        (applied, rejected, unknown, overridden),
        "{report:?}"
    );
    assert_eq!(
        (report.applied + report.rejected + report.unknown + report.overridden) as usize,
        n_scout,
        "every SCOUT_ variable is counted once"
    );
    check_ranges(&c);

    // A refused variable changes nothing: applying the list without it gives the same config.
    if let Some(first) = first_rejected {
        let mut without = start;
        let rest = env
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != first)
            .map(|(_, kv)| kv);
        without.apply_env(rest.map(|(k, v)| (k.as_str(), v.as_str())), |_| {});
        assert_eq!(fp(&without), fp(&c), "a refused variable changed a setting");
    }

    // --- secrets ---------------------------------------------------------------------
    let secrets: Vec<&str> = env
        .iter()
        .filter(|(k, v)| setting(k).as_deref() == Some("key") && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .collect();
    for (text, var, kind) in &texts {
        if setting(var).as_deref() == Some("key") {
            // Only the name and the reason are shown.
            let public = format!("{var} ignored: {kind}");
            for s in &secrets {
                let escaped = format!("{s:?}");
                let escaped = &escaped[1..escaped.len() - 1];
                assert!(
                    !text.contains(s) && !text.contains(escaped) || public.contains(s),
                    "SCOUT_KEY value {s:?} shown in {text:?}"
                );
            }
        }
    }
    // The key is shown as its first three characters and `***`; cut that field out, and the
    // rest must not show the key either (unless another setting holds the same text).
    let key = c.key.as_str();
    if key.chars().count() > 3 {
        let cut = |cfg: &Config| {
            let field = format!("key: {}, ", cfg.key_prefix());
            format!("{cfg:?}").replacen(&field, "key: ?, ", 1)
        };
        let mut blank = c;
        blank.key = Str::EMPTY;
        let shown = cut(&c);
        assert!(
            !shown.contains(key) || cut(&blank).contains(key),
            "Config's Debug shows the key {key:?}: {shown}"
        );
    }

    // --- set -------------------------------------------------------------------------
    let mut c = start;
    for (k, v) in input.sets.iter().take(32) {
        let (key, value) = (k.setting(), v.value());
        let before = fp(&c);
        match c.set(&key, &value) {
            Ok(()) => {
                let after = fp(&c);
                assert_eq!(c.set(&key, &value), Ok(()), "set({key:?}, {value:?}) twice");
                assert_eq!(fp(&c), after, "set({key:?}, {value:?}) is not idempotent");
            }
            Err(kind) => {
                assert_eq!(
                    fp(&c),
                    before,
                    "failed set({key:?}, {value:?}) changed the config"
                );
                assert_eq!(
                    kind == ErrorKind::UnknownKey,
                    !KEYS.contains(&key.as_str()),
                    "set({key:?}): {kind:?}"
                );
            }
        }
        check_ranges(&c);
    }
});
