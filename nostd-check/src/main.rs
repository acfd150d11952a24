//! Host-only `no_std` proof for `scout-core`.
//!
//! Built for the host target with the prebuilt (panic=unwind) `core`, started by
//! the C runtime through a C `main`, linked against libc only. Prints `ok` and
//! exits 0 when [`exercise`] returns 0.
#![no_std]
#![no_main]

use core::ffi::{c_char, c_int, c_void};

use scout_core::command::{RequestBatch, write_frame_to_slice};
use scout_core::{
    Config, RawJson, Request, RequestIds, SpanFlags, SpanIdx, SpanStart, SpanStop, Timestamp,
    Value, reply, sampling,
};

#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn abort() -> !;
}

fn print(s: &str) {
    // SAFETY: fd 1/2 and a valid (ptr, len) pair; a short write only shortens the message.
    unsafe {
        write(1, s.as_ptr().cast(), s.len());
    }
}

fn eprint(s: &str) {
    // SAFETY: as in `print`.
    unsafe {
        write(2, s.as_ptr().cast(), s.len());
    }
}

// ---------------------------------------------------------------------------
// The exercise: real scout-core use without allocation (there is no global allocator in this
// binary, so anything that allocated would not link). Each failed check prints its message and
// returns its own non-zero code.
// ---------------------------------------------------------------------------

/// Configuration as firmware writes it: a `const`, built at compile time.
const CONFIG: Config = Config::new()
    .name("nostd-check")
    .key("KEY123")
    .monitor(true)
    .ignore_endpoints(&["/health"])
    .sample_endpoints(&[("users", 0.0)]);

/// The environment, as key/value pairs (a device has no `std::env`).
static ENV: [(&str, &str); 6] = [
    ("SCOUT_MONITOR", "false"),
    ("SCOUT_SAMPLE_RATE", "50"),
    ("SCOUT_SPAN_LIMIT", "lots"),
    // 70 bytes: longer than the key's 64-byte capacity, so refused (and never shown).
    (
        "SCOUT_KEY",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    ),
    ("HOME", "/root"),
    ("SCOUT_NOT_A_SETTING", "1"),
];

const T0: u64 = 1_700_000_000_000_000; // 2023-11-14T22:13:20Z

/// The frame `RequestBatch` must produce for the request built below (the Python agent's
/// spacing and escaping; ids derived from fixed seeds).
const GOLDEN: &str = concat!(
    r#"{"BatchCommand": {"commands": [{"StartRequest": {"timestamp": "2023-11-14T22:13:20.000000+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101"}}, {"TagRequest": {"timestamp": "2023-11-14T22:13:20.000000+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "tag": "user_id", "value": 42}}, "#,
    r#"{"StartSpan": {"timestamp": "2023-11-14T22:13:20.000150+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-b3466f8a-7b81-4989-8000-000000000000", "parent_id": "span-1d0b14e4-db01-4fed-9e53-5eede31428f0", "operation": "Custom/row"}}, "#,
    r#"{"TagSpan": {"timestamp": "2023-11-14T22:13:20.000150+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-b3466f8a-7b81-4989-8000-000000000000", "tag": "ratio", "value": 0.25}}, "#,
    r#"{"TagSpan": {"timestamp": "2023-11-14T22:13:20.000150+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-b3466f8a-7b81-4989-8000-000000000000", "tag": "ok", "value": true}}, "#,
    r#"{"StopSpan": {"timestamp": "2023-11-14T22:13:20.000175+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-b3466f8a-7b81-4989-8000-000000000000"}}, "#,
    r#"{"StartSpan": {"timestamp": "2023-11-14T22:13:20.000100+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-1d0b14e4-db01-4fed-9e53-5eede31428f0", "parent_id": "span-1e535eed-e314-48f0-9bd2-38973a2b148a", "operation": "SQL/Query"}}, "#,
    r#"{"TagSpan": {"timestamp": "2023-11-14T22:13:20.000100+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-1d0b14e4-db01-4fed-9e53-5eede31428f0", "tag": "db.statement", "value": "SELECT \"\u00e9\""}}, "#,
    r#"{"StopSpan": {"timestamp": "2023-11-14T22:13:20.000400+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-1d0b14e4-db01-4fed-9e53-5eede31428f0"}}, "#,
    r#"{"StartSpan": {"timestamp": "2023-11-14T22:13:20.000000+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-1e535eed-e314-48f0-9bd2-38973a2b148a", "parent_id": null, "operation": "Controller/users#show"}}, "#,
    r#"{"StopSpan": {"timestamp": "2023-11-14T22:13:20.000400+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101", "span_id": "span-1e535eed-e314-48f0-9bd2-38973a2b148a"}}, "#,
    r#"{"FinishRequest": {"timestamp": "2023-11-14T22:13:20.000400+00:00", "request_id": "req-01010101-0101-4101-8101-010101010101"}}"#,
    "]}}"
);

