//! The demo firmware on the host: embassy-executor on std, embassy-time's std driver, the same
//! application code a board runs (`common/app.rs`), talking to a gateway over TCP or a serial
//! device (e.g. one end of a pseudo-terminal).
//!
//! ```text
//! cargo run -p scout-embassy --features std --example host_device -- tcp 127.0.0.1:7070 [COUNT]
//! cargo run -p scout-embassy --features std --example host_device -- serial /dev/pts/N [COUNT]
//! ```
//!
//! It sends COUNT transactions (default 20), waits until they are written, and exits.

#[path = "common/app.rs"]
mod app;

use embassy_executor::Executor;
use embassy_time::Timer;
use embedded_io_adapters::tokio_1::FromTokio;

#[embassy_executor::task]
async fn link_tcp(addr: String) {
    loop {
        match std::net::TcpStream::connect(&addr).and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(s)
        }) {
            Ok(s) => {
                let (r, w) = s.into_split();
                let end = app::AGENT
                    .run_link(FromTokio::new(r), FromTokio::new(w))
                    .await;
                eprintln!("link ended: {end:?}");
            }
            Err(e) => eprintln!("connect {addr}: {e}"),
        }
        Timer::after_millis(500).await;
    }
}

#[embassy_executor::task]
async fn link_serial(path: String) {
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|f| Ok((f.try_clone()?, f)))
        {
            Ok((r, w)) => {
                let r = FromTokio::new(tokio::fs::File::from_std(r));
                let w = FromTokio::new(tokio::fs::File::from_std(w));
                let end = app::AGENT.run_link(r, w).await;
                eprintln!("link ended: {end:?}");
            }
            Err(e) => eprintln!("open {path}: {e}"),
        }
        Timer::after_millis(500).await;
    }
}

#[embassy_executor::task]
async fn main_task(count: u32) {
    app::wait_for_link().await;
    app::sensor_loop(count, 20).await;
    // Let the link send every finished request, then report and exit.
    while app::AGENT.pending() > 0 {
        Timer::after_millis(10).await;
    }
    Timer::after_millis(200).await;
    println!("{:?}", app::AGENT.stats());
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, target) = match (args.get(1), args.get(2)) {
        (Some(k), Some(t)) => (k.clone(), t.clone()),
        _ => {
            eprintln!("usage: host_device tcp HOST:PORT [COUNT] | serial PATH [COUNT]");
            std::process::exit(2);
        }
    };
    let count = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The tokio reactor runs on its worker; the executor's thread polls tokio I/O, which needs
    // the runtime context.
    let _rt = rt.enter();
    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    executor.run(move |spawner| {
        match kind.as_str() {
            "tcp" => spawner.spawn(link_tcp(target).expect("task")),
            _ => spawner.spawn(link_serial(target).expect("task")),
        }
        spawner.spawn(main_task(count).expect("task"));
    });
}
