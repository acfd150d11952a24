//! Resolving the configuration on a std host: `SCOUT_*` environment over code, then host name,
//! revision SHA and application root when unset.

use crate::agent::InstallOptions;
use scout_core::Config;

/// Applies the environment and the host's defaults to `config`.
pub(crate) fn resolve(mut config: Config, options: &InstallOptions) -> Config {
    if !options.ignore_environment {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("SCOUT_"))
            .collect();
        config.apply_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())), |e| {
            log::warn!(target: "scout_apm", "{e}");
        });
    }
    if config.hostname.is_none()
        && let Some(h) = os_hostname()
    {
        let _ = config.set("hostname", &h);
    }
    if config.revision_sha.is_none() {
        let heroku = if options.ignore_environment {
            None
        } else {
            std::env::var("HEROKU_SLUG_COMMIT").ok()
        };
        let sha = heroku
            .or_else(|| options.build_revision_sha.clone())
            .unwrap_or_default();
        let _ = config.set("revision_sha", &sha);
    }
    if config.application_root.is_none()
        && let Some(cwd) = std::env::current_dir()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
    {
        let _ = config.set("application_root", &cwd);
    }
    config
}

/// The machine's host name.
pub fn os_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}
