//! The forwarding task: drains finished requests to a byte link and answers time syncs.

use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::{Poll, Waker};

use embedded_io_async::{Read, Write};
use scout_core::device::{
    self, Down, DownReader, FrameWriter, Hello, NameDef, PROTOCOL_VERSION, TimeSyncReply,
};

use crate::agent::{Agent, State, StateRef, bump, now};
use crate::fmt::{log_debug, log_warn};

/// Why [`Agent::run_link`] returned. Call it again with a fresh link to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LinkEnd {
    /// Writing failed.
    Write,
    /// Reading failed.
    Read,
    /// The peer closed the link (read returned 0 bytes).
    Closed,
    /// The gateway refused this device (unknown device or wrong token, or protocol version).
    Rejected,
}

/// One read of up to 8 bytes, by a future that owns the receive half and gives it back.
async fn read_some<R: Read>(mut reader: R) -> (R, Result<usize, R::Error>, [u8; 8]) {
    let mut chunk = [0u8; 8];
    let got = reader.read(&mut chunk).await;
    (reader, got, chunk)
}

/// Writes all of `bytes`; false when a write fails or writes nothing (`write_all` would
/// panic on the latter).
async fn write_all<W: Write>(writer: &mut W, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match writer.write(bytes).await {
            Ok(n) if n > 0 => bytes = bytes.get(n..).unwrap_or(&[]),
            _ => return false,
        }
    }
    true
}

/// What the writer has sent on this link.
struct Sent {
    hello: bool,
    names: usize,
    /// Sum (wrapping) of the drop counters last sent.
    drops: Option<u32>,
    /// Bytes of the frame just written, not yet counted in the stats.
    wrote: usize,
    /// The answer to the gateway's last time sync, not yet sent.
    sync: Option<TimeSyncReply>,
    /// Nothing was written since the last flush.
    flushed: bool,
}

