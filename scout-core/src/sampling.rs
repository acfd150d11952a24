//! Ignoring and sampling finished requests (spec §4.7), without the Python agent's quirks.
//!
//! Differences from Python 4.0.0, each what a user would expect:
//! - A request tagged `ignore_transaction` (by the API or an ignored web path) is never sent,
//!   whatever else is configured (Python sends it unless some ignore or sampling setting exists).
//! - The most specific (longest) matching prefix of `sample_endpoints` / `sample_jobs` wins,
//!   rather than the first in dictionary order.
//! - Settings are read on every decision, so changes at run time apply (Python freezes them at
//!   the first finished request).
//! - A rate of 0 never sends (Python's `random <= rate` sends when the draw is exactly 0).
//!
//! Endpoint names are matched against prefixes both as written after `Controller/` and, for
//! names of the form `<METHOD> /<path>` (the Rust web integrations' names), by their path, so
//! `ignore_endpoints = "health"` ignores `Controller/GET /health`.

use crate::config::Config;

/// What kind of transaction an operation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind<'a> {
    /// `Controller/<name>`.
    Endpoint(&'a str),
    /// `Job/<name>`.
    Job(&'a str),
    /// Anything else.
    Other,
}

/// Classifies an operation.
pub fn classify(operation: &str) -> Kind<'_> {
    if let Some(n) = operation.strip_prefix("Controller/") {
        Kind::Endpoint(n)
    } else if let Some(n) = operation.strip_prefix("Job/") {
        Kind::Job(n)
    } else {
        Kind::Other
    }
}

/// The path of a `<METHOD> /<path>` endpoint name, without its leading `/`.
fn route_path(name: &str) -> Option<&str> {
    let (method, rest) = name.split_once(' ')?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some(rest.trim_start_matches('/'))
}

/// The rate at which a request with this operation is reported, in `[0, 1]`.
pub fn rate(config: &Config, operation: &str, ignore_tagged: bool) -> f64 {
    if ignore_tagged {
        return 0.0;
    }
    match classify(operation) {
        Kind::Endpoint(name) => {
            let path = route_path(name);
            let specific = config
                .sample_endpoints
                .rate_for(name)
                .or_else(|| path.and_then(|p| config.sample_endpoints.rate_for(p)));
            if let Some(r) = specific {
                return r;
            }
            let ignored = |n: &str| {
                config.ignore_endpoints.matches_prefix(n) || config.ignore.matches_prefix(n)
            };
            if ignored(name) || path.is_some_and(ignored) {
                return 0.0;
            }
            config.endpoint_sample_rate.unwrap_or(config.sample_rate)
        }
        Kind::Job(name) => {
            if let Some(r) = config.sample_jobs.rate_for(name) {
                return r;
            }
            if config.ignore_jobs.matches_prefix(name) {
                return 0.0;
            }
            config.job_sample_rate.unwrap_or(config.sample_rate)
        }
        Kind::Other => config.sample_rate,
    }
}

/// True when `config` reports every request not tagged `ignore_transaction`: no sampling
/// rate below 1 and no ignore or per-endpoint/per-job rule. Then [`rate`] is 1 for every
/// operation, so the agent can skip reading the operation and drawing a random number.
pub fn sends_everything(config: &Config) -> bool {
    let full = |r: Option<f64>| r.is_none_or(|r| r >= 1.0);
    config.sample_rate >= 1.0
        && full(config.endpoint_sample_rate)
        && full(config.job_sample_rate)
        && config.sample_endpoints.is_empty()
        && config.sample_jobs.is_empty()
        && config.ignore_endpoints.is_empty()
        && config.ignore_jobs.is_empty()
        && config.ignore.is_empty()
}

/// Decides whether to send a finished request, given a uniform random draw in `[0, 1)`.
pub fn should_send(config: &Config, operation: &str, ignore_tagged: bool, draw: f64) -> bool {
    let r = rate(config, operation, ignore_tagged);
    r >= 1.0 || draw < r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_everything_agrees_with_rate() {
        let ops = [
            "Controller/x",
            "Controller/GET /health",
            "Job/mail",
            "Middleware",
            "",
        ];
        let settings: [(&str, &str); 9] = [
            ("sample_rate", "99"),
            ("sample_rate", "100"),
            ("endpoint_sample_rate", "50"),
            ("job_sample_rate", "0"),
            ("sample_endpoints", "x:100"),
            ("sample_jobs", "mail:20"),
            ("ignore_endpoints", "health"),
            ("ignore_jobs", "mail"),
            ("ignore", "/health"),
        ];
        assert!(sends_everything(&Config::new()));
        for (key, value) in settings {
            let mut c = Config::new();
            c.set(key, value).unwrap();
            let all = ops.iter().all(|op| rate(&c, op, false) >= 1.0);
            if sends_everything(&c) {
                assert!(all, "{key}={value}: claims every request is sent");
            }
            if key != "sample_rate" || value != "100" {
                assert!(!sends_everything(&c), "{key}={value}");
            }
        }
    }

    #[test]
    fn decisions() {
        let mut c = Config::new();
        assert!(should_send(&c, "Controller/x", false, 0.99));
        assert!(
            !should_send(&c, "Controller/x", true, 0.0),
            "ignore tag always wins"
        );
        c.set("ignore_endpoints", "/health,admin").unwrap();
        assert!(!should_send(&c, "Controller/health/live", false, 0.0));
        assert!(!should_send(&c, "Controller/GET /health", false, 0.0));
        assert!(should_send(&c, "Controller/GET /users", false, 0.5));
        c.set("sample_endpoints", "users:0,users/admin:100")
            .unwrap();
        assert!(!should_send(&c, "Controller/users/1", false, 0.0));
        assert!(should_send(&c, "Controller/users/admin/1", false, 0.999));
        c.set("job_sample_rate", "0.25").unwrap();
        assert!(should_send(&c, "Job/mail", false, 0.2));
        assert!(!should_send(&c, "Job/mail", false, 0.3));
        c.set("ignore_jobs", "mail").unwrap();
        assert!(!should_send(&c, "Job/mail", false, 0.0));
        c.set("sample_rate", "0").unwrap();
        assert!(!should_send(&c, "Custom/x", false, 0.0));
        c.set("endpoint_sample_rate", "1").unwrap();
        assert!(should_send(&c, "Controller/other", false, 0.999));
    }
}
