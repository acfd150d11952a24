//! Device wire format: the cost per span of recording a 10-span request on the device (the
//! `Recorder`'s start and stop calls, which append the journal's events, then framing it with
//! `write_frame` and `FrameWriter::finish`), side by side with a core `Request` recording the
//! same spans (what a server agent does), and the gateway's cost of `decode_up` + `rebuild`
//! into a core `Request`. Prints the bytes on the wire once. (`..._without_framing`: the
//! recorder's calls alone, to show what framing costs.)

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scout_core::device::{self, FrameWriter, NameSource, Recorder, Up};
use scout_core::{Fixed, Request, RequestIds, SpanFlags, Text, Timestamp};
use std::hint::black_box;

type Cap = Fixed<16, 16, 64, 8>;
/// The gateway's storage: names arrive borrowed and are copied.
type Gateway = Fixed<16, 16, 256, 8>;
/// The recorder's buffer (bytes of frame).
const BUF: usize = 128;

const OPS: [&str; 4] = ["Job/loop", "I2C/read", "SPI/write", "Compute/fft"];

/// The 10-span request (1 root, 9 children of 0.1-5 ms, one hour of uptime in µs): the
/// root's start, each child's (start, stop), the end.
fn times() -> (u64, [(u64, u64); 9], u64) {
    let t0 = 3_600_000_000;
    let mut spans = [(0, 0); 9];
    let mut t = t0 + 15;
    for (i, s) in spans.iter_mut().enumerate() {
        let start = t;
        t += 100 + i as u64 * 600;
        *s = (start, t);
        t += 20;
    }
    (t0, spans, t)
}

/// Records the request on the device (the calls only).
fn record_calls(rec: &mut Recorder<BUF>) -> bool {
    let (t0, spans, end) = times();
    rec.begin(1, t0);
    for (i, &(start, stop)) in spans.iter().enumerate() {
        rec.start_span(2 + (i % 3) as u16, SpanFlags::NONE, start);
        rec.stop_span(stop);
    }
    rec.finish(end, 1000)
}

/// Records the request on the device and writes its frame into `buf`; returns its length.
fn record(rec: &mut Recorder<BUF>, buf: &mut [u8]) -> usize {
    record_calls(rec);
    let mut w = FrameWriter::new(buf);
    rec.write_frame(&mut w);
    let n = w.finish().unwrap_or(0);
    rec.reset();
    n
}

/// Records the same spans in a core request, as a server agent does.
fn record_core(req: &mut Request<Cap>) {
    let (t0, spans, end) = times();
    req.begin(RequestIds::default(), Timestamp(t0), 1500);
    req.start_span(Text::Static(OPS[0]), Timestamp(t0), SpanFlags::NONE);
    for (i, &(start, stop)) in spans.iter().enumerate() {
        req.start_span(
            Text::Static(OPS[1 + i % 3]),
            Timestamp(start),
            SpanFlags::NONE,
        );
        let _ = req.stop_span(Timestamp(stop));
    }
    req.finish(Timestamp(end));
}

struct Names;

impl NameSource for Names {
    fn name(&self, id: u16) -> Option<&str> {
        OPS.get(usize::from(id).checked_sub(1)?).copied()
    }
}

/// The gateway: decodes the frame (in place) and replays it into `out`.
fn decode_and_rebuild(frame: &mut [u8], out: &mut Request<Gateway>) -> u32 {
    match device::decode_up(frame) {
        Ok(Up::Request(j)) => device::rebuild(
            &j,
            &Names,
            RequestIds::default(),
            1500,
            |t| Timestamp(t + 1_700_000_000_000_000),
            out,
        )
        .unwrap_or(u32::MAX),
        _ => u32::MAX,
    }
}

fn bench(c: &mut Criterion) {
    let mut rec = Box::new(Recorder::<BUF>::new());
    let mut buf = [0u8; BUF];
    let n = record(&mut rec, &mut buf);
    assert!(n > 0, "the request does not fit {BUF} bytes");
    let frame = buf[..n].to_vec();
    let mut req: Box<Request<Cap>> = Box::default();
    record_core(&mut req);
    assert_eq!(req.span_count(), 10);
    let mut gw: Box<Request<Gateway>> = Box::default();
    let mut copy = frame.clone();
    assert_eq!(decode_and_rebuild(&mut copy, &mut gw), 0);
    assert_eq!(gw.span_count(), 10);
    println!(
        "10-span request: {n} bytes on the wire ({:.1} bytes/span)",
        n as f64 / 10.0
    );

    let mut g = c.benchmark_group("device");
    g.throughput(Throughput::Elements(10));
    g.bench_function("record_10_span_request_device_recorder", |b| {
        b.iter(|| record(black_box(&mut rec), &mut buf))
    });
    g.bench_function(
        "record_10_span_request_device_recorder_without_framing",
        |b| {
            b.iter(|| {
                let done = record_calls(black_box(&mut rec));
                rec.reset();
                done
            })
        },
    );
    g.bench_function("record_10_span_request_core_request", |b| {
        b.iter(|| record_core(black_box(&mut req)))
    });
    let mut scratch = frame.clone();
    g.bench_function("gateway_decode_and_rebuild_10_span_request", |b| {
        b.iter(|| {
            scratch.copy_from_slice(&frame);
            decode_and_rebuild(black_box(&mut scratch), &mut gw)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
