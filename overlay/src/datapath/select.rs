//! Which datapath carries one connection: the fast path (kernel vxlan) or sleeve.
//!
//! A pure state machine, fed with what the heartbeats saw and a clock the caller passes in, so
//! it is tested with a fake clock. Both sides of a connection run it on the same two facts,
//! mirrored: "my heartbeats through the fast path arrive" (outbound, as the peer reports it)
//! and "the peer's heartbeats reach me through the fast path" (inbound, [`Arrivals`]). The
//! fast path needs both, so the two routers agree on the connection's datapath without a
//! message of its own; they differ at most for a heartbeat interval while one notices what the
//! other already saw.
//!
//! The peer reports what arrives only when that changes (control type 9), not per heartbeat:
//! an idle connection costs its heartbeats and nothing else.
//!
//! Falling back is quick (no acknowledged heartbeat for [`Timing::fallback_after`]); returning
//! is slow on purpose (healthy without a break for [`Timing::recover_after`]), so a host whose
//! heartbeats are late now and then does not flap between datapaths (weave #3037, #3252). The
//! very first promotion needs no such wait: there is nothing to flap from yet.

use std::time::{Duration, Instant};

use serde::Serialize;

/// The datapath a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// The kernel fast path (vxlan on UDP 6784).
    Fast,
    /// The userspace fallback (UDP 6783).
    Sleeve,
}

/// Why a connection is on its datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No heartbeat has crossed yet.
    Starting,
    /// Heartbeats cross both ways at full overlay MTU.
    Healthy,
    /// This host has no fast path (the text says why, e.g. the device could not be made).
    LocalUnavailable(String),
    /// The peer offers no fast path (its Hello lacks the feature).
    PeerUnavailable,
    /// Heartbeats to the peer went unanswered for this long.
    Unanswered(Duration),
    /// Small heartbeats are answered but full-size ones are not: the underlay path cannot carry
    /// frames of the overlay MTU inside vxlan.
    MtuTooSmall {
        /// The overlay MTU the fast path was asked to carry.
        overlay_mtu: u32,
    },
    /// The peer's heartbeats stopped arriving for this long (its side of the path is broken).
    InboundSilent(Duration),
    /// Healthy again, waiting out [`Timing::recover_after`] before returning.
    Recovering(Duration),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: &Duration| format!("{:.1} s", d.as_secs_f64());
        match self {
            Reason::Starting => write!(f, "waiting for the first heartbeats on UDP 6784"),
            Reason::Healthy => write!(f, "heartbeats on UDP 6784 answered both ways"),
            Reason::LocalUnavailable(why) => write!(f, "fast path unavailable here: {why}"),
            Reason::PeerUnavailable => write!(f, "the peer offers no fast path"),
            Reason::Unanswered(d) => write!(f, "heartbeats on UDP 6784 unanswered for {}", secs(d)),
            Reason::MtuTooSmall { overlay_mtu } => write!(
                f,
                "path MTU too small for the fast path: {}-byte vxlan packets (overlay MTU \
                 {overlay_mtu}) do not cross, smaller ones do",
                overlay_mtu + crate::wire::vxlan::OVERHEAD as u32
            ),
            Reason::InboundSilent(d) => write!(
                f,
                "the peer's heartbeats on UDP 6784 have not arrived for {}",
                secs(d)
            ),
            Reason::Recovering(d) => write!(
                f,
                "heartbeats answered again for {}; returning to the fast path once stable",
                secs(d)
            ),
        }
    }
}

/// Heartbeat timing of the fast path (all settable on the router's command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between two heartbeat rounds.
    pub interval: Duration,
    /// A connection without an acknowledged full-size heartbeat (or without the peer's
    /// heartbeats) for this long falls back to sleeve.
    pub fallback_after: Duration,
    /// A connection that fell back returns once healthy without a break for this long.
    pub recover_after: Duration,
    /// Time between two heartbeats on a connection both sides saw idle and healthy
    /// ([`super::pace`]); no longer than `interval`: no pacing.
    pub idle_interval: Duration,
    /// A connection turns idle once healthy on the fast path, and without frames, for this
    /// long ([`super::pace`]).
    pub idle_after: Duration,
}

