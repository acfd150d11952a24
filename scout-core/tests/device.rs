//! The device wire format, version 2: byte-exact golden frames; byte equality of the
//! hand-written device codec ([`FrameWriter`], [`Recorder`]) with postcard's encoding of every
//! message and every [`Event`]; the hand-written gateway decoder ([`device::decode_up`],
//! [`device::decode_down`], [`DownReader`]) against postcard's; bytes per span; the
//! resynchronising reader; the gateway's replay ([`device::rebuild`]); and the key property
//! of the journal design: a device [`Recorder`] fed the calls a server makes, replayed by the
//! gateway into a core [`Request`], gives the request the server records (the same
//! core-agent JSON).

use scout_core::command::{RequestBatch, encoded_len, write_frame_to_slice};
use scout_core::device::{
    self, ClockSync, DecodeError, DeviceDrops, Down, DownReader, Event, FrameReader, FrameWriter,
    Hello, InvalidRequest, Journal, NO_NAME, NameDef, NameSource, PROTOCOL_VERSION, Recorder,
    RejectReason, TimeSyncReply, UNNAMED, Up, WireValue,
};
use scout_core::{
    Fixed, RawJson, Request, RequestIds, SpanFlags, SplitMix64, Storage, Text, Timestamp, Value,
};
use serde::Serialize;

#[path = "support/postcard_model.rs"]
mod postcard_model;
use postcard_model::{PJournal, PUp, to_p};

/// Calls `f` with the [`Up`] that `p` models (a request's events encoded by postcard).
fn with_up<R>(p: &PUp<'_>, f: impl FnOnce(&Up<'_>) -> R) -> R {
    match p {
        PUp::Hello(h) => f(&Up::Hello(*h)),
        PUp::Name(d) => f(&Up::Name(*d)),
        PUp::Request(j) => {
            let events: Vec<u8> = j.events.iter().flat_map(payload).collect();
            f(&Up::Request(Journal {
                seq: j.seq,
                start: j.start,
                events: &events,
            }))
        }
        PUp::Drops(d) => f(&Up::Drops(*d)),
        PUp::TimeSync(r) => f(&Up::TimeSync(*r)),
    }
}

/// postcard's bytes of `msg` (no COBS).
fn payload<T: Serialize + ?Sized>(msg: &T) -> Vec<u8> {
    for size in [256, 1 << 18] {
        let mut buf = vec![0u8; size];
        if let Ok(b) = postcard::to_slice(msg, &mut buf) {
            let n = b.len();
            buf.truncate(n);
            return buf;
        }
    }
    panic!("too large")
}

/// postcard's frame of `msg` (COBS and delimiter).
fn enc<T: Serialize + ?Sized>(msg: &T) -> Vec<u8> {
    for size in [256, 1 << 18] {
        let mut buf = vec![0u8; size];
        if let Ok(n) = device::encode(msg, &mut buf) {
            buf.truncate(n);
            return buf;
        }
    }
    panic!("too large")
}

/// The COBS bytes of a payload, by the `cobs` crate (no delimiter).
fn cobs_of(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; cobs::max_encoding_length(payload.len())];
    let n = cobs::encode(payload, &mut out);
    out.truncate(n);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The hand-written writer's frame of `msg`, asserted equal to postcard's (also in how small
/// a buffer it fits), and decoded back to the same message by `decode_up`.
fn both(msg: &Up<'_>) -> Vec<u8> {
    let want = enc(&to_p(msg));
    let mut buf = vec![0u8; want.len() + 8];
    let n = device::encode_up(msg, &mut buf).unwrap();
    assert_eq!(hex(&buf[..n]), hex(&want), "{msg:?}");
    let mut w = FrameWriter::new(&mut buf);
    w.up(msg);
    assert_eq!(w.len(), want.len());
    // One byte short fails; the exact size fits.
    let mut small = vec![0u8; want.len() - 1];
    assert!(device::encode_up(msg, &mut small).is_err());
    assert!(device::encode(&to_p(msg), &mut small).is_err());
    let mut exact = vec![0u8; want.len()];
    assert_eq!(device::encode_up(msg, &mut exact), Ok(want.len()));
    // And back (`Debug`: a NaN float is not equal to itself).
    let mut copy = want.clone();
    let back = device::decode_up(&mut copy).unwrap();
    assert_eq!(format!("{back:?}"), format!("{msg:?}"));
    want
}

/// One event: the writer's frame of it alone equals postcard's; returns its postcard bytes.
fn both_event(e: &Event<'_>) -> Vec<u8> {
    let want = enc(e);
    let mut buf = vec![0u8; want.len()];
    let mut w = FrameWriter::new(&mut buf);
    w.event(e);
    assert_eq!(w.finish(), Ok(want.len()), "{e:?}");
    assert_eq!(hex(&buf), hex(&want), "{e:?}");
    payload(e)
}

/// Down frames: the hand-written writer against postcard, and back by `decode_down`.
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

/// `decode_up` and postcard (through the model) on the same frame: the same message or the
/// same error. Returns whether it decoded.
fn same_decoding(input: &[u8]) -> bool {
    let (mut a, mut b) = (input.to_vec(), input.to_vec());
    let mine = device::decode_up(&mut a).map(|m| format!("{:?}", to_p(&m)));
    let theirs = device::decode_frame::<PUp<'_>>(&mut b).map(|m| format!("{m:?}"));
    assert_eq!(mine, theirs, "input {}", hex(input));
    mine.is_ok()
}

// --- edge values ---------------------------------------------------------------------------

/// Strings around the COBS block size (254) and varint boundaries, with `\0` and multi-byte
/// characters.
fn texts() -> Vec<String> {
    let mut out = vec![
        String::new(),
        "\0".to_string(),
        "é\0x".to_string(),
        "\u{1F600}\u{e9}".to_string(),
    ];
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
        // Two-byte characters straddling the block boundary.
        out.push("é".repeat(len / 2));
    }
    out
}

const U16S: [u16; 8] = [0, 1, 127, 128, 16_383, 16_384, u16::MAX - 1, u16::MAX];
const U32S: [u32; 10] = [
    0,
    1,
    127,
    128,
    16_383,
    16_384,
    (1 << 28) - 1,
    1 << 28,
    u32::MAX - 1,
    u32::MAX,
];
const U64S: [u64; 9] = [
    0,
    1,
    127,
    128,
    u32::MAX as u64,
    1 << 35,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];
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
const F64S: [f64; 8] = [
    0.0,
    -0.0,
    1.5,
    f64::MIN_POSITIVE,
    f64::MAX,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

/// Every kind of tag value, with its edges.
fn values(texts: &[String]) -> Vec<WireValue<'_>> {
    let mut v = vec![
        WireValue::Null,
        WireValue::Bool(false),
        WireValue::Bool(true),
    ];
    v.extend(I64S.map(WireValue::Int));
    v.extend(F64S.map(WireValue::Float));
    v.push(WireValue::Float(f64::from_bits(0x7ff8_0000_0000_0001))); // NaN with a payload
    v.extend(texts.iter().map(|t| WireValue::Str(t)));
    v
}

/// Every event kind with edge values.
fn edge_events(texts: &[String]) -> Vec<Event<'_>> {
    let mut out = Vec::new();
    for (i, &delta) in U32S.iter().enumerate() {
        out.push(Event::Stop { delta });
        out.push(Event::End {
            delta,
            dropped: U32S[(i + 3) % U32S.len()],
        });
        for name in U16S {
            out.push(Event::Start { name, delta });
            for flags in [0, 1, 2, 3, 0x80, 0xff] {
                out.push(Event::StartWith { name, flags, delta });
            }
        }
    }
    for (i, value) in values(texts).into_iter().enumerate() {
        let key = U16S[i % U16S.len()];
        out.push(Event::SpanTag { key, value });
        out.push(Event::RequestTag { key, value });
    }
    out
}

fn random_value<'a>(rng: &mut SplitMix64, texts: &'a [String]) -> WireValue<'a> {
    let r = rng.next_u64();
    match r % 6 {
        0 => WireValue::Null,
        1 => WireValue::Bool(r & 0x100 != 0),
        2 => WireValue::Int(I64S[(r >> 8) as usize % I64S.len()] ^ (r >> 40) as i64),
        3 => WireValue::Float(if r & 0x100 != 0 {
            F64S[(r >> 9) as usize % F64S.len()]
        } else {
            f64::from_bits(r)
        }),
        // Not the 16 KB ones (too slow for many rounds).
        _ => WireValue::Str(&texts[(r >> 8) as usize % (texts.len() - 3)]),
    }
}

