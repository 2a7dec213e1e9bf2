//! Password-authenticated session setup for the control connection.
//!
//! Both sides send a Hello ([`crate::wire::handshake`]) carrying a fresh
//! 32-byte nonce and an ephemeral X25519 public key. When both have a
//! password, each derives, from the Diffie-Hellman secret, the password and
//! a hash of both Hellos (the transcript), a proof key per role and a
//! sleeve key per direction, and sends an HMAC-SHA256 proof over the
//! transcript ([`crate::wire::auth`]). A side accepts the session only when
//! the peer's proof verifies.
//!
//! Key schedule (all HKDF-SHA256, all labels ASCII):
//! ```text
//! th      = SHA-256("overlay handshake v1" || len(hello_I) || hello_I || len(hello_R) || hello_R)
//! pw      = HKDF-Extract(salt = "overlay password v1", ikm = password)
//! prk     = HKDF-Extract(salt = th, ikm = X25519(e_local, e_peer) || pw)
//! k_proof_I, k_proof_R, k_sleeve_IR, k_sleeve_RI = HKDF-Expand(prk, label, 32)
//! proof_X = HMAC-SHA256(k_proof_X, th)
//! ```
//! Limits, said plainly: this is not a PAKE. A passive eavesdropper learns
//! nothing about the password (the DH secret is in every key), but an
//! active attacker who answers a router's connection with its own DH key
//! receives a proof it can test password guesses against offline. Use a
//! long random password. Without a password, nothing is authenticated or
//! encrypted (as in Weave Net).

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::sleeve::{Opener, Sealer};
use super::CryptoError;
use crate::wire::auth::{self, Role};
use crate::wire::handshake as hello;

const TRANSCRIPT_LABEL: &[u8] = b"overlay handshake v1";
const PASSWORD_SALT: &[u8] = b"overlay password v1";
const LABEL_PROOF_I: &[u8] = b"overlay v1 proof initiator";
const LABEL_PROOF_R: &[u8] = b"overlay v1 proof responder";
const LABEL_SLEEVE_IR: &[u8] = b"overlay v1 sleeve initiator to responder";
const LABEL_SLEEVE_RI: &[u8] = b"overlay v1 sleeve responder to initiator";

/// This side's contribution to a handshake: a nonce and an ephemeral key.
/// Use one per connection attempt, never twice.
pub struct LocalOffer {
    nonce: [u8; 32],
    secret: StaticSecret,
}

impl std::fmt::Debug for LocalOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOffer")
            .field("dh_public", &self.dh_public())
            .finish_non_exhaustive()
    }
}

impl LocalOffer {
    /// An offer from given bytes (tests, or a caller with its own RNG).
    pub fn from_bytes(nonce: [u8; 32], secret: [u8; 32]) -> Self {
        LocalOffer {
            nonce,
            secret: StaticSecret::from(secret),
        }
    }

    /// A fresh offer from the operating system's random source.
    pub fn random() -> Result<Self, CryptoError> {
        let mut nonce = [0u8; 32];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        getrandom::fill(&mut secret).map_err(|_| CryptoError::Random)?;
        let offer = Self::from_bytes(nonce, secret);
        secret.zeroize();
        Ok(offer)
    }

    /// The nonce to put in the Hello.
    pub fn nonce(&self) -> [u8; 32] {
        self.nonce
    }

    /// The ephemeral public key to put in the Hello.
    pub fn dh_public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }
}

/// The two sleeve keys of a session, one per direction.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    /// Key for datagrams this side sends.
    pub tx: [u8; 32],
    /// Key for datagrams this side receives.
    pub rx: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

impl SessionKeys {
    /// A sealer for outgoing sleeve datagrams.
    pub fn sealer(&self) -> Sealer {
        Sealer::new(&self.tx)
    }
    /// An opener for incoming sleeve datagrams.
    pub fn opener(&self) -> Opener {
        Opener::new(&self.rx)
    }
}

/// A handshake after both Hellos, waiting for the peer's proof.
pub struct Pending {
    role: Role,
    secrets: Option<Secrets>,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct Secrets {
    local_proof: [u8; 32],
    peer_proof_key: [u8; 32],
    transcript: [u8; 32],
    keys: SessionKeys,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("role", &self.role)
            .field("authenticated", &self.secrets.is_some())
            .finish()
    }
}

/// The outcome of a handshake.
#[derive(Debug)]
pub enum Session {
    /// Neither side has a password: nothing is authenticated or encrypted.
    Open,
    /// Both proved the same password; sleeve traffic uses these keys.
    Authenticated(SessionKeys),
}

fn transcript_hash(initiator_hello: &[u8], responder_hello: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TRANSCRIPT_LABEL);
    h.update((initiator_hello.len() as u64).to_be_bytes());
    h.update(initiator_hello);
    h.update((responder_hello.len() as u64).to_be_bytes());
    h.update(responder_hello);
    h.finalize().into()
}

