//! How often one connection's fast-path heartbeats go: briskly (every [`Timing::interval`])
//! while the connection matters, slowly (every [`Timing::idle_interval`]) once both sides saw
//! it idle.
//!
//! Heartbeats are what an idle mesh spends its time on: at 100 routers, two a second to each of
//! 99 peers is 19,800 vxlan packets a second through the kernel. Yet on a connection that
//! carries no frames, a broken path loses nothing; what matters is noticing it before frames
//! are lost. So each side tells the other (a flag in its fast-path reports, over the control
//! connection, which does not depend on the fast path) whether it is *busy*:
//!
//! - the connection is not settled: not on the fast path and healthy for
//!   [`Timing::idle_after`] (new, recovering, fallen back, or short of MTU: the documented
//!   fallback and recovery timings need brisk heartbeats), or
//! - its kernel carried frames over the connection within [`Timing::idle_after`] (the vxlan
//!   device's FDB "used" stamps; on the Open vSwitch tier, flows toward or from the peer).
//!
//! Heartbeats are brisk while either side is busy. Both sides know both flags, so they agree
//! on the pace without further messages, and each counts a peer's heartbeat as current for
//! [`Timing::fallback_after`] scaled to the pace ([`Pacer::window`]): three heartbeats lost at
//! either pace. When the pace quickens, the heartbeats last seen count for one more (brisk)
//! window from then, the peer's first brisk heartbeat being a round trip away.
//!
//! So a connection carrying traffic keeps the documented timings (a block noticed within 3 s);
//! an idle one notices within three idle intervals, or within about the documented time of
//! frames starting to flow over it.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::select::Timing;

/// A connection's heartbeat pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Every [`Timing::interval`].
    Brisk,
    /// Every [`Timing::idle_interval`].
    Idle,
}

/// One connection's pace, as both sides' busy flags make it.
#[derive(Debug, Clone)]
pub struct Pacer {
    timing: Timing,
    /// Whether this side is busy, as last told to the peer. Both sides start busy: a new
    /// connection is not settled, and a peer that has not said otherwise is taken as busy.
    busy: bool,
    peer_busy: bool,
    last_sent: Option<Instant>,
}

impl Pacer {
    /// A new connection's pacer (brisk).
    pub fn new(timing: Timing) -> Self {
        Pacer {
            timing,
            busy: true,
            peer_busy: true,
            last_sent: None,
        }
    }

    /// Whether pacing is on at all (an idle interval longer than the brisk one).
    fn paces(&self) -> bool {
        self.timing.idle_interval > self.timing.interval
    }

    /// Looks at this side at `now`: `settled_since`, since when the connection is on the fast
    /// path and healthy (`None`: it is not); `last_used`, when the kernel last carried a frame
    /// over it (`None`: not seen). Returns the new busy flag when it changed: the caller
    /// tells the peer.
    pub fn update(
        &mut self,
        now: Instant,
        settled_since: Option<Instant>,
        last_used: Option<Instant>,
    ) -> Option<bool> {
        let quiet = |t: Instant| now.saturating_duration_since(t) >= self.timing.idle_after;
        let busy =
            !(self.paces() && settled_since.is_some_and(quiet) && last_used.is_none_or(quiet));
        (busy != self.busy).then(|| {
            self.busy = busy;
            busy
        })
    }

    /// The peer said whether it is busy.
    pub fn on_peer(&mut self, busy: bool) {
        self.peer_busy = busy;
    }

    /// This side's busy flag (every report carries it).
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// The pace now.
    pub fn pace(&self) -> Pace {
        if self.busy || self.peer_busy {
            Pace::Brisk
        } else {
            Pace::Idle
        }
    }

    /// Time between two heartbeats at the pace now.
    pub fn interval(&self) -> Duration {
        match self.pace() {
            Pace::Brisk => self.timing.interval,
            Pace::Idle => self.timing.idle_interval,
        }
    }

    /// How long a heartbeat of the peer counts as current: [`Timing::fallback_after`] at the
    /// brisk pace, scaled by the same number of heartbeats at the idle pace.
    pub fn window(&self) -> Duration {
        match self.pace() {
            Pace::Brisk => self.timing.fallback_after,
            Pace::Idle => self.timing.fallback_after.mul_f64(
                self.timing.idle_interval.as_secs_f64()
                    / self.timing.interval.as_secs_f64().max(1e-3),
            ),
        }
    }