fn random_event<'a>(rng: &mut SplitMix64, texts: &'a [String]) -> Event<'a> {
    let r = rng.next_u64();
    let u32v = |x: u64| U32S[x as usize % U32S.len()] ^ ((x >> 20) as u32 & 0x3ff);
    let u16v = |x: u64| U16S[x as usize % U16S.len()] ^ ((x >> 20) as u16 & 0x3f);
    match r % 6 {
        0 => Event::Stop {
            delta: u32v(r >> 3),
        },
        1 => Event::Start {
            name: u16v(r >> 3),
            delta: u32v(r >> 33),
        },
        2 => Event::StartWith {
            name: u16v(r >> 3),
            flags: (r >> 30) as u8,
            delta: u32v(r >> 33),
        },
        3 => Event::SpanTag {
            key: u16v(r >> 3),
            value: random_value(rng, texts),
        },
        4 => Event::RequestTag {
            key: u16v(r >> 3),
            value: random_value(rng, texts),
        },
        _ => Event::End {
            delta: u32v(r >> 3),
            dropped: u32v(r >> 33),
        },
    }
}

/// A random message (a request of 0-30 events then `End`).
fn random_msg<'a>(rng: &mut SplitMix64, texts: &'a [String]) -> PUp<'a> {
    let r = rng.next_u64();
    let text = |x: u64| texts[x as usize % (texts.len() - 3)].as_str();
    match r % 5 {
        0 => PUp::Hello(Hello {
            version: (r >> 8) as u8,
            device_id: text(r >> 10),
            firmware: text(r >> 20),
            token: text(r >> 30),
            tick_hz: U32S[(r >> 40) as usize % U32S.len()],
            uptime: U64S[(r >> 44) as usize % U64S.len()],
            span_limit: U32S[(r >> 50) as usize % U32S.len()],
        }),
        1 => PUp::Name(NameDef {
            id: U16S[(r >> 8) as usize % U16S.len()],
            name: text(r >> 12),
        }),
        2 | 3 => {
            let mut events: Vec<Event<'a>> = (0..(r >> 8) % 31)
                .map(|_| random_event(rng, texts))
                .filter(|e| !matches!(e, Event::End { .. }))
                .collect();
            events.push(Event::End {
                delta: (r >> 16) as u32,
                dropped: (r >> 48) as u32 & 0xff,
            });
            PUp::Request(PJournal {
                seq: U32S[(r >> 20) as usize % U32S.len()],
                start: U64S[(r >> 24) as usize % U64S.len()] ^ (r >> 50),
                events,
            })
        }
        _ => {
            let c = |x: u64| U32S[x as usize % U32S.len()];
            PUp::Drops(DeviceDrops {
                queue_full: c(r >> 8),
                no_link: c(r >> 12),
                too_large: c(r >> 16),
                no_slot: c(r >> 20),
                items: c(r >> 24),
                names: c(r >> 28),
                link_errors: c(r >> 32),
            })
        }
    }
}

// --- golden frames -------------------------------------------------------------------------

#[test]
fn golden_hello_name_drops_sync_and_down() {
    assert_eq!(PROTOCOL_VERSION, 2);
    let hello = Up::Hello(Hello {
        version: PROTOCOL_VERSION,
        device_id: "dev-1",
        firmware: "1.0",
        token: "tok",
        tick_hz: 1_000_000,
        uptime: 5_000_000,
        span_limit: 1500,
    });
    assert_eq!(
        hex(&both(&hello)),
        "01 19 02 05 64 65 76 2d 31 03 31 2e 30 03 74 6f 6b c0 84 3d c0 96 b1 02 dc 0b 00"
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
        hex(&both_down(&Down::Welcome { version: 2 })),
        "01 02 02 00"
    );
    assert_eq!(
        hex(&both_down(&Down::Reject {
            reason: RejectReason::Unauthorized
        })),
        "02 01 01 00"
    );
    assert_eq!(
        hex(&both_down(&Down::Reject {
            reason: RejectReason::Protocol
        })),
        "03 01 02 00"
    );
    assert_eq!(hex(&both_down(&Down::TimeSync { id: 7 })), "03 02 07 00");
}

/// Name ids of the documentation's sample request.
const SAMPLE_NAMES: [&str; 5] = [
    "Job/read_sensor",
    "I2C/read",
    "Filter/apply",
    "sensor",
    "bytes",
];

/// The request of the documentation recorded by a device: seq 3, a sensor job (root
/// `Job/read_sensor`, id 1, at 5 000 000 µs) tagged `sensor`(4) = "bme280", with children
/// `I2C/read` (id 2, +120 µs, 850 µs, tag `bytes`(5) = 6) and `Filter/apply` (id 3, at
/// +1000 µs, 310 µs), finished at +1400 µs.
fn sample_recorded() -> Vec<u8> {
    let mut rec = Recorder::<64>::new();
    assert!(rec.is_idle());
    rec.begin(1, 5_000_000);
    assert!(rec.is_open());
    rec.tag(true, 4, Value::Static("bme280"));
    assert!(rec.start_span(2, SpanFlags::NONE, 5_000_120));
    rec.tag(false, 5, Value::Int(6));
    rec.stop_span(5_000_970);
    assert!(rec.start_span(3, SpanFlags::NONE, 5_001_000));
    rec.stop_span(5_001_310);
    assert!(rec.finish(5_001_400, 3));
    assert!(rec.is_done() && !rec.is_open());
    assert_eq!((rec.seq(), rec.dropped(), rec.open_spans()), (3, 0, 1));
    let mut buf = [0u8; 64];
    let mut w = FrameWriter::new(&mut buf);
    rec.write_frame(&mut w);
    let n = w.finish().unwrap();
    buf[..n].to_vec()
}

/// The sample's events.
fn sample_events() -> [Event<'static>; 8] {
    [
        Event::Start { name: 1, delta: 0 },
        Event::RequestTag {
            key: 4,
            value: WireValue::Str("bme280"),
        },
        Event::Start {
            name: 2,
            delta: 120,
        },
        Event::SpanTag {
            key: 5,
            value: WireValue::Int(6),
        },
        Event::Stop { delta: 850 },
        Event::Start { name: 3, delta: 30 },
        Event::Stop { delta: 310 },
        Event::End {
            delta: 90,
            dropped: 0,
        },
    ]
}

#[test]
fn golden_request_journal() {
    let frame = sample_recorded();
    // postcard before COBS: 02 03 c096b102 | 01 01 00 | 04 04 04 06 "bme280" | 01 02 78 |
    // 03 05 02 0c | 00 d206 | 01 03 1e | 00 b602 | 05 5a 00
    assert_eq!(
        hex(&frame),
        "09 02 03 c0 96 b1 02 01 01 12 04 04 04 06 62 6d 65 32 38 30 01 02 78 03 05 02 0c 06 \
         d2 06 01 03 1e 05 b6 02 05 5a 01 00"
    );
    assert_eq!(frame.len(), 40);
    // The same bytes: postcard's encoding of the header and events, and the frame writer's,
    // event by event and as a journal.
    let events = sample_events();
    let model = PJournal {
        seq: 3,
        start: 5_000_000,
        events: events.to_vec(),
    };
    assert_eq!(hex(&enc(&PUp::Request(model.clone()))), hex(&frame));
    let mut buf = [0u8; 64];
    let mut w = FrameWriter::new(&mut buf);
    w.request_header(3, 5_000_000);
    for e in &events {
        w.event(e);
    }
    let n = w.finish().unwrap();
    assert_eq!(hex(&buf[..n]), hex(&frame));
    let bytes: Vec<u8> = events.iter().flat_map(both_event).collect();
    let j = Journal {
        seq: 3,
        start: 5_000_000,
        events: &bytes,
    };
    assert_eq!(hex(&both(&Up::Request(j))), hex(&frame));
    // What the gateway reads.
    let mut copy = frame.clone();
    let Up::Request(got) = device::decode_up(&mut copy).unwrap() else {
        panic!("not a request")
    };
    assert_eq!(got, j);
    assert_eq!(got.events().collect::<Vec<_>>(), events);
}

// --- the hand-written codec against postcard -----------------------------------------------

