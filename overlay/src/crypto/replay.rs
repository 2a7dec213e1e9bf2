//! A sliding-window replay filter (RFC 4303 / RFC 6479 style) over 64-bit
//! counters.

/// Width of the window in counters.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Already accepted.
    Duplicate,
    /// Older than the window's bottom edge.
    TooOld,
}

/// Remembers which of the last [`WINDOW`] counters were accepted.
///
/// Use [`ReplayWindow::check`] before authenticating a datagram (cheap
/// rejection) and [`ReplayWindow::accept`] only after it authenticated, so
/// a forged datagram can never move the window.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    highest: Option<u64>,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest accepted counter.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn bit(seq: u64) -> (usize, u64) {
        let idx = seq % WINDOW;
        ((idx / 64) as usize, 1u64 << (idx % 64))
    }

    /// Whether `seq` would be accepted now.
    pub fn check(&self, seq: u64) -> Result<(), Rejection> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if seq > highest {
            return Ok(());
        }
        if highest - seq >= WINDOW {
            return Err(Rejection::TooOld);
        }
        let (w, m) = Self::bit(seq);
        if self.bits[w] & m != 0 {
            Err(Rejection::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Checks `seq` and records it as seen.
    pub fn accept(&mut self, seq: u64) -> Result<(), Rejection> {
        self.check(seq)?;
        match self.highest {
            Some(highest) if seq <= highest => {}
            Some(highest) if seq - highest < WINDOW => {
                // Slots between the old top and the new one now stand for
                // counters never seen.
                for s in highest + 1..seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
                self.highest = Some(seq);
            }
            _ => {
                self.bits = [0; WORDS];
                self.highest = Some(seq);
            }
        }
        let (w, m) = Self::bit(seq);
        self.bits[w] |= m;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_counter_is_accepted_whatever_it_is() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(5000), Ok(()));
        assert_eq!(w.highest(), Some(5000));
    }

    #[test]
    fn duplicates_and_too_old_refused_out_of_order_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(10), Ok(()));
        assert_eq!(w.accept(12), Ok(()));
        assert_eq!(w.accept(11), Ok(()));
        assert_eq!(w.accept(11), Err(Rejection::Duplicate));
        assert_eq!(w.accept(12), Err(Rejection::Duplicate));
        assert_eq!(w.accept(10 + WINDOW + 5), Ok(()));
        assert_eq!(w.accept(10), Err(Rejection::TooOld));
        // Slot of counter 12 was reused by 12 + WINDOW, which is not seen yet.
        assert_eq!(w.accept(12 + WINDOW), Ok(()));
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        let mut w = ReplayWindow::new();
        for s in 0..100 {
            assert_eq!(w.accept(s), Ok(()));
        }
        assert_eq!(w.accept(1_000_000), Ok(()));
        assert_eq!(w.accept(1_000_000 - 1), Ok(()));
        assert_eq!(w.accept(1_000_000 - WINDOW), Err(Rejection::TooOld));
        assert_eq!(w.accept(1_000_000 - WINDOW + 1), Ok(()));
    }

    #[test]
    fn edge_of_window() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(WINDOW * 3), Ok(()));
        assert_eq!(w.check(WINDOW * 2), Err(Rejection::TooOld));
        assert_eq!(w.check(WINDOW * 2 + 1), Ok(()));
    }
}