    /// Whether this heartbeat round (rounds come every [`Timing::interval`]) sends to the peer
    /// at `now`; when it does, it is recorded.
    pub fn due(&mut self, now: Instant) -> bool {
        // Rounds are an interval apart and may run a little late or early: half an interval
        // of slack keeps an idle heartbeat from slipping by a whole round.
        let slack = self.timing.interval / 2;
        let due = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) + slack >= self.interval());
        if due {
            self.last_sent = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn timing() -> Timing {
        Timing::default()
    }

    #[test]
    fn the_default_paces_are_half_a_second_and_five_seconds_with_windows_of_three_heartbeats() {
        let t = timing();
        assert_eq!(
            (t.interval, t.idle_interval, t.idle_after),
            (MS(500), S(5), S(2))
        );
        let mut p = Pacer::new(t);
        assert_eq!((p.pace(), p.window()), (Pace::Brisk, MS(1500)));
        let t0 = Instant::now();
        p.update(t0 + S(20), Some(t0), None);
        p.on_peer(false);
        assert_eq!((p.pace(), p.window()), (Pace::Idle, S(15)));
    }

    /// (settled for, last used ago, peer busy) → this side busy, pace.
    #[rstest]
    #[case::new_connection(None, None, false, true, Pace::Brisk)]
    #[case::settled_only_a_moment(Some(1), None, false, true, Pace::Brisk)]
    #[case::settled_and_never_used(Some(2), None, false, false, Pace::Idle)]
    #[case::settled_and_used_lately(Some(60), Some(1), false, true, Pace::Brisk)]
    #[case::settled_and_used_long_ago(Some(60), Some(30), false, false, Pace::Idle)]
    #[case::idle_here_busy_there(Some(60), Some(30), true, false, Pace::Brisk)]
    fn a_side_is_busy_until_settled_and_quiet_for_two_seconds(
        #[case] settled_for: Option<u64>,
        #[case] used_ago: Option<u64>,
        #[case] peer_busy: bool,
        #[case] busy: bool,
        #[case] pace: Pace,
    ) {
        let now = Instant::now() + S(100);
        let mut p = Pacer::new(timing());
        p.on_peer(peer_busy);
        p.update(
            now,
            settled_for.map(|s| now - S(s)),
            used_ago.map(|s| now - S(s)),
        );
        assert_eq!((p.busy(), p.pace()), (busy, pace));
    }

    #[test]
    fn only_changes_are_told_to_the_peer() {
        let t0 = Instant::now();
        let mut p = Pacer::new(timing());
        assert_eq!(p.update(t0 + S(1), Some(t0), None), None);
        assert_eq!(p.update(t0 + S(2), Some(t0), None), Some(false));
        assert_eq!(p.update(t0 + S(7), Some(t0), None), None);
        assert_eq!(p.update(t0 + S(8), Some(t0), Some(t0 + S(8))), Some(true));
        assert_eq!(p.update(t0 + S(9), Some(t0), Some(t0 + S(8))), None);
        assert_eq!(p.update(t0 + S(10), Some(t0), Some(t0 + S(8))), Some(false));
    }

    #[test]
    fn an_idle_interval_no_longer_than_the_brisk_one_turns_pacing_off() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Timing {
            idle_interval: MS(500),
            ..timing()
        });
        p.on_peer(false);
        assert_eq!(p.update(t0 + S(60), Some(t0), None), None);
        assert_eq!(p.pace(), Pace::Brisk);
    }

    /// Rounds every 0.5 s for 30 s: how many send, brisk and idle.
    #[rstest]
    #[case::brisk(true, 60)]
    #[case::idle(false, 6)]
    fn rounds_send_at_the_pace(#[case] busy: bool, #[case] sends: usize) {
        let t0 = Instant::now();
        let mut p = Pacer::new(timing());
        p.on_peer(busy);
        p.update(t0 + S(100), Some(t0), None);
        let sent = (1..=60)
            .filter(|i| p.due(t0 + S(100) + MS(500 * i)))
            .count();
        assert_eq!(sent, sends);
    }

    #[test]
    fn a_quickened_pace_sends_at_the_next_round() {
        let t0 = Instant::now();
        let mut p = Pacer::new(timing());
        p.on_peer(false);
        p.update(t0 + S(10), Some(t0), None);
        assert!(p.due(t0 + S(10)));
        assert!(!p.due(t0 + MS(10_500)));
        p.on_peer(true);
        assert!(p.due(t0 + S(11)));
        assert!(p.due(t0 + MS(11_500)));
    }
}
