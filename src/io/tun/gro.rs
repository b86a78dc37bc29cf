//! mpwg's own coalescing (GRO) of the TCP packets of a batch written to the TUN device.
//!
//! The packets of one TCP flow that follow each other in sequence are written as one
//! super-packet: a virtio header that asks the kernel to treat it as a GSO packet of
//! `gso_size` segments, the first packet's headers (their lengths and checksums made
//! those of the whole), then every packet's payload. The super-packet is gathered with
//! `writev` from the buffers the packets were opened in: nothing is copied or allocated
//! per packet (tun-rs's coalescing copies each packet into a fresh `Vec`, then its
//! payload again into the first packet's buffer; it stays in use for what is not TCP,
//! see [`crate::io::tun::GROTable`]).
//!
//! Hand-written because no crate does this over borrowed buffers. The rules are the
//! kernel's (`tcp_gro_receive`) and wireguard-go's: a packet joins its flow's open
//! super-packet only if it carries only ACK (and PSH), the same acknowledgment number,
//! window, IP fields and TCP options, starts where the last one ended, is no longer than the
//! first (every segment but the last must be exactly `gso_size`), its checksum (and the
//! first's) is valid, and the whole stays within 65535 bytes and [`MAX_SEGS`] segments.
//! A shorter segment, or one with PSH, ends its super-packet; a packet of the flow that
//! cannot join ends it too, so a flow's packets are written in the order they came.
//! Flows may be written in another order than their packets arrived in, as GRO does.

use std::io::{self, IoSlice};

/// Segments in one super-packet at most (the kernel's GRO stops at 64 too).
pub const MAX_SEGS: usize = 64;

/// The virtio header's length (`struct virtio_net_hdr`).
const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;

const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;

/// No buffer: the end of an item's list of segments.
const NONE: u32 = u32::MAX;

/// What a packet of the batch is to the coalescer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP over IPv4 or IPv6: written by [`Coalescer`], alone or in a super-packet.
    Tcp,
    /// Anything else: written by the caller's other writer.
    Other,
}

/// The headers of a TCP packet, as far as coalescing needs them.
#[derive(Debug, Clone, Copy)]
struct Tcp {
    v6: bool,
    /// IP header length.
    iph: usize,
    /// IP and TCP header length.
    hdr: usize,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
}

