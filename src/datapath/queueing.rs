//! Decryption spread over worker threads, with the receive order kept.
//!
//! The receive thread numbers each [`RxBatch`] it fills and hands it to whichever
//! decryption worker is free (a crossbeam channel); the workers open batches in
//! parallel. The [`Writer`] puts them back in sequence, and only then are their
//! counters committed to the replay window and their packets written to the TUN: the
//! copy that arrived first is the one delivered, and the packets of every flow keep the
//! order they arrived in, as in the kernel's per-peer serial queues. There is no writer
//! thread: the worker that finishes a batch takes the writer's lock (once per batch),
//! leaves its batch in the reorder ring and commits and writes every batch that is now
//! due, its own and any a slower worker left there.
//! Batches come from a fixed pool and return to it: nothing is allocated per packet or
//! per batch, and a receive thread that outruns the workers waits for a free batch (the
//! sockets' buffers absorb the burst).

use std::sync::{Mutex, PoisonError};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::protocol::device::receive::RxBatch;

/// The in-order end of the queues, shared by the workers; `S` is the state writing
/// needs (the TUN's coalescing table), kept under the same lock.
pub struct Writer<S> {
    inner: Mutex<(Reorder, S)>,
    free: Sender<Box<RxBatch>>,
}

impl<S> Writer<S> {
    /// Takes an opened batch and writes, in receive order, every batch now due: `f` is
    /// called on each, which then goes back to the pool. Returns false when the receive
    /// thread has gone.
    pub fn finish(&self, batch: Box<RxBatch>, f: &mut dyn FnMut(&mut S, &mut RxBatch)) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (reorder, state) = &mut *guard;
        reorder.put(batch);
        while let Some(mut b) = reorder.take_next() {
            f(state, &mut b);
            b.clear();
            if self.free.send(b).is_err() {
                return false;
            }
        }
        true
    }
}

impl<S> Writer<S> {
    /// Runs `f` on the writer's state, under its lock (between two batches' writes).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard.1)
    }
}

/// The receive thread's end: free batches in, numbered batches out.
pub struct Dispatcher {
    free: Receiver<Box<RxBatch>>,
    work: Sender<Box<RxBatch>>,
    next_seq: u64,
}

impl Dispatcher {
    /// A free batch, waiting for one if all are in flight. None when the workers have
    /// gone.
    pub fn take(&self) -> Option<Box<RxBatch>> {
        self.free.recv().ok()
    }

    /// Numbers `batch` and queues it for a worker. Returns false when no worker is left.
    pub fn dispatch(&mut self, mut batch: Box<RxBatch>) -> bool {
        batch.seq = self.next_seq;
        self.next_seq += 1;
        self.work.send(batch).is_ok()
    }
}

/// Builds the queues for `workers` decryption workers over a pool of `pool` batches of
/// `batch_size` datagrams: the dispatcher, each worker's queue of batches to open, and
/// the writer holding `state`.
pub fn queues<S>(
    workers: usize,
    pool: usize,
    batch_size: usize,
    state: S,
) -> (Dispatcher, Vec<Receiver<Box<RxBatch>>>, Writer<S>) {
    let pool = pool.max(2);
    let (free_tx, free_rx) = bounded(pool);
    for _ in 0..pool {
        free_tx
            .send(Box::new(RxBatch::new(batch_size)))
            .expect("the pool's channel holds the whole pool");
    }
    let (work_tx, work_rx) = bounded(pool);
    (
        Dispatcher {
            free: free_rx,
            work: work_tx,
            next_seq: 0,
        },
        (0..workers.max(1)).map(|_| work_rx.clone()).collect(),
        Writer {
            inner: Mutex::new((Reorder::new(pool), state)),
            free: free_tx,
        },
    )
}

/// Puts numbered batches back in sequence. At most `slots` batches exist, so the ones
/// waiting all fall in distinct slots of a fixed ring.
struct Reorder {
    slots: Vec<Option<Box<RxBatch>>>,
    next: u64,
}

impl Reorder {
    fn new(slots: usize) -> Reorder {
        Reorder {
            slots: (0..slots).map(|_| None).collect(),
            next: 0,
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    fn put(&mut self, batch: Box<RxBatch>) {
        let s = self.slot(batch.seq);
        debug_assert!(
            self.slots[s].is_none(),
            "more batches in flight than the pool"
        );
        self.slots[s] = Some(batch);
    }

    fn take_next(&mut self) -> Option<Box<RxBatch>> {
        let s = self.slot(self.next);
        let b = self.slots[s].take_if(|b| b.seq == self.next)?;
        self.next += 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches opened out of order by several workers are written in the order they
    /// were dispatched.
    #[test]
    fn the_writer_restores_dispatch_order() {
        let (mut d, workers, writer) = queues(3, 4, 1, Vec::new());
        std::thread::scope(|s| {
            for (k, work) in workers.into_iter().enumerate() {
                let writer = &writer;
                s.spawn(move || {
                    for b in work.iter() {
                        // Uneven work per worker, so they finish out of order.
                        if (b.seq as usize + k).is_multiple_of(3) {
                            std::thread::sleep(std::time::Duration::from_micros(300));
                        }
                        if !writer.finish(b, &mut |seen: &mut Vec<u64>, b| seen.push(b.seq)) {
                            break;
                        }
                    }
                });
            }
            for _ in 0..100 {
                let b = d.take().expect("a free batch");
                assert!(d.dispatch(b));
            }
            // Every batch is back in the pool once written.
            for _ in 0..4 {
                drop(d.take().expect("the pool refills"));
            }
            drop(d);
        });
        let (_, seen) = writer.inner.into_inner().unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<u64>>());
    }

    #[test]
    fn reorder_holds_early_batches() {
        let mut r = Reorder::new(3);
        for seq in [2u64, 1, 0] {
            let mut b = Box::new(RxBatch::new(1));
            b.seq = seq;
            r.put(b);
        }
        let order: Vec<u64> = std::iter::from_fn(|| r.take_next().map(|b| b.seq)).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert!(r.take_next().is_none());
    }
}
