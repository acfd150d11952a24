//! The main demo (`bash scripts/demo.sh`): an instrumented application reports to the local core
//! agent, which `scout_std`'s own core-agent manager verifies and launches, as it would launch
//! Scout's core agent; then the agent's endpoint table and slowest trace are shown.
//!
//! ```text
//! cargo build -p scout-std --bin scout-local-agent && cargo run -p scout-examples --example demo
//! ```
//!
//! The `scout-local-agent` binary is found next to this example's target directory, or through
//! `SCOUT_LOCAL_AGENT_BIN`.

use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use scout_std::local_agent::Sandbox;
use scout_std::{Config, Context, InstallOptions};

/// Prints errors and the manager's progress, so the launch is visible. (The sender's warning
/// that the core agent does not answer yet, while it is being launched, is left out.)
struct DemoLogger;

impl log::Log for DemoLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Error
            || (m.level() <= log::Level::Info && m.target().starts_with("scout_std::manager"))
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("  [{}] {}", r.level().as_str().to_lowercase(), r.args());
        }
    }

    fn flush(&self) {}
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `GET /users/:id`: one query, a cache lookup, a render.
fn show_user(id: u64) {
    let tx = scout_std::web_transaction("UsersController#show");
    tx.tag("path", format!("/users/{id}").as_str());
    Context::add("user_id", id as i64);
    {
        let q = scout_std::instrument_kind("SQL", "Query");
        q.tag("db.statement", "SELECT * FROM users WHERE id = $1");
        sleep(ms(2 + id % 4));
    }
    {
        let _c = scout_std::instrument_kind("Redis", "GET");
        sleep(ms(1));
    }
    scout_std::instrument_fn("Render user", || sleep(ms(1)));
}

/// `GET /orders`: an N+1 pattern and a call to a payment service.
fn list_orders(page: u64) {
    let _tx = scout_std::web_transaction("OrdersController#index");
    Context::add("page", page as i64);
    for _ in 0..3 {
        let q = scout_std::instrument_kind("SQL", "Query");
        q.tag(
            "db.statement",
            "SELECT * FROM line_items WHERE order_id = $1",
        );
        sleep(ms(2));
    }
    {
        let h = scout_std::instrument_kind("HTTP", "GET");
        h.tag("url", "https://payments.internal/v1/status");
        sleep(ms(8 + 4 * page));
    }
    let _t = scout_std::instrument_kind("Template", "Render");
    sleep(ms(2));
}

/// `POST /checkout`: a slow payment call; the second attempt fails.
fn checkout(attempt: u64) {
    let _tx = scout_std::web_transaction("CheckoutController#create");
    Context::add("cart_items", 3);
    {
        let q = scout_std::instrument_kind("SQL", "Query");
        q.tag(
            "db.statement",
            "INSERT INTO orders (user_id, total) VALUES ($1, $2)",
        );
        sleep(ms(4));
    }
    let h = scout_std::instrument_kind("HTTP", "POST");
    h.tag("url", "https://payments.internal/v1/charge");
    sleep(ms(25 + 20 * attempt));
    if attempt == 1 {
        h.tag("status", 502);
        scout_std::tag_request("error", "true".into());
    }
}

/// A background job: render and mail an invoice.
fn send_invoice() {
    scout_std::with_background_transaction("SendInvoiceEmail", || {
        scout_std::instrument_fn("Render PDF", || sleep(ms(12)));
        let smtp = scout_std::instrument_kind("HTTP", "POST");
        smtp.tag("url", "smtp://mail.internal");
        sleep(ms(6));
    });
}

fn main() -> ExitCode {
    let started = Instant::now();
    static LOGGER: DemoLogger = DemoLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    println!("Scout APM Rust agent demo");
    println!("1. Installing the local agent as a core agent (binary + manifest with its SHA-256)");
    let sandbox = match Sandbox::create_default() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("   {}", sandbox.binary().display());

    println!("2. scout_std::install: the agent's manager verifies and launches it");
    let mut config = sandbox.configure(
        Config::new()
            .name("Demo Shop")
            .key("demo-key-not-sent-anywhere")
            .monitor(true),
    );
    let _ = config.set("shutdown_message_enabled", "false");
    let options = InstallOptions {
        ignore_environment: true,
        ..InstallOptions::default()
    };
    let agent = scout_std::install_with(config, options);

    println!("3. Running the instrumented application (web requests, a job, one error)");
    for id in 1..=4 {
        show_user(id);
    }
    for page in 0..3 {
        list_orders(page);
    }
    checkout(0);
    checkout(1);
    send_invoice();
    let flushed = scout_std::flush(Duration::from_secs(15));
    drop(agent);

    println!("4. What the launched local agent received:\n");
    let code = match sandbox.summary(Duration::from_secs(5)) {
        Ok(s) if flushed && s.requests > 0 => {
            println!("{}", s.text);
            println!(
                "local agent pid {} received {} requests ({} commands)",
                s.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                s.requests,
                s.commands
            );
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("demo: no data from the local agent (flushed: {flushed}): {other:?}");
            if let Ok(log) = std::fs::read_to_string(sandbox.log_file()) {
                eprintln!("--- local agent log ---\n{log}");
            }
            ExitCode::FAILURE
        }
    };
    match sandbox.shutdown(Duration::from_secs(5)) {
        Ok(true) => println!("local agent stopped"),
        Ok(false) => println!("local agent was not running"),
        Err(e) => eprintln!("demo: {e}"),
    }
    drop(sandbox);
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    code
}