/// The TCP packet at the start of `pkt`, if it is one this writer handles: IPv4
/// without options and not a fragment, or IPv6 with TCP as its first next header; its
/// length fields matching the buffer.
fn parse(pkt: &[u8]) -> Option<Tcp> {
    let (v6, iph) = match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 40 || pkt[0] & 0x0f != 5 || pkt[9] != IPPROTO_TCP {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            // More fragments, or a fragment offset.
            let fragment = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0;
            if total != pkt.len() || fragment {
                return None;
            }
            (false, 20)
        }
        6 => {
            if pkt.len() < 60 || pkt[6] != IPPROTO_TCP {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if payload + 40 != pkt.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let thl = usize::from(pkt[iph + 12] >> 4) * 4;
    if thl < 20 || iph + thl > pkt.len() {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes([pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]]);
    Some(Tcp {
        v6,
        iph,
        hdr: iph + thl,
        seq: be32(iph + 4),
        ack: be32(iph + 8),
        flags: pkt[iph + 13],
        payload: pkt.len() - iph - thl,
    })
}

/// The one's complement sum of `b` (as big-endian 16-bit words, odd length padded with
/// a zero) added to `sum`, not folded. The words are summed in the host's byte order
/// and the folded total swapped once (RFC 1071: the sum commutes with byte swapping),
/// into 32-bit lanes the compiler vectorises; a block of 64 KiB cannot overflow them.
fn sum(b: &[u8], sum: u64) -> u64 {
    let mut total = 0u64;
    for block in b.chunks(65536) {
        let words = block.chunks_exact(2);
        // An odd last byte is the high byte of a word padded with zero.
        let odd = words
            .remainder()
            .first()
            .map_or(0, |&last| u32::from(u16::from_ne_bytes([last, 0])));
        let s: u32 = words
            .map(|w| u32::from(u16::from_ne_bytes([w[0], w[1]])))
            .sum();
        total += u64::from(s) + u64::from(odd);
    }
    sum + u64::from(u16::from_be(fold(total)))
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The TCP pseudo-header's sum for a TCP segment of `len` bytes in packet `pkt`.
fn pseudo(pkt: &[u8], v6: bool, len: usize) -> u64 {
    let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
    sum(addrs, u64::from(IPPROTO_TCP) + len as u64)
}

/// True if the checksums of `pkt` (parsed as `t`) are right: TCP's, and IPv4's header
/// checksum (a joining packet's IP header is not written, so the kernel would not see
/// it is bad).
fn checksum_ok(pkt: &[u8], t: &Tcp) -> bool {
    let seg = &pkt[t.iph..];
    (t.v6 || fold(sum(&pkt[..20], 0)) == 0xffff)
        && fold(sum(seg, pseudo(pkt, t.v6, seg.len()))) == 0xffff
}

/// One write: a packet alone, or a super-packet of several.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// The first packet's buffer.
    head: u32,
    /// The last segment's buffer (the list goes through [`Coalescer::next`]).
    tail: u32,
    v6: bool,
    iph: u16,
    hdr: u16,
    /// The segment size: the first packet's payload.
    gso: u16,
    /// Headers and every segment's payload.
    total: u32,
    next_seq: u32,
    ack: u32,
    segs: u16,
    psh: bool,
    /// The first packet's checksum was checked.
    checked: bool,
}

/// The coalescing state, kept between batches so that nothing is allocated per batch.
#[derive(Debug, Default)]
pub struct Coalescer {
    items: Vec<Item>,
    /// Indices in `items` of the super-packets still open to more segments.
    open: Vec<u32>,
    /// Per buffer of the batch: the buffer of its item's next segment, or NONE.
    next: Vec<u32>,
}

impl Coalescer {
    /// Plans the writes of the TCP packets `bufs[i][offset..]` (every buffer must be
    /// [`Kind::Tcp`], see [`kind`]), in order. Rewrites the headers of the first packet
    /// of each super-packet and puts each write's virtio header in the
    /// `VNET_HDR_LEN` bytes before `offset`. [`Coalescer::write`] then writes them.
    pub fn plan(&mut self, bufs: &mut [Vec<u8>], offset: usize) {
        self.items.clear();
        self.open.clear();
        self.next.clear();
        self.next.resize(bufs.len(), NONE);
        for i in 0..bufs.len() {
            let pkt = &bufs[i][offset..];
            let Some(t) = parse(pkt) else {
                // TCP this writer does not coalesce (IPv4 options, a fragment): alone,
                // after everything open (its flow's, whichever that is).
                self.open.clear();
                self.alone(i);
                continue;
            };
            let joinable = t.flags & !TCP_PSH == TCP_ACK && t.payload > 0;
            let found = self.open.iter().position(|&j| {
                same_flow(
                    &bufs[self.items[j as usize].head as usize][offset..],
                    pkt,
                    &t,
                )
            });
            if let Some(o) = found {
                let j = self.open[o] as usize;
                if joinable && self.try_append(j, i, &t, bufs, offset) {
                    let item = &self.items[j];
                    if item.psh || t.payload < usize::from(item.gso) {
                        self.open.swap_remove(o);
                    }
                    continue;
                }
                // The flow's super-packet ends: this packet must come after it.
                self.open.swap_remove(o);
            }
            if joinable {
                self.start(i, &t);
            } else {
                self.alone(i);
            }
        }
        for k in 0..self.items.len() {
            self.finish(k, bufs, offset);
        }
    }

    /// A packet written alone, with a virtio header that asks nothing.
    fn alone(&mut self, i: usize) {
        self.items.push(Item {
            head: i as u32,
            tail: i as u32,
            v6: false,
            iph: 0,
            hdr: 0,
            gso: 0,
            total: 0,
            next_seq: 0,
            ack: 0,
            segs: 1,
            psh: false,
            checked: false,
        });
    }

    /// A packet that may start a super-packet.
    fn start(&mut self, i: usize, t: &Tcp) {
        let psh = t.flags & TCP_PSH != 0;
        let k = self.items.len() as u32;
        self.items.push(Item {
            head: i as u32,
            tail: i as u32,
            v6: t.v6,
            iph: t.iph as u16,
            hdr: t.hdr as u16,
            gso: t.payload as u16,
            total: (t.hdr + t.payload) as u32,
            next_seq: t.seq.wrapping_add(t.payload as u32),
            ack: t.ack,
            segs: 1,
            psh,
            checked: false,
        });
        // Nothing is appended after a segment with PSH.
        if !psh {
            self.open.push(k);
        }
    }

    /// Appends packet `i` to item `j` if the rules allow (module documentation).
    fn try_append(&mut self, j: usize, i: usize, t: &Tcp, bufs: &[Vec<u8>], offset: usize) -> bool {
        let item = self.items[j];
        let head = &bufs[item.head as usize][offset..];
        let pkt = &bufs[i][offset..];
        let fits = t.ack == item.ack
            && t.seq == item.next_seq
            && t.hdr == usize::from(item.hdr)
            && t.payload <= usize::from(item.gso)
            && item.total as usize + t.payload <= 65535
            && usize::from(item.segs) < MAX_SEGS
            // The data offset's byte and the window (the kernel's tcp_flag_word), the
            // options.
            && head[t.iph + 12] == pkt[t.iph + 12]
            && head[t.iph + 14..t.iph + 16] == pkt[t.iph + 14..t.iph + 16]
            && head[t.iph + 20..t.hdr] == pkt[t.iph + 20..t.hdr]
            && if t.v6 {
                // Version, traffic class, flow label; hop limit.
                head[..4] == pkt[..4] && head[7] == pkt[7]
            } else {
                // TOS (with ECN), the DF flag, TTL.
                head[1] == pkt[1] && head[6] & 0xe0 == pkt[6] & 0xe0 && head[8] == pkt[8]
            };
        if !fits {
            return false;
        }
        let head_tcp = Tcp {
            v6: item.v6,
            iph: usize::from(item.iph),
            hdr: usize::from(item.hdr),
            seq: 0,
            ack: 0,
            flags: 0,
            payload: 0,
        };
        if !item.checked && !checksum_ok(head, &head_tcp) {
            return false;
        }
        if !checksum_ok(pkt, t) {
            return false;
        }
        self.next[item.tail as usize] = i as u32;
        let item = &mut self.items[j];
        item.checked = true;
        item.tail = i as u32;
        item.total += t.payload as u32;
        item.next_seq = t.seq.wrapping_add(t.payload as u32);
        item.segs += 1;
        item.psh |= t.flags & TCP_PSH != 0;
        true
    }

    /// Writes item `k`'s virtio header, and for a super-packet its first packet's
    /// lengths, PSH and checksums: the IPv4 header's in full, the TCP one as the
    /// pseudo-header's sum, which the kernel completes per segment.
    fn finish(&mut self, k: usize, bufs: &mut [Vec<u8>], offset: usize) {
        let item = self.items[k];
        let buf = &mut bufs[item.head as usize];
        let mut vnet = [0u8; VNET_HDR_LEN];
        if item.segs > 1 {
            let (iph, hdr) = (usize::from(item.iph), usize::from(item.hdr));
            let total = item.total as usize;
            let pkt = &mut buf[offset..];
            if item.v6 {
                pkt[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            } else {
                pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                pkt[10..12].fill(0);
                let c = !fold(sum(&pkt[..20], 0));
                pkt[10..12].copy_from_slice(&c.to_be_bytes());
            }
            if item.psh {
                pkt[iph + 13] |= TCP_PSH;
            }
            let partial = fold(pseudo(pkt, item.v6, total - iph));
            pkt[iph + 16..iph + 18].copy_from_slice(&partial.to_be_bytes());
            // struct virtio_net_hdr, in the host's byte order (a TUN device's default).
            vnet[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            vnet[1] = if item.v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            };
            vnet[2..4].copy_from_slice(&(hdr as u16).to_ne_bytes());
            vnet[4..6].copy_from_slice(&item.gso.to_ne_bytes());
            vnet[6..8].copy_from_slice(&(iph as u16).to_ne_bytes());
            vnet[8..10].copy_from_slice(&16u16.to_ne_bytes());
        }
        buf[offset - VNET_HDR_LEN..offset].copy_from_slice(&vnet);
    }

    /// Super-packets planned, and packets written alone.
    pub fn writes(&self) -> usize {
        self.items.len()
    }

    /// Writes what [`Coalescer::plan`] planned for `bufs`, each write gathered from the
    /// buffers by `write` (one `writev`). Every write is tried; the error returned is
    /// the last one, except that one for which `stop` is true ends the writing.
    pub fn write(
        &self,
        bufs: &[Vec<u8>],
        offset: usize,
        write: &mut dyn FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        stop: &dyn Fn(&io::Error) -> bool,
    ) -> io::Result<()> {
        let mut result = Ok(());
        let empty: &[u8] = &[];
        let mut iov = [IoSlice::new(empty); MAX_SEGS];
        for item in &self.items {
            iov[0] = IoSlice::new(&bufs[item.head as usize][offset - VNET_HDR_LEN..]);
            let mut n = 1;
            let mut b = self.next[item.head as usize];
            while b != NONE {
                iov[n] = IoSlice::new(&bufs[b as usize][offset + usize::from(item.hdr)..]);
                n += 1;
                b = self.next[b as usize];
            }
            if let Err(e) = write(&iov[..n]) {
                if stop(&e) {
                    return Err(e);
                }
                result = Err(e);
            }
        }
        result
    }
}

/// True if `pkt` (parsed as `t`) is of the flow of the super-packet whose first packet
/// is `head`: the same IP version, addresses and ports.
fn same_flow(head: &[u8], pkt: &[u8], t: &Tcp) -> bool {
    let v6 = head[0] >> 4 == 6;
    if v6 != t.v6 {
        return false;
    }
    let addrs = if v6 { 8..40 } else { 12..20 };
    head[addrs.clone()] == pkt[addrs] && head[t.iph..t.iph + 4] == pkt[t.iph..t.iph + 4]
}

/// Whether the packet at the start of `pkt` is TCP (IPv4 or IPv6, as the IP header
/// says), which [`Coalescer`] writes, or something else.
pub fn kind(pkt: &[u8]) -> Kind {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 && pkt[9] == IPPROTO_TCP => Kind::Tcp,
        Some(6) if pkt.len() >= 40 && pkt[6] == IPPROTO_TCP => Kind::Tcp,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where packets start in the test buffers (the receive side's offset).
    const OFF: usize = 16;

    /// A TCP packet with valid checksums: IPv4 (id `id`) or IPv6, from port `sport`,
    /// `payload` bytes of `fill`, behind `OFF` bytes of headroom.
    #[allow(clippy::too_many_arguments)]
    fn packet(
        v6: bool,
        sport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: usize,
        fill: u8,
        id: u16,
    ) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let len = iph + 20 + payload;
        let mut p = vec![0u8; len];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = IPPROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id.to_be_bytes());
            p[6] = 0x40; // DF
            p[8] = 64;
            p[9] = IPPROTO_TCP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let c = !fold(sum(&p[..20], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        p[iph..iph + 2].copy_from_slice(&sport.to_be_bytes());
        p[iph + 2..iph + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[iph + 4..iph + 8].copy_from_slice(&seq.to_be_bytes());
        p[iph + 8..iph + 12].copy_from_slice(&ack.to_be_bytes());
        p[iph + 12] = 5 << 4;
        p[iph + 13] = flags;
        p[iph + 14..iph + 16].copy_from_slice(&1000u16.to_be_bytes());
        p[iph + 20..].fill(fill);
        let mut buf = vec![0u8; OFF];
        buf.extend_from_slice(&p);
        fix_checksum(&mut buf, v6);
        buf
    }

    /// Sets the TCP checksum of the packet in `buf` (at `OFF`) right.
    fn fix_checksum(buf: &mut [u8], v6: bool) {
        let p = &mut buf[OFF..];
        let iph = if v6 { 40 } else { 20 };
        p[iph + 16..iph + 18].fill(0);
        let c = !fold(sum(&p[iph..], pseudo(p, v6, p.len() - iph)));
        p[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// The writes `bufs` become, each as the bytes written (virtio header first).
    fn writes(bufs: &mut [Vec<u8>]) -> Vec<Vec<u8>> {
        let mut c = Coalescer::default();
        c.plan(bufs, OFF);
        let mut out = Vec::new();
        c.write(
            bufs,
            OFF,
            &mut |iov| {
                out.push(
                    iov.iter()
                        .flat_map(|s| s.iter().copied())
                        .collect::<Vec<u8>>(),
                );
                Ok(0)
            },
            &|_| false,
        )
        .unwrap();
        assert_eq!(out.len(), c.writes());
        out
    }

    /// The packets a write carries, as the kernel would cut them (tun-rs's split).
    fn split(write: &[u8]) -> Vec<Vec<u8>> {
        let hdr = tun_rs::VirtioNetHdr::decode(write).unwrap();
        let mut pkt = write[VNET_HDR_LEN..].to_vec();
        if hdr.gso_type == 0 {
            assert_eq!(hdr.flags, 0, "a packet alone asks nothing");
            return vec![pkt];
        }
        let v6 = hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV6;
        assert_eq!(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(usize::from(hdr.csum_start), if v6 { 40 } else { 20 });
        let mut bufs = vec![vec![0u8; 65535]; MAX_SEGS];
        let mut sizes = vec![0usize; MAX_SEGS];
        let n = tun_rs::gso_split(&mut pkt, hdr, &mut bufs, &mut sizes, 0, v6).unwrap();
        (0..n).map(|i| bufs[i][..sizes[i]].to_vec()).collect()
    }

    fn strip(bufs: &[Vec<u8>]) -> Vec<Vec<u8>> {
        bufs.iter().map(|b| b[OFF..].to_vec()).collect()
    }

    #[test]
    fn a_flow_in_sequence_is_one_super_packet_that_splits_back_into_its_packets() {
        for v6 in [false, true] {
            let mut bufs: Vec<Vec<u8>> = (0..10u32)
                .map(|k| {
                    let (flags, len) = if k == 9 {
                        (TCP_ACK | TCP_PSH, 777)
                    } else {
                        (TCP_ACK, 1300)
                    };
                    packet(
                        v6,
                        40000,
                        1000 + k * 1300,
                        7,
                        flags,
                        len,
                        k as u8 ^ 0x5a,
                        100 + k as u16,
                    )
                })
                .collect();
            let original = strip(&bufs);
            let out = writes(&mut bufs);
            assert_eq!(out.len(), 1, "v6 {v6}");
            let hdr = tun_rs::VirtioNetHdr::decode(&out[0]).unwrap();
            assert_eq!(hdr.gso_size, 1300);
            assert_eq!(usize::from(hdr.hdr_len), if v6 { 60 } else { 40 });
            assert_eq!(
                out[0].len(),
                VNET_HDR_LEN + original[0].len() + 8 * 1300 + 777
            );
            assert_eq!(split(&out[0]), original, "v6 {v6}");
            // What the kernel computes from the partial checksum (the field's content
            // summed with the segment) is the checksum of the whole super-packet.
            let sup = &out[0][VNET_HDR_LEN..];
            let iph = if v6 { 40 } else { 20 };
            let mut zeroed = sup.to_vec();
            zeroed[iph + 16..iph + 18].fill(0);
            let whole = !fold(sum(&zeroed[iph..], pseudo(sup, v6, sup.len() - iph)));
            assert_eq!(!fold(sum(&sup[iph..], 0)), whole);
            if !v6 {
                assert_eq!(fold(sum(&sup[..20], 0)), 0xffff, "the IPv4 header checksum");
                assert_eq!(usize::from(u16::from_be_bytes([sup[2], sup[3]])), sup.len());
            }
        }
    }

    #[test]
    fn sums_are_rfc_1071s() {
        // RFC 1071, 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&b, 0)), 0xddf2);
        // An odd length is padded with a zero byte; the start value is added.
        assert_eq!(fold(sum(&b[..7], 0)), 0xddf2 - 0xf7);
        assert_eq!(fold(sum(&b, 0x1_0000)), 0xddf3);
        let big = vec![0xffu8; 200_001];
        let slow: u64 = big
            .chunks(2)
            .map(|w| u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0)))
            .sum();
        assert_eq!(fold(sum(&big, 0)), fold(slow));
    }

    #[test]
    fn flows_are_kept_apart_and_each_keeps_its_order() {
        let mut bufs = Vec::new();
        for k in 0..6u32 {
            bufs.push(packet(
                false,
                40000,
                k * 1000,
                1,
                TCP_ACK,
                1000,
                1,
                k as u16,
            ));
            bufs.push(packet(
                false,
                40001,
                5 + k * 1000,
                1,
                TCP_ACK,
                1000,
                2,
                50 + k as u16,
            ));
        }
        let original = strip(&bufs);
        let out = writes(&mut bufs);
        assert_eq!(out.len(), 2);
        let first: Vec<Vec<u8>> = original.iter().step_by(2).cloned().collect();
        let second: Vec<Vec<u8>> = original.iter().skip(1).step_by(2).cloned().collect();
        assert_eq!(split(&out[0]), first);
        assert_eq!(split(&out[1]), second);
    }

    #[test]
    fn what_may_not_join_ends_the_super_packet_or_goes_alone() {
        let a = |seq, ack, flags, len, id| packet(false, 40000, seq, ack, flags, len, 3, id);
        /// What a case shows, its packets, how many packets each write carries.
        type Case = (&'static str, Vec<Vec<u8>>, Vec<usize>);
        let cases: Vec<Case> = vec![
            (
                "a gap in the sequence",
                vec![a(0, 1, TCP_ACK, 100, 0), a(150, 1, TCP_ACK, 100, 1)],
                vec![1, 1],
            ),
            (
                "another ack",
                vec![a(0, 1, TCP_ACK, 100, 0), a(100, 2, TCP_ACK, 100, 1)],
                vec![1, 1],
            ),
            (
                "a longer segment",
                vec![a(0, 1, TCP_ACK, 100, 0), a(100, 1, TCP_ACK, 200, 1)],
                vec![1, 1],
            ),
            (
                "after a shorter segment",
                vec![
                    a(0, 1, TCP_ACK, 100, 0),
                    a(100, 1, TCP_ACK, 50, 1),
                    a(150, 1, TCP_ACK, 100, 2),
                ],
                vec![2, 1],
            ),
            (
                "after PSH",
                vec![
                    a(0, 1, TCP_ACK, 100, 0),
                    a(100, 1, TCP_ACK | TCP_PSH, 100, 1),
                    a(200, 1, TCP_ACK, 100, 2),
                ],
                vec![2, 1],
            ),
            (
                "a pure ACK between",
                vec![
                    a(0, 1, TCP_ACK, 100, 0),
                    a(100, 1, TCP_ACK, 0, 1),
                    a(100, 1, TCP_ACK, 100, 2),
                ],
                vec![1, 1, 1],
            ),
            (
                "a FIN",
                vec![
                    a(0, 1, TCP_ACK, 100, 0),
                    a(100, 1, TCP_ACK | 0x01, 100, 1),
                    a(200, 1, TCP_ACK, 100, 2),
                ],
                vec![1, 1, 1],
            ),
        ];
        for (what, mut bufs, expect) in cases {
            let original = strip(&bufs);
            let out = writes(&mut bufs);
            let got: Vec<usize> = out.iter().map(|w| split(w).len()).collect();
            assert_eq!(got, expect, "{what}");
            let back: Vec<Vec<u8>> = out.iter().flat_map(|w| split(w)).collect();
            assert_eq!(back, original, "{what}: the packets, in their order");
        }
    }

    #[test]
    fn a_bad_checksum_is_never_hidden_in_a_super_packet() {
        let mut bufs: Vec<Vec<u8>> = (0..3u32)
            .map(|k| packet(false, 40000, k * 100, 1, TCP_ACK, 100, 9, k as u16))
            .collect();
        let at = bufs[1].len() - 1;
        bufs[1][at] ^= 0x55;
        let original = strip(&bufs);
        let out = writes(&mut bufs);
        assert_eq!(out.len(), 3);
        for (w, p) in out.iter().zip(&original) {
            assert_eq!(&w[VNET_HDR_LEN..], &p[..], "written as it came");
            assert!(w[..VNET_HDR_LEN].iter().all(|&b| b == 0));
        }
        // A bad first packet does not take the next in with it either.
        let mut bufs: Vec<Vec<u8>> = (0..3u32)
            .map(|k| packet(true, 40000, k * 100, 1, TCP_ACK, 100, 9, 0))
            .collect();
        let at = bufs[0].len() - 1;
        bufs[0][at] ^= 1;
        let out = writes(&mut bufs);
        let got: Vec<usize> = out.iter().map(|w| split(w).len()).collect();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn super_packets_stay_within_64_kib_and_64_segments() {
        let mut bufs: Vec<Vec<u8>> = (0..60u32)
            .map(|k| packet(false, 40000, k * 1400, 1, TCP_ACK, 1400, 1, k as u16))
            .collect();
        let original = strip(&bufs);
        let out = writes(&mut bufs);
        assert!(out.iter().all(|w| w.len() - VNET_HDR_LEN <= 65535));
        assert_eq!(out.len(), 2, "46 segments of 1400 bytes fit in 64 KiB");
        let back: Vec<Vec<u8>> = out.iter().flat_map(|w| split(w)).collect();
        assert_eq!(back, original);
        let mut bufs: Vec<Vec<u8>> = (0..100u32)
            .map(|k| packet(false, 40000, k * 10, 1, TCP_ACK, 10, 1, k as u16))
            .collect();
        let out = writes(&mut bufs);
        let got: Vec<usize> = out.iter().map(|w| split(w).len()).collect();
        assert_eq!(got, vec![64, 36]);
    }

    #[test]
    fn a_window_or_ip_header_that_differs_is_not_merged() {
        let mut bufs: Vec<Vec<u8>> = (0..4u32)
            .map(|k| packet(false, 40000, k * 100, 1, TCP_ACK, 100, 9, k as u16))
            .collect();
        // Packets 1 and 2 advertise another window than packet 0; packet 3's IPv4
        // header checksum is wrong.
        for b in &mut bufs[1..3] {
            b[OFF + 20 + 15] ^= 1;
            fix_checksum(b, false);
        }
        bufs[3][OFF + 10] ^= 1;
        let original = strip(&bufs);
        let out = writes(&mut bufs);
        let got: Vec<usize> = out.iter().map(|w| split(w).len()).collect();
        assert_eq!(got, vec![1, 2, 1]);
        assert_eq!(
            &out[2][VNET_HDR_LEN..],
            &original[3][..],
            "written as it came"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Batches of up to three interleaved flows, with every kind of packet that ends
        /// a super-packet and a few bytes flipped: every packet is written once, those
        /// merged come back exactly as they were, and each flow's intact packets keep
        /// their order.
        #[test]
        fn every_packet_is_written_once_and_each_flow_keeps_its_order(
            steps in proptest::collection::vec((0u16..3, 0u8..6, 1usize..1400), 1..90),
            v6 in proptest::prelude::any::<bool>(),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..=255), 0..4),
        ) {
            let (mut seqs, mut ids) = ([0u32; 3], [0u16; 3]);
            let mut bufs = Vec::new();
            let mut flow_of = Vec::new();
            for &(flow, what, len) in &steps {
                let f = usize::from(flow);
                let (flags, len, gap) = match what {
                    0 => (TCP_ACK, 1000, 0),
                    1 => (TCP_ACK, len.min(999), 0),
                    2 => (TCP_ACK | TCP_PSH, len, 0),
                    3 => (TCP_ACK, 0, 0),
                    4 => (TCP_ACK, 1000, 7),
                    _ => (TCP_ACK | 0x01, len, 0),
                };
                seqs[f] = seqs[f].wrapping_add(gap);
                bufs.push(packet(v6, 40000 + flow, seqs[f], 1, flags, len, ids[f] as u8, 1000 * flow + ids[f]));
                seqs[f] = seqs[f].wrapping_add(len as u32);
                ids[f] += 1;
                flow_of.push(f);
            }
            // Flip bytes the TCP checksum covers (the packet is then written alone).
            let iph = if v6 { 40 } else { 20 };
            let mut hurt = vec![false; bufs.len()];
            for &(at, x) in &flips {
                let n = bufs.len();
                let i = at % n;
                let b = &mut bufs[i];
                let j = OFF + iph + (at / n) % (b.len() - OFF - iph);
                b[j] ^= x;
                hurt[i] = true;
            }
            // The IPv4 ID is not kept for a merged packet (the kernel numbers the segments
            // from the first's; a flipped byte may take a packet out of its flow): the
            // ID and the header checksum are left out of the comparisons.
            let norm = |mut p: Vec<u8>| {
                if !v6 {
                    p[4..6].fill(0);
                    p[10..12].fill(0);
                }
                p
            };
            let original: Vec<Vec<u8>> = strip(&bufs).into_iter().map(norm).collect();
            let out = writes(&mut bufs);
            let back: Vec<Vec<u8>> = out.iter().flat_map(|w| split(w)).map(norm).collect();
            let mut want = original.clone();
            let mut got = back.clone();
            want.sort();
            got.sort();
            proptest::prop_assert_eq!(got, want);
            for f in 0..3 {
                let intact = |p: &Vec<u8>| {
                    original.iter().position(|o| o == p).is_some_and(|i| flow_of[i] == f && !hurt[i])
                };
                let sent: Vec<&Vec<u8>> = original.iter().filter(|p| intact(p)).collect();
                let written: Vec<&Vec<u8>> = back.iter().filter(|p| intact(p)).collect();
                proptest::prop_assert_eq!(written, sent, "flow {}", f);
            }
        }
    }

    #[test]
    fn what_is_not_tcp_is_for_the_other_writer() {
        let tcp = packet(false, 1, 0, 0, TCP_ACK, 10, 0, 0);
        assert_eq!(kind(&tcp[OFF..]), Kind::Tcp);
        assert_eq!(
            kind(&packet(true, 1, 0, 0, TCP_ACK, 10, 0, 0)[OFF..]),
            Kind::Tcp
        );
        let mut udp = tcp[OFF..].to_vec();
        udp[9] = 17;
        assert_eq!(kind(&udp), Kind::Other);
        assert_eq!(kind(&[]), Kind::Other);
        assert_eq!(kind(&[0x45, 0, 0]), Kind::Other);
        // TCP with IPv4 options, or a fragment: written alone, as it came.
        let mut frag = tcp.clone();
        frag[OFF + 6] |= 0x20; // more fragments
        let mut bufs = vec![tcp.clone(), frag.clone(), tcp];
        let out = writes(&mut bufs);
        assert_eq!(out.len(), 3);
        assert_eq!(&out[1][VNET_HDR_LEN..], &frag[OFF..]);
    }
}
