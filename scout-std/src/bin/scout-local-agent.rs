//! `scout-local-agent`: a local Scout core agent that shows your traces in the terminal.
//!
//! See [`scout_std::local_agent::cli`] for the command line and `docs/local-agent.md`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(scout_std::local_agent::cli::run(args));
}
