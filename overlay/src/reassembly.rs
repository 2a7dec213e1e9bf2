//! Puts split sleeve bodies back together (see [`crate::wire::fragment`]).
//!
//! One [`Reassembler`] per peer keeps a few bodies in progress (pieces of a burst normally
//! arrive together and in order; a handful of slots absorbs reordering). A piece that
//! contradicts what its burst already said (other total, count, flags or piece length), a
//! duplicate, or a piece that would write past the body is refused; a burst that never
//! completes is evicted when a newer one needs its slot. Nothing here panics on input from the
//! network, and nothing is allocated per piece: slots keep their buffers.

use crate::wire::fragment::Repr;

/// Bodies in progress per peer.
pub const SLOTS: usize = 4;

/// Why a piece was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The piece disagrees with earlier pieces of its burst; the burst is dropped.
    #[error("piece disagrees with its burst")]
    Inconsistent,
    /// The piece was already received.
    #[error("piece already received")]
    Duplicate,
}

#[derive(Debug, Default)]
struct Slot {
    used: bool,
    burst: u32,
    total: usize,
    count: u16,
    flags: u8,
    /// Length of every piece but the last, once one arrived.
    piece_len: Option<usize>,
    /// Length of the last piece, once it arrived.
    last_len: Option<usize>,
    have: [u64; 4],
    received: u16,
    /// Order of first arrival, for eviction.
    age: u64,
    buf: Vec<u8>,
}

impl Slot {
    fn has(&self, index: u16) -> bool {
        self.have[usize::from(index / 64)] & (1 << (index % 64)) != 0
    }
    fn mark(&mut self, index: u16) {
        self.have[usize::from(index / 64)] |= 1 << (index % 64);
        self.received += 1;
    }
    fn consistent(&self) -> bool {
        match (self.piece_len, self.last_len) {
            (Some(p), Some(l)) => l <= p && usize::from(self.count - 1) * p + l == self.total,
            (Some(p), None) => usize::from(self.count - 1) * p < self.total,
            (None, Some(l)) => l < self.total,
            (None, None) => true,
        }
    }
}

