//! The forwarding task: drains finished requests to a byte link and answers time syncs.

use core::cell::Cell;
use core::future::poll_fn;
use core::task::Poll;

use embassy_futures::select::{Either, select};
use embassy_time::{Duration, Timer};
use embedded_io_async::{Read, Write};
use scout_core::Storage;
use scout_core::device::{
    self, DeviceDrops, Down, FrameReader, Hello, NameDef, PROTOCOL_VERSION, TimeSyncReply, Up,
};

use crate::agent::{Agent, now};
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

/// How often unchanged drop counters are re-sent at most, and how long the writer sleeps
/// without work before checking them.
const DROPS_INTERVAL: Duration = Duration::from_secs(1);

/// The writer's next step.
enum Next {
    /// Define name `id` (`None`: the table has no such id, skip it).
    Name(u16, Option<&'static str>),
    /// Write the frame of this many bytes now at the start of the buffer.
    Frame(usize),
    /// Nothing to send.
    Idle,
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    Agent<S, SLOTS, NAMES, QUEUE, FRAME>
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
        let sync: Cell<Option<TimeSyncReply>> = Cell::new(None);
        let rejected = Cell::new(false);
        self.with(|st| {
            st.link = true;
            st.stats.links = st.stats.links.saturating_add(1);
        });
        log_debug!("scout: link attached");
        let read_loop = async {
            let mut rx = FrameReader::<32>::new();
            let mut chunk = [0u8; 16];
            loop {
                match reader.read(&mut chunk).await {
                    Ok(0) => return LinkEnd::Closed,
                    Ok(n) => {
                        let mut end = false;
                        rx.feed::<Down>(&chunk[..n], |m| match m {
                            Ok(Down::TimeSync { id }) => sync.set(Some(TimeSyncReply {
                                id,
                                uptime: now().as_micros(),
                            })),
                            Ok(Down::Reject { .. }) => end = true,
                            Ok(Down::Welcome { .. }) | Err(_) => {}
                        });
                        if end {
                            rejected.set(true);
                            return LinkEnd::Rejected;
                        }
                    }
                    Err(_) => return LinkEnd::Read,
                }
            }
        };
        let write_loop = self.write_loop(&mut writer, &sync);
        let end = match select(read_loop, write_loop).await {
            Either::First(e) | Either::Second(e) => e,
        };
        self.with(|st| st.link = false);
        if rejected.get() {
            log_warn!("scout: gateway rejected this device");
        }
        end
    }

    async fn write_loop<W: Write>(&self, w: &mut W, sync: &Cell<Option<TimeSyncReply>>) -> LinkEnd {
        // Every message is encoded into `buf` in a statement of its own, so no `Up` value (which
        // has room for a whole decoded request, about 9 KiB on 32-bit targets) lives across an
        // `.await` and bloats this future.
        let mut buf = [0u8; FRAME];
        let hello = encode(
            &Up::Hello(Hello {
                version: PROTOCOL_VERSION,
                device_id: self.config.device_id,
                firmware: self.config.firmware,
                token: self.config.token,
                tick_hz: device::MICROS_HZ,
                uptime: now().as_micros(),
            }),
            &mut buf,
        );
        // A leading delimiter ends any partial frame the gateway holds from an earlier link.
        // A hello that does not fit in `FRAME` bytes ends the link.
        let Some(n) = hello else {
            return LinkEnd::Write;
        };
        if send(self, w, &[0]).await.is_err() || send(self, w, &buf[..n]).await.is_err() {
            return LinkEnd::Write;
        }
        let mut names_sent = 0usize;
        let mut drops_sent: Option<DeviceDrops> = None;
        loop {
            let reply = sync.take().and_then(|r| encode(&Up::TimeSync(r), &mut buf));
            if let Some(n) = reply
                && send(self, w, &buf[..n]).await.is_err()
            {
                return LinkEnd::Write;
            }
            // One step: define the next name not yet sent on this link, else take one queued
            // frame. Both are decided in the same critical section, so a frame is taken only
            // once every name it may use (names are append-only) has been defined; the name
            // is encoded into `buf` too, so the link needs no second buffer.
            let next = self
                .with(|st| {
                    if st.names.len() > names_sent {
                        let id = u16::try_from(names_sent + 1).unwrap_or(u16::MAX);
                        return Next::Name(id, st.names.get(id));
                    }
                    let mut n = 0;
                    if st.queue.iter().any(|&b| b == 0) {
                        while let Some(b) = st.queue.pop_front() {
                            if let Some(slot) = buf.get_mut(n) {
                                *slot = b;
                                n += 1;
                            }
                            if b == 0 {
                                break;
                            }
                        }
                    }
                    if n > 0 { Next::Frame(n) } else { Next::Idle }
                })
                .unwrap_or(Next::Idle);
            match next {
                Next::Name(id, name) => {
                    names_sent += 1;
                    // A name too long for `buf` stays undefined (the gateway shows UNNAMED).
                    let def =
                        name.and_then(|name| encode(&Up::Name(NameDef { id, name }), &mut buf));
                    if let Some(n) = def
                        && send(self, w, &buf[..n]).await.is_err()
                    {
                        return LinkEnd::Write;
                    }
                    continue;
                }
                Next::Frame(n) => {
                    if send(self, w, &buf[..n]).await.is_err() {
                        self.lost();
                        return LinkEnd::Write;
                    }
                    continue;
                }
                Next::Idle => {}
            }
            let drops = self.stats().drops;
            if drops_sent != Some(drops) {
                let msg = encode(&Up::Drops(drops), &mut buf);
                if let Some(n) = msg
                    && send(self, w, &buf[..n]).await.is_err()
                {
                    return LinkEnd::Write;
                }
                drops_sent = Some(drops);
            }
            if w.flush().await.is_err() {
                return LinkEnd::Write;
            }
            // Sleep until a request is queued, a time sync arrives, or the interval passes.
            let wait = poll_fn(|cx| {
                if sync.get().is_some() {
                    return Poll::Ready(());
                }
                let ready = self
                    .with(|st| {
                        if st.queue.is_empty() && st.names.len() == names_sent {
                            st.waker = Some(cx.waker().clone());
                            false
                        } else {
                            true
                        }
                    })
                    .unwrap_or(true);
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            select(wait, Timer::after(DROPS_INTERVAL)).await;
        }
    }

    /// Counts a frame taken from the queue that could not be written.
    fn lost(&self) {
        self.with(|st| {
            st.stats.drops.link_errors = st.stats.drops.link_errors.saturating_add(1);
        });
    }
}

/// Encodes `msg` as one frame into `buf`: its length, or `None` when it does not fit.
fn encode(msg: &Up<'_>, buf: &mut [u8]) -> Option<usize> {
    device::encode(msg, buf).ok()
}

async fn send<
    S: Storage,
    W: Write,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
>(
    agent: &Agent<S, SLOTS, NAMES, QUEUE, FRAME>,
    w: &mut W,
    bytes: &[u8],
) -> Result<(), ()> {
    w.write_all(bytes).await.map_err(|_| ())?;
    agent.with(|st| {
        st.stats.sent = st.stats.sent.saturating_add(1);
        st.stats.bytes_sent = st
            .stats
            .bytes_sent
            .saturating_add(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    });
    Ok(())
}
