//! Device wire format: encode cost of a finished 10-span request (per span) and its bytes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scout_core::device::{self, NameTable, RequestFrame};
use scout_core::{Fixed, Request, RequestIds, SpanFlags, Text, Timestamp};

fn request() -> (Request<Fixed<16, 16, 64, 8>>, NameTable<8>) {
    let ops: [&'static str; 4] = ["Job/loop", "I2C/read", "SPI/write", "Compute/fft"];
    let mut names = NameTable::new();
    for op in ops {
        names.intern(op);
    }
    let mut r = Request::new();
    let t0 = 3_600_000_000;
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
        let _ = r.stop_span(Timestamp(t));
        t += 20;
    }
    let _ = r.stop_span(Timestamp(t));
    (r, names)
}

fn bench(c: &mut Criterion) {
    let (req, names) = request();
    let mut buf = [0u8; 256];
    let n = device::encode(
        &RequestFrame {
            request: &req,
            names: &names,
            seq: 1000,
        },
        &mut buf,
    )
    .unwrap_or(0);
    println!(
        "10-span request: {n} bytes on the wire ({:.1} bytes/span)",
        n as f64 / 10.0
    );
    let mut g = c.benchmark_group("device");
    g.throughput(Throughput::Elements(10));
    g.bench_function("encode_10_span_request", |b| {
        b.iter(|| {
            device::encode(
                &RequestFrame {
                    request: std::hint::black_box(&req),
                    names: &names,
                    seq: 1000,
                },
                &mut buf,
            )
        })
    });
    let mut frame = buf[..n].to_vec();
    g.bench_function("decode_10_span_request", |b| {
        b.iter(|| {
            frame.copy_from_slice(&buf[..n]);
            device::decode_up(std::hint::black_box(&mut frame)).map(|_| ())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
