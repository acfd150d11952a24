//! Request slots, with the link task polled by hand (each poll runs it as far as it can go):
//! a finished request waits in its slot until the link takes it; a transaction that finds no
//! idle slot is counted (`queue_full` when a slot holds a finished request, `no_slot` when
//! all are recording); events that do not fit a slot are dropped and counted while the rest
//! of the request is sent; and the gateway's replay (`device::rebuild`) applies ignore flags
//! and the span limit from the hello exactly as a core `Request` does.

mod support;

use scout_core::device::Up;
use scout_core::{Fixed, RequestIds, SpanFlags, Text, Timestamp, Value};
use scout_embassy::{Agent, AgentConfig, LinkEnd};
use support::{Gate, Mode, Polled, Silent, Stream, frames};

fn config(id: &'static str) -> AgentConfig {
    AgentConfig::new().device_id(id).token("t")
}

/// Attaches a link to `agent` (polled once: hello and drop counters written).
fn attach<const S: usize, const N: usize, const B: usize>(
    agent: &Agent<S, N, B>,
    mode: Mode,
) -> (Polled<'_, LinkEnd>, Gate) {
    let links = agent.stats().links;
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    assert!(!link.poll(), "the link ended: {:?}", link.output());
    assert_eq!(agent.stats().links, links + 1);
    gate.set(mode);
    (link, gate)
}

/// Polls `link` and decodes everything written so far, as the gateway would.
fn sent(link: &mut Polled<'_, LinkEnd>, gate: &Gate) -> Stream {
    assert!(!link.poll(), "the link ended: {:?}", link.output());
    let stream = support::decode(&gate.written());
    assert_eq!(
        (stream.hellos, stream.bad_frames, stream.invalid),
        (1, 0, 0)
    );
    assert_eq!(stream.undefined_names, 0);
    stream
}

#[test]
fn a_finished_request_waits_in_its_slot_until_the_link_takes_it() {
    let agent: Agent<1, 8, 64> = Agent::new(config("wait"));
    let (mut link, gate) = attach(&agent, Mode::Open);

    let tx = agent.transaction("Job/first");
    assert!(tx.is_recording());
    assert_eq!(agent.pending(), 0, "recording, not finished");
    tx.finish();
    assert_eq!(agent.pending(), 1);
    assert_eq!(agent.stats().queued, 1);
    // Its slot is not idle until the link takes the request.
    assert!(!agent.transaction("Job/refused").is_recording());
    assert_eq!(agent.stats().drops.queue_full, 1);

    let stream = sent(&mut link, &gate);
    assert_eq!(agent.pending(), 0);
    assert_eq!(stream.requests.len(), 1);
    assert_eq!(stream.requests[0].names(), ["Job/first"]);

    // The slot is idle again.
    let tx = agent.transaction("Job/second");
    assert!(tx.is_recording());
    tx.finish();
    let stream = sent(&mut link, &gate);
    let seqs: Vec<(u32, &str)> = stream
        .requests
        .iter()
        .map(|r| (r.seq, r.spans[0].name.as_str()))
        .collect();
    assert_eq!(seqs, [(0, "Job/first"), (1, "Job/second")]);
    let s = agent.stats();
    assert_eq!((s.queued, s.drops.queue_full, s.drops.total()), (2, 1, 1));
    // The changed counters reached the gateway.
    assert_eq!(stream.drops.last().map(|d| d.queue_full), Some(1));
}

