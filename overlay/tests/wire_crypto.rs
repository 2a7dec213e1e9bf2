//! Session setup and sleeve encryption: the password handshake on both
//! sides, and sealing, opening and replay protection of datagrams.
#![allow(clippy::unwrap_used)]

mod wire_common;

use std::collections::HashSet;

use overlay::crypto::handshake::{begin, LocalOffer, Session, SessionKeys};
use overlay::crypto::sleeve::{Opener, Sealer};
use overlay::crypto::CryptoError;
use overlay::wire::auth::Role;
use overlay::wire::sleeve::{self, FrameWriter, TAG_LEN};
use overlay::wire::{auth, handshake};
use wire_common::*;

/// One side of a handshake: its Hello bytes and offer.
struct Side {
    offer: LocalOffer,
    hello: Vec<u8>,
}

fn side(seed: u8, name: &str, password: bool) -> Side {
    let offer = LocalOffer::from_bytes([seed; 32], [seed.wrapping_add(100); 32]);
    let repr = handshake::Repr {
        password,
        nonce: offer.nonce(),
        dh_public: offer.dh_public(),
        name: name.to_owned(),
        ..hello()
    };
    Side {
        hello: emit_hello(&repr),
        offer,
    }
}

/// Runs both halves of a handshake; `tamper` may alter the Hello bytes each
/// side receives (an active attacker on the wire).
fn handshake_pair(
    pw_i: Option<&[u8]>,
    pw_r: Option<&[u8]>,
    tamper: impl Fn(&mut Vec<u8>),
) -> (Result<Session, CryptoError>, Result<Session, CryptoError>) {
    let i = side(1, "host-a", pw_i.is_some());
    let r = side(2, "host-b", pw_r.is_some());
    let (mut i_sees, mut r_sees) = (r.hello.clone(), i.hello.clone());
    tamper(&mut i_sees);
    tamper(&mut r_sees);
    let pi = begin(Role::Initiator, pw_i, i.offer, &i.hello, &i_sees);
    let pr = begin(Role::Responder, pw_r, r.offer, &r.hello, &r_sees);
    let (pi, pr) = match (pi, pr) {
        (Ok(pi), Ok(pr)) => (pi, pr),
        (a, b) => return (a.map(|_| Session::Open), b.map(|_| Session::Open)),
    };
    // Proofs cross the wire as auth messages.
    let carry = |p: Option<auth::Repr>| {
        p.map(|p| {
            let b = emit_proof(&p);
            auth::Repr::parse(&auth::Packet::new_checked(&b[..]).unwrap()).unwrap()
        })
    };
    let from_i = carry(pi.local_proof());
    let from_r = carry(pr.local_proof());
    (pi.finish(from_r.as_ref()), pr.finish(from_i.as_ref()))
}

fn keys(s: Result<Session, CryptoError>) -> SessionKeys {
    match s {
        Ok(Session::Authenticated(k)) => k,
        other => panic!("expected an authenticated session, got {other:?}"),
    }
}

#[test]
fn same_password_authenticates_both_sides_with_crossed_keys() {
    let (a, b) = handshake_pair(Some(b"correct horse"), Some(b"correct horse"), |_| {});
    let (a, b) = (keys(a), keys(b));
    assert_eq!(a.tx, b.rx);
    assert_eq!(a.rx, b.tx);
    assert_ne!(a.tx, a.rx, "each direction has its own key");
}

#[test]
fn wrong_password_is_refused_on_both_sides() {
    let (a, b) = handshake_pair(Some(b"correct horse"), Some(b"battery staple"), |_| {});
    assert_eq!(a.unwrap_err(), CryptoError::BadProof);
    assert_eq!(b.unwrap_err(), CryptoError::BadProof);
}

#[test]
fn missing_password_is_refused_on_both_sides_with_a_clear_error() {
    let (a, b) = handshake_pair(Some(b"secret"), None, |_| {});
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert_eq!(
        a,
        CryptoError::PasswordMismatch {
            local: true,
            peer: false
        }
    );
    assert_eq!(
        b,
        CryptoError::PasswordMismatch {
            local: false,
            peer: true
        }
    );
    insta::assert_snapshot!("password_mismatch_messages", format!("{a}\n{b}"));
}

