//! The device wire format: byte-exact golden frames, byte equality of the hand-written device
//! codec ([`FrameWriter`], [`Recorder`], [`device::decode_down`]) with postcard's, postcard
//! compatibility of the streamed request encoder, bytes per span, the resynchronising reader,
//! and the gateway's rebuild.

use scout_core::command::{RequestBatch, write_frame_to_slice};
use scout_core::device::{
    self, Capacity, ClockSync, DecodeError, DeviceDrops, Down, FrameReader, FrameWriter, Hello,
    InvalidRequest, MAX_SPANS, MAX_TAGS, NameDef, NameSource, NameTable, PROTOCOL_VERSION,
    Recorder, RejectReason, RequestFrame, TimeSyncReply, Up, WireRequest, WireSpan, WireTag,
    WireValue,
};
use scout_core::{
    Fixed, RawJson, Request, RequestIds, SpanFlags, SplitMix64, Text, Timestamp, Value,
};

type DevReq = Request<Fixed<16, 16, 128, 8>>;

/// postcard's frame of `msg`.
fn enc<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 16];
    let n = device::encode(msg, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// The hand-written writer's frame of `msg`, asserted equal to postcard's, also in how small a
/// buffer it fits.
fn both(msg: &Up<'_>) -> Vec<u8> {
    let want = enc(msg);
    let mut buf = vec![0u8; want.len() + 8];
    let n = device::encode_up(msg, &mut buf).unwrap();
    assert_eq!(hex(&buf[..n]), hex(&want), "{msg:?}");
    let mut w = FrameWriter::new(&mut buf);
    w.up(msg);
    assert_eq!(w.len(), want.len());
    // One byte short fails for both encoders; the exact size fits.
    let mut small = vec![0u8; want.len() - 1];
    assert!(device::encode(msg, &mut small).is_err());
    assert!(device::encode_up(msg, &mut small).is_err());
    let mut exact = vec![0u8; want.len()];
    assert_eq!(device::encode_up(msg, &mut exact), Ok(want.len()));
    want
}

/// Down frames: the hand-written writer against postcard.
fn both_down(msg: &Down) -> Vec<u8> {
    let want = enc(msg);
    let mut buf = [0u8; 16];
    let mut w = FrameWriter::new(&mut buf);
    w.down(msg);
    let n = w.finish().unwrap();
    assert_eq!(&buf[..n], &want[..], "{msg:?}");
    let mut frame = want.clone();
    assert_eq!(device::decode_down(&mut frame), Ok(*msg));
    want
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
        hex(&both(&hello)),
        "01 17 01 05 64 65 76 2d 31 03 31 2e 30 03 74 6f 6b c0 84 3d c0 96 b1 02 00"
    );
    assert_eq!(
        hex(&both(&Up::Name(NameDef {
            id: 1,
            name: "Job/read_sensor"
        }))),
        "13 01 01 0f 4a 6f 62 2f 72 65 61 64 5f 73 65 6e 73 6f 72 00"
    );
    let drops = Up::Drops(DeviceDrops {
        queue_full: 2,
        ..DeviceDrops::default()
    });
    assert_eq!(hex(&both(&drops)), "03 03 02 01 01 01 01 01 01 00");
    let sync = Up::TimeSync(TimeSyncReply {
        id: 7,
        uptime: 5_001_500,
    });
    assert_eq!(hex(&both(&sync)), "07 04 07 9c a2 b1 02 00");
    assert_eq!(
        hex(&both_down(&Down::Welcome { version: 1 })),
        "01 02 01 00"
    );
    assert_eq!(
        hex(&both_down(&Down::Reject {
            reason: RejectReason::Unauthorized
        })),
        "02 01 01 00"
    );
    assert_eq!(hex(&both_down(&Down::TimeSync { id: 7 })), "03 02 07 00");
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
    assert_eq!(streamed, both(&Up::Request(wire.clone())));
    // The device recorder, fed the same calls, writes the same frame.
    let mut rec = Recorder::<Fixed<4, 2, 0, 3>>::new();
    rec.begin(5_000_000, 1500);
    rec.start_span(1, SpanFlags::NONE, 5_000_000);
    rec.tag_request(4, Value::Static("bme280")).unwrap();
    rec.start_span(2, SpanFlags::NONE, 5_000_120);
    rec.tag_span(5, Value::Int(6)).unwrap();
    assert!(rec.stop_span(5_000_970));
    rec.start_span(3, SpanFlags::NONE, 5_001_000);
    assert!(rec.stop_span(5_001_310));
    rec.finish(5_001_400);
    assert_eq!(hex(&recorded(&rec, 3)), hex(&streamed));
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

// --- the hand-written device codec against postcard -------------------------------------------

/// The recorder's frame.
fn recorded<C: Capacity>(rec: &Recorder<C>, seq: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 16];
    let mut w = FrameWriter::new(&mut buf);
    rec.encode(seq, &mut w);
    let n = w.finish().unwrap();
    buf.truncate(n);
    buf
}