#[test]
fn slots_holding_finished_requests_count_queue_full() {
    let agent: Agent<2, 8, 64> = Agent::new(config("full"));
    let (mut link, gate) = attach(&agent, Mode::Stalled);
    agent.transaction("Job/a").finish();
    // The link stalls writing the definition of the request's name.
    assert!(!link.poll());
    assert_eq!(agent.pending(), 1);
    agent.transaction("Job/b").finish();
    assert_eq!(agent.pending(), 2);
    // Both slots hold finished requests and the link makes no progress.
    for _ in 0..3 {
        assert!(!agent.transaction("Job/c").is_recording());
        assert!(!link.poll());
    }
    let d = agent.stats().drops;
    assert_eq!((d.queue_full, d.no_slot), (3, 0));
    assert_eq!(agent.pending(), 2);

    gate.set(Mode::Open);
    let stream = sent(&mut link, &gate);
    assert_eq!(agent.pending(), 0);
    // The slots are idle again.
    agent.transaction("Job/c").finish();
    let stream_after = sent(&mut link, &gate);
    assert_eq!(stream.requests.len(), 2);
    let names: Vec<(u32, &str)> = stream_after
        .requests
        .iter()
        .map(|r| (r.seq, r.spans[0].name.as_str()))
        .collect();
    assert_eq!(names, [(0, "Job/a"), (1, "Job/b"), (2, "Job/c")]);
    assert_eq!(agent.stats().queued, 3);
    assert_eq!(stream.drops.last().map(|d| d.queue_full), Some(3));
}

#[test]
fn slots_all_recording_count_no_slot() {
    let agent: Agent<2, 8, 64> = Agent::new(config("busy"));
    let (mut link, gate) = attach(&agent, Mode::Open);
    let a = agent.transaction("Job/a");
    let b = agent.transaction("Job/b");
    let c = agent.transaction("Job/c");
    assert!(a.is_recording() && b.is_recording() && !c.is_recording());
    // A transaction without a slot records nothing and finishes nothing.
    c.tag_request("ignored", Value::Int(1));
    assert!(!c.start_span("Step", SpanFlags::NONE));
    c.finish();
    let d = agent.stats().drops;
    assert_eq!((d.no_slot, d.queue_full, d.items), (1, 0, 0));
    assert_eq!(agent.pending(), 0);

    // One slot finished and waiting, the other recording: `queue_full`.
    a.finish();
    assert!(!agent.transaction("Job/d").is_recording());
    let d = agent.stats().drops;
    assert_eq!((d.no_slot, d.queue_full), (1, 1));
    b.finish();

    let stream = sent(&mut link, &gate);
    let names: Vec<&str> = stream
        .requests
        .iter()
        .map(|r| r.spans[0].name.as_str())
        .collect();
    assert_eq!(names, ["Job/a", "Job/b"]);
    let last = stream.drops.last().unwrap();
    assert_eq!((last.no_slot, last.queue_full), (1, 1));
}

/// Span names, distinct (names must be `'static`).
const STEPS: [&str; 24] = [
    "Step/00", "Step/01", "Step/02", "Step/03", "Step/04", "Step/05", "Step/06", "Step/07",
    "Step/08", "Step/09", "Step/10", "Step/11", "Step/12", "Step/13", "Step/14", "Step/15",
    "Step/16", "Step/17", "Step/18", "Step/19", "Step/20", "Step/21", "Step/22", "Step/23",
];

#[test]
fn spans_past_the_slot_are_dropped_and_counted_and_the_rest_is_sent() {
    // 64 bytes: room for the root and a few spans.
    let agent: Agent<1, 32, 64> = Agent::new(config("overflow"));
    let (mut link, gate) = attach(&agent, Mode::Open);
    let tx = agent.transaction("Job/many");
    let recorded: Vec<bool> = STEPS
        .iter()
        .map(|&name| {
            let ok = tx.start_span(name, SpanFlags::NONE);
            tx.stop_span();
            ok
        })
        .collect();
    tx.finish();
    let kept: Vec<&str> = STEPS
        .iter()
        .zip(&recorded)
        .filter_map(|(&n, &ok)| ok.then_some(n))
        .collect();
    let dropped = STEPS.len() - kept.len();
    assert!(
        !kept.is_empty() && dropped > STEPS.len() / 2,
        "{recorded:?}"
    );
    assert!(recorded[0]);

    let stream = sent(&mut link, &gate);
    assert_eq!(stream.requests.len(), 1, "the request is still sent");
    let r = &stream.requests[0];
    let mut expected = vec!["Job/many"];
    expected.extend(&kept);
    assert_eq!(r.names(), expected);
    assert!(r.parents()[1..].iter().all(|&p| p == Some(0)), "{r:?}");
    assert_eq!(r.dropped as usize, dropped);
    assert_eq!(r.drops.total(), 0, "the gateway dropped nothing more");
    let s = agent.stats();
    assert_eq!(s.drops.items as usize, dropped);
    assert_eq!((s.queued, s.drops.too_large), (1, 0));
    assert_eq!(stream.drops.last().map(|d| d.items as usize), Some(dropped));
}