#[test]
fn frame_writer_matches_postcard_on_edge_values() {
    let texts = texts();
    for (i, t) in texts.iter().enumerate() {
        both(&Up::Hello(Hello {
            version: i as u8,
            device_id: t,
            firmware: &texts[(i + 1) % texts.len()],
            token: "",
            tick_hz: U32S[i % U32S.len()],
            uptime: U64S[i % U64S.len()],
            span_limit: U32S[(i + 5) % U32S.len()],
        }));
        for id in U16S {
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
    for version in [0, 1, 2, 0x7f, 0x80, 0xff] {
        both_down(&Down::Welcome { version });
    }
    for reason in [
        RejectReason::Unauthorized,
        RejectReason::Version,
        RejectReason::Protocol,
    ] {
        both_down(&Down::Reject { reason });
    }

    // Every event alone, then all of them as one journal, and journals with edge headers.
    let events = edge_events(&texts);
    assert!(events.len() > 600);
    let mut bytes = Vec::new();
    for e in &events {
        let b = both_event(e);
        if !matches!(e, Event::End { .. }) {
            bytes.extend(b);
        }
    }
    bytes.extend(both_event(&Event::End {
        delta: u32::MAX,
        dropped: u32::MAX,
    }));
    for (seq, start) in [(0, 0), (u32::MAX, u64::MAX), (128, 1 << 35)] {
        both(&Up::Request(Journal {
            seq,
            start,
            events: &bytes,
        }));
        let end = payload(&Event::End {
            delta: 0,
            dropped: 0,
        });
        both(&Up::Request(Journal {
            seq,
            start,
            events: &end,
        }));
    }
}

#[test]
fn frame_writer_matches_postcard_on_random_messages() {
    let texts = texts();
    let mut rng = SplitMix64::new(7);
    let mut requests = 0;
    for _ in 0..3000 {
        let p = random_msg(&mut rng, &texts);
        requests += usize::from(matches!(p, PUp::Request(_)));
        let want = enc(&p);
        let got = with_up(&p, both);
        assert_eq!(got, want);
    }
    assert!(requests > 800);
    for _ in 0..20_000 {
        both_event(&random_event(&mut rng, &texts));
    }
}

/// Interesting bytes: COBS and varint boundaries.
const ALPHABET: [u8; 15] = [
    0, 1, 2, 3, 4, 5, 6, 7, 0x0f, 0x10, 0x7f, 0x80, 0x81, 0xfe, 0xff,
];

/// Every input of up to `len` bytes from [`ALPHABET`] (varint and COBS
/// boundaries), the empty one included.
fn short_inputs(len: usize) -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = vec![vec![]];
    let mut layer: Vec<Vec<u8>> = vec![vec![]];
    for _ in 0..len {
        let next: Vec<Vec<u8>> = layer
            .iter()
            .flat_map(|p| {
                ALPHABET.iter().map(move |&b| {
                    let mut v = p.clone();
                    v.push(b);
                    v
                })
            })
            .collect();
        inputs.extend(next.iter().cloned());
        layer = next;
    }
    inputs
}

/// `decode_up` accepts exactly the frames postcard accepts and returns the same message, or
/// fails with the same error: every input of up to three bytes from a set of interesting
/// bytes, valid frames of random messages, those mutated (in the payload, re-encoded with
/// COBS, and in the COBS bytes), truncated and extended, and random bytes.
#[test]
fn decode_up_matches_postcard() {
    let inputs = short_inputs(3);
    for input in &inputs {
        same_decoding(input);
    }

    let texts = texts();
    let mut rng = SplitMix64::new(11);
    let (mut ok, mut bad, mut trailing) = (0, 0, 0);
    for round in 0..4000 {
        let p = random_msg(&mut rng, &texts);
        let pay = payload(&p);
        // The valid frame, with and without its delimiter.
        let mut frame = enc(&p);
        assert!(same_decoding(&frame));
        frame.pop();
        assert!(same_decoding(&frame));
        for _ in 0..6 {
            let r = rng.next_u64();
            let mut m = pay.clone();
            let at = (r >> 8) as usize % m.len();
            let byte = if r & 0x100 != 0 {
                ALPHABET[(r >> 16) as usize % ALPHABET.len()]
            } else {
                (r >> 24) as u8
            };
            match r % 6 {
                0 => m[at] = byte,
                1 => m.truncate(at),
                2 => m.insert(at, byte),
                3 => {
                    m.remove(at);
                }
                4 => m.extend((0..1 + (r >> 32) % 4).map(|i| (r >> (40 + i)) as u8)),
                _ => m[at] ^= 1 << ((r >> 32) % 8),
            }
            let framed = cobs_of(&m);
            match device::decode_up(&mut framed.clone()) {
                Ok(_) => ok += 1,
                Err(DecodeError::Trailing) => trailing += 1,
                Err(_) => bad += 1,
            }
            same_decoding(&framed);
        }
        // Damage to the COBS layer itself.
        let mut raw = enc(&p);
        let at = rng.next_u64() as usize % raw.len();
        raw[at] = rng.next_u64() as u8;
        same_decoding(&raw);
        if round % 4 == 0 {
            let len = (rng.next_u64() % 40) as usize;
            let v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            same_decoding(&v);
        }
    }
    println!("mutated frames: {ok} decode, {trailing} trailing, {bad} refused");
    assert!(
        ok > 1000 && bad > 1000 && trailing > 500,
        "{ok} {bad} {trailing}"
    );
}

/// Request journals: decode(write(events)) = events; bytes after `End` are `Trailing`; no
/// `End`, or a frame cut anywhere, is an error; nothing panics.
#[test]
fn journals_round_trip_and_refuse_malformed() {
    let texts = texts();
    let mut rng = SplitMix64::new(3);
    for round in 0..2000 {
        let len = (rng.next_u64() % 40) as usize;
        let mut events: Vec<Event<'_>> = (0..len)
            .map(|_| random_event(&mut rng, &texts))
            .filter(|e| !matches!(e, Event::End { .. }))
            .collect();
        let end = Event::End {
            delta: rng.next_u64() as u32,
            dropped: round,
        };
        let (seq, start) = (rng.next_u64() as u32, rng.next_u64());
        let write = |events: &[Event<'_>], extra: &[u8]| {
            let mut buf = vec![0u8; 1 << 16];
            let mut w = FrameWriter::new(&mut buf);
            w.request_header(seq, start);
            for e in events {
                w.event(e);
            }
            w.bytes(extra);
            let n = w.finish().unwrap();
            buf.truncate(n);
            buf
        };
        // Missing End: refused.
        let mut f = write(&events, &[]);
        assert_eq!(device::decode_up(&mut f), Err(DecodeError::Payload));
        events.push(end);
        let frame = write(&events, &[]);
        let mut f = frame.clone();
        let Up::Request(j) = device::decode_up(&mut f).unwrap() else {
            panic!("not a request")
        };
        assert_eq!((j.seq, j.start), (seq, start));
        let back: Vec<Event<'_>> = j.events().collect();
        assert_eq!(format!("{back:?}"), format!("{events:?}"));
        // Bytes after End, even a whole valid event: trailing.
        for extra in [&[0u8][..], &[5, 0, 0], &payload(&events[0])] {
            let mut f = write(&events, extra);
            assert_eq!(device::decode_up(&mut f), Err(DecodeError::Trailing));
        }
        // Cut anywhere (keeping a delimiter or not): an error, never a shorter request.
        let payload_len = payload(&PUp::Request(PJournal {
            seq,
            start,
            events: events.clone(),
        }))
        .len();
        let pay = {
            let mut f = frame.clone();
            let n = f.len() - 1;
            let m = cobs::decode_in_place(&mut f[..n]).unwrap();
            f.truncate(m);
            f
        };
        assert_eq!(pay.len(), payload_len);
        // Every cut of a short journal; of a long one, the first and last 100 and 100 more.
        let cuts: Vec<usize> = if pay.len() <= 300 {
            (0..pay.len()).collect()
        } else {
            (0..100)
                .chain(pay.len() - 100..pay.len())
                .chain((0..100).map(|_| rng.next_u64() as usize % pay.len()))
                .collect()
        };
        for cut in cuts {
            let mut f = cobs_of(&pay[..cut]);
            assert!(device::decode_up(&mut f).is_err(), "cut at {cut}");
            let mut f = frame[..cut.min(frame.len() - 1)].to_vec();
            if !f.is_empty() && f.len() < frame.len() - 1 {
                // Most cuts of the COBS bytes fail; a cut at a block boundary leaves a
                // shorter payload, which must fail too.
                assert!(device::decode_up(&mut f).is_err(), "cobs cut at {cut}");
            }
        }
    }
    // A journal made by hand stops at the first event that does not decode.
    let j = Journal {
        seq: 0,
        start: 0,
        events: &[1, 1, 0, 0, 5, 9],
    };
    assert_eq!(
        j.events().collect::<Vec<_>>(),
        [Event::Start { name: 1, delta: 0 }, Event::Stop { delta: 5 }]
    );
    let mut it = j.events();
    assert_eq!(it.by_ref().count(), 2);
    assert_eq!(it.next(), None);
}

// --- size ----------------------------------------------------------------------------------

/// A `Recorder`'s frame of `spans` spans (1 root, children stopped in turn) with the given
/// names, flags and times.
fn recorded_frame<const N: usize>(
    t0: u64,
    seq: u32,
    spans: &[(u16, SpanFlags, u64, u64)],
    end: u64,
) -> Vec<u8> {
    let mut rec = Box::new(Recorder::<N>::new());
    let (root, _, _, _) = spans[0];
    rec.begin(root, t0);
    for &(name, flags, start, stop) in &spans[1..] {
        assert!(rec.start_span(name, flags, start));
        rec.stop_span(stop);
    }
    assert!(rec.finish(end, seq));
    assert_eq!(rec.dropped(), 0);
    let mut buf = vec![0u8; N];
    let mut w = FrameWriter::new(&mut buf);
    rec.write_frame(&mut w);
    let n = w.finish().unwrap();
    buf.truncate(n);
    buf
}

/// Bytes per span of a 10-span request (1 root, 9 children of 0.1-5 ms, one hour of uptime),
/// framing included; and the worst case of one span.
#[test]
fn bytes_per_span() {
    let t0 = 3_600_000_000; // one hour of uptime, in µs
    let mut spans = vec![(1, SpanFlags::NONE, t0, 0)];
    let mut t = t0 + 15;
    for i in 0..9u64 {
        let start = t;
        t += 100 + i * 600;
        spans.push((2 + (i % 3) as u16, SpanFlags::NONE, start, t));
        t += 20;
    }
    let frame = recorded_frame::<256>(t0, 1000, &spans, t);
    let per_span = frame.len() as f64 / 10.0;
    println!(
        "10-span request: {} bytes on the wire, {per_span:.1} bytes/span",
        frame.len()
    );
    // Per child: Start 3 bytes (variant, name, delta) + Stop 2-3 (variant, delta).
    assert!(per_span <= 8.0, "{per_span}");

    // Worst case of one span: StartWith (1 + 3-byte name + flags + 5-byte delta) and Stop (1
    // + 5-byte delta) = 16 bytes, with the largest name id and deltas of 2^32 - 1 ticks.
    let worst = [
        Event::StartWith {
            name: u16::MAX,
            flags: 3,
            delta: u32::MAX,
        },
        Event::Stop { delta: u32::MAX },
    ];
    let per_worst: usize = worst.iter().map(|e| payload(e).len()).sum();
    assert_eq!(per_worst, 16);
    // Measured on a frame: 10 such spans (the root a Start) add at most 16 bytes each to the
    // frame of a request with no child, COBS included.
    let step = u64::from(u32::MAX);
    let flags = SpanFlags::IGNORE.union(SpanFlags::IGNORE_CHILDREN);
    let t0 = u64::MAX / 2;
    let mut worst_spans = vec![(u16::MAX, SpanFlags::NONE, t0, 0)];
    let mut t = t0;
    for _ in 0..10 {
        worst_spans.push((u16::MAX, flags, t + step, t + 2 * step));
        t += 2 * step;
    }
    let huge = recorded_frame::<512>(t0, u32::MAX, &worst_spans, t + step);
    let bare = recorded_frame::<512>(t0, u32::MAX, &worst_spans[..1], t0 + step);
    // Every delta took 5 bytes.
    let mut copy = huge.clone();
    let Up::Request(j) = device::decode_up(&mut copy).unwrap() else {
        panic!()
    };
    assert!(j.events().skip(1).all(|e| matches!(
        e,
        Event::StartWith {
            delta: u32::MAX,
            ..
        } | Event::Stop { delta: u32::MAX }
            | Event::End {
                delta: u32::MAX,
                ..
            }
    )));
    let added = (huge.len() - bare.len()) as f64 / 10.0;
    println!(
        "worst case: {per_worst} bytes/span of events; {} bytes for 10 worst spans under a \
         worst root ({added:.1} bytes/span added), {:.1} bytes/span all included",
        huge.len(),
        huge.len() as f64 / 11.0
    );
    assert!(added <= 16.0, "{added}");
}

// --- the reader ----------------------------------------------------------------------------

#[test]
fn reader_resyncs_after_garbage_and_counts() {
    let good = sample_recorded();
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
            Ok(Up::Request(j)) => {
                assert_eq!(j.seq, 3);
                assert_eq!(j.events().count(), 8);
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
    assert_eq!(
        (stats.frames, stats.requests, stats.spans, stats.bad),
        (2, 2, 6, 3)
    );
}

// --- the gateway's replay ------------------------------------------------------------------

/// The names a connection defined: id `i` is `self.0[i - 1]`.
struct Names(Vec<String>);

impl NameSource for Names {
    fn name(&self, id: u16) -> Option<&str> {
        self.0
            .get(usize::from(id).checked_sub(1)?)
            .map(String::as_str)
    }
}

/// The JSON the core agent receives for `r` (a `BatchCommand`).
fn json_of<S: Storage>(r: &Request<S>) -> String {
    let batch = RequestBatch(r);
    let len = encoded_len(&batch);
    let mut buf = vec![0u8; len + 4];
    assert_eq!(
        write_frame_to_slice(&batch, &mut buf, usize::MAX),
        Ok(len + 4)
    );
    String::from_utf8(buf.split_off(4)).unwrap()
}

#[test]
fn rebuild_gives_the_same_tree_and_json() {
    let mut frame = sample_recorded();
    let Up::Request(j) = device::decode_up(&mut frame).unwrap() else {
        panic!()
    };
    let names = Names(SAMPLE_NAMES.map(String::from).to_vec());
    let mut sync = ClockSync::new(1_000_000, 50);
    // Sent at wall 1_700_000_000_000_000, the device read 5_001_500, answered 400 µs later.
    assert!(sync.exchange(1_700_000_000_000_000, 5_001_500, 1_700_000_000_000_400));
    assert_eq!(sync.error_at(1_700_000_000_000_400), 201);
    let ids = RequestIds::from_parts([9; 16], [1, 2]);
    let mut out: Box<Request> = Box::default();
    assert_eq!(
        device::rebuild(&j, &names, ids, 1500, |t| sync.to_wall(t), &mut out),
        Ok(0)
    );
    assert!(out.is_finished() && out.is_real());
    assert_eq!(out.operation(), Some("Job/read_sensor"));
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
    let json: serde_json::Value = serde_json::from_str(&json_of(&*out)).unwrap();
    let cmds = json["BatchCommand"]["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 1 + 1 + 3 * 2 + 1 + 1);
    assert!(
        cmds.iter()
            .any(|c| c["TagSpan"]["tag"] == "bytes" && c["TagSpan"]["value"] == 6)
    );
    assert_eq!(cmds[1]["TagRequest"]["value"], "bme280");
    assert_eq!(
        cmds[2]["StartSpan"]["timestamp"],
        "2023-11-14T22:13:19.998820+00:00"
    );

    // The server's request, recorded with the same calls at wall-clock times: the same JSON.
    let mut server: Box<Request> = Box::default();
    let at = |t: u64| Timestamp(wall0 + t);
    server.begin(ids, at(5_000_000), 1500);
    server.start_span(
        Text::Borrowed("Job/read_sensor"),
        at(5_000_000),
        SpanFlags::NONE,
    );
    server
        .tag_request(Text::Borrowed("sensor"), Value::Str("bme280"))
        .unwrap();
    server.start_span(Text::Borrowed("I2C/read"), at(5_000_120), SpanFlags::NONE);
    server
        .tag_span(Text::Borrowed("bytes"), Value::Int(6))
        .unwrap();
    server.stop_span(at(5_000_970)).unwrap();
    server.start_span(
        Text::Borrowed("Filter/apply"),
        at(5_001_000),
        SpanFlags::NONE,
    );
    server.stop_span(at(5_001_310)).unwrap();
    server.finish(at(5_001_400));
    assert_eq!(json_of(&*out), json_of(&*server));

    // Unknown ids and id 0 become `Device/unnamed`; the device's drops are returned.
    let events = [
        Event::Start { name: 0, delta: 5 },
        Event::StartWith {
            name: 77,
            flags: 0,
            delta: 1,
        },
        Event::SpanTag {
            key: 0,
            value: WireValue::Null,
        },
        Event::End {
            delta: 2,
            dropped: 4,
        },
    ];
    let bytes: Vec<u8> = events.iter().flat_map(payload).collect();
    let j = Journal {
        seq: 1,
        start: 10,
        events: &bytes,
    };
    assert_eq!(
        device::rebuild(&j, &names, ids, 1500, Timestamp, &mut out),
        Ok(4)
    );
    assert!(
        out.is_real(),
        "marked real without a Job/ or Controller/ span"
    );
    let got: Vec<(&str, u64, u64)> = out
        .spans()
        .map(|s| (s.operation(), s.start_time().0, s.end_time().0))
        .collect();
    assert_eq!(got, [(UNNAMED, 16, 18), (UNNAMED, 15, 18)]);
    let unnamed_tag: Vec<_> = out.spans().next().unwrap().tags().collect();
    assert_eq!(unnamed_tag, [(UNNAMED, Value::Null)]);
}

/// Ignore flags, the span limit and tag replacement are the core's, applied at replay.
#[test]
fn rebuild_applies_the_core_rules() {
    let names = Names(["Job/a", "B", "C", "k"].map(String::from).to_vec());
    let start = |name, flags, delta| Event::StartWith { name, flags, delta };
    let events = [
        Event::Start { name: 1, delta: 0 },
        start(2, 1, 1),                     // ignored, at 101
        Event::Start { name: 3, delta: 1 }, // recorded under the root
        Event::Stop { delta: 1 },
        Event::Stop { delta: 1 },
        start(2, 2, 1), // recorded at 105, its children ignored
        Event::Start { name: 3, delta: 1 },
        Event::SpanTag {
            key: 4,
            value: WireValue::Int(1),
        },
        Event::Stop { delta: 1 },
        Event::SpanTag {
            key: 4,
            value: WireValue::Int(1),
        },
        Event::SpanTag {
            key: 4,
            value: WireValue::Int(2), // replaces
        },
        Event::Stop { delta: 1 },
        Event::Start { name: 3, delta: 1 }, // past the span limit of 2
        Event::Stop { delta: 1 },
        Event::RequestTag {
            key: 4,
            value: WireValue::Bool(true),
        },
        Event::End {
            delta: 1,
            dropped: 0,
        },
    ];
    let bytes: Vec<u8> = events.iter().flat_map(payload).collect();
    let j = Journal {
        seq: 1,
        start: 100,
        events: &bytes,
    };
    let mut out: Box<Request> = Box::default();
    assert_eq!(
        device::rebuild(&j, &names, RequestIds::default(), 2, Timestamp, &mut out),
        Ok(0)
    );
    type SpanTags<'a> = (&'a str, u64, u64, Vec<(&'a str, Value<'a>)>);
    let got: Vec<SpanTags<'_>> = out
        .spans()
        .map(|s| {
            (
                s.operation(),
                s.start_time().0,
                s.end_time().0,
                s.tags().collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("C", 102, 103, vec![]),
            ("B", 105, 108, vec![("k", Value::Int(2))]),
            ("Job/a", 100, 111, vec![])
        ]
    );
    assert_eq!(out.drops().span_limit, 1);
    assert_eq!(out.request_tag("k"), Some(Value::Bool(true)));
}

#[test]
fn malformed_journals_are_refused() {
    let names = Names(vec!["Job/x".into()]);
    let mut out: Box<Request> = Box::default();
    let mut rb = |events: &[Event<'_>]| {
        let bytes: Vec<u8> = events.iter().flat_map(payload).collect();
        let j = Journal {
            seq: 0,
            start: 0,
            events: &bytes,
        };
        device::rebuild(&j, &names, RequestIds::default(), 1500, Timestamp, &mut out)
    };
    let start = Event::Start { name: 1, delta: 0 };
    let stop = Event::Stop { delta: 1 };
    let end = Event::End {
        delta: 1,
        dropped: 0,
    };
    let tag = Event::SpanTag {
        key: 1,
        value: WireValue::Null,
    };
    let rtag = Event::RequestTag {
        key: 1,
        value: WireValue::Null,
    };
    // The first event must start the root.
    assert_eq!(rb(&[]), Err(InvalidRequest::NoRoot));
    assert_eq!(rb(&[end]), Err(InvalidRequest::NoRoot));
    assert_eq!(rb(&[tag, start, end]), Err(InvalidRequest::NoRoot));
    assert_eq!(rb(&[rtag, start, end]), Err(InvalidRequest::NoRoot));
    assert_eq!(rb(&[stop, start, end]), Err(InvalidRequest::NoRoot));
    // Only End stops the root.
    assert_eq!(rb(&[start, stop, end]), Err(InvalidRequest::Nesting));
    assert_eq!(
        rb(&[start, start, stop, stop, end]),
        Err(InvalidRequest::Nesting)
    );
    // No End.
    assert_eq!(rb(&[start]), Err(InvalidRequest::Unfinished));
    assert_eq!(
        rb(&[start, start, tag, stop]),
        Err(InvalidRequest::Unfinished)
    );
    // Bytes that do not decode end the events (a journal made by hand).
    let j = Journal {
        seq: 0,
        start: 0,
        events: &[1, 1, 0, 9, 5, 0, 0],
    };
    let mut other: Box<Request> = Box::default();
    assert_eq!(
        device::rebuild(
            &j,
            &names,
            RequestIds::default(),
            1500,
            Timestamp,
            &mut other
        ),
        Err(InvalidRequest::Unfinished)
    );
    // And a good one.
    assert_eq!(rb(&[start, start, tag, stop, rtag, end]), Ok(0));
    assert_eq!(out.spans().count(), 2);
    for e in [
        InvalidRequest::NoRoot,
        InvalidRequest::Nesting,
        InvalidRequest::Unfinished,
    ] {
        assert!(!e.to_string().is_empty());
    }
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

// --- the gateway's messages on the device --------------------------------------------------

/// Every input of up to four bytes from a set of interesting bytes, and random longer ones:
/// the hand-written `Down` decoder returns what postcard's returns, errors included.
#[test]
fn decode_down_matches_postcard() {
    let mut inputs = short_inputs(4);
    let mut rng = SplitMix64::new(11);
    for _ in 0..50_000 {
        let len = 5 + (rng.next_u64() % 6) as usize;
        let v: Vec<u8> = (0..len)
            .map(|_| {
                let x = rng.next_u64();
                if x.is_multiple_of(3) {
                    ALPHABET[(x >> 8) as usize % ALPHABET.len()]
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

/// The streaming `DownReader` yields the messages a `FrameReader` feeding `decode_down` yields,
/// from random streams of valid frames, garbage, truncated and oversize frames and stray
/// delimiters.
#[test]
fn down_reader_matches_frame_reader() {
    let mut rng = SplitMix64::new(5);
    let downs = [
        Down::Welcome { version: 2 },
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

// --- the recorder replayed against a core request ------------------------------------------

/// Operations (ids 1-6) and tag keys (ids 7-10) of the differential test.
const OPS: [&str; 6] = ["Job/root", "A/a", "B/b", "Controller/c", "D/d", "E/e"];
const KEYS: [&str; 4] = ["k1", "k2", "k3", "k4"];

fn diff_names() -> Names {
    Names(
        OPS.iter()
            .chain(KEYS.iter())
            .map(|s| s.to_string())
            .collect(),
    )
}

/// What the gateway calls a name id (0 and undefined ids are [`UNNAMED`]).
fn name_of(names: &Names, id: u16) -> &str {
    if id == NO_NAME {
        UNNAMED
    } else {
        names.name(id).unwrap_or(UNNAMED)
    }
}

/// The value a tag arrives with at the gateway: the wire has no JSON kind and every string is
/// copied, so `Json` and `Static` arrive as `Str`.
/// The calls of one request.
#[derive(Debug, Clone, Copy)]
enum Call<'a> {
    Start(u16, SpanFlags, u64),
    Stop(u64),
    Tag(bool, u16, Value<'a>),
}

/// A server's call on a core request (names and values as the gateway passes them).
fn apply<S: Storage>(req: &mut Request<S>, names: &Names, call: Call<'_>) {
    match call {
        Call::Start(id, flags, t) => {
            req.start_span(Text::Borrowed(name_of(names, id)), Timestamp(t), flags);
        }
        Call::Stop(t) => {
            req.stop_span(Timestamp(t)).unwrap();
        }
        Call::Tag(request, key, v) => {
            let key = Text::Borrowed(name_of(names, key));
            let v = Value::from(WireValue::from(v));
            let _ = if request {
                req.tag_request(key, v)
            } else {
                req.tag_span(key, v)
            };
        }
    }
}

/// Random calls of one request after its root (started at `t0`), ending at the returned time;
/// stops never stop the root.
fn random_calls<'a>(
    rng: &mut SplitMix64,
    t0: u64,
    steps: usize,
    tag_pct: u64,
    strings: &'a [String],
    json: RawJson<'a>,
) -> (Vec<Call<'a>>, u64) {
    let mut calls = Vec::new();
    let mut t = t0;
    let mut depth = 1;
    for _ in 0..steps {
        let r = rng.next_u64();
        t += match r % 50 {
            0 => 0,
            1 => 1 << 28,
            _ => (r >> 8) % 3000,
        };
        let roll = (r >> 16) % 100;
        let x = rng.next_u64();
        let value = match x % 9 {
            0 => Value::Int(I64S[(x >> 8) as usize % I64S.len()] ^ (x >> 50) as i64),
            1 => Value::Float(F64S[(x >> 8) as usize % F64S.len()]),
            2 => Value::Bool(x & (1 << 40) != 0),
            3 => Value::Null,
            4 => Value::Static("static-value"),
            5 => Value::Json(json),
            _ => Value::Str(&strings[(x >> 8) as usize % strings.len()]),
        };
        let key = match (x >> 32) % 20 {
            0 => NO_NAME,
            1 => 99,
            k => 7 + (k % 4) as u16,
        };
        if roll < tag_pct {
            calls.push(Call::Tag(false, key, value));
        } else if roll < tag_pct + tag_pct / 2 {
            calls.push(Call::Tag(true, key, value));
        } else if roll < 60 {
            let id = match (r >> 44) % 30 {
                0 => NO_NAME,
                1 => 99,
                2 => u16::MAX,
                k => 2 + (k % 5) as u16,
            };
            let flags = match (r >> 56) % 20 {
                0 => SpanFlags::IGNORE,
                1 => SpanFlags::IGNORE_CHILDREN,
                2 => SpanFlags::IGNORE.union(SpanFlags::IGNORE_CHILDREN),
                3 => SpanFlags::NO_BACKTRACE,
                4 => SpanFlags::IGNORE_CHILDREN.union(SpanFlags::NO_BACKTRACE),
                _ => SpanFlags::NONE,
            };
            calls.push(Call::Start(id, flags, t));
            depth += 1;
        } else if depth > 1 {
            calls.push(Call::Stop(t));
            depth -= 1;
        }
    }
    (calls, t + 17)
}

/// What one differential run saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    runs: usize,
    /// Runs where the device dropped nothing (the full JSON comparison).
    clean: usize,
    /// Calls the device dropped.
    device_drops: u64,
    /// Items the core (both requests alike) dropped.
    core_drops: u64,
    spans: usize,
    ignored: usize,
}

/// Drives a device `Recorder<N>` and a core `Request<S>` (a server's) through the same random
/// calls; writes the recorder's frame (which must fit `N` bytes), decodes it, checks its
/// events against those the calls describe (and their bytes against postcard's), rebuilds it
/// into a second `Request<S>` with the identity clock and the same span limit, and compares
/// the core-agent JSON of both (with the same ids). When the device dropped something, the
/// replay equals a third request given only the calls the device recorded, and `dropped()`
/// counts exactly the calls it did not record.
fn replay_equals_core<S: Storage, const N: usize>(
    seed: u64,
    steps: usize,
    span_limit: u32,
    tag_pct: u64,
    seen: &mut Seen,
) {
    let names = diff_names();
    let strings: Vec<String> = [
        "",
        "x",
        "sensor-\u{e9}",
        "\0nul",
        "a somewhat longer borrowed value",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([130usize, 300].map(|n| "é".repeat(n / 2)))
    .collect();
    let json = RawJson::new("[1,{\"a\":2}]").unwrap();
    let mut rng = SplitMix64::new(seed);
    let t0 = 3_600_000_000 + seed * 1_000_003;
    let root = if seed.is_multiple_of(7) { 4 } else { 1 };
    let (calls, end) = random_calls(&mut rng, t0, steps, tag_pct, &strings, json);
    let ids = RequestIds::from_parts([seed as u8; 16], [seed, 3]);
    let seq = seed as u32 ^ 0x8000_0000;

    let cap = N.saturating_sub(18 + N / 254);
    let mut rec: Box<Recorder<N>> = Box::new(Recorder::new());
    let mut full: Box<Request<S>> = Box::default();
    let mut kept: Box<Request<S>> = Box::default();
    rec.begin(root, t0);
    for r in [&mut full, &mut kept] {
        r.begin(ids, Timestamp(t0), span_limit);
        apply(r, &names, Call::Start(root, SpanFlags::NONE, t0));
    }
    let mut want = vec![Event::Start {
        name: root,
        delta: 0,
    }];
    let mut last = t0;
    // Per open span: whether its start was recorded (the root is).
    let mut stack = vec![true];
    let mut not_recorded = 0u32;
    let open_recorded = |stack: &[bool]| stack.iter().filter(|&&x| x).count();
    for &call in &calls {
        let before = rec.len();
        let recorded = match call {
            Call::Start(id, flags, t) => {
                let ok = rec.start_span(id, flags, t);
                let in_dropped = stack.contains(&false);
                assert!(!(ok && in_dropped), "recorded a span inside a dropped one");
                let bits = u8::from(flags.contains(SpanFlags::IGNORE))
                    | u8::from(flags.contains(SpanFlags::IGNORE_CHILDREN)) << 1;
                let delta = u32::try_from(t - last).unwrap();
                let e = if bits == 0 {
                    Event::Start { name: id, delta }
                } else {
                    Event::StartWith {
                        name: id,
                        flags: bits,
                        delta,
                    }
                };
                if ok {
                    want.push(e);
                    last = t;
                } else if !in_dropped {
                    // Dropped only when it did not fit with room kept for the stops of the
                    // open spans and its own (6 bytes each at most) and for End (11).
                    let need = payload(&e).len() + 6 * open_recorded(&stack) + 11;
                    assert!(before + need > cap, "dropped with room: {before}+{need}");
                }
                stack.push(ok);
                ok
            }
            Call::Stop(t) => {
                rec.stop_span(t);
                let ok = stack.pop().unwrap();
                if ok {
                    want.push(Event::Stop {
                        delta: u32::try_from(t - last).unwrap(),
                    });
                    last = t;
                }
                assert_eq!(
                    rec.len() > before,
                    ok,
                    "a stop is written iff its start was"
                );
                ok
            }
            Call::Tag(request, key, v) => {
                rec.tag(request, key, v);
                let ok = rec.len() > before;
                let value = WireValue::from(v);
                let e = if request {
                    Event::RequestTag { key, value }
                } else {
                    Event::SpanTag { key, value }
                };
                let in_dropped = !request && stack.last() == Some(&false);
                if ok {
                    assert!(!in_dropped, "tagged a dropped span");
                    assert_eq!(rec.len() - before, payload(&e).len());
                    want.push(e);
                } else if !in_dropped {
                    let need = payload(&e).len() + 6 * (open_recorded(&stack) - 1) + 11;
                    assert!(
                        before + need > cap,
                        "tag dropped with room: {before}+{need}"
                    );
                }
                ok
            }
        };
        if !recorded && !matches!(call, Call::Stop(_)) {
            not_recorded += 1;
        }
        assert_eq!(rec.dropped(), not_recorded, "{call:?}");
        apply(&mut full, &names, call);
        if recorded {
            apply(&mut kept, &names, call);
        }
        assert_eq!(rec.open_spans(), full.depth(), "open spans");
        assert!(rec.len() <= cap);
    }
    assert!(rec.finish(end, seq));
    assert!(rec.is_done());
    want.push(Event::End {
        delta: u32::try_from(end - last).unwrap(),
        dropped: not_recorded,
    });
    for r in [&mut full, &mut kept] {
        r.finish(Timestamp(end));
        r.mark_real();
    }

    // The frame fits N bytes and holds exactly the expected events, in postcard's bytes.
    let mut buf = vec![0u8; N];
    let mut w = FrameWriter::new(&mut buf);
    rec.write_frame(&mut w);
    let n = w.finish().expect("the frame fits N bytes");
    let Up::Request(j) = device::decode_up(&mut buf[..n]).unwrap() else {
        panic!("not a request")
    };
    assert_eq!((j.seq, j.start), (seq, t0));
    let got: Vec<Event<'_>> = j.events().collect();
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "seed {seed}");
    let bytes: Vec<u8> = want.iter().flat_map(payload).collect();
    assert_eq!(hex(j.events), hex(&bytes), "seed {seed}");

    // The gateway's replay is the server's request.
    let mut out: Box<Request<S>> = Box::default();
    let dropped = device::rebuild(&j, &names, ids, span_limit, Timestamp, &mut out);
    assert_eq!(dropped, Ok(rec.dropped()));
    assert!(out.is_finished() && out.is_real());
    let replayed = json_of(&*out);
    assert_eq!(out.drops(), kept.drops(), "seed {seed}");
    assert_eq!(replayed, json_of(&*kept), "seed {seed}, N {N}");
    if rec.dropped() == 0 {
        assert_eq!(replayed, json_of(&*full), "seed {seed}, N {N}");
        assert_eq!(out.drops(), full.drops(), "seed {seed}");
        seen.clean += 1;
    }
    seen.runs += 1;
    seen.device_drops += u64::from(rec.dropped());
    seen.core_drops += out.drops().total();
    seen.spans += out.span_count();
    seen.ignored += calls
        .iter()
        .filter(|c| matches!(c, Call::Start(_, f, _) if f.contains(SpanFlags::IGNORE)))
        .count();
}

#[test]
fn recorder_replayed_at_the_gateway_equals_core_request() {
    let mut big = Seen::default();
    let mut small = Seen::default();
    let mut tiny = Seen::default();
    for seed in 0..300 {
        // Room for everything: the same JSON as the server's request, with the core's
        // capacities (16 spans, 16 tags, 128 bytes of strings, 8 levels) and span limits.
        replay_equals_core::<Fixed<16, 16, 128, 8>, 8192>(seed, 60, 1500, 25, &mut big);
        replay_equals_core::<Fixed<64, 128, 4096, 32>, 8192>(seed, 80, 1500, 25, &mut big);
        replay_equals_core::<Fixed<64, 128, 4096, 32>, 8192>(seed, 80, 5, 25, &mut big);
        replay_equals_core::<Fixed<4, 2, 64, 3>, 8192>(seed, 30, 1500, 20, &mut big);
        // Device buffers that overflow.
        replay_equals_core::<Fixed<64, 128, 4096, 32>, 128>(seed, 60, 1500, 25, &mut small);
        replay_equals_core::<Fixed<64, 128, 4096, 32>, 300>(seed, 120, 1500, 10, &mut small);
        replay_equals_core::<Fixed<16, 16, 128, 8>, 40>(seed, 20, 1500, 30, &mut tiny);
        replay_equals_core::<Fixed<16, 16, 128, 8>, 64>(seed, 30, 3, 30, &mut tiny);
    }
    println!("room: {big:?}\nsmall: {small:?}\ntiny: {tiny:?}");
    assert_eq!(big.clean, big.runs, "a big recorder dropped something");
    assert!(big.core_drops > 1000 && big.ignored > 1000 && big.spans > 10_000);
    assert!(small.device_drops > 1000);
    assert!(tiny.device_drops > 1000);
}

/// Random calls, with the largest ids, deltas, strings with no zero byte and the largest
/// headers: a finished recorder's frame always fits `N` bytes, and decodes and replays.
/// Calls out of order (before `begin`, after `finish`) never panic.
fn frame_fits<const N: usize>(seed: u64) -> (usize, usize) {
    let long = "\u{7f}".repeat(600);
    let names = diff_names();
    let mut rng = SplitMix64::new(seed ^ (N as u64) << 32);
    let mut rec = Recorder::<N>::new();
    let (mut frames, mut fullest) = (0, 0);
    let mut buf = vec![0u8; N];
    for round in 0..40 {
        let r = rng.next_u64();
        let mut t = [0, 1 << 40, u64::MAX - (1 << 40)][r as usize % 3];
        if round % 5 == 4 {
            // Out of order: nothing is recorded, everything is counted.
            rec.reset();
            assert!(rec.is_idle());
            rec.tag(true, 1, Value::Null);
            rec.stop_span(t);
            assert!(!rec.start_span(1, SpanFlags::NONE, t));
            assert!(!rec.finish(t, 1));
            assert!(rec.is_idle());
        }
        rec.begin([1, 127, 128, u16::MAX][(r >> 2) as usize % 4], t);
        for _ in 0..(r >> 8) % 60 {
            let x = rng.next_u64();
            t = t.saturating_add(match x % 4 {
                0 => u64::from(u32::MAX),
                1 => 1 << 35,
                _ => (x >> 8) % 300,
            });
            let id = [1, 127, 128, 16_384, u16::MAX][(x >> 20) as usize % 5];
            match (x >> 16) % 8 {
                0..=2 => {
                    let flags = [
                        SpanFlags::NONE,
                        SpanFlags::IGNORE,
                        SpanFlags::IGNORE_CHILDREN,
                    ][(x >> 30) as usize % 3];
                    rec.start_span(id, flags, t);
                }
                3 | 4 => {
                    if rec.open_spans() > 1 {
                        rec.stop_span(t);
                    }
                }
                _ => {
                    let len = (x >> 32) as usize % 300;
                    let value = match (x >> 40) % 5 {
                        0 => Value::Str(&long[..len]),
                        1 => Value::Int(i64::MIN),
                        2 => Value::Float(f64::from_bits(x | 0x0101_0101_0101_0101)),
                        3 => Value::Bool(true),
                        _ => Value::Null,
                    };
                    rec.tag(x & 1 == 0, id, value);
                }
            }
        }
        let seq = [0, u32::MAX][(r >> 7) as usize % 2];
        if rec.finish(t.saturating_add(u64::from(u32::MAX)), seq) {
            let mut w = FrameWriter::new(&mut buf);
            rec.write_frame(&mut w);
            assert!(w.len() <= N, "{} > {N}", w.len());
            let n = w.finish().expect("the frame fits N bytes");
            frames += 1;
            fullest = fullest.max(n);
            let Ok(Up::Request(j)) = device::decode_up(&mut buf[..n]) else {
                panic!("N {N}: the frame does not decode")
            };
            assert!(
                matches!(j.events().last(), Some(Event::End { dropped, .. }) if dropped == rec.dropped())
            );
            let mut out: Box<Request<Fixed<16, 16, 128, 8>>> = Box::default();
            let got = device::rebuild(&j, &names, RequestIds::default(), 10, Timestamp, &mut out);
            assert_eq!(got, Ok(rec.dropped()));
            // Calls after finish are counted, not recorded.
            let len = rec.len();
            assert!(!rec.start_span(1, SpanFlags::NONE, t));
            rec.tag(true, 1, Value::Null);
            assert_eq!(rec.len(), len);
            assert!(rec.is_done());
        } else {
            // Only when even the root did not fit.
            assert!(rec.is_idle());
            assert!(N < 18 + 5 + 11 + 16, "N {N}: nothing to send");
        }
    }
    (frames, fullest)
}

macro_rules! each_size {
    ($seed:expr, $out:expr; $($n:literal)*) => {
        $( $out.push(($n, frame_fits::<$n>($seed))); )*
    };
}

#[test]
fn recorder_frame_always_fits_n_bytes() {
    for seed in 0..8 {
        let mut out: Vec<(usize, (usize, usize))> = Vec::new();
        each_size!(seed, out; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25
            26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 45 48 50 56 63 64 65 80 100 127 128
            129 150 200 253 254 255 256 257 272 300 507 508 509 600);
        for (n, (frames, fullest)) in out {
            // Once the root and End fit, every finished request is sent, and a large part of
            // the buffer gets used.
            if n >= 18 + 16 + 11 {
                assert_eq!(frames, 40, "N {n}");
            }
            if n >= 100 {
                assert!(fullest * 10 >= n * 7, "N {n}: at most {fullest} bytes used");
            }
        }
    }
}

/// The recorder's own accounting on a tiny buffer: what does not fit is dropped whole and
/// counted; a dropped start drops its subtree (its stop, its tags, its children); the root
/// is stopped by `finish` only.
#[test]
fn recorder_counts_what_does_not_fit() {
    // 48 bytes: 30 for events; the root (3) and End (11) take 14.
    let mut rec = Recorder::<48>::new();
    assert!(rec.is_idle() && rec.is_empty());
    rec.begin(1, 1_000);
    assert_eq!((rec.len(), rec.open_spans()), (3, 1));
    assert!(rec.start_span(2, SpanFlags::NONE, 1_010)); // 3 bytes + 6 kept for its stop
    assert_eq!(rec.len(), 6);
    rec.tag(false, 5, Value::Int(6)); // 4 bytes: 10
    assert_eq!(rec.len(), 10);
    // 10 + 3 and 6 + 6 + 11 kept would pass 30: dropped, with its subtree.
    assert!(!rec.start_span(3, SpanFlags::NONE, 1_020));
    assert_eq!(rec.open_spans(), 3);
    assert!(!rec.start_span(4, SpanFlags::NONE, 1_021));
    rec.tag(false, 5, Value::Int(1)); // on a dropped span
    rec.stop_span(1_025);
    rec.stop_span(1_030);
    assert_eq!((rec.dropped(), rec.len(), rec.open_spans()), (3, 10, 2));
    rec.tag(true, 6, Value::Bool(true)); // 4 bytes + 6 + 11 kept: 31, dropped
    assert_eq!((rec.dropped(), rec.len()), (4, 10));
    rec.tag(true, 6, Value::Null); // 3 bytes: exactly 30 with what is kept
    assert_eq!(rec.len(), 13);
    rec.stop_span(1_040); // span 2: 2 bytes
    assert_eq!((rec.len(), rec.open_spans()), (15, 1));
    rec.stop_span(1_041); // the root: not stopped
    assert_eq!((rec.len(), rec.open_spans()), (15, 1));
    assert!(rec.finish(1_100, 9));
    assert_eq!((rec.dropped(), rec.len()), (4, 18));
    let mut buf = [0u8; 48];
    let mut w = FrameWriter::new(&mut buf);
    rec.write_frame(&mut w);
    let n = w.finish().unwrap();
    let Up::Request(j) = device::decode_up(&mut buf[..n]).unwrap() else {
        panic!()
    };
    let events: Vec<_> = j.events().collect();
    assert_eq!(
        events,
        [
            Event::Start { name: 1, delta: 0 },
            Event::Start { name: 2, delta: 10 },
            Event::SpanTag {
                key: 5,
                value: WireValue::Int(6)
            },
            Event::RequestTag {
                key: 6,
                value: WireValue::Null
            },
            Event::Stop { delta: 30 },
            Event::End {
                delta: 60,
                dropped: 4
            },
        ]
    );
    // A frame too small for the request fails cleanly, and says how long it needed.
    let mut small = [0u8; 8];
    let mut w = FrameWriter::new(&mut small);
    rec.write_frame(&mut w);
    assert_eq!(w.len(), n);
    assert!(w.finish().is_err());
    // Reset: idle, calls counted until the next begin, which starts afresh.
    rec.reset();
    assert!(rec.is_idle());
    rec.tag(true, 1, Value::Null);
    assert_eq!(rec.dropped(), 5);
    rec.begin(1, 2_000);
    assert_eq!((rec.dropped(), rec.len(), rec.open_spans()), (0, 3, 1));
    // Too small for even the root: nothing to send.
    let mut none = Recorder::<20>::new();
    none.begin(1, 0);
    assert_eq!((none.dropped(), none.open_spans()), (1, 1));
    assert!(!none.start_span(2, SpanFlags::NONE, 1));
    assert!(!none.finish(2, 0));
    assert!(none.is_idle());
}

/// When even the root did not fit, a `stop_span` with only the (dropped) root open must not
/// stop it: `stop_span` never stops the root. (It once popped the dropped root, and the next
/// span that fit was recorded as the request's root: a frame whose root is a child span, or,
/// after a request tag, one the gateway refuses with `NoRoot`.)
#[test]
fn recorder_never_stops_a_dropped_root() {
    // 32 bytes: 14 for events. The root (5 bytes with id 65535) and End (11) do not fit; a
    // span named 1 (3 bytes) would.
    let mut rec = Recorder::<32>::new();
    rec.begin(u16::MAX, 0);
    assert_eq!((rec.dropped(), rec.open_spans()), (1, 1));
    rec.stop_span(1); // only the root is open: nothing to stop
    assert_eq!(rec.open_spans(), 1, "stop_span stopped the root");
    assert!(
        !rec.start_span(1, SpanFlags::NONE, 2),
        "a child of a dropped root"
    );
    assert!(
        !rec.finish(3, 0),
        "a request whose root was dropped has nothing to send"
    );
}

/// Writes the seed corpus of the `device_decode` fuzz target (`fuzz/corpus/device_decode/`):
/// `cargo test -p scout-core --test device write_fuzz_seeds -- --ignored`. Each seed is one
/// byte of chunk size, then a device byte stream.
#[test]
#[ignore = "writes fuzz/corpus/device_decode; run by hand after a format change"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/device_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let frame = |m: &Up<'_>| {
        let mut buf = vec![0u8; 1024];
        let n = device::encode_up(m, &mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    let journal = |seq: u32, start: u64, events: &[Event<'_>]| {
        let mut buf = vec![0u8; 1024];
        let mut w = FrameWriter::new(&mut buf);
        w.request_header(seq, start);
        for e in events {
            w.event(e);
        }
        let n = w.finish().unwrap();
        buf.truncate(n);
        buf
    };
    let hello = frame(&Up::Hello(Hello {
        version: PROTOCOL_VERSION,
        device_id: "dev-01",
        firmware: "1.2.3",
        token: "t0k",
        tick_hz: 1_000_000,
        uptime: 123_456,
        span_limit: 1500,
    }));
    let names: Vec<u8> = SAMPLE_NAMES
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            frame(&Up::Name(NameDef {
                id: i as u16 + 1,
                name,
            }))
        })
        .collect();
    let sample = sample_recorded();
    // Flags, every value kind, an unknown name id and a device drop count.
    let flagged = journal(
        7,
        1 << 33,
        &[
            Event::Start { name: 1, delta: 0 },
            Event::StartWith {
                name: 2,
                flags: 1,
                delta: 3,
            },
            Event::Start { name: 3, delta: 1 },
            Event::SpanTag {
                key: 5,
                value: WireValue::Float(-0.5),
            },
            Event::Stop { delta: 200 },
            Event::Stop { delta: 300 },
            Event::StartWith {
                name: 99,
                flags: 2,
                delta: 70_000,
            },
            Event::Start { name: 2, delta: 1 },
            Event::SpanTag {
                key: 4,
                value: WireValue::Null,
            },
            Event::Stop { delta: 9 },
            Event::SpanTag {
                key: 4,
                value: WireValue::Bool(true),
            },
            Event::RequestTag {
                key: 4,
                value: WireValue::Int(-3),
            },
            Event::RequestTag {
                key: 0,
                value: WireValue::Str("caf\u{e9}"),
            },
            Event::End {
                delta: u32::MAX,
                dropped: 2,
            },
        ],
    );
    // Journals the gateway refuses to rebuild, or to decode.
    let tag_first = journal(
        8,
        0,
        &[
            Event::RequestTag {
                key: 4,
                value: WireValue::Int(1),
            },
            Event::Start { name: 1, delta: 0 },
            Event::End {
                delta: 1,
                dropped: 0,
            },
        ],
    );
    let stops_root = journal(
        9,
        0,
        &[
            Event::Start { name: 1, delta: 0 },
            Event::Stop { delta: 1 },
            Event::End {
                delta: 1,
                dropped: 0,
            },
        ],
    );
    let trailing = {
        let mut buf = vec![0u8; 64];
        let mut w = FrameWriter::new(&mut buf);
        w.request_header(10, 0);
        w.event(&Event::Start { name: 1, delta: 0 });
        w.event(&Event::End {
            delta: 1,
            dropped: 0,
        });
        w.event(&Event::Stop { delta: 1 });
        let n = w.finish().unwrap();
        buf.truncate(n);
        buf
    };
    let drops = frame(&Up::Drops(DeviceDrops {
        queue_full: 1,
        no_link: 0,
        too_large: 300,
        no_slot: 2,
        items: 5,
        names: 0,
        link_errors: u32::MAX,
    }));
    let sync = frame(&Up::TimeSync(TimeSyncReply {
        id: 42,
        uptime: 5_001_500,
    }));
    let cat = |chunk: u8, parts: &[&[u8]]| {
        let mut v = vec![chunk];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let seeds: [(&str, Vec<u8>); 5] = [
        ("seed-request", cat(0, &[&names, &sample])),
        (
            "seed-session",
            cat(
                3,
                &[
                    &[0],
                    &hello,
                    &names,
                    &sample,
                    &flagged,
                    &drops,
                    &sync,
                    &sample,
                ],
            ),
        ),
        (
            "seed-resync",
            cat(
                0x10,
                &[
                    &[0x55, 0x02, 0xff, 0x13, 0x37, 0x00],
                    &hello,
                    &names,
                    &sample[..sample.len() / 2],
                    &[0],
                    &[0x41; 80],
                    &[0],
                    &sample,
                    &flagged,
                ],
            ),
        ),
        (
            "seed-malformed",
            cat(5, &[&names, &tag_first, &stops_root, &trailing, &sample]),
        ),
        ("seed-down", {
            let mut v = vec![1];
            for d in [
                Down::Welcome { version: 2 },
                Down::Reject {
                    reason: RejectReason::Version,
                },
                Down::TimeSync { id: 42 },
            ] {
                v.extend(enc(&d));
            }
            v
        }),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A clock that goes back: no time passes (delta 0), and later deltas count from the earlier
/// time (as `Recorder` documents); deltas past 2³² ticks are clamped.
#[test]
fn recorder_deltas_when_the_clock_goes_back_or_jumps() {
    let mut rec = Recorder::<64>::new();
    rec.begin(1, 1_000);
    assert!(rec.start_span(2, SpanFlags::NONE, 900));
    rec.stop_span(950);
    assert!(rec.start_span(2, SpanFlags::NONE, 950 + (1 << 40)));
    rec.stop_span(951 + (1 << 40));
    assert!(rec.finish(1_000 + (1 << 40), 1));
    let mut buf = [0u8; 64];
    let mut w = FrameWriter::new(&mut buf);
    rec.write_frame(&mut w);
    let n = w.finish().unwrap();
    let Up::Request(j) = device::decode_up(&mut buf[..n]).unwrap() else {
        panic!()
    };
    assert_eq!(
        j.events().collect::<Vec<_>>(),
        [
            Event::Start { name: 1, delta: 0 },
            Event::Start { name: 2, delta: 0 },
            Event::Stop { delta: 50 },
            Event::Start {
                name: 2,
                delta: u32::MAX
            },
            Event::Stop { delta: 1 },
            Event::End {
                delta: 49,
                dropped: 0
            },
        ]
    );
}
