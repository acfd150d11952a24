//! The device wire format: byte-exact golden frames, postcard compatibility of the streamed
//! request encoder, bytes per span, the resynchronising reader, and the gateway's rebuild.

use scout_core::command::{RequestBatch, write_frame_to_slice};
use scout_core::device::{
    self, ClockSync, DecodeError, DeviceDrops, Down, FrameReader, Hello, InvalidRequest, NameDef,
    NameSource, NameTable, PROTOCOL_VERSION, RejectReason, RequestFrame, TimeSyncReply, Up,
    WireRequest, WireSpan, WireTag, WireValue,
};
use scout_core::{Fixed, Request, RequestIds, SpanFlags, Text, Timestamp, Value};

type DevReq = Request<Fixed<16, 16, 128, 8>>;

fn enc<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let n = device::encode(msg, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The request of the documentation: a sensor job with two children and two tags.
fn sample(names: &mut NameTable<8>) -> DevReq {
    for n in [
        "Job/read_sensor",
        "I2C/read",
        "Filter/apply",
        "sensor",
        "bytes",
    ] {
        names.intern(n).unwrap();
    }
    let mut r = DevReq::new();
    r.begin(RequestIds::default(), Timestamp(5_000_000), 1500);
    r.start_span(
        "Job/read_sensor".into(),
        Timestamp(5_000_000),
        SpanFlags::NONE,
    );
    r.tag_request("sensor".into(), Value::Static("bme280"))
        .unwrap();
    r.start_span("I2C/read".into(), Timestamp(5_000_120), SpanFlags::NONE);
    r.tag_span("bytes".into(), Value::Int(6)).unwrap();
    r.stop_span(Timestamp(5_000_970)).unwrap();
    r.start_span("Filter/apply".into(), Timestamp(5_001_000), SpanFlags::NONE);
    r.stop_span(Timestamp(5_001_310)).unwrap();
    r.stop_span(Timestamp(5_001_400)).unwrap();
    r
}

#[test]
fn golden_hello_name_drops_sync() {
    let hello = Up::Hello(Hello {
        version: PROTOCOL_VERSION,
        device_id: "dev-1",
        firmware: "1.0",
        token: "tok",
        tick_hz: 1_000_000,
        uptime: 5_000_000,
    });
    assert_eq!(
        hex(&enc(&hello)),
        "01 17 01 05 64 65 76 2d 31 03 31 2e 30 03 74 6f 6b c0 84 3d c0 96 b1 02 00"
    );
    assert_eq!(
        hex(&enc(&Up::Name(NameDef {
            id: 1,
            name: "Job/read_sensor"
        }))),
        "13 01 01 0f 4a 6f 62 2f 72 65 61 64 5f 73 65 6e 73 6f 72 00"
    );
    let drops = Up::Drops(DeviceDrops {
        queue_full: 2,
        ..DeviceDrops::default()
    });
    assert_eq!(hex(&enc(&drops)), "03 03 02 01 01 01 01 01 01 00");
    let sync = Up::TimeSync(TimeSyncReply {
        id: 7,
        uptime: 5_001_500,
    });
    assert_eq!(hex(&enc(&sync)), "07 04 07 9c a2 b1 02 00");
    assert_eq!(hex(&enc(&Down::Welcome { version: 1 })), "01 02 01 00");
    assert_eq!(
        hex(&enc(&Down::Reject {
            reason: RejectReason::Unauthorized
        })),
        "02 01 01 00"
    );
    assert_eq!(hex(&enc(&Down::TimeSync { id: 7 })), "03 02 07 00");
}

#[test]
fn golden_request_and_postcard_equivalence() {
    let mut names = NameTable::<8>::new();
    let r = sample(&mut names);
    let streamed = enc(&RequestFrame {
        request: &r,
        names: &names,
        seq: 3,
    });
    assert_eq!(
        hex(&streamed),
        "0a 02 03 c0 96 b1 02 f8 0a 03 02 01 0f f8 0a 01 02 78 d2 06 01 03 e8 07 b6 02 02 \
         0e 04 04 06 62 6d 65 32 38 30 02 05 02 0c 01 00"
    );
    // The same bytes as postcard's own encoding of the decoded structure.
    let mut spans = heapless::Vec::new();
    for s in [
        WireSpan {
            parent: 0,
            name: 1,
            start: 0,
            duration: 1400,
        },
        WireSpan {
            parent: 1,
            name: 2,
            start: 120,
            duration: 850,
        },
        WireSpan {
            parent: 1,
            name: 3,
            start: 1000,
            duration: 310,
        },
    ] {
        spans.push(s).unwrap();
    }
    let mut tags = heapless::Vec::new();
    tags.push(WireTag {
        target: 0,
        key: 4,
        value: WireValue::Str("bme280"),
    })
    .unwrap();
    tags.push(WireTag {
        target: 2,
        key: 5,
        value: WireValue::Int(6),
    })
    .unwrap();
    let wire = WireRequest {
        seq: 3,
        start: 5_000_000,
        duration: 1400,
        spans,
        tags,
        dropped: 0,
    };
    assert_eq!(streamed, enc(&Up::Request(wire.clone())));
    let mut frame = streamed.clone();
    assert_eq!(device::decode_up(&mut frame).unwrap(), Up::Request(wire));
}

/// Bytes per span of a 10-span request (1 root, 9 children of 0.1-5 ms), framing included.
#[test]
fn bytes_per_span() {
    let mut names = NameTable::<16>::new();
    let ops: [&'static str; 4] = ["Job/loop", "I2C/read", "SPI/write", "Compute/fft"];
    for op in ops {
        names.intern(op).unwrap();
    }
    let mut r = DevReq::new();
    let t0 = 3_600_000_000; // one hour of uptime
    r.begin(RequestIds::default(), Timestamp(t0), 1500);
    r.start_span("Job/loop".into(), Timestamp(t0), SpanFlags::NONE);
    let mut t = t0 + 15;
    for i in 0..9u64 {
        r.start_span(
            Text::Static(ops[1 + (i as usize % 3)]),
            Timestamp(t),
            SpanFlags::NONE,
        );
        t += 100 + i * 600;
        r.stop_span(Timestamp(t)).unwrap();
        t += 20;
    }
    r.stop_span(Timestamp(t)).unwrap();
    let frame = enc(&RequestFrame {
        request: &r,
        names: &names,
        seq: 1000,
    });
    // Per span: parent 1 + name 1 + start 1-2 + duration 1-2 bytes.
    let per_span = frame.len() as f64 / 10.0;
    println!(
        "10-span request: {} bytes on the wire, {per_span:.1} bytes/span",
        frame.len()
    );
    assert!(per_span <= 8.0, "{per_span}");

    // Worst case of one span: 1 + 3 + 5 + 5 = 14 bytes, plus COBS overhead (1 per 254).
    let worst = WireSpan {
        parent: 255,
        name: u16::MAX,
        start: u32::MAX,
        duration: u32::MAX,
    };
    let mut buf = [0u8; 32];
    let n = postcard::to_slice(&worst, &mut buf).unwrap().len();
    assert_eq!(n, 14);
}

#[test]
fn reader_resyncs_after_garbage_and_counts() {
    let mut names = NameTable::<8>::new();
    let r = sample(&mut names);
    let good = enc(&RequestFrame {
        request: &r,
        names: &names,
        seq: 3,
    });
    let mut stream = Vec::new();
    stream.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x00]); // garbage frame
    stream.extend_from_slice(&good);
    stream.extend_from_slice(&good[..good.len() / 2]); // truncated, then a new frame starts
    stream.push(0);
    stream.extend_from_slice(&[0x55; 300]); // too long for the 128-byte reader
    stream.push(0);
    stream.extend_from_slice(&good);
    let mut reader = FrameReader::<128>::new();
    let mut ok = 0;
    let mut errors = Vec::new();
    // Feed in awkward pieces.
    for chunk in stream.chunks(7) {
        reader.feed_raw(chunk, |f| match f.and_then(device::decode_up) {
            Ok(Up::Request(w)) => {
                assert_eq!(w.seq, 3);
                ok += 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => errors.push(e),
        });
    }
    assert_eq!(ok, 2);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.contains(&DecodeError::TooLong));
    let stats = device::scan(&stream);
    assert_eq!((stats.requests, stats.spans, stats.bad), (2, 6, 3));
}