#[test]
fn a_span_that_does_not_fit_drops_its_subtree_and_keeps_the_request_well_formed() {
    let agent: Agent<1, 32, 96> = Agent::new(config("nested"));
    let (mut link, gate) = attach(&agent, Mode::Open);
    let tx = agent.transaction("Job/deep");
    // A chain of nested spans, each tagged, each tag naming its depth.
    let mut recorded = Vec::new();
    for (depth, &name) in STEPS.iter().enumerate() {
        recorded.push(tx.start_span(name, SpanFlags::NONE));
        tx.tag_span("depth", Value::Int(depth as i64));
    }
    // Then a request tag and a sibling of the chain, after it closes.
    for _ in STEPS {
        tx.stop_span();
    }
    tx.tag_request("after", Value::Int(1));
    tx.finish();

    // Once a start is dropped, every deeper one is too.
    let depth = recorded.iter().take_while(|&&ok| ok).count();
    assert!(depth > 0 && depth < STEPS.len(), "{recorded:?}");
    assert!(recorded[depth..].iter().all(|&ok| !ok), "{recorded:?}");

    let stream = sent(&mut link, &gate);
    let r = &stream.requests[0];
    let mut expected = vec!["Job/deep"];
    expected.extend(&STEPS[..depth]);
    assert_eq!(r.names(), expected);
    // A chain: each span under the previous one, and closed (no span outlives its parent).
    for (i, s) in r.spans.iter().enumerate().skip(1) {
        assert_eq!(s.parent, Some(i - 1), "{r:?}");
        let p = &r.spans[i - 1];
        assert!(s.start >= p.start && s.start + s.duration <= p.start + p.duration);
    }
    // Tags on recorded spans arrived (where there was room), with their own span's depth.
    let tags: Vec<(usize, i64)> = r
        .tags
        .iter()
        .filter(|t| t.key == "depth")
        .map(|t| (t.target, t.value.unwrap()))
        .collect();
    for &(target, value) in &tags {
        assert_eq!(target as i64, value + 2, "{tags:?}");
    }
    let after = usize::from(r.tag(0, "after").is_some());
    // Every call that did not arrive was counted.
    let calls = 2 * STEPS.len() + 1;
    assert_eq!(
        (r.spans.len() - 1) + tags.len() + after + r.dropped as usize,
        calls,
        "{r:?}"
    );
    assert_eq!(agent.stats().drops.items, r.dropped);
}

#[test]
fn a_request_whose_root_does_not_fit_is_counted_too_large() {
    // 24 bytes: the hello fits the link's buffer, no event fits the slot.
    let agent: Agent<1, 8, 24> = Agent::new(config("d"));
    let (mut link, gate) = attach(&agent, Mode::Open);
    let tx = agent.transaction("Job/big");
    assert!(tx.is_recording());
    assert!(!tx.start_span("Step", SpanFlags::NONE));
    tx.finish();
    let s = agent.stats();
    assert_eq!((s.drops.too_large, s.queued), (1, 0));
    assert_eq!(agent.pending(), 0, "the slot is idle again");
    let stream = sent(&mut link, &gate);
    assert!(stream.requests.is_empty());
    assert_eq!(stream.drops.last().map(|d| d.too_large), Some(1));
    assert!(agent.transaction("Job/next").is_recording());
}