macro_rules! check {
    ($cond:expr, $code:expr, $msg:expr) => {
        if !$cond {
            eprint(concat!("nostd-check: ", $msg, "\n"));
            return $code;
        }
    };
}

fn exercise() -> i32 {
    // --- configuration: const builder + environment layering ---------------------------
    let mut cfg = CONFIG;
    let (mut errors, mut key_value_shown) = (0u32, false);
    let report = cfg.apply_env(ENV, |e| {
        errors += 1;
        if e.variable == "SCOUT_KEY" && e.value.is_some() {
            key_value_shown = true;
        }
    });
    check!(
        report.applied == 2 && report.rejected == 2 && report.unknown == 1,
        10,
        "apply_env report"
    );
    check!(errors == 2, 11, "apply_env error callback count");
    check!(
        !key_value_shown,
        12,
        "SCOUT_KEY's value passed to the error callback"
    );
    check!(
        !cfg.monitor && cfg.sample_rate == 0.5,
        13,
        "apply_env values"
    );
    check!(
        cfg.span_limit == 1500 && cfg.key.as_str() == "KEY123",
        14,
        "refused values kept the code's"
    );
    check!(cfg.name.as_str() == "nostd-check", 15, "const name");

    // --- a request: 3 nested spans with tags ---------------------------------------------
    let mut req: Request = Request::new();
    req.begin(
        RequestIds::from_parts([1; 16], [2, 3]),
        Timestamp(T0),
        cfg.span_limit,
    );
    let root = req.start_span(
        "Controller/users#show".into(),
        Timestamp(T0),
        SpanFlags::NO_BACKTRACE,
    );
    check!(root == SpanStart::Recorded(SpanIdx(0)), 20, "root span");
    check!(
        req.tag_request("user_id".into(), Value::Int(42)).is_ok(),
        21,
        "tag_request"
    );
    let sql = req.start_span("SQL/Query".into(), Timestamp(T0 + 100), SpanFlags::NONE);
    check!(sql == SpanStart::Recorded(SpanIdx(1)), 22, "child span");
    check!(
        req.tag_span("db.statement".into(), Value::Str("SELECT \"é\""))
            .is_ok(),
        23,
        "tag_span str"
    );
    let name = ["Custom", "/", "row"];
    let inner = req.start_span_parts(&name, Timestamp(T0 + 150), SpanFlags::NONE);
    check!(
        inner == SpanStart::Recorded(SpanIdx(2)),
        24,
        "grandchild span"
    );
    check!(
        req.tag_span("ratio".into(), Value::Float(0.25)).is_ok(),
        25,
        "tag_span float"
    );
    check!(
        req.tag_span("ok".into(), Value::Bool(true)).is_ok(),
        26,
        "tag_span bool"
    );
    check!(req.depth() == 3, 27, "depth 3");
    let stop = req.stop_span(Timestamp(T0 + 175));
    check!(
        stop == Ok(SpanStop {
            span: Some(SpanIdx(2)),
            duration_us: Some(25),
            finished: false
        }),
        28,
        "stop innermost"
    );
    // `finish` closes the two still open (a transaction abandoned mid-way).
    req.finish(Timestamp(T0 + 400));
    check!(req.is_finished() && req.depth() == 0, 29, "finish");
    check!(
        req.is_real() && req.operation() == Some("Controller/users#show"),
        30,
        "operation"
    );
    check!(req.drops().total() == 0, 31, "nothing dropped");
    let mut order = [0u16; 3];
    let mut n = 0;
    for s in req.spans() {
        check!(n < 3, 32, "more than 3 spans");
        order[n] = s.index().0;
        n += 1;
    }
    check!(n == 3 && order == [2, 1, 0], 33, "completion order");

    // --- encoding into a stack buffer ----------------------------------------------------
    let mut buf = [0u8; 4096];
    let len = match write_frame_to_slice(&RequestBatch(&req), &mut buf, 1 << 20) {
        Ok(len) => len,
        Err(_) => {
            eprint("nostd-check: write_frame_to_slice failed\n");
            return 40;
        }
    };
    let body = &buf[4..len];
    check!(
        buf[..4] == ((len - 4) as u32).to_be_bytes(),
        41,
        "length prefix"
    );
    check!(body.is_ascii(), 42, "frame is not ASCII");
    let body_str = core::str::from_utf8(body).unwrap_or("");
    check!(
        RawJson::new(body_str).is_ok(),
        43,
        "frame is not valid JSON"
    );
    if body != GOLDEN.as_bytes() {
        eprint("nostd-check: frame differs from the golden one; got:\n");
        eprint(body_str);
        eprint("\n");
        return 44;
    }
    let mut small = [0u8; 64];
    check!(
        write_frame_to_slice(&RequestBatch(&req), &mut small, 1 << 20).is_err(),
        45,
        "a too-small buffer must be refused"
    );

    // --- replies ------------------------------------------------------------------------
    match reply::decode_reply(br#"{"Register": {"id": null, "result": "Success"}}"#) {
        Ok(r) => check!(
            r.command == "Register" && r.is_success(),
            50,
            "decoded reply fields"
        ),
        Err(_) => {
            eprint("nostd-check: decode_reply refused a valid reply\n");
            return 51;
        }
    }
    match reply::decode_reply(br#"{"Failure": {"message": "bad key"}}"#) {
        Ok(r) => check!(
            !r.is_success() && r.message == Some("bad key"),
            52,
            "failure reply"
        ),
        Err(_) => return 53,
    }
    check!(
        reply::decode_reply(b"{\"Register\": ").is_err(),
        54,
        "truncated reply accepted"
    );

    // --- sampling -----------------------------------------------------------------------
    let op = req.operation().unwrap_or("");
    check!(
        !sampling::should_send(&cfg, op, false, 0.0),
        60,
        "users:0 must not send"
    );
    check!(
        !sampling::should_send(&cfg, "Controller/GET /health", false, 0.0),
        61,
        "ignored endpoint"
    );
    check!(
        sampling::should_send(&cfg, "Job/mail", false, 0.49),
        62,
        "job at rate 0.5, draw 0.49"
    );
    check!(
        !sampling::should_send(&cfg, "Job/mail", false, 0.51),
        63,
        "job at rate 0.5, draw 0.51"
    );
    check!(
        !sampling::should_send(&cfg, "Job/mail", true, 0.0),
        64,
        "ignore tag wins"
    );
    0
}
// ---------------------------------------------------------------------------

/// C entry point, called by `__libc_start_main`.
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    match exercise() {
        0 => {
            print("ok\n");
            0
        }
        code => {
            eprint("nostd-check: exercise() failed\n");
            code
        }
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    eprint("nostd-check: panic\n");
    // SAFETY: libc abort never returns.
    unsafe { abort() }
}

/// The prebuilt host `core` is compiled with panic=unwind and references this
/// symbol; stable Rust cannot define the lang item, so provide an empty stub.
/// It is never called: this binary is built with panic=abort.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Trivial critical-section implementation: this binary is single-threaded
/// and installs no signal handlers, so there is nothing to mask.
struct SingleThreaded;
critical_section::set_impl!(SingleThreaded);

// SAFETY: the process has exactly one thread and no interrupt/signal handlers
// touch scout-core state, so acquire/release need not do anything.
unsafe impl critical_section::Impl for SingleThreaded {
    unsafe fn acquire() -> critical_section::RawRestoreState {}
    unsafe fn release(_token: critical_section::RawRestoreState) {}
}
