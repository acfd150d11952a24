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
        let mut buf = [0u8; FRAME];
        let hello = Up::Hello(Hello {
            version: PROTOCOL_VERSION,
            device_id: self.config.device_id,
            firmware: self.config.firmware,
            token: self.config.token,
            tick_hz: device::MICROS_HZ,
            uptime: now().as_micros(),
        });
        // A leading delimiter ends any partial frame the gateway holds from an earlier link.
        if send(self, w, &[0]).await.is_err() || self.send_msg(w, &hello, &mut buf).await.is_err() {
            return LinkEnd::Write;
        }
        let mut names_sent = 0usize;
        let mut drops_sent: Option<DeviceDrops> = None;
        loop {
            if let Some(reply) = sync.take()
                && self
                    .send_msg(w, &Up::TimeSync(reply), &mut buf)
                    .await
                    .is_err()
            {
                return LinkEnd::Write;
            }
            // Take one queued frame (and the size of the name table it may rely on).
            let (frame_len, names_len) = self
                .with(|st| {
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
                    (n, st.names.len())
                })
                .unwrap_or((0, 0));
            // Names first: ids are defined before the frame that uses them.
            while names_sent < names_len {
                names_sent += 1;
                let id = names_sent as u16;
                let Some(name) = self.with(|st| st.names.get(id)).flatten() else {
                    continue;
                };
                let mut nbuf = [0u8; 128];
                let Ok(n) = device::encode(&Up::Name(NameDef { id, name }), &mut nbuf) else {
                    continue; // a name longer than ~120 bytes stays undefined (UNNAMED)
                };
                if send(self, w, &nbuf[..n]).await.is_err() {
                    self.lost(frame_len > 0);
                    return LinkEnd::Write;
                }
            }
            if frame_len > 0 {
                if send(self, w, &buf[..frame_len]).await.is_err() {
                    self.lost(true);
                    return LinkEnd::Write;
                }
                continue;
            }
            let drops = self.stats().drops;
            if drops_sent != Some(drops) {
                if self.send_msg(w, &Up::Drops(drops), &mut buf).await.is_err() {
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

    fn lost(&self, frame: bool) {
        if frame {
            self.with(|st| {
                st.stats.drops.link_errors = st.stats.drops.link_errors.saturating_add(1);
            });
        }
    }

    async fn send_msg<W: Write>(&self, w: &mut W, msg: &Up<'_>, buf: &mut [u8]) -> Result<(), ()> {
        let n = device::encode(msg, buf).map_err(|_| ())?;
        send(self, w, &buf[..n]).await
    }
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