/// Strings around the COBS block size (254) and varint boundaries, with `\0` and multi-byte
/// characters.
fn texts() -> Vec<String> {
    let mut out = vec![String::new(), "\0".to_string(), "é\0x".to_string()];
    for len in [
        1, 2, 126, 127, 128, 252, 253, 254, 255, 256, 300, 507, 508, 509, 1000, 16_400,
    ] {
        let s: String = (0..len)
            .map(|i| match i % 7 {
                0 => '\0',
                3 => 'z',
                _ => char::from(b'a' + (i % 26) as u8),
            })
            .collect();
        out.push(s);
        out.push("x".repeat(len));
    }
    out
}

const U32S: [u32; 8] = [0, 1, 127, 128, 16_383, 16_384, u32::MAX - 1, u32::MAX];
const U64S: [u64; 7] = [0, 1, 127, 128, 1 << 35, u64::MAX - 1, u64::MAX];
const I64S: [i64; 11] = [
    0,
    1,
    -1,
    63,
    -64,
    64,
    -65,
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    -(1 << 40),
];
const F64S: [f64; 7] = [
    0.0,
    -0.0,
    1.5,
    f64::MIN_POSITIVE,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

#[test]
fn handwritten_encoder_matches_postcard_on_edge_values() {
    let texts = texts();
    for (i, t) in texts.iter().enumerate() {
        let u = U32S[i % U32S.len()];
        let v = U64S[i % U64S.len()];
        both(&Up::Hello(Hello {
            version: i as u8,
            device_id: t,
            firmware: &texts[(i + 1) % texts.len()],
            token: "",
            tick_hz: u,
            uptime: v,
        }));
        for id in [0, 1, 127, 128, u16::MAX] {
            both(&Up::Name(NameDef { id, name: t }));
        }
    }
    for u in U32S {
        both(&Up::Drops(DeviceDrops {
            queue_full: u,
            no_link: u32::MAX - u,
            too_large: u / 2,
            no_slot: 0,
            items: u,
            names: 128,
            link_errors: u,
        }));
        for v in U64S {
            both(&Up::TimeSync(TimeSyncReply { id: u, uptime: v }));
        }
        both_down(&Down::TimeSync { id: u });
    }
    for version in [0, 1, 0x7f, 0x80, 0xff] {
        both_down(&Down::Welcome { version });
    }
    for reason in [
        RejectReason::Unauthorized,
        RejectReason::Version,
        RejectReason::Protocol,
    ] {
        both_down(&Down::Reject { reason });
    }

    // Requests: empty, every value kind and edge, and the most spans and tags.
    let mut values = vec![
        WireValue::Null,
        WireValue::Bool(false),
        WireValue::Bool(true),
    ];
    values.extend(I64S.map(WireValue::Int));
    values.extend(F64S.map(WireValue::Float));
    values.extend(texts.iter().take(12).map(|t| WireValue::Str(t)));
    let empty = WireRequest {
        seq: 0,
        start: 0,
        duration: 0,
        spans: heapless::Vec::new(),
        tags: heapless::Vec::new(),
        dropped: 0,
    };
    both(&Up::Request(empty.clone()));
    let mut full = WireRequest {
        seq: u32::MAX,
        start: u64::MAX,
        duration: u32::MAX,
        dropped: u32::MAX,
        ..empty
    };
    for i in 0..MAX_SPANS {
        full.spans
            .push(WireSpan {
                parent: i as u8,
                name: [0, 1, 127, 128, u16::MAX][i % 5],
                start: U32S[i % U32S.len()],
                duration: U32S[(i + 3) % U32S.len()],
            })
            .unwrap();
    }
    for i in 0..MAX_TAGS {
        full.tags
            .push(WireTag {
                target: (255 - i) as u8,
                key: [u16::MAX, 0, 1, 128][i % 4],
                value: values[i % values.len()],
            })
            .unwrap();
    }
    let frame = both(&Up::Request(full.clone()));
    let mut copy = frame.clone();
    let Up::Request(back) = device::decode_up(&mut copy).unwrap() else {
        panic!("not a request")
    };
    assert_eq!(format!("{back:?}"), format!("{full:?}"));
}

#[test]
fn handwritten_encoder_matches_postcard_on_random_messages() {
    let texts = texts();
    let mut rng = SplitMix64::new(7);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    for round in 0..400 {
        let mut r = WireRequest {
            seq: U32S[pick(8)],
            start: U64S[pick(7)],
            duration: U32S[pick(8)],
            spans: heapless::Vec::new(),
            tags: heapless::Vec::new(),
            dropped: U32S[pick(8)],
        };
        let spans = if round % 50 == 0 { MAX_SPANS } else { pick(12) };
        for _ in 0..spans {
            let span = WireSpan {
                parent: pick(256) as u8,
                name: pick(70_000).min(65_535) as u16,
                start: U32S[pick(8)] ^ pick(1000) as u32,
                duration: U32S[pick(8)],
            };
            r.spans.push(span).unwrap();
        }
        let tags = if round % 50 == 1 { MAX_TAGS } else { pick(8) };
        for _ in 0..tags {
            let value = match pick(6) {
                0 => WireValue::Null,
                1 => WireValue::Bool(pick(2) == 1),
                2 => WireValue::Int(I64S[pick(I64S.len())] ^ pick(1 << 20) as i64),
                3 => WireValue::Float(F64S[pick(F64S.len())]),
                _ => WireValue::Str(&texts[pick(texts.len() - 2)]),
            };
            let tag = WireTag {
                target: pick(256) as u8,
                key: pick(300) as u16,
                value,
            };
            r.tags.push(tag).unwrap();
        }
        both(&Up::Request(r));
    }
}

/// Every input of up to four bytes from a set of interesting bytes, and random longer ones:
/// the hand-written `Down` decoder returns what postcard's returns, errors included.
#[test]
fn decode_down_matches_postcard() {
    let alphabet = [
        0u8, 1, 2, 3, 4, 5, 6, 7, 0x0f, 0x10, 0x7f, 0x80, 0x81, 0xfe, 0xff,
    ];
    let mut inputs: Vec<Vec<u8>> = vec![vec![]];
    let mut layer: Vec<Vec<u8>> = vec![vec![]];
    for _ in 0..4 {
        let next: Vec<Vec<u8>> = layer
            .iter()
            .flat_map(|p| {
                alphabet.iter().map(move |&b| {
                    let mut v = p.clone();
                    v.push(b);
                    v
                })
            })
            .collect();
        inputs.extend(next.iter().cloned());
        layer = next;
    }
    let mut rng = SplitMix64::new(11);
    for _ in 0..50_000 {
        let len = 5 + (rng.next_u64() % 6) as usize;
        let v: Vec<u8> = (0..len)
            .map(|_| {
                let x = rng.next_u64();
                if x.is_multiple_of(3) {
                    alphabet[(x >> 8) as usize % alphabet.len()]
                } else {
                    (x >> 16) as u8
                }
            })
            .collect();
        inputs.push(v);
    }
    // Valid frames with every varint length, and with trailing bytes or truncated.
    for id in U32S {
        let f = enc(&Down::TimeSync { id });
        inputs.push(f.clone());
        inputs.push(f[..f.len() - 2].to_vec());
        let mut longer = f[..f.len() - 1].to_vec();
        longer[0] += 1;
        longer.push(9);
        inputs.push(longer);
    }
    let mut ok = 0;
    for input in &inputs {
        let mut a = input.clone();
        let mut b = input.clone();
        let mine = device::decode_down(&mut a);
        let theirs = device::decode_frame::<Down>(&mut b);
        assert_eq!(mine, theirs, "input {}", hex(input));
        ok += usize::from(mine.is_ok());
    }
    assert!(ok > 100, "only {ok} valid frames among the inputs");
}

/// Drives a core `Request` and a device `Recorder` of the same capacities through the same
/// random calls, checking each call's outcome, then that both encode the same request (the
/// same bytes but for the order of tags on different targets).
fn same_as_request<const S: usize, const T: usize, const A: usize, const D: usize>(
    seed: u64,
    steps: usize,
    span_limit: u32,
    tag_pct: u64,
) {
    let ops = ["Job/root", "A/a", "B/b", "C/c", "D/d", "E/e"];
    let keys = ["k1", "k2", "k3", "k4"];
    let mut names = NameTable::<16>::new();
    for n in ops.iter().chain(keys.iter()) {
        names.intern(n).unwrap();
    }
    let id = |n: &str| names.get_id(n);
    let borrowed = ["", "x", "sensor-\u{e9}", "a somewhat longer borrowed value"];
    let json = RawJson::new("[1,{\"a\":2}]").unwrap();

    let mut rng = SplitMix64::new(seed);
    let mut req: Box<Request<Fixed<S, T, A, D>>> = Box::default();
    let mut rec: Box<Recorder<Fixed<S, T, A, D>>> = Box::default();
    let mut t = 3_600_000_000 + seed;
    req.begin(RequestIds::default(), Timestamp(t), span_limit);
    rec.begin(t, span_limit);
    let root_core = req.start_span(Text::Static(ops[0]), Timestamp(t), SpanFlags::NONE);
    assert_eq!(rec.start_span(id(ops[0]), SpanFlags::NONE, t), root_core);
    for _ in 0..steps {
        let r = rng.next_u64();
        t += r % 3000;
        let roll = (r >> 16) % 100;
        let value = match (r >> 24) % 9 {
            0 => Value::Int(I64S[(r >> 32) as usize % I64S.len()]),
            1 => Value::Float(F64S[(r >> 32) as usize % F64S.len()]),
            2 => Value::Bool(r & (1 << 40) != 0),
            3 => Value::Null,
            4 => Value::Static("static-value"),
            5 => Value::Json(json),
            _ => Value::Str(borrowed[(r >> 32) as usize % borrowed.len()]),
        };
        let key = keys[(r >> 44) as usize % keys.len()];
        if roll < tag_pct {
            let a = req.tag_span(Text::Static(key), value);
            let b = rec.tag_span(id(key), value);
            assert_eq!(a, b, "tag_span");
        } else if roll < tag_pct + tag_pct / 2 {
            let a = req.tag_request(Text::Static(key), value);
            let b = rec.tag_request(id(key), value);
            assert_eq!(a, b, "tag_request");
        } else if roll < 55 {
            let op = ops[1 + (r >> 50) as usize % (ops.len() - 1)];
            let flags = match (r >> 56) % 20 {
                0 => SpanFlags::IGNORE,
                1 => SpanFlags::IGNORE_CHILDREN,
                2 => SpanFlags::IGNORE.union(SpanFlags::IGNORE_CHILDREN),
                _ => SpanFlags::NONE,
            };
            let a = req.start_span(Text::Static(op), Timestamp(t), flags);
            let b = rec.start_span(id(op), flags, t);
            assert_eq!(a, b, "start_span");
        } else if req.depth() > 1 || roll == 99 {
            // Now and then the root too: the request finishes and later calls are counted.
            let a = req.stop_span(Timestamp(t)).is_ok();
            let b = rec.stop_span(t);
            assert_eq!(a, b, "stop_span");
        }
    }
    t += 17;
    req.finish(Timestamp(t));
    rec.finish(t);
    let omitted = req.span_count().saturating_sub(MAX_SPANS) as u64;
    assert_eq!(
        u64::from(rec.dropped()),
        req.drops().total() + omitted,
        "dropped: {:?}",
        req.drops()
    );
    let seq = seed as u32;
    let core = enc(&RequestFrame {
        request: &*req,
        names: &names,
        seq,
    });
    let mine = recorded(&*rec, seq);
    assert_eq!(
        by_target(&mine),
        by_target(&core),
        "seed {seed}, capacities {S}/{T}/{A}/{D}"
    );
    // Tags on different targets may come in another order; with tags on one target at most
    // (or none), the frames are the same bytes.
    let targets: std::collections::BTreeSet<u8> =
        decoded(&core).tags.iter().map(|t| t.target).collect();
    if targets.len() <= 1 {
        assert_eq!(
            hex(&mine),
            hex(&core),
            "seed {seed}, capacities {S}/{T}/{A}/{D}"
        );
    }
}

fn decoded(frame: &[u8]) -> WireRequest<'static> {
    let bytes: &'static mut [u8] = Box::leak(frame.to_vec().into_boxed_slice());
    match device::decode_up(bytes).unwrap() {
        Up::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

/// A request frame decoded, its tags in a stable order by target (`Debug`: a NaN float is not
/// equal to itself).
fn by_target(frame: &[u8]) -> String {
    let mut r = decoded(frame);
    r.tags.sort_by_key(|t| t.target);
    format!("{r:?}")
}

trait IdOf {
    fn get_id(&self, name: &str) -> u16;
}

impl<const N: usize> IdOf for NameTable<N> {
    fn get_id(&self, name: &str) -> u16 {
        use scout_core::device::NameLookup;
        self.id_of(name)
    }
}

#[test]
fn recorder_writes_the_frame_of_a_core_request_with_the_same_calls() {
    for seed in 0..300 {
        same_as_request::<4, 2, 0, 3>(seed, 40, 64, 20);
        same_as_request::<16, 16, 64, 8>(seed, 80, 1500, 25);
        same_as_request::<16, 16, 64, 8>(seed, 80, 5, 25);
        same_as_request::<1, 1, 1, 1>(seed, 20, 1500, 30);
        same_as_request::<0, 0, 0, 0>(seed, 10, 1500, 30);
    }
    // More than a frame's 255 spans: the rest are counted as dropped.
    for seed in 0..6 {
        same_as_request::<300, 255, 256, 64>(seed, 1500, 1500, 3);
    }
}

/// The device request of the docs recorded by the `Recorder` with the firmware's capacities;
/// then overflowing every table of a tiny recorder never panics and counts every drop.
#[test]
fn recorder_counts_what_does_not_fit() {
    let mut rec = Recorder::<Fixed<2, 1, 4, 2>>::new();
    assert!(!rec.is_busy());
    rec.begin(1_000, 1500);
    assert!(rec.is_busy() && rec.is_open());
    rec.start_span(1, SpanFlags::NONE, 1_000);
    rec.start_span(2, SpanFlags::NONE, 1_010); // depth 2: the stack is full
    assert_eq!(
        rec.start_span(3, SpanFlags::NONE, 1_020),
        scout_core::SpanStart::Dropped(scout_core::DropReason::Depth)
    );
    rec.tag_span(1, Value::Int(1)).unwrap(); // on the dropped span: nothing
    assert!(rec.stop_span(1_030)); // the dropped one
    rec.tag_span(1, Value::Str("abc")).unwrap();
    assert_eq!(
        rec.tag_span(2, Value::Int(2)),
        Err(scout_core::DropReason::TagCapacity)
    );
    rec.tag_span(1, Value::Str("abcd")).unwrap_err(); // the arena holds 4 bytes, 3 are used
    assert!(rec.stop_span(1_040));
    assert_eq!(
        rec.start_span(4, SpanFlags::NONE, 1_050),
        scout_core::SpanStart::Dropped(scout_core::DropReason::SpanCapacity)
    );
    rec.finish(1_100);
    assert!(!rec.is_open());
    assert_eq!(rec.open_spans(), 0);
    assert_eq!(
        (rec.span_count(), rec.tag_count(), rec.dropped()),
        (2, 1, 4)
    );
    let frame = recorded(&rec, 9);
    let mut copy = frame.clone();
    let Up::Request(w) = device::decode_up(&mut copy).unwrap() else {
        panic!()
    };
    assert_eq!(w.dropped, 4);
    assert_eq!(w.tags[0].value, WireValue::Str("abc"));
    assert_eq!(w.spans[1].duration, 30);
    rec.reset();
    assert!(!rec.is_busy());
    // Not open: counted.
    assert!(rec.tag_request(1, Value::Null).is_err());
    assert_eq!(rec.dropped(), 5);
    // A frame too small for the request fails cleanly, and says how long it needed.
    let mut buf = [0u8; 8];
    let mut w = FrameWriter::new(&mut buf);
    rec.encode(9, &mut w);
    assert!(w.len() > 8);
    assert!(w.finish().is_err());
}

/// The streaming `DownReader` yields the messages a `FrameReader` feeding `decode_down` yields,
/// from random streams of valid frames, garbage, truncated and oversize frames and stray
/// delimiters.
#[test]
fn down_reader_matches_frame_reader() {
    use scout_core::device::DownReader;
    let mut rng = SplitMix64::new(5);
    let downs = [
        Down::Welcome { version: 1 },
        Down::Welcome { version: 0 },
        Down::Reject {
            reason: RejectReason::Version,
        },
        Down::TimeSync { id: 0 },
        Down::TimeSync { id: 300 },
        Down::TimeSync { id: u32::MAX },
    ];
    let mut total = 0;
    for _ in 0..3000 {
        let mut stream = Vec::new();
        for _ in 0..(rng.next_u64() % 8) {
            let r = rng.next_u64();
            match r % 6 {
                0 | 1 => stream.extend(enc(&downs[(r >> 8) as usize % downs.len()])),
                2 => {
                    let f = enc(&downs[(r >> 8) as usize % downs.len()]);
                    stream.extend(&f[..(r >> 16) as usize % f.len()]);
                }
                3 => stream.push(0),
                4 => stream.extend((0..(r >> 8) % 40).map(|i| (r >> (i % 50)) as u8)),
                _ => stream.extend(std::iter::repeat_n(0x05, (r >> 8) as usize % 40)),
            }
        }
        let mut reader = FrameReader::<32>::new();
        let mut want = Vec::new();
        reader.feed_raw(&stream, |f| {
            if let Ok(m) = f.and_then(device::decode_down) {
                want.push(m);
            }
        });
        let mut down = DownReader::new();
        let got: Vec<Down> = stream
            .iter()
            .filter_map(|&b| down.push(b))
            .filter_map(Result::ok)
            .collect();
        assert_eq!(got, want, "stream {}", hex(&stream));
        total += got.len();
    }
    assert!(total > 1000, "only {total} messages");
}

/// A frame written into a ring buffer across its end holds the same bytes, in ring order.
#[test]
fn frame_writer_wraps_around_a_ring() {
    let msg = Up::Name(NameDef {
        id: 300,
        name: "Filter/apply",
    });
    let want = enc(&msg);
    for start in 0..24 {
        let mut ring = [0xEEu8; 24];
        let mut w = FrameWriter::wrapping(&mut ring, start, 24);
        w.up(&msg);
        assert_eq!(w.finish(), Ok(want.len()));
        let unrolled: Vec<u8> = (0..want.len()).map(|i| ring[(start + i) % 24]).collect();
        assert_eq!(unrolled, want);
        // Bytes outside the frame are untouched.
        let touched = (0..24).filter(|i| ring[*i] != 0xEE).count();
        assert!(touched <= want.len());
        // Too small a limit fails.
        let mut w = FrameWriter::wrapping(&mut ring, start, want.len() - 1);
        w.up(&msg);
        assert!(w.finish().is_err());
    }
}