#[test]
fn no_password_on_either_side_is_an_open_session() {
    let (a, b) = handshake_pair(None, None, |_| {});
    assert!(matches!(a, Ok(Session::Open)));
    assert!(matches!(b, Ok(Session::Open)));
}

#[test]
fn altered_hello_fails_the_proofs() {
    // An attacker downgrades the offered features in transit: the
    // transcripts differ, so neither proof verifies.
    let (a, b) = handshake_pair(Some(b"pw"), Some(b"pw"), |h| h[7] = 0x04);
    assert_eq!(a.unwrap_err(), CryptoError::BadProof);
    assert_eq!(b.unwrap_err(), CryptoError::BadProof);
}

#[test]
fn a_proof_must_come_and_come_from_the_other_role() {
    let i = side(1, "host-a", true);
    let r = side(2, "host-b", true);
    let pi = begin(Role::Initiator, Some(b"pw"), i.offer, &i.hello, &r.hello).unwrap();
    let own = pi.local_proof().unwrap();
    // Reflecting a side's own proof back at it must not work.
    let pi2 = {
        let i = side(1, "host-a", true);
        begin(Role::Initiator, Some(b"pw"), i.offer, &i.hello, &r.hello).unwrap()
    };
    assert_eq!(pi.finish(Some(&own)).unwrap_err(), CryptoError::BadProof);
    // Relabelling it as the responder's does not help: the roles' keys differ.
    let relabelled = auth::Repr {
        role: Role::Responder,
        ..own
    };
    let pi3 = {
        let i = side(1, "host-a", true);
        begin(Role::Initiator, Some(b"pw"), i.offer, &i.hello, &r.hello).unwrap()
    };
    assert_eq!(
        pi3.finish(Some(&relabelled)).unwrap_err(),
        CryptoError::BadProof
    );
    assert_eq!(pi2.finish(None).unwrap_err(), CryptoError::MissingProof);
}

#[test]
fn low_order_peer_key_is_refused() {
    let i = side(1, "host-a", true);
    let mut evil = side(2, "host-b", true).hello;
    evil[50..82].fill(0);
    assert_eq!(
        begin(Role::Initiator, Some(b"pw"), i.offer, &i.hello, &evil).unwrap_err(),
        CryptoError::WeakPeerKey
    );
}

#[test]
fn hello_that_does_not_carry_the_offer_is_a_caller_bug() {
    let i = side(1, "host-a", true);
    let other = side(3, "host-a", true);
    let r = side(2, "host-b", true);
    assert_eq!(
        begin(
            Role::Initiator,
            Some(b"pw"),
            i.offer,
            &other.hello,
            &r.hello
        )
        .unwrap_err(),
        CryptoError::OfferMismatch
    );
}

#[test]
fn random_offers_differ() {
    let a = LocalOffer::random().unwrap();
    let b = LocalOffer::random().unwrap();
    assert_ne!(a.nonce(), b.nonce());
    assert_ne!(a.dh_public(), b.dh_public());
}

// ---- sleeve ----

const KEY: [u8; 32] = [0x42; 32];

/// Builds and seals a datagram carrying `frames`.
fn seal(sealer: &mut Sealer, frames: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    sleeve::Repr {
        encrypted: true,
        ..sleeve_header()
    }
    .emit(&mut sleeve::Packet::new_unchecked(&mut buf[..]))
    .unwrap();
    let mut w = FrameWriter::new(&mut buf, TAG_LEN).unwrap();
    for f in frames {
        w.push(f).unwrap();
    }
    let body = w.body_len();
    let n = sealer.seal(&mut buf, body).unwrap();
    buf.truncate(n);
    buf
}

fn frames_of(body: &[u8]) -> Vec<Vec<u8>> {
    sleeve::FrameIter::new(body)
        .map(|f| f.unwrap().to_vec())
        .collect()
}