impl Default for Timing {
    /// 0.5 s heartbeats, fallback after 1.5 s (three rounds lost), return after 5 s of health:
    /// a block is noticed within 2 s and a repair within 6 s, below the documented 3 s and 15 s.
    /// Idle connections (healthy and without frames for 2 s): a heartbeat every 5 s.
    fn default() -> Self {
        Timing {
            interval: Duration::from_millis(500),
            fallback_after: Duration::from_millis(1500),
            recover_after: Duration::from_secs(5),
            idle_interval: Duration::from_secs(5),
            idle_after: Duration::from_secs(2),
        }
    }
}

/// A change of datapath the caller must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new datapath.
    pub to: Path,
    /// Why.
    pub reason: Reason,
}

/// What arrives of one peer's heartbeats, as a report to it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    /// Any heartbeat arrives (small ones are sent while the full-size ones are not reported
    /// arriving).
    pub small: bool,
    /// Full-size heartbeats arrive.
    pub full: bool,
}

/// The receiving side: when one peer's heartbeats last arrived, and what this router last
/// reported to it. A heartbeat counts for [`Timing::fallback_after`].
#[derive(Debug, Clone, Default)]
pub struct Arrivals {
    last_any: Option<Instant>,
    last_full: Option<Instant>,
    newest_timestamp_ns: u64,
    reported: Option<View>,
}

impl Arrivals {
    /// A heartbeat arrived; `full` when padded to the overlay MTU; `timestamp_ns` as its sender
    /// wrote it.
    pub fn on_heartbeat(&mut self, now: Instant, full: bool, timestamp_ns: u64) {
        self.last_any = Some(now);
        if full {
            self.last_full = Some(now);
        }
        self.newest_timestamp_ns = timestamp_ns;
    }

    /// What arrives at `now`.
    pub fn view(&self, now: Instant, window: Duration) -> View {
        let fresh =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) <= window);
        View {
            small: fresh(self.last_any),
            full: fresh(self.last_full),
        }
    }

    /// The report to send now, if what arrives changed since the last one.
    pub fn report_due(&mut self, now: Instant, window: Duration) -> Option<View> {
        let v = self.view(now, window);
        if self.reported == Some(v) || (self.reported.is_none() && v == View::default()) {
            return None;
        }
        self.reported = Some(v);
        Some(v)
    }

    /// The pace quickened: the window shrinks from `old` to a brisk one. Heartbeats current
    /// under `old` count from `now`, so the peer has a whole new window to send its first
    /// brisk one (a round trip away) before it is missed.
    pub fn quickened(&mut self, now: Instant, old: Duration) {
        for t in [&mut self.last_any, &mut self.last_full] {
            if t.is_some_and(|t| now.saturating_duration_since(t) <= old) {
                *t = Some(now);
            }
        }
    }

    /// What was last reported, or what arrives now when nothing was.
    pub fn last_report(&mut self, now: Instant, window: Duration) -> View {
        *self.reported.get_or_insert_with(|| {
            let fresh =
                |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) <= window);
            View {
                small: fresh(self.last_any),
                full: fresh(self.last_full),
            }
        })
    }

    /// The timestamp of the newest heartbeat (echoed in reports, for the sender's round trip).
    pub fn newest_timestamp_ns(&self) -> u64 {
        self.newest_timestamp_ns
    }
}

/// The datapath choice of one connection.
#[derive(Debug, Clone)]
pub struct Selector {
    timing: Timing,
    overlay_mtu: u32,
    path: Path,
    since: Instant,
    reason: Reason,
    /// Set when the fast path cannot be used whatever the heartbeats say.
    blocked: Option<Reason>,
    started: Instant,
    /// The peer's latest report of what arrives of our heartbeats, and when it came.
    outbound: Option<(View, Instant)>,
    last_inbound: Option<Instant>,
    /// How long the peer's heartbeat counts ([`super::pace::Pacer::window`]).
    window: Duration,
    healthy_since: Option<Instant>,
    ever_fast: bool,
}

