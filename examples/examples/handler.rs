//! A hand-instrumented HTTP handler on a plain tokio `TcpListener`: one web transaction per
//! request, request context from the request line, spans around the work.
//!
//! ```text
//! cargo run -p scout-examples --example handler                 # serve 6 requests to itself, then exit
//! cargo run -p scout-examples --example handler -- 127.0.0.1:3000   # serve until Ctrl-C
//! ```
//!
//! With `SCOUT_CORE_AGENT_SOCKET_PATH` set, it reports to that core agent (all `SCOUT_*` settings
//! apply). Otherwise it launches the local core agent in a temporary directory (build it first:
//! `cargo build -p scout-std --bin scout-local-agent`) and prints what it got at exit.

use std::time::Duration;

use scout_std::local_agent::Sandbox;
use scout_std::{Config, Context, FutureExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The route's transaction name and the handler's response.
async fn route(method: &str, path: &str) -> (&'static str, u16, String) {
    match (method, path.split('/').collect::<Vec<_>>().as_slice()) {
        ("GET", ["", "users", id]) => {
            Context::add("user_id", *id);
            let name = async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                format!("user {id}")
            }
            .instrument_kind("SQL", "Query")
            .await;
            let body = async { format!("{{\"name\": \"{name}\"}}") }
                .instrument("Render JSON")
                .await;
            ("UsersController#show", 200, body)
        }
        ("GET", ["", "health"]) => {
            scout_std::ignore_transaction();
            ("HealthController#check", 200, "ok".into())
        }
        _ => {
            scout_std::tag_request("error", "true".into());
            ("NotFound", 404, "not found".into())
        }
    }
}

async fn handle(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? <= 2 {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
    let (status, body) = async {
        Context::add("method", method);
        Context::add("path", path);
        let (name, status, body) = route(method, path).await;
        scout_std::rename_transaction(name);
        (status, body)
    }
    .web_transaction("Request")
    .await;
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Not Found" },
        body.len()
    );
    reader.get_mut().write_all(response.as_bytes()).await
}

async fn serve(listener: TcpListener, limit: Option<usize>) -> std::io::Result<()> {
    let mut served = 0;
    while limit.is_none_or(|n| served < n) {
        let (stream, _) = listener.accept().await?;
        served += 1;
        tokio::spawn(async move {
            if let Err(e) = handle(stream).await {
                eprintln!("handler: {e}");
            }
        });
    }
    Ok(())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: demo\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out.lines().next().unwrap_or("").to_owned())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let sandbox = Sandbox::unless_configured()?;
    let config = Config::new().name("Handler Example").monitor(true);
    let config = match &sandbox {
        Some(s) => s.configure(config),
        None => config,
    };
    let agent = scout_std::install(config);

    if let Some(addr) = std::env::args().nth(1) {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on http://{addr}/users/42 (Ctrl-C to stop)");
        tokio::select! {
            r = serve(listener, None) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let paths = [
            "/users/1", "/users/2", "/users/3", "/health", "/nope", "/users/4",
        ];
        let server = tokio::spawn(serve(listener, Some(paths.len())));
        for path in paths {
            println!("GET {path} -> {}", get(addr, path).await?);
        }
        server.await??;
    }

    // Flushes what is queued, then stops the agent (off the async workers).
    tokio::task::spawn_blocking(move || drop(agent)).await?;
    if let Some(s) = sandbox {
        let summary =
            tokio::task::spawn_blocking(move || s.summary(Duration::from_secs(5)).map(|r| r.text));
        print!("{}", summary.await??);
    }
    Ok(())
}