/// The writer's next step.
enum Next {
    /// Write this many bytes from the start of the buffer.
    Write(usize),
    /// A message did not fit the buffer and was skipped: look again.
    Skip,
    /// Nothing to send.
    Idle,
    /// The hello does not fit the buffer.
    Fail,
    /// The link ends.
    End(LinkEnd),
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>>
    Agent<SLOTS, NAMES, BUF, H>
{
    /// Attaches a link and forwards until it fails: writes the hello and every name
    /// definition, then each finished request (with the definitions of names new since),
    /// the drop counters when they change, and answers the gateway's time-sync requests read
    /// from `reader`.
    ///
    /// While no link is attached, finished requests wait in their slots for the next link;
    /// transactions that find every slot waiting are counted (`no_link` before the first
    /// link, `queue_full` after). A request being written when the link fails, or when this
    /// future is dropped, is lost and counted in `link_errors` (on a drop, when the next link
    /// attaches). `reader` must be the same link's receive half; a `read` is always pending on
    /// it (polled whenever the task runs, between writes) and is dropped only when the link
    /// ends.
    pub async fn run_link<R: Read, W: Write>(&self, reader: R, mut writer: W) -> LinkEnd {
        // One buffer for every message, and one write per step: the messages are chosen and
        // encoded by `next` and the gateway's bytes parsed by `received` (neither async), so
        // this future stays small. The link is attached by the first `next`, with the hello.
        let mut buf = [0u8; BUF];
        let mut sent = Sent {
            hello: false,
            names: 0,
            drops: None,
            wrote: 0,
            sync: None,
            flushed: false,
        };
        let mut rx = DownReader::new();
        // The pending read owns the receive half and hands it back with what it read.
        let mut read = pin!(read_some(reader));
        let end = loop {
            let step = poll_fn(|cx| {
                while let Poll::Ready((reader, got, chunk)) = read.as_mut().poll(cx) {
                    read.set(read_some(reader));
                    if let Some(end) = self.received(&mut rx, got, &chunk, &mut sent) {
                        return Poll::Ready(Next::End(end));
                    }
                }
                // Sleep until a transaction finishes (a frame to send, or drop counters that
                // changed) or the gateway writes, after a flush.
                match self.next(&mut buf, &mut sent, cx.waker()) {
                    Next::Idle if sent.flushed => Poll::Pending,
                    step => Poll::Ready(step),
                }
            })
            .await;
            match step {
                Next::Write(n) => {
                    if !write_all(&mut writer, buf.get(..n).unwrap_or(&[])).await {
                        break LinkEnd::Write;
                    }
                    // Counted by the next call to `next`, right away.
                    sent.wrote = n;
                    sent.flushed = false;
                }
                Next::Idle => {
                    if writer.flush().await.is_err() {
                        break LinkEnd::Write;
                    }
                    sent.flushed = true;
                }
                Next::Fail => break LinkEnd::Write,
                Next::End(end) => break end,
                Next::Skip => {}
            }
        };
        // A request taken from its slot that could not be written is lost.
        self.with(lose_in_flight);
        end
    }

    /// Parses what one read brought: answers a time sync (through `sent`), and ends the link
    /// on a rejection, a read error or the end of the stream.
    fn received<E>(
        &self,
        rx: &mut DownReader,
        got: Result<usize, E>,
        chunk: &[u8],
        sent: &mut Sent,
    ) -> Option<LinkEnd> {
        let n = match got {
            Ok(0) => return Some(LinkEnd::Closed),
            Ok(n) => n,
            Err(_) => return Some(LinkEnd::Read),
        };
        for &b in chunk.get(..n).unwrap_or(&[]) {
            match rx.push(b) {
                Some(Ok(Down::TimeSync { id })) => {
                    sent.sync = Some(TimeSyncReply { id, uptime: now() })
                }
                Some(Ok(Down::Reject { .. })) => {
                    log_warn!("scout: gateway rejected this device");
                    return Some(LinkEnd::Rejected);
                }
                _ => {}
            }
        }
        None
    }

    /// Chooses and encodes the next message into `buf`: first the hello (after a lone
    /// delimiter, which ends any partial frame the gateway holds from an earlier link), then a
    /// time-sync reply, the next name not yet defined on this link, the oldest finished
    /// request (its slot is then idle again), and the drop counters when they changed. Names
    /// come before the frames that may use them: both are decided in the same critical
    /// section, and names are append-only. A name too long for `buf` stays undefined (the
    /// gateway shows `Device/unnamed`). With nothing to send, `waker` is woken when a
    /// transaction finishes.
    #[inline(never)]
    fn next(&self, buf: &mut [u8], sent: &mut Sent, waker: &Waker) -> Next {
        let wrote = core::mem::take(&mut sent.wrote);
        self.with(|st| {
            if !sent.hello {
                // A new link: the previous one's future was dropped while writing a request.
                lose_in_flight(st);
            }
            if wrote > 0 {
                // Whatever was written arrived whole.
                st.in_flight = false;
                bump(&mut st.stats.sent, 1);
                bump(&mut st.stats.bytes_sent, wrote as u32);
            }
            match self.encode(st, buf, sent, waker) {
                Ok(n) => Next::Write(n),
                Err(step) => step,
            }
        })
        .unwrap_or(Next::Idle)
    }

    /// Encodes the next message into `out`: its length, or the
    /// step to take instead.
    fn encode(
        &self,
        st: &mut State<SLOTS, NAMES, BUF>,
        out: &mut [u8],
        sent: &mut Sent,
        waker: &Waker,
    ) -> Result<usize, Next> {
        let State {
            slots,
            names,
            stats,
            unsent,
            in_flight,
            waker: wake_slot,
            ..
        } = st;
        let hello = !sent.hello;
        let reply = if hello { None } else { sent.sync.take() };
        let name = names.len() > sent.names;
        // The hello goes after a lone delimiter.
        let lead = usize::from(hello);
        if let Some(b) = out.first_mut() {
            *b = 0;
        }
        let mut w = FrameWriter::new(out.get_mut(lead..).unwrap_or(&mut []));
        // The oldest finished request. Finished requests hold the numbers from `sent` to
        // `seq` (each finish takes the next number, each send the oldest), so the oldest is
        // the one numbered `sent`.
        let oldest = slots.iter_mut().find(|r| r.is_done() && r.seq() == *unsent);
        if hello {
            log_debug!("scout: link attached");
            bump(&mut stats.links, 1);
            sent.hello = true;
            w.hello(&Hello {
                version: PROTOCOL_VERSION,
                device_id: self.config.device_id,
                firmware: self.config.firmware,
                token: self.config.token,
                tick_hz: device::MICROS_HZ,
                uptime: now(),
                span_limit: self.config.span_limit,
            });
        } else if let Some(r) = reply {
            w.time_sync(&r);
        } else if name {
            sent.names += 1;
            let id = u16::try_from(sent.names).unwrap_or(u16::MAX);
            // An id without a name (never happens) is skipped.
            let Some(name) = names.get(id) else {
                return Err(Next::Skip);
            };
            w.name(&NameDef { id, name });
        } else if let Some(rec) = oldest {
            // Fits: a slot's frame fits `BUF` bytes.
            rec.write_frame(&mut w);
            rec.reset();
            *unsent = unsent.wrapping_add(1);
            *in_flight = true;
        } else {
            // A change check, not a count: the counters only grow (or stay saturated), so
            // their sum changes whenever one does (short of 2^32 drops between two calls).
            let counts = stats.drops.counts();
            let total = counts.iter().fold(0u32, |a, &v| a.wrapping_add(v));
            if sent.drops == Some(total) {
                *wake_slot = Some(waker.clone());
                return Err(Next::Idle);
            }
            sent.drops = Some(total);
            w.drop_counts(&counts);
        }
        match w.finish() {
            Ok(n) => Ok(n + lead),
            Err(_) if hello => Err(Next::Fail),
            Err(_) => Err(Next::Skip),
        }
    }
}

/// Counts the request the link took from its slot but did not finish writing as lost.
fn lose_in_flight<const SLOTS: usize, const NAMES: usize, const BUF: usize>(
    st: &mut State<SLOTS, NAMES, BUF>,
) {
    if core::mem::take(&mut st.in_flight) {
        bump(&mut st.stats.drops.link_errors, 1);
    }
}
