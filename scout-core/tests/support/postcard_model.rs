//! postcard's model of the device messages, shared by `scout-core/tests/device.rs` and the
//! `device_decode` fuzz target (which includes this file by path): the independent oracle
//! for the hand-written codec.

use std::fmt;
use std::marker::PhantomData;

use scout_core::device::{DeviceDrops, Event, Hello, NameDef, TimeSyncReply, Up};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// postcard's model of an [`Up`]: the same variants in the same order; a request is its header
/// and its events as one tuple (postcard writes a tuple's elements back to back, with no
/// count), read up to and including `End`. Encoding and decoding it with postcard is the
/// independent oracle for the hand-written codec.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PUp<'a> {
    Hello(#[serde(borrow)] Hello<'a>),
    Name(#[serde(borrow)] NameDef<'a>),
    Request(#[serde(borrow)] PJournal<'a>),
    Drops(DeviceDrops),
    TimeSync(TimeSyncReply),
}

/// A request as postcard sees it: `seq`, `start`, then the events.
#[derive(Debug, Clone)]
pub(crate) struct PJournal<'a> {
    pub(crate) seq: u32,
    pub(crate) start: u64,
    pub(crate) events: Vec<Event<'a>>,
}

impl Serialize for PJournal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2 + self.events.len())?;
        t.serialize_element(&self.seq)?;
        t.serialize_element(&self.start)?;
        for e in &self.events {
            t.serialize_element(e)?;
        }
        t.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PJournal<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = PJournal<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request: seq, start, events up to End")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<PJournal<'a>, A::Error> {
                let short = || de::Error::custom("short");
                let seq = s.next_element()?.ok_or_else(short)?;
                let start = s.next_element()?.ok_or_else(short)?;
                let mut events = Vec::new();
                loop {
                    let e: Event<'a> = s.next_element()?.ok_or_else(short)?;
                    let end = matches!(e, Event::End { .. });
                    events.push(e);
                    if end {
                        return Ok(PJournal { seq, start, events });
                    }
                }
            }
        }
        d.deserialize_tuple(usize::MAX, V(PhantomData))
    }
}

/// postcard's model of a decoded message.
pub(crate) fn to_p<'a>(m: &Up<'a>) -> PUp<'a> {
    match *m {
        Up::Hello(h) => PUp::Hello(h),
        Up::Name(d) => PUp::Name(d),
        Up::Request(j) => PUp::Request(PJournal {
            seq: j.seq,
            start: j.start,
            events: j.events().collect(),
        }),
        Up::Drops(d) => PUp::Drops(d),
        Up::TimeSync(r) => PUp::TimeSync(r),
    }
}