#[test]
fn sealed_datagram_opens_to_the_same_frames() {
    let mut s = Sealer::new(&KEY);
    let mut o = Opener::new(&KEY);
    let mut d = seal(&mut s, &[b"frame one", b"frame two"]);
    assert!(
        !d.windows(9).any(|w| w == b"frame one"),
        "body is encrypted"
    );
    let body = o.open(&mut d).unwrap();
    assert_eq!(
        frames_of(body),
        vec![b"frame one".to_vec(), b"frame two".to_vec()]
    );
    assert_eq!(o.stats().accepted, 1);
}

#[rstest::rstest]
#[case::ciphertext(sleeve::HEADER_LEN + 3)]
#[case::tag_last_byte(usize::MAX)]
#[case::aad_dst_short_id(5)]
#[case::aad_counter(15)]
#[case::aad_flags_heartbeat(1)]
fn tampering_is_refused(#[case] at: usize) {
    let mut s = Sealer::new(&KEY);
    let mut o = Opener::new(&KEY);
    let mut d = seal(&mut s, &[b"payload"]);
    let at = at.min(d.len() - 1);
    d[at] ^= if at == 1 { 0x02 } else { 0x01 };
    assert_eq!(o.open(&mut d).unwrap_err(), CryptoError::Authentication);
    assert_eq!(o.stats().auth_failures, 1);
    assert_eq!(o.stats().accepted, 0);
}

#[test]
fn wrong_key_is_refused() {
    let mut s = Sealer::new(&KEY);
    let mut o = Opener::new(&[0x43; 32]);
    let mut d = seal(&mut s, &[b"payload"]);
    assert_eq!(o.open(&mut d).unwrap_err(), CryptoError::Authentication);
}

#[test]
fn plaintext_datagram_is_refused() {
    let mut o = Opener::new(&KEY);
    let mut d = emit_sleeve(&sleeve_header(), &[b"payload, sixteen bytes or more"]);
    assert_eq!(o.open(&mut d).unwrap_err(), CryptoError::NotEncrypted);
    assert_eq!(o.stats().malformed, 1);
}

#[test]
fn replays_and_too_old_are_refused_and_counted() {
    let mut s = Sealer::new(&KEY);
    let mut o = Opener::new(&KEY);
    let first = seal(&mut s, &[b"0"]);
    let mut again = first.clone();
    assert!(o.open(&mut first.clone()).is_ok());
    assert_eq!(o.open(&mut again).unwrap_err(), CryptoError::Duplicate(0));
    // Move the window far past counter 0 ...
    let mut later = Vec::new();
    for _ in 0..1100 {
        later.push(seal(&mut s, &[b"x"]));
    }
    for d in &later {
        assert!(o.open(&mut d.clone()).is_ok());
    }
    // ... then an old datagram (valid tag, counter 1) is too old.
    assert_eq!(
        o.open(&mut later[0].clone()).unwrap_err(),
        CryptoError::TooOld(1)
    );
    let st = o.stats();
    assert_eq!((st.accepted, st.duplicates, st.too_old), (1101, 1, 1));
}

#[test]
fn out_of_order_within_the_window_is_accepted_once() {
    let mut s = Sealer::new(&KEY);
    let mut o = Opener::new(&KEY);
    let ds: Vec<_> = (0..10).map(|_| seal(&mut s, &[b"f"])).collect();
    for i in [9, 3, 0, 7, 1, 2, 8, 4, 6, 5] {
        assert!(o.open(&mut ds[i].clone()).is_ok(), "first delivery of {i}");
    }
    for (i, d) in ds.iter().enumerate() {
        assert_eq!(
            o.open(&mut d.clone()).unwrap_err(),
            CryptoError::Duplicate(i as u64)
        );
    }
}

