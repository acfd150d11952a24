//! The instrumentation API: transactions, spans, context, in sync and async code.
//!
//! The current request lives in a thread-local slot. Synchronous code keeps it there for the
//! duration of a transaction guard; the future wrappers ([`FutureExt`]) own their request and
//! put it into the slot only while they are being polled, so a request follows its task across
//! `.await` points and tokio worker threads, and two concurrent requests never see each other's
//! spans. A task spawned inside a request starts with no request: wrap it in its own
//! transaction, or record its work in the parent with [`FutureExt::instrument`] awaited inside
//! the parent's task.
//!
//! Spans opened with no current request are not recorded (there is nothing to report them in),
//! at the cost of one thread-local read.

use crate::agent::{self, Shared};
use crate::pool::StdRequest;
use crate::stats;
use scout_core::{SpanFlags, SpanIdx, SpanStart, Text, Timestamp, Value};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

/// The request being recorded on this thread, with the agent it reports to.
pub(crate) struct Current {
    pub(crate) req: Box<StdRequest>,
    pub(crate) agent: Arc<Shared>,
    /// Work carried into spawned tasks comes back here (created by [`carry`]).
    mailbox: Option<Arc<Mailbox>>,
    /// For the request of a carried task: the parent's mailbox and the span to merge under.
    deliver_to: Option<(Arc<Mailbox>, Option<SpanIdx>)>,
}

impl Current {
    fn new(req: Box<StdRequest>, agent: Arc<Shared>) -> Self {
        Self {
            req,
            agent,
            mailbox: None,
            deliver_to: None,
        }
    }
}

/// Where carried tasks leave their finished requests until the parent request finishes.
#[derive(Debug, Default)]
struct Mailbox {
    /// Closed flag, and the carried requests with the span to merge each under.
    inner: std::sync::Mutex<(bool, Vec<Carried>)>,
}

/// A carried task's finished request and the parent span to merge it under.
type Carried = (Box<StdRequest>, Option<SpanIdx>);

impl Mailbox {
    fn put(&self, req: Box<StdRequest>, under: Option<SpanIdx>, agent: &Shared) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.0 {
            drop(inner);
            stats::inc(&agent.counters.carried_too_late);
            agent.pool.give(req);
        } else {
            inner.1.push((req, under));
        }
    }
    fn close(&self) -> Vec<Carried> {
        match self.inner.lock() {
            Ok(mut inner) => {
                inner.0 = true;
                std::mem::take(&mut inner.1)
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Hands a finished request on: to the parent's mailbox for a carried task, otherwise (after
/// merging its carried tasks) to the sender.
fn deliver(mut cur: Current) {
    if let Some((mailbox, under)) = cur.deliver_to.take() {
        mailbox.put(cur.req, under, &cur.agent);
        return;
    }
    if let Some(mailbox) = cur.mailbox.take() {
        for (child, under) in mailbox.close() {
            cur.req.absorb(&*child, under);
            cur.agent.pool.give(child);
        }
    }
    cur.agent.submit(cur.req);
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `f` on the current request, if there is one.
fn with_current<R>(f: impl FnOnce(&mut Current) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.as_mut().map(f)))
        .ok()
        .flatten()
}

fn swap_current(slot: &mut Option<Current>) {
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            std::mem::swap(&mut *c, slot);
        }
    });
}

/// What a transaction or span guard must undo.
#[derive(Debug, Clone, Copy)]
enum Opened {
    /// Nothing was recorded (agent not installed, or no current request).
    Nothing,
    /// A span in the current request (recorded at this index, or not recorded).
    Span(Option<SpanIdx>),
}

/// Opens a span in the current request, creating a request first when `new_request` and there
/// is none. Returns what to close.
fn open(kind: &str, name: &str, flags: SpanFlags, new_request: bool) -> Opened {
    // The clock is read only once there is something to record.
    let op = [kind, "/", name];
    if let Some(r) = with_current(|c| c.req.start_span_parts(&op, agent::now(), flags)) {
        return Opened::Span(recorded(r));
    }
    if !new_request {
        return Opened::Nothing;
    }
    let Some(agent) = agent::active() else {
        return Opened::Nothing;
    };
    let now = agent::now();
    let mut req = agent.new_request(now);
    let r = req.start_span_parts(&op, now, flags);
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = Some(Current::new(req, agent));
        }
    });
    Opened::Span(recorded(r))
}

