//! Decryption spread over worker threads, with the receive order kept.
//!
//! The receive thread numbers each [`RxBatch`] it fills and hands it to whichever
//! decryption worker is free (a crossbeam channel); the workers open batches in
//! parallel; the writer puts them back in sequence before their packets reach the TUN,
//! so the packets of every flow keep the order they arrived in, as in the kernel's
//! per-peer serial queues. Batches come from a fixed pool and return to it: nothing is
//! allocated per packet or per batch, and a receive thread that outruns the workers
//! waits for a free batch (the sockets' buffers absorb the burst).

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::receive::RxBatch;

/// The ends of the queues one decryption worker uses.
pub struct WorkerQueues {
    /// Batches to open.
    pub work: Receiver<Box<RxBatch>>,
    /// Opened batches, for the writer.
    pub done: Sender<Box<RxBatch>>,
}

/// The ends of the queues the writer uses.
pub struct WriterQueues {
    /// Opened batches, in any order.
    pub done: Receiver<Box<RxBatch>>,
    /// Written batches go back to the pool here.
    pub free: Sender<Box<RxBatch>>,
    reorder: Reorder,
}

impl WriterQueues {
    /// Takes an opened batch and returns, in receive order, every batch now due: `f` is
    /// called on each, which then goes back to the pool. Returns false when every
    /// worker has gone.
    pub fn write_next(&mut self, f: &mut dyn FnMut(&mut RxBatch)) -> bool {
        let Ok(batch) = self.done.recv() else {
            return false;
        };
        self.reorder.put(batch);
        while let Some(mut b) = self.reorder.take_next() {
            f(&mut b);
            b.clear();
            if self.free.send(b).is_err() {
                return false;
            }
        }
        true
    }
}

/// The receive thread's end: free batches in, numbered batches out.
pub struct Dispatcher {
    free: Receiver<Box<RxBatch>>,
    work: Sender<Box<RxBatch>>,
    next_seq: u64,
}

impl Dispatcher {
    /// A free batch, waiting for one if all are in flight. None when the workers and the
    /// writer have gone.
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
/// `batch_size` datagrams: the dispatcher, one set of ends per worker, and the writer's.
pub fn queues(
    workers: usize,
    pool: usize,
    batch_size: usize,
) -> (Dispatcher, Vec<WorkerQueues>, WriterQueues) {
    let pool = pool.max(2);
    let (free_tx, free_rx) = bounded(pool);
    for _ in 0..pool {
        free_tx
            .send(Box::new(RxBatch::new(batch_size)))
            .expect("the pool's channel holds the whole pool");
    }
    let (work_tx, work_rx) = bounded(pool);
    let (done_tx, done_rx) = bounded(pool);
    let worker_queues = (0..workers.max(1))
        .map(|_| WorkerQueues {
            work: work_rx.clone(),
            done: done_tx.clone(),
        })
        .collect();
    (
        Dispatcher {
            free: free_rx,
            work: work_tx,
            next_seq: 0,
        },
        worker_queues,
        WriterQueues {
            done: done_rx,
            free: free_tx,
            reorder: Reorder::new(pool),
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
        let (mut d, workers, mut w) = queues(3, 4, 1);
        let writer = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 100 && w.write_next(&mut |b| seen.push(b.seq)) {}
            seen
        });
        let handles: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(k, q)| {
                std::thread::spawn(move || {
                    for b in q.work.iter() {
                        // Uneven work per worker, so they finish out of order.
                        if (b.seq as usize + k).is_multiple_of(3) {
                            std::thread::sleep(std::time::Duration::from_micros(300));
                        }
                        if q.done.send(b).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        for _ in 0..100 {
            let b = d.take().expect("a free batch");
            assert!(d.dispatch(b));
        }
        let seen = writer.join().unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<u64>>());
        drop(d);
        for h in handles {
            h.join().unwrap();
        }
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