impl Selector {
    /// A connection that starts on sleeve and waits for heartbeats.
    pub fn new(now: Instant, timing: Timing, overlay_mtu: u32) -> Self {
        Selector {
            timing,
            overlay_mtu,
            path: Path::Sleeve,
            since: now,
            reason: Reason::Starting,
            blocked: None,
            started: now,
            outbound: None,
            last_inbound: None,
            window: timing.fallback_after,
            healthy_since: None,
            ever_fast: false,
        }
    }

    /// A connection that can never use the fast path, for `reason`.
    pub fn unavailable(now: Instant, timing: Timing, overlay_mtu: u32, reason: Reason) -> Self {
        let mut s = Self::new(now, timing, overlay_mtu);
        s.reason = reason.clone();
        s.blocked = Some(reason);
        s
    }

    /// Whether the fast path can never be used on this connection (no heartbeats are sent).
    pub fn is_unavailable(&self) -> bool {
        self.blocked.is_some()
    }

    /// The datapath now.
    pub fn path(&self) -> Path {
        self.path
    }

    /// Since when.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Why.
    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// The peer reported what arrives of our heartbeats (it does so when that changes).
    pub fn on_report(&mut self, now: Instant, view: View) {
        self.outbound = Some((view, now));
    }

    /// Whether the peer last reported our full-size heartbeats arriving: while so, small ones
    /// (which only explain a failure) are not sent.
    pub fn outbound_full(&self) -> bool {
        self.outbound.is_some_and(|(v, _)| v.full)
    }

    /// A heartbeat of the peer arrived through the fast path.
    pub fn on_inbound(&mut self, now: Instant) {
        self.last_inbound = Some(now);
    }

    /// The pace changed: the peer's heartbeats count for `window` from now on. When it
    /// shrinks, a heartbeat current under the old window counts from `now` (see
    /// [`Arrivals::quickened`]).
    pub fn set_window(&mut self, now: Instant, window: Duration) {
        if window < self.window && self.fresh(self.last_inbound, now) {
            self.last_inbound = Some(now);
        }
        self.window = window;
    }

    /// The datapath is the fast path, healthy: since when (`None` when not).
    pub fn settled_since(&self) -> Option<Instant> {
        (self.path == Path::Fast && self.reason == Reason::Healthy).then_some(self.since)
    }

    fn fresh(&self, t: Option<Instant>, now: Instant) -> bool {
        t.is_some_and(|t| now.saturating_duration_since(t) <= self.window)
    }

    /// Why the fast path is unhealthy at `now`, or `None` when it is healthy.
    fn fault(&self, now: Instant) -> Option<Reason> {
        if let Some(r) = &self.blocked {
            return Some(r.clone());
        }
        let silent_for =
            |t: Option<Instant>| now.saturating_duration_since(t.unwrap_or(self.started));
        match self.outbound {
            None if now.saturating_duration_since(self.started) <= self.timing.fallback_after => {
                return Some(Reason::Starting)
            }
            None => return Some(Reason::Unanswered(silent_for(None))),
            Some((v, _)) if v.full => {}
            Some((v, _)) if v.small => {
                return Some(Reason::MtuTooSmall {
                    overlay_mtu: self.overlay_mtu,
                })
            }
            // The peer noticed after a fallback interval of silence.
            Some((_, at)) => return Some(Reason::Unanswered(silent_for(Some(at)) + self.window)),
        }
        if !self.fresh(self.last_inbound, now) {
            if self.last_inbound.is_none()
                && now.saturating_duration_since(self.started) <= self.timing.fallback_after
            {
                return Some(Reason::Starting);
            }
            return Some(Reason::InboundSilent(silent_for(self.last_inbound)));
        }
        None
    }

