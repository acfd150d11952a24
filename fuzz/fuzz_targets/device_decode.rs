//! The device wire format's gateway side (protocol version 2) on arbitrary byte streams:
//! `device::scan`, the `FrameReader`, `decode_up` / `decode_down`, the `DownReader` and
//! `rebuild`.
//!
//! Invariants:
//! - no panic on any stream;
//! - the reader yields exactly the non-empty `0x00`-terminated segments of the stream (those
//!   longer than its buffer as one `TooLong` each), whether the stream arrives at once or in
//!   pieces (sizes from the first input byte), and `scan`'s counts (frames, requests, spans =
//!   `Start` and `StartWith` events, bad frames) agree with decoding them;
//! - the hand-written `decode_up` accepts exactly the frames postcard accepts (through a serde
//!   model of the messages: a request is its header and its events as a tuple read up to
//!   `End`) and returns the same message or the same error;
//! - a decoded message re-encodes (`FrameWriter`) to one frame that decodes to the same
//!   message; for every message but a request (whose events are copied as they came) the
//!   writer's bytes are postcard's; each event of a request re-encodes to postcard's bytes;
//! - the device's streaming `DownReader` yields the messages a 32-byte `FrameReader` feeding
//!   `decode_down` yields, and a decoded `Down` re-encodes (`FrameWriter`) to postcard's bytes;
//! - `rebuild` of any decoded journal never panics and fails exactly when the events show why
//!   (anything but a start first: `NoRoot`; a stop with only the root open: `Nesting`; no
//!   `End`: `Unfinished`), else returns the `End`'s drop count; a rebuilt request is finished
//!   and real, spans the journal's start to its end (the sum of its deltas), has at most one
//!   span per start, and encodes to JSON serde_json parses.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use scout_core::command::{RequestBatch, encoded_len, write_frame_to_slice};
use scout_core::device::{
    self, DecodeError, DownReader, Event, FrameReader, FrameWriter, InvalidRequest, Journal,
    MAX_FRAME, NameSource, Up,
};
use scout_core::{Fixed, Request, RequestIds, Timestamp};

#[path = "../../scout-core/tests/support/postcard_model.rs"]
mod postcard_model;
use postcard_model::{PUp, to_p};

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
    if !stream.is_empty() {
        // Pending bytes: the unterminated tail, capped by the buffer (0 once it overflowed).
        let pending = reader.pending();
        assert!(
            pending == tail.len() || (tail.len() > N && pending <= N),
            "pending {pending}"
        );
    }
    out
}

/// What replaying `events` must give, from the events alone: the first must be a start, a
/// stop never stops the root, `End` finishes (with its drop count).
fn expected(j: &Journal<'_>) -> Result<u32, InvalidRequest> {
    let mut open = 0usize;
    for e in j.events() {
        match e {
            Event::Start { .. } | Event::StartWith { .. } => open += 1,
            _ if open == 0 => return Err(InvalidRequest::NoRoot),
            Event::Stop { .. } if open == 1 => return Err(InvalidRequest::Nesting),
            Event::Stop { .. } => open -= 1,
            Event::End { dropped, .. } => return Ok(dropped),
            Event::SpanTag { .. } | Event::RequestTag { .. } => {}
        }
    }
    Err(if open == 0 {
        InvalidRequest::NoRoot
    } else {
        InvalidRequest::Unfinished
    })
}

fn check_request(j: &Journal<'_>, names: &Names) {
    type Big = Fixed<256, 256, 16384, 256>;
    let mut req: Box<Request<Big>> = Box::default();
    let ids = RequestIds::from_parts([3; 16], [4, 5]);
    let limit = u32::from(j.seq as u8);
    let res = device::rebuild(j, names, ids, limit, Timestamp, &mut req);
    assert_eq!(res, expected(j), "rebuild of {:?}", to_p(&Up::Request(*j)));
    if res.is_err() {
        return;
    }
    assert!(req.is_finished() && req.is_real());
    let starts = j
        .events()
        .filter(|e| matches!(e, Event::Start { .. } | Event::StartWith { .. }))
        .count();
    assert!(req.span_count() <= starts);
    assert_eq!(req.start_time(), Timestamp(j.start));
    let end = j.events().fold(j.start, |t, e| match e {
        Event::Start { delta, .. }
        | Event::StartWith { delta, .. }
        | Event::Stop { delta }
        | Event::End { delta, .. } => t.saturating_add(u64::from(delta)),
        _ => t,
    });
    assert_eq!(req.end_time(), Timestamp(end));
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
        // Gateway-to-device messages: decode, re-encode by hand and by postcard, decode again.
        let mut buf = seg.clone();
        if let Ok(down) = device::decode_down(&mut buf) {
            let mut out = [0u8; 64];
            let n = device::encode(&down, &mut out).expect("a Down fits 64 bytes");
            let mut hand = [0u8; 64];
            let mut w = FrameWriter::new(&mut hand);
            w.down(&down);
            assert_eq!(w.finish(), Ok(n));
            assert_eq!(hand[..n], out[..n], "hand-written Down bytes");
            assert_eq!(device::decode_down(&mut out[..n]), Ok(down));
        }

        // The hand-written decoder against postcard.
        let mut buf = seg.clone();
        let mut theirs = seg.clone();
        let msg = device::decode_up(&mut buf);
        let model = device::decode_frame::<PUp<'_>>(&mut theirs);
        assert_eq!(
            msg.map(|m| format!("{:?}", to_p(&m))),
            model.map(|m| format!("{m:?}")),
            "decode_up against postcard"
        );
        let Ok(msg) = msg else {
            continue;
        };
        frames += 1;
        let mut out = vec![0u8; seg.len() * 2 + 64];
        let n = device::encode_up(&msg, &mut out).expect("re-encode");
        assert_eq!(out[n - 1], 0, "frame ends with the delimiter");
        assert!(!out[..n - 1].contains(&0), "COBS frame contains 0x00");
        if !matches!(msg, Up::Request(_)) {
            let mut pc = vec![0u8; n + 16];
            assert_eq!(
                device::encode(&to_p(&msg), &mut pc),
                Ok(n),
                "postcard length"
            );
            assert_eq!(pc[..n], out[..n], "hand-written bytes");
        }
        let again = device::decode_up(&mut out[..n]).expect("re-encoded frame decodes");
        // Debug, not ==: a NaN float tag is not equal to itself.
        assert_eq!(format!("{again:?}"), format!("{msg:?}"));
        match &msg {
            Up::Name(d) => {
                names.0.insert(d.id, d.name.to_owned());
            }
            Up::Request(j) => {
                requests += 1;
                let mut count = 0u32;
                for e in j.events() {
                    count += 1;
                    if matches!(e, Event::Start { .. } | Event::StartWith { .. }) {
                        spans += 1;
                    }
                    // Each event re-encodes to postcard's bytes.
                    let mut pc = vec![0u8; seg.len() * 2 + 64];
                    let m = device::encode(&e, &mut pc).expect("an event fits");
                    let mut hand = vec![0u8; m];
                    let mut w = FrameWriter::new(&mut hand);
                    w.event(&e);
                    assert_eq!(w.finish(), Ok(m));
                    assert_eq!(hand[..], pc[..m], "event bytes of {e:?}");
                }
                assert!(matches!(j.events().last(), Some(Event::End { .. })));
                assert!(count >= 1);
                check_request(j, &names);
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
