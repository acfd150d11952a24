//! The device wire format's gateway side on arbitrary byte streams: `device::scan`, the
//! `FrameReader`, `decode_up` / `decode_down`, `validate` and `rebuild`.
//!
//! Invariants:
//! - no panic on any stream;
//! - the reader yields exactly the non-empty `0x00`-terminated segments of the stream (those
//!   longer than its buffer as one `TooLong` each), whether the stream arrives at once or in
//!   pieces (sizes from the first input byte), and `scan`'s counts agree with decoding them;
//! - a decoded message re-encodes to one frame that decodes to the same message, and the
//!   device's hand-written writer (`FrameWriter`) writes the same bytes as postcard;
//! - the device's streaming `DownReader` yields the messages a 32-byte `FrameReader` feeding
//!   `decode_down` yields;
//! - `rebuild` succeeds exactly when `validate` passes, the spans nest like a stack and the
//!   storage is large enough; a rebuilt request is finished and real, has every span with its
//!   name (or `Device/unnamed`), parent and start time, and encodes to JSON serde_json parses.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use scout_core::command::{RequestBatch, encoded_len, write_frame_to_slice};
use scout_core::device::{
    self, DecodeError, DownReader, FrameReader, InvalidRequest, MAX_FRAME, NO_NAME, NameSource,
    ROOT, UNNAMED, Up, WireRequest,
};
use scout_core::{Fixed, Request, RequestIds, SpanIdx, Timestamp};

struct Names(HashMap<u16, String>);

impl NameSource for Names {
    fn name(&self, id: u16) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }
}

/// The terminated, non-empty segments of `stream` as a reader with an `n`-byte buffer must
/// report them.
fn segments(stream: &[u8], n: usize) -> Vec<Result<Vec<u8>, DecodeError>> {
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == 0).collect();
    parts.pop(); // the unterminated tail (possibly empty) is still pending
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.len() > n {
                Err(DecodeError::TooLong)
            } else {
                Ok(p.to_vec())
            }
        })
        .collect()
}

fn read_all<const N: usize>(stream: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, DecodeError>> {
    let mut reader = Box::new(FrameReader::<N>::new());
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        reader.feed_raw(piece, |f| out.push(f.map(|x| x.to_vec())));
    }
    let tail = stream.rsplit(|&b| b == 0).next().unwrap_or(&[]);
    if stream.contains(&0) || !stream.is_empty() {
        // Pending bytes: the unterminated tail, capped by the buffer (0 once it overflowed).
        let pending = reader.pending();
        assert!(
            pending == tail.len() || (tail.len() > N && pending <= N),
            "pending {pending}"
        );
    }
    out
}

/// Spans nest like a stack: each span's parent is the previous span or one of its ancestors.
fn stack_shaped(r: &WireRequest<'_>) -> bool {
    (1..r.spans.len()).all(|i| {
        let p = usize::from(r.spans[i].parent) - 1;
        let mut a = Some(i - 1);
        while let Some(j) = a {
            if j == p {
                return true;
            }
            a = usize::from(r.spans[j].parent).checked_sub(1);
        }
        false
    })
}