fn recorded(r: SpanStart) -> Option<SpanIdx> {
    match r {
        SpanStart::Recorded(i) => Some(i),
        _ => None,
    }
}

/// Closes what `open` opened; submits the request when it finished.
fn close(opened: Opened) {
    let Opened::Span(idx) = opened else { return };
    let now = agent::now();
    let finished = with_current(|c| {
        let stop = match idx {
            Some(i) => c.req.stop_span_at(i, now),
            None => c.req.stop_span(now),
        };
        let Ok(stop) = stop else { return false };
        if let (Some(span), Some(d)) = (stop.span, stop.duration_us)
            && d >= c.agent.backtrace_threshold_us()
        {
            crate::backtrace::tag_slow_span(&mut c.req, span);
        }
        stop.finished
    });
    if finished == Some(true) {
        let mut slot = None;
        swap_current(&mut slot);
        if let Some(cur) = slot {
            deliver(cur);
        }
    }
}

/// A web transaction or background job in progress (see [`web_transaction`]). Stops when
/// dropped. Not `Send`: in async code use [`FutureExt::web_transaction`] instead.
#[must_use = "the transaction stops when this guard is dropped"]
#[derive(Debug)]
pub struct TransactionGuard {
    opened: Opened,
    _not_send: PhantomData<*const ()>,
}

impl TransactionGuard {
    /// Tags the transaction's request (transaction tags are request tags, as in Python).
    pub fn tag<'a>(&self, key: &str, value: impl Into<Value<'a>>) {
        tag_request(key, value.into());
    }
    /// Stops the transaction now (the same as dropping the guard).
    pub fn stop(self) {}
}

impl Drop for TransactionGuard {
    fn drop(&mut self) {
        close(self.opened);
    }
}

/// A span in progress (see [`instrument`]). Stops when dropped. Not `Send`.
#[must_use = "the span stops when this guard is dropped"]
#[derive(Debug)]
pub struct SpanGuard {
    opened: Opened,
    _not_send: PhantomData<*const ()>,
}

impl SpanGuard {
    /// Tags this span.
    pub fn tag<'a>(&self, key: &str, value: impl Into<Value<'a>>) {
        if let Opened::Span(Some(idx)) = self.opened {
            let value = value.into();
            with_current(|c| c.req.tag_span_at(idx, Text::Borrowed(key), value));
        }
    }
    /// Stops the span now (the same as dropping the guard).
    pub fn stop(self) {}
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        close(self.opened);
    }
}

/// Starts a web transaction, `Controller/<name>`, on this thread.
///
/// ```
/// let _agent = scout_std::install(scout_core::Config::new()); // monitor off: a no-op
/// {
///     let tx = scout_std::web_transaction("UsersController#show");
///     tx.tag("user_id", 42);
///     let _sql = scout_std::instrument_kind("SQL", "Query");
/// } // both stop here; the request is queued for sending
/// ```
pub fn web_transaction(name: &str) -> TransactionGuard {
    transaction("Controller", name)
}

/// Starts a background transaction, `Job/<name>`, on this thread.
pub fn background_transaction(name: &str) -> TransactionGuard {
    transaction("Job", name)
}

fn transaction(kind: &str, name: &str) -> TransactionGuard {
    let opened = open(kind, name, SpanFlags::NO_BACKTRACE, true);
    if let Opened::Span(_) = opened {
        with_current(|c| c.req.mark_real());
    }
    TransactionGuard {
        opened,
        _not_send: PhantomData,
    }
}

/// Runs `f` inside a web transaction.
pub fn with_web_transaction<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let _t = web_transaction(name);
    f()
}

/// Runs `f` inside a background transaction.
pub fn with_background_transaction<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let _t = background_transaction(name);
    f()
}

thread_local! {
    static EXPLICIT: RefCell<Vec<TransactionGuard>> = const { RefCell::new(Vec::new()) };
}

/// Starts a web transaction that lasts until [`stop_transaction`] on the same thread
/// (Python's `WebTransaction.start`).
pub fn start_web_transaction(name: &str) {
    let g = web_transaction(name);
    let _ = EXPLICIT.try_with(|e| e.borrow_mut().push(g));
}

/// Starts a background transaction that lasts until [`stop_transaction`] on the same thread.
pub fn start_background_transaction(name: &str) {
    let g = background_transaction(name);
    let _ = EXPLICIT.try_with(|e| e.borrow_mut().push(g));
}

