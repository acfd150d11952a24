//! Device wire format: encode cost of a finished 10-span request (per span) and its bytes, by
//! the device's recorder and hand-written frame writer and by the host's postcard path, and
//! the gateway's decode.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scout_core::device::{self, FrameWriter, NameLookup, NameTable, Recorder, RequestFrame};
use scout_core::{Fixed, Request, RequestIds, SpanFlags, Text, Timestamp};

type Cap = Fixed<16, 16, 64, 8>;

/// The same 10-span request (1 root, 9 children of 0.1-5 ms, one hour of uptime) recorded by a
/// core `Request` and by a device `Recorder`.
fn request() -> (Request<Cap>, Box<Recorder<Cap>>, NameTable<8>) {
    let ops: [&'static str; 4] = ["Job/loop", "I2C/read", "SPI/write", "Compute/fft"];
    let mut names = NameTable::new();
    for op in ops {
        names.intern(op);
    }
    let mut r = Request::new();
    let mut rec = Box::new(Recorder::new());
    let t0 = 3_600_000_000;
    r.begin(RequestIds::default(), Timestamp(t0), 1500);
    rec.begin(t0, 1500);
    r.start_span("Job/loop".into(), Timestamp(t0), SpanFlags::NONE);
    rec.start_span(names.id_of("Job/loop"), SpanFlags::NONE, t0);
    let mut t = t0 + 15;
    for i in 0..9u64 {
        let op = ops[1 + (i as usize % 3)];
        r.start_span(Text::Static(op), Timestamp(t), SpanFlags::NONE);
        rec.start_span(names.id_of(op), SpanFlags::NONE, t);
        t += 100 + i * 600;
        let _ = r.stop_span(Timestamp(t));
        rec.stop_span(t);
        t += 20;
    }
    let _ = r.stop_span(Timestamp(t));
    rec.finish(t);
    (r, rec, names)
}

fn recorded(rec: &Recorder<Cap>, buf: &mut [u8]) -> usize {
    let mut w = FrameWriter::new(buf);
    rec.encode(1000, &mut w);
    w.finish().unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let (req, rec, names) = request();
    let mut buf = [0u8; 256];
    let n = recorded(&rec, &mut buf);
    let mut postcard = [0u8; 256];
    let m = device::encode(
        &RequestFrame {
            request: &req,
            names: &names,
            seq: 1000,
        },
        &mut postcard,
    )
    .unwrap_or(0);
    assert_eq!(buf[..n], postcard[..m], "the two encoders disagree");
    println!(
        "10-span request: {n} bytes on the wire ({:.1} bytes/span)",
        n as f64 / 10.0
    );
    let mut g = c.benchmark_group("device");
    g.throughput(Throughput::Elements(10));
    g.bench_function("encode_10_span_request_recorder", |b| {
        b.iter(|| recorded(std::hint::black_box(&rec), &mut buf))
    });
    g.bench_function("encode_10_span_request_postcard", |b| {
        b.iter(|| {
            device::encode(
                &RequestFrame {
                    request: std::hint::black_box(&req),
                    names: &names,
                    seq: 1000,
                },
                &mut postcard,
            )
        })
    });
    let mut frame = postcard[..m].to_vec();
    g.bench_function("decode_10_span_request", |b| {
        b.iter(|| {
            frame.copy_from_slice(&postcard[..m]);
            device::decode_up(std::hint::black_box(&mut frame)).map(|_| ())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
