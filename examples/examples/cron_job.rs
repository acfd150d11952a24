//! A cron-style job: install, record one background transaction, flush at exit.
//!
//! ```text
//! cargo run -p scout-examples --example cron_job
//! ```
//!
//! With `SCOUT_CORE_AGENT_SOCKET_PATH` set, the job reports to that core agent (all `SCOUT_*`
//! settings apply). Otherwise it launches the local core agent in a temporary directory
//! (build it first: `cargo build -p scout-std --bin scout-local-agent`) and prints what it got.

use std::thread::sleep;
use std::time::Duration;

use scout_std::Config;
use scout_std::local_agent::Sandbox;

fn main() -> std::io::Result<()> {
    let sandbox = Sandbox::unless_configured()?;
    let config = Config::new().name("Nightly Cron").monitor(true);
    let config = match &sandbox {
        Some(s) => s.configure(config),
        None => config,
    };
    let agent = scout_std::install(config);

    scout_std::with_background_transaction("NightlyReport", || {
        scout_std::Context::add("rows", 1200);
        {
            let q = scout_std::instrument_kind("SQL", "Query");
            q.tag("db.statement", "SELECT * FROM orders WHERE day = $1");
            sleep(Duration::from_millis(15));
        }
        scout_std::instrument_fn("Build CSV", || sleep(Duration::from_millis(8)));
        let upload = scout_std::instrument_kind("HTTP", "PUT");
        upload.tag("url", "https://storage.example/reports/nightly.csv");
        sleep(Duration::from_millis(5));
    });

    // A short-lived process: dropping the guard flushes (up to `shutdown_timeout_seconds`).
    drop(agent);
    if let Some(s) = &sandbox {
        print!("{}", s.summary(Duration::from_secs(5))?.text);
    }
    Ok(())
}
