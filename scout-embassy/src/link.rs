//! The forwarding task: drains finished requests to a byte link and answers time syncs.

use core::cell::Cell;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use embassy_futures::select::{Either, select};
use embedded_io_async::{Read, Write};
use scout_core::device::{
    self, Capacity, Down, DownReader, FrameWriter, Hello, NameDef, PROTOCOL_VERSION, TimeSyncReply,
};

use crate::agent::{Agent, StateRef, bump, now};
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

/// What the writer has sent on this link.
struct Sent {
    hello: bool,
    names: usize,
    /// Total of the drop counters last sent.
    drops: Option<u64>,
    /// Bytes of the frame just written, not yet counted in the stats.
    wrote: usize,
}

/// The writer's next step.
enum Next {
    /// Write this many bytes from the start of the buffer; `true` for a frame taken from the
    /// queue (lost if the write fails).
    Write(usize, bool),
    /// A message did not fit the buffer and was skipped: look again.
    Skip,
    /// Nothing to send.
    Idle,
    /// The hello does not fit the buffer.
    Fail,
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> Agent<S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    /// Attaches a link and forwards until it fails: writes the hello and every name
    /// definition, then each finished request (with the definitions of names new since),
    /// the drop counters when they change, and answers the gateway's time-sync requests read
    /// from `reader`.
    ///
    /// While no link is attached, finished requests are dropped and counted (`no_link`).
    /// A frame being written when the link fails is counted in `link_errors`. `reader` must be
    /// the same link's receive half; its `read` is polled concurrently with the writes and is
    /// dropped only when the link ends.
    pub async fn run_link<R: Read, W: Write>(&self, mut reader: R, mut writer: W) -> LinkEnd {
        // The link is attached by the first step of the writer, which starts with the hello.
        let sync: Cell<Option<TimeSyncReply>> = Cell::new(None);
        let read_loop = async {
            let mut rx = DownReader::new();
            let mut chunk = [0u8; 8];
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) => return LinkEnd::Closed,
                    Ok(n) => n,
                    Err(_) => return LinkEnd::Read,
                };
                for &b in chunk.get(..n).unwrap_or(&[]) {
                    match rx.push(b) {
                        Some(Ok(Down::TimeSync { id })) => {
                            sync.set(Some(TimeSyncReply { id, uptime: now() }))
                        }
                        Some(Ok(Down::Reject { .. })) => {
                            log_warn!("scout: gateway rejected this device");
                            return LinkEnd::Rejected;
                        }
                        _ => {}
                    }
                }
            }
        };
        let lost = Cell::new(false);
        let write_loop = self.write_loop(&mut writer, &sync, &lost);
        let end = match select(read_loop, write_loop).await {
            Either::First(e) | Either::Second(e) => e,
        };
        // A frame taken from the queue that could not be written is lost.
        let lost = lost.get();
        self.with(|st| {
            st.link = false;
            if lost {
                bump(&mut st.stats.drops.link_errors, 1);
            }
        });
        end
    }

    async fn write_loop<W: Write>(
        &self,
        w: &mut W,
        sync: &Cell<Option<TimeSyncReply>>,
        lost: &Cell<bool>,
    ) -> LinkEnd {
        // One buffer for every message, and one write per step: the messages are chosen and
        // encoded by `next` (not async), so this future stays small.
        let mut buf = [0u8; FRAME];
        let mut sent = Sent {
            hello: false,
            names: 0,
            drops: None,
            wrote: 0,
        };
        loop {
            let step = match self.next(&mut buf, &mut sent, sync, None) {
                Next::Idle => {
                    if w.flush().await.is_err() {
                        return LinkEnd::Write;
                    }
                    // Sleep until a transaction finishes (a frame to send, or drop counters
                    // that changed) or a time sync arrives (the reader runs in this task).
                    poll_fn(
                        |cx| match self.next(&mut buf, &mut sent, sync, Some(cx.waker())) {
                            Next::Idle => Poll::Pending,
                            step => Poll::Ready(step),
                        },
                    )
                    .await
                }
                step => step,
            };
            match step {
                Next::Write(n, queued) => {
                    if w.write_all(buf.get(..n).unwrap_or(&[])).await.is_err() {
                        lost.set(queued);
                        return LinkEnd::Write;
                    }
                    // Counted by the next call to `next`, right away.
                    sent.wrote = n;
                }
                Next::Fail => return LinkEnd::Write,
                Next::Skip | Next::Idle => {}
            }
        }
    }

    /// Chooses and encodes the next message into `buf`: first the hello (after a lone
    /// delimiter, which ends any partial frame the gateway holds from an earlier link), then a
    /// time-sync reply, the next name not yet defined on this link, the oldest queued frame,
    /// and the drop counters when they changed. Names come before the frames that may use
    /// them: both are decided in the same critical section, and names are append-only. A name
    /// too long for `buf` stays undefined (the gateway shows `Device/unnamed`). With nothing to
    /// send, `waker` (if any) is woken when a transaction finishes.
    #[inline(never)]
    fn next(
        &self,
        buf: &mut [u8],
        sent: &mut Sent,
        sync: &Cell<Option<TimeSyncReply>>,
        waker: Option<&Waker>,
    ) -> Next {
        let wrote = core::mem::take(&mut sent.wrote);
        self.with(|st| {
            if wrote > 0 {
                bump(&mut st.stats.sent, 1);
                bump(&mut st.stats.bytes_sent, wrote as u32);
            }
            let hello = !sent.hello;
            let reply = if hello { None } else { sync.take() };
            let name = st.names.len() > sent.names;
            if !hello && reply.is_none() && !name {
                let n = st.queue.pop_frame(buf);
                if n > 0 {
                    return Next::Write(n, true);
                }
            }
            // The hello goes after a lone delimiter.
            let lead = usize::from(hello);
            if let Some(b) = buf.first_mut() {
                *b = 0;
            }
            let room = buf.len().saturating_sub(lead);
            let mut w = FrameWriter::wrapping(buf, lead, room);
            if hello {
                log_debug!("scout: link attached");
                st.link = true;
                bump(&mut st.stats.links, 1);
                sent.hello = true;
                w.hello(&Hello {
                    version: PROTOCOL_VERSION,
                    device_id: self.config.device_id,
                    firmware: self.config.firmware,
                    token: self.config.token,
                    tick_hz: device::MICROS_HZ,
                    uptime: now(),
                });
            } else if let Some(r) = reply {
                w.time_sync(&r);
            } else if name {
                sent.names += 1;
                let id = u16::try_from(sent.names).unwrap_or(u16::MAX);
                // An id without a name (never happens) is skipped.
                let Some(name) = st.names.get(id) else {
                    return Next::Skip;
                };
                w.name(&NameDef { id, name });
            } else {
                let total = st.stats.drops.total();
                if sent.drops == Some(total) {
                    if let Some(waker) = waker {
                        st.waker = Some(waker.clone());
                    }
                    return Next::Idle;
                }
                sent.drops = Some(total);
                w.drops(&st.stats.drops);
            }
            match w.finish() {
                Ok(n) => Next::Write(n + lead, false),
                Err(_) if hello => Next::Fail,
                Err(_) => Next::Skip,
            }
        })
        .unwrap_or(Next::Idle)
    }
}