    /// Looks at the clock: returns the change to carry out, if any.
    pub fn evaluate(&mut self, now: Instant) -> Option<Change> {
        match self.fault(now) {
            Some(reason) => {
                self.healthy_since = None;
                self.reason = reason.clone();
                if self.path == Path::Fast {
                    self.path = Path::Sleeve;
                    self.since = now;
                    return Some(Change {
                        to: Path::Sleeve,
                        reason,
                    });
                }
                None
            }
            None => {
                let healthy_since = *self.healthy_since.get_or_insert(now);
                if self.path == Path::Fast {
                    self.reason = Reason::Healthy;
                    return None;
                }
                let healthy_for = now.saturating_duration_since(healthy_since);
                if self.ever_fast && healthy_for < self.timing.recover_after {
                    self.reason = Reason::Recovering(healthy_for);
                    return None;
                }
                self.path = Path::Fast;
                self.since = now;
                self.ever_fast = true;
                self.reason = Reason::Healthy;
                Some(Change {
                    to: Path::Fast,
                    reason: Reason::Healthy,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A fake clock, a selector, and the peer's side of our heartbeats (its [`Arrivals`] and
    /// the reports it sends), driven round by round.
    struct Run {
        t0: Instant,
        now: Instant,
        s: Selector,
        peer: Arrivals,
        reports: usize,
        changes: Vec<(u64, Path)>,
    }

    impl Run {
        fn new() -> Self {
            let t0 = Instant::now();
            Run {
                t0,
                now: t0,
                s: Selector::new(t0, Timing::default(), 1450),
                peer: Arrivals::default(),
                reports: 0,
                changes: Vec::new(),
            }
        }
        fn ms(&self) -> u64 {
            self.now.duration_since(self.t0).as_millis() as u64
        }
        /// Runs heartbeat rounds for `dur`: each round our heartbeats cross to the peer
        /// (`out`: none, small only, or both; small ones are sent only while the peer does not
        /// report full ones arriving), the peer reports when what arrives changed, and the
        /// peer's heartbeat (`inbound`) arrives or not.
        fn rounds(&mut self, dur: Duration, out: Option<bool>, inbound: bool) {
            let t = Timing::default();
            let end = self.now + dur;
            while self.now < end {
                self.now += t.interval;
                match out {
                    Some(true) => self.peer.on_heartbeat(self.now, true, 1),
                    Some(false) if !self.s.outbound_full() => {
                        self.peer.on_heartbeat(self.now, false, 1)
                    }
                    _ => {}
                }
                if let Some(v) = self.peer.report_due(self.now, t.fallback_after) {
                    self.reports += 1;
                    self.s.on_report(self.now, v);
                }
                if inbound {
                    self.s.on_inbound(self.now);
                }
                if let Some(c) = self.s.evaluate(self.now) {
                    self.changes.push((self.ms(), c.to));
                }
            }
        }
    }

    #[test]
    fn a_new_connection_takes_the_fast_path_at_the_first_answered_round() {
        let mut r = Run::new();
        assert_eq!(r.s.path(), Path::Sleeve);
        assert_eq!(r.s.reason(), &Reason::Starting);
        r.rounds(MS(500), Some(true), true);
        assert_eq!(r.changes, [(500, Path::Fast)]);
        assert_eq!(r.s.reason(), &Reason::Healthy);
    }

    #[test]
    fn a_block_falls_back_within_two_seconds_and_a_repair_returns_within_six() {
        let mut r = Run::new();
        r.rounds(MS(2000), Some(true), true);
        let blocked_at = r.ms();
        r.rounds(MS(4000), None, false);
        let (at, to) = r.changes[1];
        assert_eq!(to, Path::Sleeve);
        assert!(
            at - blocked_at <= 2000,
            "fell back after {} ms",
            at - blocked_at
        );
        assert!(matches!(r.s.reason(), Reason::Unanswered(d) if *d >= MS(1500)));
        let healed_at = r.ms();
        r.rounds(MS(10_000), Some(true), true);
        let (at, to) = r.changes[2];
        assert_eq!(to, Path::Fast);
        assert!(
            at - healed_at <= 6000,
            "returned after {} ms",
            at - healed_at
        );
        assert!(
            at - healed_at >= 5000,
            "returned too early, after {} ms",
            at - healed_at
        );
        assert_eq!(r.changes.len(), 3);
    }

    /// Reports go only on change: a connection healthy for a minute needs one.
    #[test]
    fn a_steady_connection_is_reported_once() {
        let mut r = Run::new();
        r.rounds(MS(60_000), Some(true), true);
        assert_eq!(r.reports, 1);
        assert_eq!(r.changes, [(500, Path::Fast)]);
        r.rounds(MS(3000), None, false);
        assert_eq!(r.reports, 2, "one more when the heartbeats stop arriving");
    }

    #[test]
    fn late_heartbeats_inside_the_timeout_never_flap() {
        let mut r = Run::new();
        r.rounds(MS(500), Some(true), true);
        // A busy host: only every third round is answered (a gap of 1.5 s at most).
        for _ in 0..20 {
            r.rounds(MS(1000), None, false);
            r.rounds(MS(500), Some(true), true);
        }
        assert_eq!(r.changes, [(500, Path::Fast)]);
    }

    #[test]
    fn a_flapping_path_stays_on_sleeve_until_it_holds() {
        let mut r = Run::new();
        r.rounds(MS(1000), Some(true), true);
        r.rounds(MS(2500), None, false);
        assert_eq!(r.s.path(), Path::Sleeve);
        // Healthy for 3 s, broken for 2 s, again and again: never long enough to return.
        for _ in 0..5 {
            r.rounds(MS(3000), Some(true), true);
            assert!(matches!(r.s.reason(), Reason::Recovering(_)));
            r.rounds(MS(2000), None, false);
        }
        assert_eq!(r.s.path(), Path::Sleeve);
        assert_eq!(r.changes.len(), 2);
    }

    #[rstest]
    #[case::small_only(Some(false), true, "path MTU too small")]
    #[case::no_answer(None, true, "unanswered")]
    #[case::peer_silent(Some(true), false, "have not arrived")]
    fn each_fault_falls_back_with_its_reason(
        #[case] out: Option<bool>,
        #[case] inbound: bool,
        #[case] says: &str,
    ) {
        let mut r = Run::new();
        r.rounds(MS(1000), Some(true), true);
        r.rounds(MS(3000), out, inbound);
        assert_eq!(r.s.path(), Path::Sleeve);
        let text = r.s.reason().to_string();
        assert!(text.contains(says), "{text}");
    }

    #[test]
    fn the_mtu_reason_names_the_packet_size_that_does_not_cross() {
        let r = Reason::MtuTooSmall { overlay_mtu: 8950 };
        assert_eq!(
            r.to_string(),
            "path MTU too small for the fast path: 9000-byte vxlan packets (overlay MTU 8950) do \
             not cross, smaller ones do"
        );
    }

    #[test]
    fn an_unavailable_fast_path_never_gets_used() {
        let t0 = Instant::now();
        let why = Reason::LocalUnavailable("UDP 6784 is taken".into());
        let mut s = Selector::unavailable(t0, Timing::default(), 1450, why.clone());
        s.on_report(
            t0 + MS(500),
            View {
                small: true,
                full: true,
            },
        );
        s.on_inbound(t0 + MS(500));
        assert_eq!(s.evaluate(t0 + MS(500)), None);
        assert_eq!((s.path(), s.reason()), (Path::Sleeve, &why));
    }

    #[test]
    fn a_peer_that_never_answers_is_starting_then_unanswered() {
        let mut r = Run::new();
        r.rounds(MS(1000), None, true);
        assert_eq!(r.s.reason(), &Reason::Starting);
        r.rounds(MS(4000), None, true);
        assert_eq!(r.s.reason(), &Reason::Unanswered(MS(5000)));
        assert!(r.changes.is_empty());
    }
}
