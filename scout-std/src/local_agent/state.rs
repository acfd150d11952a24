//! The shared state behind one agent: frame handling, storage, aggregation and export.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{LineWriter, Write as _};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::aggregate::{Aggregator, EndpointSummary};
use super::config::Limits;
use super::model::{AppEvent, Counters, FinishedRequest, ReceivedMessage};
use super::protocol::{Command, DecodeError, ParseError, ReplyBytes, failure_reply, success_reply};
use super::rebuild::{Origin, Rebuilder, Rebuilt, ReceiveTime};
use super::summary::{self, AppInfo};
use super::timestamp::Timestamp;

const MAX_APPS: usize = 256;
/// Bad frames per connection logged at `warn`; later ones at `debug`.
const WARN_PER_CONNECTION: u32 = 5;

/// Per-connection protocol state.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) peer: String,
    app: Option<Arc<str>>,
    bad_logged: u32,
}

impl Connection {
    pub(crate) fn new(id: u64, peer: String) -> Self {
        Self {
            id,
            peer,
            app: None,
            bad_logged: 0,
        }
    }

    /// Logs a rejected frame, rate limited per connection.
    pub(crate) fn log_bad(&mut self, what: &str) {
        self.bad_logged = self.bad_logged.saturating_add(1);
        if self.bad_logged <= WARN_PER_CONNECTION {
            log::warn!("connection {} ({}): {what}", self.id, self.peer);
            if self.bad_logged == WARN_PER_CONNECTION {
                log::warn!(
                    "connection {}: further bad frames are logged at debug level",
                    self.id
                );
            }
        } else {
            log::debug!("connection {} ({}): {what}", self.id, self.peer);
        }
    }
}

/// The outcome of one frame.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) bytes: ReplyBytes,
    /// The frame was `CoreAgentShutdown`.
    pub(crate) shutdown: bool,
}

/// A frame decoded without touching the shared state (so connections can decode in parallel).
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// Not UTF-8 JSON; the failure message.
    InvalidJson(String),
    /// JSON: the value itself when frames are retained, and the command or why it is invalid.
    Json {
        message: Option<Value>,
        decoded: Result<Command<'a>, DecodeError>,
    },
}

impl<'a> Parsed<'a> {
    /// Decodes `bytes`; `keep_value`: also parse it into a [`Value`] for the frame history.
    pub(crate) fn new(bytes: &'a [u8], keep_value: bool) -> Self {
        // The fast scanner checks the UTF-8 of what it reads; a frame it does not take is
        // checked and decoded again from the start, with the same outcome as before it existed.
        let tried_fast = !keep_value;
        if tried_fast && let Some(cmd) = Command::parse_fast(bytes) {
            return Self::Json {
                message: None,
                decoded: Ok(cmd),
            };
        }
        let invalid = |e: &dyn std::fmt::Display| {
            Self::InvalidJson(format!("invalid JSON frame ({} bytes): {e}", bytes.len()))
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return invalid(&e),
        };
        let message = if keep_value {
            match serde_json::from_str::<Value>(text) {
                Ok(v) => Some(v),
                Err(e) => return invalid(&e),
            }
        } else {
            None
        };
        let parsed = if tried_fast {
            Command::parse_serde(text)
        } else {
            Command::parse(text)
        };
        match parsed {
            Ok(cmd) => Self::Json {
                message,
                decoded: Ok(cmd),
            },
            Err(ParseError::Decode(e)) => Self::Json {
                message,
                decoded: Err(e),
            },
            Err(ParseError::Json(e)) => invalid(&e),
        }
    }
}

/// Everything one agent stores.
#[derive(Debug)]
pub(crate) struct State {
    limits: Limits,
    version: String,
    started: Instant,
    rebuilder: Rebuilder,
    aggregator: Aggregator,
    pub(crate) counters: Counters,
    /// Finished requests in the rebuilder's compact form (made public on demand).
    requests: VecDeque<Arc<Rebuilt>>,
    messages: VecDeque<ReceivedMessage>,
    events: VecDeque<AppEvent>,
    apps: BTreeMap<String, AppInfo>,
    export: Option<LineWriter<File>>,
    seq: u64,
    finished_buf: Vec<Rebuilt>,
}

impl State {
    pub(crate) fn new(limits: Limits, version: String, export: Option<File>) -> Self {
        let retained = limits.retain_requests.min(4096);
        Self {
            rebuilder: Rebuilder::new(limits.clone()),
            aggregator: Aggregator::new(limits.clone()),
            limits,
            version,
            started: Instant::now(),
            counters: Counters::default(),
            requests: VecDeque::with_capacity(retained),
            messages: VecDeque::new(),
            events: VecDeque::new(),
            apps: BTreeMap::new(),
            export: export.map(LineWriter::new),
            seq: 0,
            finished_buf: Vec::new(),
        }
    }