/// Stops the transaction most recently started with `start_*_transaction` on this thread.
pub fn stop_transaction() {
    let g = EXPLICIT.try_with(|e| e.borrow_mut().pop()).ok().flatten();
    drop(g);
}

/// Opens a `Custom/<name>` span in the current request.
pub fn instrument(name: &str) -> SpanGuard {
    instrument_kind("Custom", name)
}

/// Opens a `<kind>/<name>` span (e.g. `SQL/Query`, `HTTP/GET`) in the current request.
pub fn instrument_kind(kind: &str, name: &str) -> SpanGuard {
    SpanGuard {
        opened: open(kind, name, SpanFlags::NONE, false),
        _not_send: PhantomData,
    }
}

/// Opens a span with explicit [`SpanFlags`] (e.g. `IGNORE_CHILDREN` for a driver whose own
/// calls should not be recorded).
pub fn instrument_with_flags(kind: &str, name: &str, flags: SpanFlags) -> SpanGuard {
    SpanGuard {
        opened: open(kind, name, flags, false),
        _not_send: PhantomData,
    }
}

/// Runs `f` inside a `Custom/<name>` span.
pub fn instrument_fn<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let _s = instrument(name);
    f()
}

/// Tags the current request with any key (integrations use this for `path`, `user_ip`,
/// `error`, ...). For user context use [`Context::add`], which applies the key rules.
pub fn tag_request(key: &str, value: Value<'_>) {
    with_current(|c| {
        if c.req.tag_request(Text::Borrowed(key), value).is_err() {
            stats::inc(&c.agent.counters.data_dropped_capacity);
        }
    });
}