/// One call of a recorded script.
#[derive(Debug, Clone, Copy)]
enum Call {
    Start(&'static str, SpanFlags),
    Stop,
    SpanTag(&'static str, i64),
    RequestTag(&'static str, i64),
}

/// Runs `calls` in a device transaction named `root`; returns what `start_span` returned.
fn on_device<const S: usize, const N: usize, const B: usize>(
    agent: &Agent<S, N, B>,
    root: &'static str,
    calls: &[Call],
) -> Vec<bool> {
    let tx = agent.transaction(root);
    assert!(tx.is_recording());
    let mut started = Vec::new();
    for &c in calls {
        match c {
            Call::Start(op, flags) => started.push(tx.start_span(op, flags)),
            Call::Stop => tx.stop_span(),
            Call::SpanTag(k, v) => tx.tag_span(k, Value::Int(v)),
            Call::RequestTag(k, v) => tx.tag_request(k, Value::Int(v)),
        }
    }
    tx.finish();
    started
}

/// Runs `calls` on a core request (as a server records them) under a root span `root`.
fn on_core(root: &'static str, calls: &[Call], span_limit: u32) -> support::Request {
    let mut r: Box<scout_core::Request<Fixed>> = Box::default();
    let mut t = 1_000u64;
    let mut tick = || {
        t += 10;
        Timestamp(t)
    };
    r.begin(RequestIds::default(), tick(), span_limit);
    let _ = r.start_span(Text::Static(root), tick(), SpanFlags::NONE);
    for &c in calls {
        match c {
            Call::Start(op, flags) => {
                let _ = r.start_span(Text::Static(op), tick(), flags);
            }
            Call::Stop => {
                let _ = r.stop_span(tick());
            }
            Call::SpanTag(k, v) => {
                let _ = r.tag_span(Text::Static(k), Value::Int(v));
            }
            Call::RequestTag(k, v) => {
                let _ = r.tag_request(Text::Static(k), Value::Int(v));
            }
        }
    }
    r.finish(tick());
    support::Request {
        seq: 0,
        spans: support::spans_of(&r),
        tags: support::tags_of(&r),
        dropped: 0,
        drops: r.drops(),
        events: 0,
    }
}

/// The shape of a request: names, parents, tags and the core's drop counts (no times).
fn shape(
    r: &support::Request,
) -> (
    Vec<&str>,
    Vec<Option<usize>>,
    Vec<support::Tag>,
    scout_core::Drops,
) {
    (r.names(), r.parents(), r.tags.clone(), r.drops)
}

#[test]
fn ignore_flags_apply_at_the_gateway_as_in_a_core_request() {
    use Call::*;
    let both = SpanFlags::IGNORE.union(SpanFlags::IGNORE_CHILDREN);
    let calls = [
        // A driver call whose internals are hidden.
        Start("Driver/query", SpanFlags::IGNORE_CHILDREN),
        SpanTag("rows", 3),
        Start("Driver/internal", SpanFlags::NONE),
        SpanTag("hidden", 1),
        Start("Driver/deeper", SpanFlags::NONE),
        Stop,
        Stop,
        Start("Driver/ignored", SpanFlags::IGNORE),
        Stop,
        Stop,
        // An ignored wrapper: its children go under its parent.
        Start("Wrapper", SpanFlags::IGNORE),
        SpanTag("lost", 2),
        Start("Inner", SpanFlags::NONE),
        SpanTag("k", 4),
        Start("Innermost", SpanFlags::IGNORE_CHILDREN),
        Start("Below", SpanFlags::NONE),
        Stop,
        Stop,
        Stop,
        Stop,
        // Ignored with its children.
        Start("Step/hidden", both),
        Start("Step/hidden-child", SpanFlags::NONE),
        Stop,
        Stop,
        RequestTag("req", 5),
        Start("Step/last", SpanFlags::NONE),
        Stop,
    ];
    let agent: Agent<1, 32, 256> = Agent::new(config("flags"));
    let (mut link, gate) = attach(&agent, Mode::Open);
    let started = on_device(&agent, "Job/flags", &calls);
    assert!(
        started.iter().all(|&ok| ok),
        "the device records every span"
    );

    let stream = sent(&mut link, &gate);
    let r = &stream.requests[0];
    assert_eq!((r.dropped, agent.stats().drops.total()), (0, 0));
    let core = on_core("Job/flags", &calls, 1500);
    assert_eq!(shape(r), shape(&core));
    // What that is, spelled out.
    assert_eq!(
        r.names(),
        [
            "Job/flags",
            "Driver/query",
            "Inner",
            "Innermost",
            "Step/last"
        ]
    );
    assert_eq!(r.parents(), [None, Some(0), Some(0), Some(2), Some(0)]);
    assert_eq!(r.tag(2, "rows"), Some(3));
    assert_eq!(r.tag(3, "k"), Some(4));
    assert_eq!(r.tag(0, "req"), Some(5));
    assert_eq!(r.tags.len(), 3, "{:?}", r.tags);
    assert_eq!(r.drops.total(), 0, "ignored spans are not drops");
}

#[test]
fn the_hello_carries_the_span_limit_and_the_replay_honours_it() {
    let agent: Agent<1, 32, 128> = Agent::new(config("limit").span_limit(3));
    let (mut link, gate) = attach(&agent, Mode::Open);
    let hello = frames(&gate.written()).into_iter().find_map(|m| match m {
        Up::Hello(h) => Some(h.span_limit),
        _ => None,
    });
    assert_eq!(hello, Some(3));

    let mut calls = Vec::new();
    for (i, &name) in STEPS[..6].iter().enumerate() {
        calls.extend([
            Call::Start(name, SpanFlags::NONE),
            Call::SpanTag("i", i as i64),
            Call::Stop,
        ]);
    }
    let started = on_device(&agent, "Job/limited", &calls);
    assert!(started.iter().all(|&ok| ok), "the device applies no limit");

    let stream = sent(&mut link, &gate);
    assert_eq!(stream.span_limit, Some(3));
    let r = &stream.requests[0];
    assert_eq!(r.dropped, 0);
    assert_eq!(r.names(), ["Job/limited", "Step/00", "Step/01", "Step/02"]);
    assert_eq!(r.drops.span_limit, 3);
    assert_eq!(shape(r), shape(&on_core("Job/limited", &calls, 3)));

    // `from_core` takes the core configuration's span limit.
    let agent: Agent<1, 8, 64> = Agent::new(AgentConfig::from_core(
        &scout_core::Config::new().span_limit(64),
    ));
    let (_link, gate) = attach(&agent, Mode::Open);
    let stream = support::decode(&gate.written());
    assert_eq!(stream.span_limit, Some(64));
}

#[test]
fn names_are_defined_once_per_link() {
    let agent: Agent<1, 8, 64> = Agent::new(config("names"));
    let (mut link, gate) = attach(&agent, Mode::Open);
    for _ in 0..3 {
        agent.transaction("Job/same").finish();
        sent(&mut link, &gate);
    }
    let defs = frames(&gate.written())
        .iter()
        .filter(|m| matches!(m, Up::Name(_)))
        .count();
    assert_eq!(defs, 1);
    // A new link defines them again.
    drop(link);
    let (_link, gate) = attach(&agent, Mode::Open);
    let msgs = frames(&gate.written());
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Up::Name(n) if n.id == 1 && n.name == "Job/same")),
        "{msgs:?}"
    );
    assert_eq!(agent.stats().links, 2);
}