    /// Handles one complete frame and returns the reply to send.
    pub(crate) fn handle_frame(&mut self, conn: &mut Connection, bytes: &[u8]) -> Reply {
        let parsed = Parsed::new(bytes, self.limits.retain_messages > 0);
        self.handle_parsed(conn, parsed)
    }

    /// Handles a frame decoded by [`Parsed::new`] (which needs no lock).
    pub(crate) fn handle_parsed(&mut self, conn: &mut Connection, parsed: Parsed<'_>) -> Reply {
        self.counters.frames += 1;
        let (message, decoded) = match parsed {
            Parsed::InvalidJson(msg) => {
                self.counters.invalid_json += 1;
                conn.log_bad(&msg);
                return failure(&msg);
            }
            Parsed::Json { message, decoded } => (message, decoded),
        };
        self.seq += 1;
        if let Some(value) = message
            && self.limits.retain_messages > 0
        {
            if self.messages.len() >= self.limits.retain_messages {
                self.messages.pop_front();
            }
            self.messages.push_back(ReceivedMessage {
                connection: conn.id,
                seq: self.seq,
                message: value,
            });
        }
        match decoded {
            Ok(cmd) => self.handle_command(conn, cmd),
            Err(e) => {
                match e {
                    DecodeError::Unknown(_) => self.counters.unknown_commands += 1,
                    DecodeError::Shape(_) | DecodeError::Field(_) => {
                        self.counters.invalid_commands += 1;
                    }
                }
                let msg = e.message();
                conn.log_bad(&msg);
                failure(&msg)
            }
        }
    }

    /// Handles a decoded command.
    fn handle_command(&mut self, conn: &mut Connection, cmd: Command<'_>) -> Reply {
        let name = cmd.name();
        let Some(app) = conn
            .app
            .clone()
            .or_else(|| cmd.allowed_unregistered().then(|| Arc::<str>::from("")))
        else {
            self.counters.unregistered_commands += 1;
            let msg = format!("{name} before Register; send Register first on this connection");
            conn.log_bad(&msg);
            return failure(&msg);
        };
        let mut now = ReceiveTime::lazy();
        self.counters.commands += cmd.count() as u64;
        let ok = |bytes| Reply {
            bytes,
            shutdown: false,
        };
        match cmd {
            Command::Register { app, key, language } => {
                log::info!(
                    "connection {} registered app {app:?} (language {}, key {})",
                    conn.id,
                    language.as_deref().unwrap_or("unknown"),
                    if key.is_empty() { "empty" } else { "set" }
                );
                if let Some(lang) = language
                    && let Some(info) = self.app_info(&app)
                {
                    info.language.get_or_insert_with(|| lang.into_owned());
                }
                conn.app = Some(Arc::from(app.as_ref()));
                ok(success_reply(name, None))
            }
            Command::CoreAgentVersion => ok(success_reply(name, Some(&self.version))),
            Command::CoreAgentShutdown => {
                log::info!("connection {} asked the agent to shut down", conn.id);
                Reply {
                    bytes: success_reply(name, None),
                    shutdown: true,
                }
            }
            Command::LocalAgentSummary => ok(Cow::Owned(self.summary_reply())),
            Command::ApplicationEvent {
                ts,
                event_type,
                event_value,
                source,
            } => {
                self.event(
                    conn.id,
                    &app,
                    now.or(ts),
                    event_type.into_owned(),
                    *event_value,
                    source.map(Cow::into_owned),
                );
                ok(success_reply(name, None))
            }
            mut cmd => {
                if let Command::Batch(items) = &mut cmd {
                    for item in items.iter_mut() {
                        if let Command::ApplicationEvent {
                            ts,
                            event_type,
                            event_value,
                            source,
                        } = item
                        {
                            self.event(
                                conn.id,
                                &app,
                                now.or(*ts),
                                event_type.to_string(),
                                std::mem::take(&mut **event_value),
                                source.take().map(Cow::into_owned),
                            );
                        }
                    }
                }
                let origin = Origin {
                    connection: conn.id,
                    app,
                };
                let mut out = std::mem::take(&mut self.finished_buf);
                self.rebuilder.apply(
                    &mut cmd,
                    &origin,
                    &mut now,
                    Instant::now(),
                    &mut self.counters,
                    &mut out,
                );
                for r in out.drain(..) {
                    self.finished(r);
                }
                self.finished_buf = out;
                if let Command::Batch(cmds) = cmd {
                    super::scan::recycle_commands(cmds);
                }
                ok(success_reply(name, None))
            }
        }
    }

    /// The reply to `LocalAgentSummary`.
    fn summary_reply(&self) -> Vec<u8> {
        let reply = serde_json::json!({"LocalAgentSummary": {
            "id": null,
            "result": "Success",
            "version": self.version,
            "pid": std::process::id(),
            "requests": self.counters.requests,
            "commands": self.counters.commands,
            "bad_frames": self.counters.bad_frames(),
            "pending": self.rebuilder.pending_len(),
            "summary": self.summary(),
        }});
        serde_json::to_vec(&reply).unwrap_or_default()
    }