/// [`tag_request`] with a key that needs no copy (the integrations' own keys).
pub(crate) fn tag_request_static(key: &'static str, value: Value<'_>) {
    with_current(|c| {
        if c.req.tag_request(Text::Static(key), value).is_err() {
            stats::inc(&c.agent.counters.data_dropped_capacity);
        }
    });
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// Access to the current request for setting several tags at once (see [`with_tagger`]).
pub(crate) struct Tagger<'a> {
    cur: &'a mut Current,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl Tagger<'_> {
    /// Tags the request (a full request counts the tag as dropped).
    pub(crate) fn tag(&mut self, key: &'static str, value: Value<'_>) {
        if self.cur.req.tag_request(Text::Static(key), value).is_err() {
            stats::inc(&self.cur.agent.counters.data_dropped_capacity);
        }
    }
    /// When the request began.
    pub(crate) fn start_time(&self) -> Timestamp {
        self.cur.req.start_time()
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// Runs `f` with the current request, if there is one.
pub(crate) fn with_tagger<R>(f: impl FnOnce(&mut Tagger<'_>) -> R) -> Option<R> {
    with_current(|cur| f(&mut Tagger { cur }))
}

/// Tags the innermost open span of the current request.
pub fn tag_span(key: &str, value: Value<'_>) {
    with_current(|c| {
        let _ = c.req.tag_span(Text::Borrowed(key), value);
    });
}

/// Custom context: request tags that show in Scout's trace view.
#[derive(Debug, Clone, Copy)]
pub struct Context;

impl Context {
    /// Adds a request tag. Keys must be non-empty, at most 128 bytes of `A-Z a-z 0-9 _ -`;
    /// values a string, integer, float or boolean. Invalid pairs are ignored with a logged
    /// reason and counted; the return value says whether the tag was added.
    pub fn add<'a>(key: &str, value: impl Into<Value<'a>>) -> bool {
        let value = value.into();
        if let Err(e) = scout_core::check_context(key, &value) {
            log::warn!(target: "scout_apm", "context {key:?} ignored: {e}");
            with_current(|c| stats::inc(&c.agent.counters.context_rejected));
            return false;
        }
        with_current(|c| c.req.tag_request(Text::Borrowed(key), value).is_ok()).unwrap_or(false)
    }
}

/// Marks the current request as ignored: it will not be reported.
pub fn ignore_transaction() {
    tag_request("ignore_transaction", Value::Bool(true));
}

/// Renames the current transaction (request tag `transaction.name`).
pub fn rename_transaction(name: &str) {
    tag_request("transaction.name", Value::Str(name));
}

/// The current request's id (`req-<uuid>`), if a request is being recorded on this thread.
pub fn current_request_id() -> Option<String> {
    with_current(|c| c.req.ids().request_id().as_str().to_owned())
}

/// True when a request is being recorded on this thread (or in this task while polled).
pub fn in_request() -> bool {
    with_current(|_| ()).is_some()
}

/// Futures that record themselves as transactions or spans.
pub trait FutureExt: Future + Sized {
    /// Runs the future as a web transaction `Controller/<name>` with its own request, which
    /// is current only while the future is polled.
    fn web_transaction(self, name: &str) -> Transaction<Self> {
        Transaction::new(self, "Controller", name)
    }
    /// Runs the future as a background transaction `Job/<name>`.
    fn background_transaction(self, name: &str) -> Transaction<Self> {
        Transaction::new(self, "Job", name)
    }
    /// Records a spawned task into the request `carry` was taken from, as `Custom/<name>`
    /// (see [`carry`]). With `None` (no request was current) the future runs unrecorded.
    fn carried(self, carry: Option<Carry>, name: &str) -> Transaction<Self> {
        let mut t = Transaction::build(self, "Custom", name, false);
        match carry {
            Some(c) => t.state.carry = Some(c),
            None => t.state.name = None,
        }
        t
    }
    /// Records the future as a `Custom/<name>` span of the request current when it is first
    /// polled (await it inside the transaction's task).
    fn instrument(self, name: &str) -> Instrumented<Self> {
        Instrumented::new(self, "Custom", name)
    }
    /// Records the future as a `<kind>/<name>` span.
    fn instrument_kind(self, kind: &str, name: &str) -> Instrumented<Self> {
        Instrumented::new(self, kind, name)
    }
}

impl<F: Future> FutureExt for F {}

pin_project_lite::pin_project! {
    /// A future recorded as a transaction (see [`FutureExt::web_transaction`]) or as a request
    /// scope (see [`request_scope`]).
    ///
    /// At its first poll it joins the request current at that moment, if any (opening its span
    /// there, as the synchronous API does), and otherwise begins its own request, which is current
    /// only while the future is polled. Polling is panic-safe: a panic inside tags the request
    /// `error` and the request is still reported when the future is dropped.
    #[must_use = "futures do nothing unless polled"]
    pub struct Transaction<F> {
        #[pin]
        inner: F,
        state: TxState,
    }
    impl<F> PinnedDrop for Transaction<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before completion (cancelled, or unwinding from a panic): report what
            // was recorded.
            if let Some(cur) = this.project().state.slot.take() {
                finish_abandoned(cur);
            }
        }
    }
}

/// The state of a [`Transaction`] besides the wrapped future.
struct TxState {
    kind: &'static str,
    name: Option<Box<str>>,
    real: bool,
    slot: Option<Current>,
    opened: Opened,
    joined: bool,
    carry: Option<Carry>,
}

impl<F> std::fmt::Debug for Transaction<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("kind", &self.state.kind)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Transaction<F> {
    fn new(inner: F, kind: &'static str, name: &str) -> Self {
        Self::build(inner, kind, name, true)
    }

    fn build(inner: F, kind: &'static str, name: &str, real: bool) -> Self {
        Self {
            inner,
            state: TxState::new(kind, Some(name.into()), real),
        }
    }
}

impl TxState {
    fn new(kind: &'static str, name: Option<Box<str>>, real: bool) -> Self {
        Self {
            kind,
            name,
            real,
            slot: None,
            opened: Opened::Nothing,
            joined: false,
            carry: None,
        }
    }

    fn first_poll(&mut self, name: &str) {
        if let Some(carry) = self.carry.take() {
            let cur = carry.start(name);
            self.opened = Opened::Span(cur.req.innermost_span());
            self.slot = Some(cur);
            return;
        }
        let parts: &[&str] = if self.kind.is_empty() {
            &[name]
        } else {
            &[self.kind, "/", name]
        };
        let flags = SpanFlags::NO_BACKTRACE;
        if in_request() {
            let now = agent::now();
            let r = with_current(|c| c.req.start_span_parts(parts, now, flags));
            if let Some(r) = r {
                self.opened = Opened::Span(recorded(r));
                self.joined = true;
                if self.real {
                    with_current(|c| c.req.mark_real());
                }
            }
            return;
        }
        if let Some(agent) = agent::active() {
            let now = agent::now();
            let mut req = agent.new_request(now);
            let r = req.start_span_parts(parts, now, flags);
            if self.real {
                req.mark_real();
            }
            self.opened = Opened::Span(recorded(r));
            self.slot = Some(Current::new(req, agent));
        }
    }
}

/// Puts a request into the thread-local slot for the duration of a poll, and takes it back
/// when dropped, also while unwinding from a panic (then tagging the request `error`).
pub(crate) struct Installed<'a> {
    slot: &'a mut Option<Current>,
}

