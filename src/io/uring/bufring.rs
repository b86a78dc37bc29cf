//! The provided buffer ring a multishot receive takes its buffers from: memory the
//! kernel writes to, and the ring of entries that hands buffers back to it.

#[allow(unused_imports)]
use super::*;

/// One entry of a provided buffer ring: `struct io_uring_buf`. The `resv` field of entry 0 is
/// the ring's tail.
#[repr(C)]
pub(super) struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// A provided buffer ring and its buffers, in one anonymous mapping: the ring entries first
/// (page-aligned, as the kernel requires), the buffers after them.
///
/// The kernel consumes entries from `head` (which it keeps to itself) to `tail` (which we
/// publish); we add a buffer by writing the entry at `tail` and then storing the new tail with
/// release ordering, so the kernel (which loads the tail with acquire ordering) sees complete
/// entries.
///
/// Whoever registers the ring must make sure the kernel is done with it before it drops: the
/// mapping is unmapped on drop unless [`BufRing::leak`] was called.
pub(super) struct BufRing {
    /// Start of the mapping (the ring entries).
    base: NonNull<u8>,
    /// Length of the mapping.
    map_len: usize,
    /// Offset of the first buffer in the mapping.
    bufs_offset: usize,
    /// Number of entries and of buffers (a power of two).
    pub(super) entries: u16,
    /// Size of each buffer.
    buf_size: usize,
    /// Our copy of the tail: entries written but maybe not yet published.
    tail: u16,
    /// Never unmap (the kernel might still write).
    leaked: bool,
}

impl BufRing {
    /// Maps a ring of `entries` (a power of two, at most 2^15) buffers of `buf_size` bytes. The
    /// ring starts empty.
    pub(super) fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > MAX_RX_BUFFERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring buffer ring of {entries} buffers: the count must be a power of two \
                     between 1 and {MAX_RX_BUFFERS}"
                ),
            ));
        }
        // SAFETY: sysconf only reads a system constant.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => 4096,
        };
        let ring_len = usize::from(entries) * mem::size_of::<BufEntry>();
        let bufs_offset = ring_len.div_ceil(page) * page;
        let map_len = usize::from(entries)
            .checked_mul(buf_size)
            .and_then(|b| b.checked_add(bufs_offset))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice: no existing
        // memory is affected. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        // The mapping is zero-filled: every entry, and the tail, start at 0.
        Ok(BufRing {
            base,
            map_len,
            bufs_offset,
            entries,
            buf_size,
            tail: 0,
            leaked: false,
        })
    }

    /// Address of the ring entries, for `IORING_REGISTER_PBUF_RING`.
    pub(super) fn ring_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Writes buffer `bid` into the next free entry. Not visible to the kernel until
    /// [`BufRing::publish`]. The caller owns `bid` (the kernel gave it back, or it was never
    /// handed out), so the ring has room for it.
    pub(super) fn add(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.buf_ptr(bid) as u64;
        // SAFETY: `idx < entries`, so the entry lies inside the mapping. The kernel reads only
        // entries between its head and the published tail; this one is at our unpublished tail
        // and, since at most `entries - 1` other buffers are on the ring, it is not one of
        // them. Only `addr`, `len` and `bid` are written, never `resv`, which in entry 0 is
        // the tail the kernel reads.
        unsafe {
            let e = self.base.as_ptr().cast::<BufEntry>().add(idx);
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.buf_size as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every entry added so far visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the tail is the `resv` field of entry 0, inside the live mapping and 2-byte
        // aligned (offset 14 of a page-aligned mapping). The kernel only reads it (with
        // acquire ordering) and every access of ours is atomic, so there is no data race. The
        // release store orders the entry writes in `add` before the new tail.
        unsafe {
            let tail = ptr::addr_of_mut!((*self.base.as_ptr().cast::<BufEntry>()).resv);
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    pub(super) fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // In bounds for `bid < entries`: the mapping holds `entries` buffers after the ring.
        self.base
            .as_ptr()
            .wrapping_add(self.bufs_offset + usize::from(bid) * self.buf_size)
    }

    /// Buffer `bid`, which the kernel handed back in a completion and which is not on the ring.
    pub(super) fn buffer_mut(&mut self, bid: u16) -> Option<&mut [u8]> {
        if bid >= self.entries {
            return None;
        }
        // SAFETY: buffer `bid` lies inside the live mapping (`bid < entries`). The caller holds
        // it between a completion and `add`, while the kernel neither reads nor writes it, and
        // `&mut self` makes this the only reference to it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.buf_ptr(bid), self.buf_size) })
    }

    /// Never unmap the memory: for when the kernel may still write to it.
    pub(super) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `base`/`map_len` are the mapping made in `new`; no reference into it outlives
        // `&mut self`, and the owner has made sure the kernel no longer uses it (else `leaked`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}