#[test]
fn forged_datagram_does_not_move_the_window() {
    let mut s = Sealer::new(&KEY);
    let mut o = Opener::new(&KEY);
    let d0 = seal(&mut s, &[b"a"]);
    // A forgery claiming a huge counter fails authentication ...
    let mut forged = d0.clone();
    forged[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(o.open(&mut forged).is_err());
    // ... and so cannot make the genuine counter 0 look too old.
    assert!(o.open(&mut d0.clone()).is_ok());
}

#[test]
fn nonce_never_repeats_across_many_sends() {
    let mut s = Sealer::new(&KEY);
    let mut seen = HashSet::new();
    for _ in 0..100_000 {
        let d = seal(&mut s, &[b"f"]);
        let counter = sleeve::Packet::new_checked(&d[..]).unwrap().counter();
        assert!(seen.insert(counter), "counter {counter} reused");
    }
    assert_eq!(s.next_counter(), 100_000);
}

#[test]
fn counter_refuses_to_wrap() {
    let mut s = Sealer::starting_at(&KEY, u64::MAX - 1);
    let mut buf = vec![0u8; 64];
    sleeve_header()
        .emit(&mut sleeve::Packet::new_unchecked(&mut buf[..]))
        .unwrap();
    assert!(s.seal(&mut buf.clone(), 4).is_ok());
    assert_eq!(
        s.seal(&mut buf.clone(), 4),
        Err(CryptoError::CounterExhausted)
    );
    assert_eq!(s.seal(&mut buf, 4), Err(CryptoError::CounterExhausted));
    assert_eq!(s.next_counter(), u64::MAX);
}

#[test]
fn seal_needs_room_for_the_tag() {
    let mut s = Sealer::new(&KEY);
    let mut buf = vec![0u8; sleeve::HEADER_LEN + 4 + TAG_LEN - 1];
    assert!(matches!(s.seal(&mut buf, 4), Err(CryptoError::Wire(_))));
    assert_eq!(s.next_counter(), 0, "a failed seal uses no counter");
}

#[test]
fn handshake_keys_drive_sleeve_both_ways() {
    let (a, b) = handshake_pair(Some(b"pw"), Some(b"pw"), |_| {});
    let (a, b) = (keys(a), keys(b));
    let (mut a_tx, mut b_rx) = (a.sealer(), b.opener());
    let (mut b_tx, mut a_rx) = (b.sealer(), a.opener());
    let mut d = seal(&mut a_tx, &[b"a to b"]);
    assert_eq!(
        frames_of(b_rx.open(&mut d).unwrap()),
        vec![b"a to b".to_vec()]
    );
    let mut d = seal(&mut b_tx, &[b"b to a"]);
    assert_eq!(
        frames_of(a_rx.open(&mut d).unwrap()),
        vec![b"b to a".to_vec()]
    );
    // A's own datagram does not open with A's receive key (no reflection).
    let mut d = seal(&mut a_tx, &[b"reflected"]);
    assert!(a_rx.open(&mut d).is_err());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn key_schedule_known_answer() {
    // Fixed nonces, keys and password: any change to the transcript, the
    // labels or the derivation shows up here (and breaks interop).
    let i = side(1, "host-a", true);
    let r = side(2, "host-b", true);
    let pi = begin(Role::Initiator, Some(b"pw"), i.offer, &i.hello, &r.hello).unwrap();
    let pr = begin(Role::Responder, Some(b"pw"), r.offer, &r.hello, &i.hello).unwrap();
    let proof_i = pi.local_proof().unwrap();
    let proof_r = pr.local_proof().unwrap();
    let k = keys(pi.finish(Some(&proof_r)));
    let mut sealer = k.sealer();
    let datagram = seal(&mut sealer, &[b"abc"]);
    insta::assert_snapshot!(
        "key_schedule",
        format!(
            "proof I   {}\nproof R   {}\nkey I->R  {}\nkey R->I  {}\nfirst sealed datagram I->R:\n{}",
            hex(&proof_i.proof),
            hex(&proof_r.proof),
            hex(&k.tx),
            hex(&k.rx),
            overlay::wire::hexdump(&datagram)
        )
    );
    assert!(matches!(
        pr.finish(Some(&proof_i)),
        Ok(Session::Authenticated(_))
    ));
}