impl<'a> Installed<'a> {
    fn new(slot: &'a mut Option<Current>) -> Self {
        swap_current(slot);
        Self { slot }
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tag_request("error", Value::Static("true"));
        }
        swap_current(self.slot);
    }
}

impl<F: Future> Future for Transaction<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut inner = this.inner;
        let state = this.state;
        if let Some(name) = state.name.take() {
            state.first_poll(&name);
        }
        if state.joined {
            let out = inner.as_mut().poll(cx);
            if out.is_ready() {
                close(std::mem::replace(&mut state.opened, Opened::Nothing));
            }
            return out;
        }
        if state.slot.is_none() {
            return inner.poll(cx);
        }
        let out = {
            let _installed = Installed::new(&mut state.slot);
            let out = inner.as_mut().poll(cx);
            if out.is_ready() {
                // Close while our request is current; when it finishes, `close` submits it and
                // empties the thread-local slot.
                close(std::mem::replace(&mut state.opened, Opened::Nothing));
            }
            out
        };
        if out.is_ready() {
            // Spans left open inside: finish and report what was recorded.
            if let Some(cur) = state.slot.take() {
                finish_abandoned(cur);
            }
        }
        out
    }
}

/// Runs `fut` in a request whose root span is `root_operation` used as is (e.g. `Middleware`),
/// joining the current request if there is one. The request is reported only if a
/// `Controller/` or `Job/` span starts inside it: framework integrations open the scope in
/// their outermost layer and the controller span once routing named the endpoint.
pub fn request_scope<F: Future>(fut: F, root_operation: &str) -> Transaction<F> {
    Transaction::build(fut, "", root_operation, false)
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// A transaction begun eagerly by a framework integration, when its service is called rather
/// than at the first poll (see [`begin`]): the span is open; [`Begun::run`] creates the future
/// with the request current and wraps it. Dropped without `run` (a panic in between), the new
/// request is reported as abandoned.
pub(crate) struct Begun {
    state: TxState,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl Drop for Begun {
    fn drop(&mut self) {
        if let Some(cur) = self.state.slot.take() {
            finish_abandoned(cur);
        }
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// Opens the span `parts` (concatenated, used as the operation) now: in the current request
/// if there is one, otherwise in a new request of `agent` (when given). Costs no allocation:
/// the name is copied into the request. `real` marks the request as reportable (a
/// `Controller/` or `Job/` span).
pub(crate) fn begin(parts: &[&str], real: bool, agent: Option<Arc<Shared>>) -> Begun {
    let flags = SpanFlags::NO_BACKTRACE;
    let mut state = TxState::new("", None, real);
    let joined = with_current(|c| {
        let r = c.req.start_span_parts(parts, agent::now(), flags);
        if real {
            c.req.mark_real();
        }
        recorded(r)
    });
    if let Some(r) = joined {
        state.opened = Opened::Span(r);
        state.joined = true;
    } else if let Some(agent) = agent {
        let now = agent::now();
        let mut req = agent.new_request(now);
        let r = req.start_span_parts(parts, now, flags);
        if real {
            req.mark_real();
        }
        state.opened = Opened::Span(recorded(r));
        state.slot = Some(Current::new(req, agent));
    }
    Begun { state }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl Begun {
    /// Makes a new request current until the guard drops, so that services called meanwhile
    /// (creating the future to wrap) see it. A joined request is current already.
    pub(crate) fn enter(&mut self) -> Option<Installed<'_>> {
        self.state
            .slot
            .is_some()
            .then(|| Installed::new(&mut self.state.slot))
    }

    /// The transaction recording `inner`.
    pub(crate) fn into_transaction<F: Future>(mut self, inner: F) -> Transaction<F> {
        let state = std::mem::replace(&mut self.state, TxState::new("", None, false));
        Transaction { inner, state }
    }
}

fn finish_abandoned(mut cur: Current) {
    if cur.req.is_open() {
        cur.req.finish(agent::now());
    }
    deliver(cur);
}

/// A handle to the current request, to record the work of a spawned task or thread into it
/// (see [`carry`]).
#[derive(Debug, Clone)]
pub struct Carry {
    mailbox: Arc<Mailbox>,
    under: Option<SpanIdx>,
    agent: Arc<Shared>,
}

/// Takes a handle to the current request so that a task spawned now can record into it.
///
/// Spawned tasks do not attach to the request that spawned them by themselves (they may
/// outlive it, and run concurrently with it). With a `Carry`, the task records into a request
/// of its own under a root span `Custom/<name>`; when the task finishes, its spans are merged
/// into the parent request under the span that was innermost when `carry` was called. Work
/// that finishes after the parent request finished is counted (`carried_too_late`), not sent.
///
/// ```
/// use scout_std::FutureExt;
/// # async fn demo() {
/// async {
///     let carry = scout_std::carry();
///     let task = tokio::spawn(async { /* work */ }.carried(carry, "Prefetch"));
///     task.await.unwrap();
/// }
/// .web_transaction("Users#index")
/// .await;
/// # }
/// ```
pub fn carry() -> Option<Carry> {
    with_current(|c| {
        let mailbox = c.mailbox.get_or_insert_with(Arc::default).clone();
        Carry {
            mailbox,
            under: c.req.innermost_span(),
            agent: c.agent.clone(),
        }
    })
}

impl Carry {
    /// Records the rest of this thread's work, until the guard drops, as `Custom/<name>` in the
    /// carried request (for `std::thread::spawn`).
    pub fn enter(&self, name: &str) -> TransactionGuard {
        let now = agent::now();
        let mut req = self.agent.new_request(now);
        let r = req.start_span_parts(&["Custom", "/", name], now, SpanFlags::NONE);
        let mut cur = Current::new(req, self.agent.clone());
        cur.deliver_to = Some((self.mailbox.clone(), self.under));
        let mut slot = Some(cur);
        swap_current(&mut slot);
        if let Some(previous) = slot {
            // A request was already current on this thread: keep it, do not carry.
            let mut ours = Some(previous);
            swap_current(&mut ours);
            if let Some(ours) = ours {
                ours.agent.pool.give(ours.req);
            }
            return TransactionGuard {
                opened: Opened::Nothing,
                _not_send: PhantomData,
            };
        }
        TransactionGuard {
            opened: Opened::Span(recorded(r)),
            _not_send: PhantomData,
        }
    }

    fn start(&self, name: &str) -> Current {
        let now = agent::now();
        let mut req = self.agent.new_request(now);
        req.start_span_parts(&["Custom", "/", name], now, SpanFlags::NONE);
        let mut cur = Current::new(req, self.agent.clone());
        cur.deliver_to = Some((self.mailbox.clone(), self.under));
        cur
    }
}

pin_project_lite::pin_project! {
    /// A future recorded as a span (see [`FutureExt::instrument`]).
    #[must_use = "futures do nothing unless polled"]
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        // `kind/name`, split at `split`.
        op: Box<str>,
        split: usize,
        opened: Option<Opened>,
    }
}

impl<F> std::fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("operation", &self.op)
            .finish()
    }
}

impl<F: Future> Instrumented<F> {
    fn new(inner: F, kind: &str, name: &str) -> Self {
        let mut op = String::with_capacity(kind.len() + 1 + name.len());
        op.push_str(kind);
        op.push('/');
        op.push_str(name);
        Self {
            inner,
            op: op.into_boxed_str(),
            split: kind.len(),
            opened: None,
        }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.opened.is_none() {
            let (kind, name) = this.op.split_at(*this.split);
            *this.opened = Some(open(kind, &name[1..], SpanFlags::NONE, false));
        }
        let out = this.inner.poll(cx);
        if out.is_ready() {
            if let Some(o) = this.opened.take() {
                close(o);
            }
            *this.opened = Some(Opened::Nothing);
        }
        out
    }
}

/// The start time of the current request, if one is being recorded (for queue-time
/// measurements relative to the request's start, spec §4.11).
pub fn request_start() -> Option<Timestamp> {
    with_current(|c| c.req.start_time())
}

/// Reads the wall clock as a [`Timestamp`].
pub fn now() -> Timestamp {
    agent::now()
}