/// Reassembly state of one peer.
#[derive(Debug, Default)]
pub struct Reassembler {
    slots: [Slot; SLOTS],
    clock: u64,
    evicted: u64,
    completed: u64,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bursts given up because newer ones needed their slot.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bodies put back together.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Takes one piece of a body (the fragment header already parsed into `frag`, `flags`
    /// being the sleeve header's flags). Returns the whole body and its flags once the last
    /// missing piece arrived; the slice is valid until the next call.
    pub fn push(
        &mut self,
        frag: &Repr,
        flags: u8,
        piece: &[u8],
    ) -> Result<Option<(&[u8], u8)>, Refusal> {
        let total = frag.total as usize;
        let at = self.slot_for(frag, flags);
        let slot = &mut self.slots[at];
        if slot.total != total || slot.count != frag.count || slot.flags != flags {
            slot.used = false;
            return Err(Refusal::Inconsistent);
        }
        if slot.has(frag.index) {
            return Err(Refusal::Duplicate);
        }
        let last = frag.index + 1 == frag.count;
        let offset = if last {
            slot.last_len = Some(piece.len());
            total.checked_sub(piece.len())
        } else {
            if slot.piece_len.is_some_and(|p| p != piece.len()) {
                slot.used = false;
                return Err(Refusal::Inconsistent);
            }
            slot.piece_len = Some(piece.len());
            Some(usize::from(frag.index) * piece.len())
        };
        let Some(offset) = offset.filter(|o| o + piece.len() <= total) else {
            slot.used = false;
            return Err(Refusal::Inconsistent);
        };
        if !slot.consistent() {
            slot.used = false;
            return Err(Refusal::Inconsistent);
        }
        slot.buf[offset..offset + piece.len()].copy_from_slice(piece);
        slot.mark(frag.index);
        if slot.received < slot.count {
            return Ok(None);
        }
        slot.used = false;
        self.completed += 1;
        let slot = &self.slots[at];
        Ok(Some((&slot.buf[..slot.total], slot.flags)))
    }

    /// The slot of `frag`'s burst, started (evicting the oldest burst if all are busy) when it
    /// is new.
    fn slot_for(&mut self, frag: &Repr, flags: u8) -> usize {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.used && s.burst == frag.burst)
        {
            return i;
        }
        let i = match self.slots.iter().position(|s| !s.used) {
            Some(i) => i,
            None => {
                self.evicted += 1;
                self.slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.age)
                    .map_or(0, |(i, _)| i)
            }
        };
        self.clock += 1;
        let total = frag.total as usize;
        let s = &mut self.slots[i];
        s.used = true;
        s.burst = frag.burst;
        s.total = total;
        s.count = frag.count;
        s.flags = flags;
        s.piece_len = None;
        s.last_len = None;
        s.have = [0; 4];
        s.received = 0;
        s.age = self.clock;
        if s.buf.len() < total {
            s.buf.resize(total, 0);
        }
        i
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Cuts `body` into pieces of `piece` bytes under burst `burst`.
    fn cut(burst: u32, body: &[u8], piece: usize) -> Vec<(Repr, Vec<u8>)> {
        let count = body.len().div_ceil(piece) as u16;
        body.chunks(piece)
            .enumerate()
            .map(|(i, c)| {
                (
                    Repr {
                        burst,
                        total: body.len() as u32,
                        index: i as u16,
                        count,
                    },
                    c.to_vec(),
                )
            })
            .collect()
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Feeds pieces in `order`; returns the bodies completed.
    fn feed(r: &mut Reassembler, pieces: &[(Repr, Vec<u8>)], order: &[usize]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for &i in order {
            let (f, p) = &pieces[i];
            if let Ok(Some((b, flags))) = r.push(f, 4, p) {
                assert_eq!(flags, 4);
                done.push(b.to_vec());
            }
        }
        done
    }

    #[rstest]
    #[case::in_order(vec![0, 1, 2, 3])]
    #[case::reversed(vec![3, 2, 1, 0])]
    #[case::last_first(vec![3, 0, 1, 2])]
    #[case::shuffled(vec![2, 0, 3, 1])]
    #[case::with_duplicates(vec![0, 0, 1, 3, 1, 2])]
    fn any_order_gives_the_body_back_once(#[case] order: Vec<usize>) {
        let b = body(3500);
        let pieces = cut(9, &b, 1000);
        let mut r = Reassembler::new();
        assert_eq!(feed(&mut r, &pieces, &order), vec![b]);
        assert_eq!(r.completed(), 1);
    }

    #[test]
    fn a_missing_piece_completes_nothing_and_the_slot_is_reused() {
        let mut r = Reassembler::new();
        for burst in 0..10u32 {
            let pieces = cut(burst, &body(3000), 1000);
            assert!(feed(&mut r, &pieces, &[0, 2]).is_empty());
        }
        assert_eq!(r.evicted(), 10 - SLOTS as u64);
        let b = body(2500);
        let pieces = cut(99, &b, 1000);
        assert_eq!(feed(&mut r, &pieces, &[0, 1, 2]), vec![b]);
    }

    #[test]
    fn interleaved_bursts_both_complete() {
        let (a, b) = (body(2500), body(1800));
        let pa = cut(1, &a, 1000);
        let pb = cut(2, &b, 1000);
        let mut r = Reassembler::new();
        let mut done = Vec::new();
        for (x, y) in pa.iter().zip(pb.iter().chain(std::iter::repeat(&pb[0]))) {
            for (f, p) in [x, y] {
                if let Ok(Some((body, _))) = r.push(f, 0, p) {
                    done.push(body.to_vec());
                }
            }
        }
        assert!(done.contains(&a) && done.contains(&b));
    }

    fn repr(total: u32, index: u16, count: u16) -> Repr {
        Repr {
            burst: 5,
            total,
            index,
            count,
        }
    }

    #[rstest]
    // The second piece claims another total, count or flags than the first.
    #[case::other_total(repr(3000, 1, 3), 4, 1000, repr(2999, 0, 3), 4, 1000)]
    #[case::other_count(repr(3000, 1, 3), 4, 1000, repr(3000, 0, 4), 4, 1000)]
    #[case::other_flags(repr(3000, 1, 3), 4, 1000, repr(3000, 0, 3), 5, 1000)]
    // Two middle pieces of different lengths.
    #[case::uneven_pieces(repr(3000, 0, 3), 4, 1000, repr(3000, 1, 3), 4, 999)]
    // The last piece does not end where the others say the body ends.
    #[case::last_misplaced(repr(3000, 0, 3), 4, 1000, repr(3000, 2, 3), 4, 900)]
    #[case::last_longer_than_the_others(repr(3000, 0, 3), 4, 900, repr(3000, 2, 3), 4, 1200)]
    fn contradictions_drop_the_burst(
        #[case] first: Repr,
        #[case] first_flags: u8,
        #[case] first_len: usize,
        #[case] second: Repr,
        #[case] second_flags: u8,
        #[case] second_len: usize,
    ) {
        let mut r = Reassembler::new();
        assert_eq!(r.push(&first, first_flags, &vec![1; first_len]), Ok(None));
        assert_eq!(
            r.push(&second, second_flags, &vec![2; second_len]),
            Err(Refusal::Inconsistent)
        );
        // The burst is gone: a complete, consistent retry of it works from scratch.
        let b = body(3000);
        let pieces = cut(5, &b, 1000);
        assert_eq!(feed(&mut r, &pieces, &[0, 1, 2]), vec![b]);
    }

    #[test]
    fn a_piece_past_the_end_is_refused() {
        let mut r = Reassembler::new();
        // Piece 2 of 3 at 1000 bytes each would end at 3000 > 2500.
        assert_eq!(r.push(&repr(2500, 0, 3), 0, &[0; 1000]), Ok(None));
        assert_eq!(
            r.push(&repr(2500, 1, 3), 0, &[0; 1000]),
            Ok(None),
            "two full pieces fit"
        );
        assert_eq!(
            r.push(&repr(2500, 2, 3), 0, &[0; 600]),
            Err(Refusal::Inconsistent)
        );
    }

    #[test]
    fn random_garbage_never_panics() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut r = Reassembler::new();
        for _ in 0..100_000 {
            let count = rng.random_range(2..=crate::wire::fragment::MAX_COUNT);
            let f = Repr {
                burst: rng.random_range(0..6),
                total: rng.random_range(1..=crate::wire::fragment::MAX_TOTAL),
                index: rng.random_range(0..count),
                count,
            };
            let len = rng.random_range(1..=f.total.min(3000) as usize);
            let _ = r.push(&f, rng.random_range(0..8), &vec![0; len]);
        }
    }
}