fn check_request(r: &WireRequest<'_>, names: &Names) {
    type Big = Fixed<256, 256, 16384, 256>;
    let mut req: Box<Request<Big>> = Box::default();
    let ids = RequestIds::from_parts([3; 16], [4, 5]);
    let valid = device::validate(r);
    let res = device::rebuild(r, names, ids, Timestamp, &mut req);
    match (valid, res) {
        (Err(e), res) => assert_eq!(res, Err(e), "rebuild must refuse what validate refuses"),
        (Ok(()), Err(InvalidRequest::Nesting)) => assert!(!stack_shaped(r), "Nesting: {r:?}"),
        (Ok(()), Err(InvalidRequest::Capacity)) => {}
        (Ok(()), Err(e)) => panic!("validated request rebuilt with {e:?}"),
        (Ok(()), Ok(())) => {
            assert!(
                stack_shaped(r),
                "rebuilt a request that does not nest: {r:?}"
            );
            assert!(req.is_finished() && req.is_real());
            assert_eq!(req.span_count(), r.spans.len());
            assert_eq!(req.spans().count(), r.spans.len());
            let mut starts = vec![0u64; r.spans.len()];
            for (i, s) in r.spans.iter().enumerate() {
                let v = req.span(SpanIdx(i as u16)).expect("span");
                let parent = usize::from(s.parent).checked_sub(1);
                assert_eq!(
                    v.parent().map(|p| usize::from(p.0)),
                    parent,
                    "span {i} parent"
                );
                let base = parent.map_or(r.start, |p| starts[p]);
                starts[i] = base.saturating_add(u64::from(s.start));
                assert_eq!(v.start_time(), Timestamp(starts[i]), "span {i} start");
                let want = match names.name(s.name) {
                    Some(n) if s.name != NO_NAME => n,
                    _ => UNNAMED,
                };
                assert_eq!(v.operation(), want, "span {i} name");
            }
            let batch = RequestBatch(&*req);
            let len = encoded_len(&batch);
            let mut buf = vec![0u8; len + 4];
            assert_eq!(
                write_frame_to_slice(&batch, &mut buf, usize::MAX),
                Ok(len + 4)
            );
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&buf[4..]) {
                panic!(
                    "rebuilt request is not JSON ({e}): {}",
                    String::from_utf8_lossy(&buf[4..])
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let stats = device::scan(stream);

    let want = segments(stream, MAX_FRAME);
    assert_eq!(
        read_all::<MAX_FRAME>(stream, stream.len()),
        want,
        "one-shot reader"
    );
    assert_eq!(
        read_all::<MAX_FRAME>(stream, usize::from(chunk % 17) + 1),
        want,
        "chunked reader"
    );
    assert_eq!(
        read_all::<64>(stream, usize::from(chunk) + 1),
        segments(stream, 64),
        "64-byte reader"
    );
    assert_eq!(
        (stats.frames + stats.bad) as usize,
        want.len(),
        "scan counts: {stats:?}"
    );

    // The device's streaming reader of gateway messages against the frame reader.
    let mut framed = Vec::new();
    FrameReader::<32>::new().feed_raw(stream, |f| {
        if let Ok(m) = f.and_then(device::decode_down) {
            framed.push(m);
        }
    });
    let mut down = DownReader::new();
    let streamed: Vec<_> = stream
        .iter()
        .filter_map(|&b| down.push(b))
        .filter_map(Result::ok)
        .collect();
    assert_eq!(streamed, framed, "DownReader");

    let mut names = Names(HashMap::new());
    let (mut frames, mut requests, mut spans) = (0u32, 0u32, 0u32);
    for seg in want.iter().flatten() {
        // Gateway-to-device messages: decode, re-encode, decode again.
        let mut buf = seg.clone();
        if let Ok(down) = device::decode_down(&mut buf) {
            let mut out = [0u8; 64];
            let n = device::encode(&down, &mut out).expect("a Down fits 64 bytes");
            assert_eq!(device::decode_down(&mut out[..n]), Ok(down));
        }
        let mut buf = seg.clone();
        let Ok(msg) = device::decode_up(&mut buf) else {
            continue;
        };
        frames += 1;
        let mut out = vec![0u8; seg.len() * 2 + 64];
        let n = device::encode(&msg, &mut out).expect("re-encode");
        let mut hand = vec![0u8; n];
        assert_eq!(
            device::encode_up(&msg, &mut hand),
            Ok(n),
            "hand-written length"
        );
        assert_eq!(hand, out[..n], "hand-written bytes");
        assert_eq!(out[n - 1], 0, "frame ends with the delimiter");
        assert!(!out[..n - 1].contains(&0), "COBS frame contains 0x00");
        let again = device::decode_up(&mut out[..n]).expect("re-encoded frame decodes");
        // Debug, not ==: a NaN float tag is not equal to itself.
        assert_eq!(format!("{again:?}"), format!("{msg:?}"));
        match &msg {
            Up::Name(d) => {
                names.0.insert(d.id, d.name.to_owned());
            }
            Up::Request(r) => {
                requests += 1;
                spans += r.spans.len() as u32;
                assert!(
                    r.spans.first().is_none_or(|s| s.parent == ROOT)
                        || device::validate(r).is_err()
                );
                check_request(r, &names);
            }
            _ => {}
        }
    }
    assert_eq!(
        (stats.frames, stats.requests, stats.spans),
        (frames, requests, spans),
        "scan"
    );
});