struct Names(Vec<String>);
impl NameSource for Names {
    fn name(&self, id: u16) -> Option<&str> {
        self.0
            .get(usize::from(id).checked_sub(1)?)
            .map(String::as_str)
    }
}

#[test]
fn rebuild_gives_the_same_tree_and_json() {
    let mut table = NameTable::<8>::new();
    let r = sample(&mut table);
    let mut frame = enc(&RequestFrame {
        request: &r,
        names: &table,
        seq: 3,
    });
    let Up::Request(w) = device::decode_up(&mut frame).unwrap() else {
        panic!()
    };
    let names = Names((1..=5).map(|i| table.get(i).unwrap().to_string()).collect());
    let mut sync = ClockSync::new(1_000_000, 50);
    // Sent at wall 1_700_000_000_000_000, the device read 5_001_500, answered 400 µs later.
    assert!(sync.exchange(1_700_000_000_000_000, 5_001_500, 1_700_000_000_000_400));
    assert_eq!(sync.error_at(1_700_000_000_000_400), 201);
    let mut out: Box<Request> = Box::default();
    device::rebuild(
        &w,
        &names,
        RequestIds::from_parts([9; 16], [1, 2]),
        |t| sync.to_wall(t),
        &mut out,
    )
    .unwrap();
    let wall0 = 1_700_000_000_000_200 - 5_001_500;
    assert_eq!(out.start_time(), Timestamp(wall0 + 5_000_000));
    assert_eq!(out.end_time(), Timestamp(wall0 + 5_001_400));
    let spans: Vec<(String, Option<u16>, u64, u64)> = out
        .spans()
        .map(|s| {
            (
                s.operation().to_string(),
                s.parent().map(|p| p.0),
                s.start_time().0 - wall0,
                s.duration_us(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("I2C/read".to_string(), Some(0), 5_000_120, 850),
            ("Filter/apply".to_string(), Some(0), 5_001_000, 310),
            ("Job/read_sensor".to_string(), None, 5_000_000, 1400),
        ]
    );
    assert_eq!(out.request_tag("sensor"), Some(Value::Str("bme280")));
    let mut buf = vec![0u8; 8192];
    let n = write_frame_to_slice(&RequestBatch(&*out), &mut buf, 1 << 20).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&buf[4..n]).unwrap();
    let cmds = json["BatchCommand"]["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 1 + 1 + 3 * 2 + 1 + 1);
    assert!(
        cmds.iter()
            .any(|c| c["TagSpan"]["tag"] == "bytes" && c["TagSpan"]["value"] == 6)
    );
}

#[test]
fn malformed_requests_are_refused() {
    let span = |parent, start| WireSpan {
        parent,
        name: 1,
        start,
        duration: 10,
    };
    let req = |spans: &[WireSpan]| WireRequest {
        seq: 0,
        start: 0,
        duration: 0,
        spans: heapless::Vec::from_slice(spans).unwrap(),
        tags: heapless::Vec::new(),
        dropped: 0,
    };
    let names = Names(vec!["Job/x".into()]);
    let mut out: Box<Request> = Box::default();
    let mut rb = |w: &WireRequest<'_>| {
        device::rebuild(w, &names, RequestIds::default(), Timestamp, &mut out)
    };
    assert_eq!(rb(&req(&[])), Err(InvalidRequest::NoSpans));
    assert_eq!(rb(&req(&[span(1, 0)])), Err(InvalidRequest::Roots));
    assert_eq!(
        rb(&req(&[span(0, 0), span(0, 0)])),
        Err(InvalidRequest::Roots)
    );
    assert_eq!(
        rb(&req(&[span(0, 0), span(3, 0)])),
        Err(InvalidRequest::Parent)
    );
    // Span 2's parent (span 1) is no longer open once span 2 is a sibling... here span 3
    // claims span 2 after span 2's sibling closed it.
    assert_eq!(
        rb(&req(&[span(0, 0), span(1, 0), span(1, 0), span(2, 0)])),
        Err(InvalidRequest::Nesting)
    );
    assert_eq!(rb(&req(&[span(0, 0), span(1, 1), span(2, 1)])), Ok(()));
    assert_eq!(out.spans().count(), 3);
}

#[test]
fn clock_sync_keeps_the_tightest_sample() {
    let mut s = ClockSync::new(1_000, 50); // 1 kHz ticks
    s.hello(10, 1_000_000);
    assert!(!s.is_synced());
    assert_eq!(s.to_wall(10), Timestamp(1_000_000));
    assert!(s.exchange(2_000_000, 1_000, 2_010_000)); // rtt 10 ms
    assert_eq!(s.error_at(2_010_000), 5_000 + 1_000);
    assert!(
        !s.exchange(2_100_000, 1_100, 2_130_000),
        "wider rtt is not kept"
    );
    assert!(s.exchange(2_200_000, 1_195, 2_202_000));
    assert_eq!(s.error_at(2_202_000), 2_000);
    // Drift: 50 ppm over 100 s adds 5 ms.
    assert_eq!(s.error_at(102_202_000), 2_000 + 5_000);
    assert_eq!(s.to_wall(1_195), Timestamp(2_201_000));
}