fn hmac_sha256(key: &[u8; 32]) -> Result<Hmac<Sha256>, CryptoError> {
    // HMAC takes keys of any length, so this cannot fail; map it anyway
    // rather than unwrap.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::BadProof)
}

fn hmac(key: &[u8; 32], msg: &[u8]) -> Result<[u8; 32], CryptoError> {
    let mut mac = hmac_sha256(key)?;
    mac.update(msg);
    Ok(mac.finalize().into_bytes().into())
}

/// Starts the session from the two Hellos, as sent and as received (the
/// exact payload bytes: they form the transcript).
///
/// Fails with [`CryptoError::PasswordMismatch`] when only one side has a
/// password, on both sides alike, since both Hellos say so.
pub fn begin(
    role: Role,
    password: Option<&[u8]>,
    offer: LocalOffer,
    local_hello: &[u8],
    peer_hello: &[u8],
) -> Result<Pending, CryptoError> {
    let local = hello::Repr::parse(&hello::Packet::new_checked(local_hello)?)?;
    let peer = hello::Repr::parse(&hello::Packet::new_checked(peer_hello)?)?;
    if local.nonce != offer.nonce() || local.dh_public != offer.dh_public() {
        return Err(CryptoError::OfferMismatch);
    }
    if local.password != password.is_some() {
        return Err(CryptoError::OfferMismatch);
    }
    if local.password != peer.password {
        return Err(CryptoError::PasswordMismatch {
            local: local.password,
            peer: peer.password,
        });
    }
    let Some(password) = password else {
        return Ok(Pending {
            role,
            secrets: None,
        });
    };

    let (hello_i, hello_r) = match role {
        Role::Initiator => (local_hello, peer_hello),
        Role::Responder => (peer_hello, local_hello),
    };
    // Only the Hello bytes proper: a caller may hand in a longer buffer.
    let th = transcript_hash(
        &hello_i[..hello::Packet::new_unchecked(hello_i).total_len()],
        &hello_r[..hello::Packet::new_unchecked(hello_r).total_len()],
    );

    let shared = offer
        .secret
        .diffie_hellman(&PublicKey::from(peer.dh_public));
    if !shared.was_contributory() {
        return Err(CryptoError::WeakPeerKey);
    }
    let (pw, _) = Hkdf::<Sha256>::extract(Some(PASSWORD_SALT), password);
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(shared.as_bytes());
    ikm[32..].copy_from_slice(&pw);
    let hk = Hkdf::<Sha256>::new(Some(&th), &ikm);
    ikm.zeroize();

    let mut okm = [[0u8; 32]; 4];
    for (out, label) in okm.iter_mut().zip([
        LABEL_PROOF_I,
        LABEL_PROOF_R,
        LABEL_SLEEVE_IR,
        LABEL_SLEEVE_RI,
    ]) {
        // 32 bytes is far below HKDF-SHA256's 8160-byte output bound.
        hk.expand(label, out)
            .map_err(|_| CryptoError::KeyDerivation)?;
    }
    let [proof_i, proof_r, sleeve_ir, sleeve_ri] = okm;
    let (own_key, peer_key, tx, rx) = match role {
        Role::Initiator => (proof_i, proof_r, sleeve_ir, sleeve_ri),
        Role::Responder => (proof_r, proof_i, sleeve_ri, sleeve_ir),
    };
    let local_proof = hmac(&own_key, &th);
    let mut own_key = own_key;
    own_key.zeroize();
    let secrets = Secrets {
        local_proof: local_proof?,
        peer_proof_key: peer_key,
        transcript: th,
        keys: SessionKeys { tx, rx },
    };
    Ok(Pending {
        role,
        secrets: Some(secrets),
    })
}

impl Pending {
    /// The proof message to send, when a password is set.
    pub fn local_proof(&self) -> Option<auth::Repr> {
        self.secrets.as_ref().map(|s| auth::Repr {
            role: self.role,
            proof: s.local_proof,
        })
    }

    /// Whether a proof is expected from the peer.
    pub fn expects_proof(&self) -> bool {
        self.secrets.is_some()
    }

    /// Finishes with the peer's proof (None when no proof arrived).
    pub fn finish(self, peer_proof: Option<&auth::Repr>) -> Result<Session, CryptoError> {
        let Some(secrets) = self.secrets.as_ref() else {
            return Ok(Session::Open);
        };
        let Some(proof) = peer_proof else {
            return Err(CryptoError::MissingProof);
        };
        if proof.role != self.role.peer() {
            return Err(CryptoError::BadProof);
        }
        let mut mac = hmac_sha256(&secrets.peer_proof_key)?;
        mac.update(&secrets.transcript);
        // verify_slice compares in constant time.
        mac.verify_slice(&proof.proof)
            .map_err(|_| CryptoError::BadProof)?;
        Ok(Session::Authenticated(secrets.keys.clone()))
    }
}