    fn app_info(&mut self, app: &str) -> Option<&mut AppInfo> {
        if !self.apps.contains_key(app) && self.apps.len() >= MAX_APPS {
            return None;
        }
        Some(self.apps.entry(app.to_owned()).or_default())
    }

    fn event(
        &mut self,
        connection: u64,
        app: &str,
        timestamp: Timestamp,
        event_type: String,
        value: Value,
        source: Option<String>,
    ) {
        self.counters.events += 1;
        if let Some(info) = self.app_info(app) {
            match event_type.as_str() {
                "scout.metadata" => {
                    let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
                    info.language = s("language").or(info.language.take());
                    info.language_version = s("language_version");
                    info.framework = s("framework");
                }
                "CPU/Utilization" => info.cpu_percent = value.as_f64(),
                "Memory/Physical" => info.memory_mb = value.as_f64(),
                _ => {}
            }
        }
        if self.limits.retain_events == 0 {
            return;
        }
        if self.events.len() >= self.limits.retain_events {
            self.events.pop_front();
        }
        self.events.push_back(AppEvent {
            connection,
            app: app.to_owned(),
            event_type,
            value,
            source,
            timestamp,
        });
    }

    fn finished(&mut self, r: Rebuilt) {
        self.counters.requests += 1;
        log::debug!(
            "request {} finished: {} ({} spans, {} us)",
            r.id(),
            r.endpoint().unwrap_or("(no endpoint)"),
            r.span_count(),
            r.duration_us()
        );
        if let Some(w) = &mut self.export {
            let ok = serde_json::to_writer(&mut *w, &r.to_finished(usize::MAX)).is_ok()
                && w.write_all(b"\n").is_ok();
            if !ok {
                self.counters.export_errors += 1;
                if self.counters.export_errors == 1 {
                    log::error!("cannot write to the export file; further errors are only counted");
                }
            }
        }
        let r = Arc::new(r);
        self.aggregator.record(&r, &mut self.counters);
        // A request that leaves the history and is not a slowest trace gives its buffers back.
        let gone = if self.limits.retain_requests > 0 {
            let old = if self.requests.len() >= self.limits.retain_requests {
                self.requests.pop_front()
            } else {
                None
            };
            self.requests.push_back(r);
            old
        } else {
            Some(r)
        };
        if let Some(done) = gone.and_then(Arc::into_inner) {
            self.rebuilder.recycle(done);
        }
    }

    /// Evicts stale unfinished requests.
    pub(crate) fn expire(&mut self) {
        self.rebuilder.expire(&mut self.counters);
    }

    /// Flushes the export file.
    pub(crate) fn flush(&mut self) {
        if let Some(w) = &mut self.export
            && let Err(e) = w.flush()
        {
            log::error!("cannot flush the export file: {e}");
        }
    }

    pub(crate) fn requests(&self) -> Vec<FinishedRequest> {
        self.requests
            .iter()
            .map(|r| r.to_finished(usize::MAX))
            .collect()
    }

    pub(crate) fn messages(&self) -> Vec<ReceivedMessage> {
        self.messages.iter().cloned().collect()
    }

    pub(crate) fn events(&self) -> Vec<AppEvent> {
        self.events.iter().cloned().collect()
    }

    pub(crate) fn endpoints(&self) -> Vec<EndpointSummary> {
        self.aggregator.summaries()
    }

    pub(crate) fn summary(&self) -> String {
        // The text shows one trace: the slowest of the endpoints' slowest.
        summary::render(
            self.started.elapsed(),
            &self.counters,
            self.rebuilder.pending_len(),
            &self.aggregator.summaries_with(1),
            &self.apps,
        )
    }
}

fn failure(msg: &str) -> Reply {
    Reply {
        bytes: Cow::Owned(failure_reply(msg)),
        shutdown: false,
    }
}

/// A detached ingest pipeline (decode + rebuild + aggregate, no sockets) for benchmarks and fuzzing.
#[derive(Debug)]
pub struct Ingest {
    state: State,
    conn: Connection,
}

impl Ingest {
    /// A pipeline with `limits`; no frame history is kept regardless of `limits.retain_messages`.
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            retain_messages: 0,
            ..limits
        };
        Self {
            state: State::new(limits, String::new(), None),
            conn: Connection::new(1, "ingest".into()),
        }
    }

    /// Processes one frame body (JSON bytes) and returns the reply body (usually a constant).
    pub fn frame(&mut self, bytes: &[u8]) -> Cow<'static, [u8]> {
        self.state.handle_frame(&mut self.conn, bytes).bytes
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.state.counters
    }

    /// The summary text.
    pub fn summary(&self) -> String {
        self.state.summary()
    }

    /// Endpoint statistics.
    pub fn endpoints(&self) -> Vec<EndpointSummary> {
        self.state.endpoints()
    }
}
