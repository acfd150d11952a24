//! One gateway session over an in-memory link, with the forwarded core-agent frames captured:
//! journals are replayed with the device's span limit and flags, and every counter lands on
//! the right device.

use std::sync::{Arc, Mutex};

use scout_core::device::{Event, FrameWriter, Hello, NameDef, PROTOCOL_VERSION, WireValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Keeps every frame it is given.
#[derive(Default)]
struct Captured(Mutex<Vec<Vec<u8>>>);

impl Forward for Captured {
    fn forward(&self, frame: Vec<u8>) -> Result<(), Dropped> {
        lock(&self.0).push(frame);
        Ok(())
    }
}

impl Captured {
    /// The forwarded requests: per request, the `StartSpan` operations in the batch's order
    /// (children before parents) and the request tags.
    fn requests(&self) -> Vec<(Vec<String>, serde_json::Map<String, serde_json::Value>)> {
        lock(&self.0)
            .iter()
            .map(|f| {
                let json: serde_json::Value = serde_json::from_slice(&f[4..]).unwrap();
                let mut ops = Vec::new();
                let mut tags = serde_json::Map::new();
                for c in json["BatchCommand"]["commands"].as_array().unwrap() {
                    if let Some(s) = c.get("StartSpan") {
                        ops.push(s["operation"].as_str().unwrap().to_string());
                    }
                    if let Some(t) = c.get("TagRequest") {
                        let key = t["tag"].as_str().unwrap().to_string();
                        tags.insert(key, t["value"].clone());
                    }
                }
                (ops, tags)
            })
            .collect()
    }
}

fn gateway() -> (Arc<Gateway>, Arc<Captured>) {
    let captured = Arc::new(Captured::default());
    let mut config = GatewayConfig::new("App", "KEY", "tcp://127.0.0.1:1");
    config.fleet_token = Some("tok".into());
    let c = Arc::clone(&captured);
    let gw = Gateway::with_forwarder(config, move |_, _| Arc::clone(&c) as Arc<dyn Forward>);
    (gw, captured)
}

fn frame(write: impl FnOnce(&mut FrameWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = FrameWriter::new(&mut buf);
    write(&mut w);
    let n = w.finish().unwrap();
    buf.truncate(n);
    buf
}

fn hello(version: u8, device_id: &str, span_limit: u32) -> Vec<u8> {
    frame(|w| {
        w.hello(&Hello {
            version,
            device_id,
            firmware: "fw-1",
            token: "tok",
            tick_hz: 1_000_000,
            uptime: 1_000,
            span_limit,
        })
    })
}

fn name(id: u16, name: &str) -> Vec<u8> {
    frame(|w| w.name(&NameDef { id, name }))
}

fn request(seq: u32, events: &[Event<'_>]) -> Vec<u8> {
    frame(|w| {
        w.request_header(seq, 5_000);
        for e in events {
            w.event(e);
        }
    })
}

const fn start(name: u16) -> Event<'static> {
    Event::Start { name, delta: 10 }
}
const STOP: Event<'static> = Event::Stop { delta: 10 };
const END: Event<'static> = Event::End {
    delta: 10,
    dropped: 0,
};

/// Runs one session fed with `input`, then closed by the device; returns how it ended and what
/// the gateway wrote back.
async fn session(gw: &Arc<Gateway>, input: &[u8]) -> (SessionEnd, Vec<u8>) {
    let (mut dev, link) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(link);
    let g = Arc::clone(gw);
    let task = tokio::spawn(async move { g.session(r, w, "test").await });
    dev.write_all(input).await.unwrap();
    dev.shutdown().await.unwrap();
    let end = task.await.unwrap();
    let mut replies = Vec::new();
    dev.read_to_end(&mut replies).await.unwrap();
    (end, replies)
}

fn downs(bytes: &[u8]) -> Vec<Down> {
    bytes
        .split_inclusive(|&b| b == 0)
        .map(|f| device::decode_down(&mut f.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_journal_is_replayed_with_the_device_span_limit_and_ignore_flags() {
    let (gw, captured) = gateway();
    let mut input = vec![0];
    input.extend(hello(PROTOCOL_VERSION, "dev", 2));
    for (id, n) in [
        (1, "Job/x"),
        (2, "Driver"),
        (3, "Internal"),
        (4, "A"),
        (5, "B"),
    ] {
        input.extend(name(id, n));
    }
    input.extend(name(6, "k"));
    input.extend(request(
        7,
        &[
            start(1),
            Event::RequestTag {
                key: 6,
                value: WireValue::Int(1),
            },
            Event::StartWith {
                name: 2,
                flags: 2,
                delta: 5,
            },
            start(3),
            STOP,
            STOP,
            start(4),
            STOP,
            start(5),
            STOP,
            start(9), // An undefined name: `Device/unnamed` (dropped here by the limit).
            STOP,
            Event::RequestTag {
                key: 6,
                value: WireValue::Int(2),
            },
            END,
        ],
    ));
    let (end, replies) = session(&gw, &input).await;
    assert_eq!(end, SessionEnd::Closed);
    assert_eq!(
        downs(&replies),
        [
            Down::Welcome {
                version: PROTOCOL_VERSION
            },
            Down::TimeSync { id: 0 }
        ]
    );
    let requests = captured.requests();
    assert_eq!(requests.len(), 1);
    let (ops, tags) = &requests[0];
    // The limit (2 completed spans) keeps Driver and A; Internal is hidden by IGNORE_CHILDREN.
    assert_eq!(ops, &["Driver", "A", "Job/x"]);
    assert_eq!(tags["k"], 2, "the later value replaces the earlier one");
    assert_eq!(tags["device.id"], "dev");
    assert_eq!(tags["device.firmware"], "fw-1");
    let s = &gw.stats()["dev"];
    assert_eq!(
        (
            s.frames,
            s.requests,
            s.forwarded,
            s.invalid_requests,
            s.lost
        ),
        (8, 1, 1, 0, 0)
    );
}

#[tokio::test]
async fn invalid_journals_bad_frames_and_gaps_are_counted_per_device() {
    let (gw, captured) = gateway();
    // Garbage before the hello is counted under the link, then moved to the device.
    let mut input = vec![0x05, 0x01, 0x02, 0];
    input.extend(hello(PROTOCOL_VERSION, "dev", 100));
    input.extend(name(1, "Job/x"));
    // The root stopped by `Stop` (only `End` stops it): refused.
    input.extend(request(0, &[start(1), STOP, END]));
    // No root.
    input.extend(request(1, &[END]));
    input.extend([0x03, 0xff, 0xff, 0]);
    // Seq 3 after 1: one lost.
    input.extend(request(3, &[start(1), END]));
    let (end, _) = session(&gw, &input).await;
    assert_eq!(end, SessionEnd::Closed);
    let stats = gw.stats();
    assert!(!stats.contains_key("?test"), "{stats:?}");
    let s = &stats["dev"];
    assert_eq!((s.bad_frames, s.frames), (2, 5));
    assert_eq!(
        (s.requests, s.invalid_requests, s.forwarded, s.lost),
        (3, 2, 1, 1)
    );
    assert_eq!(captured.requests().len(), 1);
}

#[tokio::test]
async fn a_second_hello_on_the_same_link_keeps_the_device_counters() {
    let (gw, captured) = gateway();
    let mut input = vec![0];
    input.extend(hello(PROTOCOL_VERSION, "dev", 100));
    input.extend(name(1, "Job/x"));
    input.extend(request(0, &[start(1), END]));
    input.extend([0x02, 0xff, 0xff, 0xff, 0]);
    // The device rebooted on the same serial line: its sequence starts again.
    input.extend([0]);
    input.extend(hello(PROTOCOL_VERSION, "dev", 100));
    input.extend(name(1, "Job/y"));
    input.extend(request(0, &[start(1), END]));
    let (end, _) = session(&gw, &input).await;
    assert_eq!(end, SessionEnd::Closed);
    let s = &gw.stats()["dev"];
    assert_eq!(
        (s.connections, s.requests, s.forwarded, s.lost, s.bad_frames),
        (2, 2, 2, 0, 1)
    );
    let ops: Vec<Vec<String>> = captured.requests().into_iter().map(|r| r.0).collect();
    assert_eq!(ops, [["Job/x"], ["Job/y"]], "names are per connection");
}

#[tokio::test]
async fn messages_before_the_hello_and_other_versions_are_rejected() {
    let (gw, _) = gateway();
    let (end, replies) = session(&gw, &name(1, "Job/x")).await;
    assert_eq!(end, SessionEnd::Rejected(RejectReason::Protocol));
    assert_eq!(
        downs(&replies),
        [Down::Reject {
            reason: RejectReason::Protocol
        }]
    );
    let (end, _) = session(&gw, &hello(1, "old", 100)).await;
    assert_eq!(end, SessionEnd::Rejected(RejectReason::Version));
    let stats = gw.stats();
    assert_eq!(stats["?test"].rejected, 2);
    assert!(!stats.contains_key("old"));
}
