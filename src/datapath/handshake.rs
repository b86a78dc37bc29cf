//! The handshake worker: handshake messages and cookie replies are handled on their own
//! thread, off the receive thread that every path's data goes through, so that no rate of
//! handshakes can hold data up.
//!
//! The receive thread checks each one's mac1 (a cookie reply: that it answers a message
//! of ours) with [`Device::precheck_handshake`], which costs one BLAKE2s and takes no
//! write lock, and queues what passes in a bounded queue ([`HandshakeQueue::submit`]);
//! junk never takes a place. When the queue is full, a message is dropped, counted
//! (`handshake_queue_full`), and the receive thread goes on. The worker
//! ([`HandshakeWorker::run`]) tells the device how deep the queue is before each message
//! ([`Device::note_handshake_backlog`]: at [`crate::protocol::ratelimit::UNDER_LOAD_BACKLOG`]
//! or more the device is under load, for a second), then hands it to
//! [`Device::receive_handshake`], which answers with a cookie, rate-limits per source, or
//! does the Diffie-Hellman work.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::datapath::Lifecycle;

use crate::multipath::path::Source;
use crate::protocol::device::Device;
use crate::protocol::noise::messages::INITIATION_LEN;
use crate::protocol::transmit::Transmit;

/// How often an idle worker checks whether its tunnel stops.
pub const STOP_CHECK: Duration = Duration::from_millis(200);

/// Messages the queue holds, as the kernel's MAX_QUEUED_INCOMING_HANDSHAKES.
pub const QUEUE_DEPTH: usize = 4096;

/// One queued message, in a fixed buffer (an initiation is the largest), so that queueing
/// allocates nothing.
struct Job {
    src: Source,
    len: usize,
    buf: [u8; INITIATION_LEN],
}

/// The receive thread's end of the queue.
pub struct HandshakeQueue {
    tx: Sender<Job>,
}

/// The worker's end.
pub struct HandshakeWorker {
    rx: Receiver<Job>,
}

/// A new queue and the worker that drains it.
pub fn queue() -> (HandshakeQueue, HandshakeWorker) {
    let (tx, rx) = bounded(QUEUE_DEPTH);
    (HandshakeQueue { tx }, HandshakeWorker { rx })
}

impl HandshakeQueue {
    /// Queues `msg` from `src` for the worker if it passes the device's precheck. Never
    /// blocks.
    pub fn submit(&self, device: &Device, src: Source, msg: &[u8]) {
        if msg.len() > INITIATION_LEN || !device.precheck_handshake(msg) {
            return;
        }
        let mut job = Job {
            src,
            len: msg.len(),
            buf: [0; INITIATION_LEN],
        };
        job.buf[..msg.len()].copy_from_slice(msg);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                device
                    .drops
                    .handshake_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Messages waiting now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// True if no message waits.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

impl HandshakeWorker {
    /// Handles queued messages until `stop` says the tunnel stops (checked at least every
    /// [`STOP_CHECK`]) or every [`HandshakeQueue`] is dropped. Replies (responses, cookie
    /// replies, the first data of a new session) go out through `tx`.
    pub fn run(self, device: &Device, tx: &dyn Transmit, stop: &Lifecycle) {
        while !stop.is_stopping() {
            let job = match self.rx.recv_timeout(STOP_CHECK) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let now = Instant::now();
            device.note_handshake_backlog(self.rx.len() + 1, now);
            device.receive_handshake(job.src, &job.buf[..job.len], now, tx);
        }
    }

    /// Handles the messages waiting now, and returns how many (for tests).
    pub fn drain(&self, device: &Device, tx: &dyn Transmit, now: Instant) -> usize {
        let mut n = 0;
        while let Ok(job) = self.rx.try_recv() {
            device.note_handshake_backlog(self.rx.len() + 1, now);
            device.receive_handshake(job.src, &job.buf[..job.len], now, tx);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::key::Key;
    use crate::protocol::noise::cookie::CookieState;
    use crate::protocol::peer::Peer;
    use crate::protocol::ratelimit::UNDER_LOAD_BACKLOG;
    use crate::protocol::request::SetRequest;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Replies(Mutex<usize>);

    impl Transmit for Replies {
        fn send_to_peer(&self, _: &Peer, _: &[u8]) -> bool {
            true
        }
        fn send_to(&self, _: Source, _: &[u8]) -> bool {
            *self.0.lock() += 1;
            true
        }
    }

    fn device() -> (Device, Key) {
        let k = Key::generate();
        let d = Device::new(1420);
        let req = SetRequest {
            private_key: Some(k),
            ..SetRequest::default()
        };
        d.apply(&req, Instant::now()).unwrap();
        (d, k.public_key())
    }

    fn from(i: u8) -> Source {
        Source {
            addr: ([198, 51, 100, i], 4000).into(),
            path: usize::from(i % 2),
            local: None,
        }
    }

    #[test]
    fn junk_never_takes_a_place_in_the_queue() {
        let (d, _) = device();
        let (q, _w) = queue();
        let mut junk = [0u8; INITIATION_LEN];
        junk[0] = 1;
        for i in 0..10_000u32 {
            junk[4..8].copy_from_slice(&i.to_le_bytes());
            q.submit(&d, from(1), &junk);
            q.submit(&d, from(2), &[3, 0, 0, 0, 1, 2, 3, 4]);
        }
        assert!(q.is_empty());
        assert_eq!(d.drops.bad_mac1.load(Ordering::Relaxed), 10_000);
    }

    #[test]
    fn a_deep_queue_puts_the_device_under_load_and_gets_cookies() {
        let (d, public) = device();
        let (q, w) = queue();
        let replies = Replies::default();
        let now = Instant::now();
        let mut state = CookieState::new(&public.0);
        let mut msg = [0u8; INITIATION_LEN];
        msg[0] = 1;
        // Below the backlog that means load: every message is worked through, no cookie.
        for _ in 0..UNDER_LOAD_BACKLOG - 1 {
            state.add_macs(&mut msg, now);
            q.submit(&d, from(3), &msg);
        }
        assert_eq!(q.len(), UNDER_LOAD_BACKLOG - 1);
        w.drain(&d, &replies, now);
        assert_eq!(*replies.0.lock(), 0);
        // A flood that fills the queue past it: cookie replies, and the queue's bound.
        for _ in 0..QUEUE_DEPTH + 100 {
            state.add_macs(&mut msg, now);
            q.submit(&d, from(4), &msg);
        }
        assert_eq!(q.len(), QUEUE_DEPTH);
        assert_eq!(d.drops.handshake_queue_full.load(Ordering::Relaxed), 100);
        w.drain(&d, &replies, now);
        let cookies = *replies.0.lock();
        assert!(
            cookies >= QUEUE_DEPTH - UNDER_LOAD_BACKLOG,
            "{cookies} cookie replies"
        );
    }
}
