//! Cryptography of the overlay: password-authenticated session setup on the
//! control connection ([`handshake`]) and per-datagram authenticated
//! encryption with a replay window for sleeve ([`sleeve`]).
//!
//! Everything here is pure state and arithmetic over byte buffers; the
//! only source of entropy is [`handshake::LocalOffer::random`], and tests
//! pass fixed bytes instead. The primitives are RustCrypto's (X25519 from
//! dalek, HKDF/HMAC with SHA-256, ChaCha20-Poly1305); the design and its
//! limits are written up in `docs/overlay-protocol.md`.

pub mod handshake;
pub mod replay;
pub mod sleeve;

use crate::wire::WireError;

/// Why a cryptographic step refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// One side has a password set and the other has not.
    #[error(
        "password mismatch: this router {} but the peer {}; \
         set the same password on both (or on neither)",
        if *local { "has a password" } else { "has none" },
        if *peer { "has one" } else { "has none" }
    )]
    PasswordMismatch {
        /// Whether this side has a password.
        local: bool,
        /// Whether the peer announced one.
        peer: bool,
    },
    /// The peer's proof does not verify: its password differs from ours,
    /// or someone altered the handshake.
    #[error(
        "the peer's password proof does not verify: the passwords differ \
         (or the handshake was tampered with); check both routers' password"
    )]
    BadProof,
    /// A password is set but the peer sent no proof.
    #[error("the peer sent no password proof although both sides have a password")]
    MissingProof,
    /// The peer's ephemeral key gives an all-zero shared secret.
    #[error("the peer's ephemeral key is a low-order point; refusing the handshake")]
    WeakPeerKey,
    /// The Hello bytes handed in disagree with the offer they should carry.
    #[error("the local Hello does not carry this offer's nonce and key (a caller bug)")]
    OfferMismatch,
    /// The sender's counter reached its end; the session must be re-keyed
    /// (reconnect) before sending more.
    #[error("sleeve nonce counter exhausted: reconnect to re-key")]
    CounterExhausted,
    /// A datagram with a counter already accepted.
    #[error("replayed sleeve datagram (counter {0})")]
    Duplicate(u64),
    /// A datagram older than the replay window.
    #[error("sleeve datagram too old for the replay window (counter {0})")]
    TooOld(u64),
    /// Decryption failed: wrong key, or ciphertext, tag or header altered.
    #[error("sleeve datagram failed authentication (tampered, or a different key)")]
    Authentication,
    /// A plaintext datagram reached a session that requires encryption.
    #[error("unencrypted sleeve datagram on an encrypted session")]
    NotEncrypted,
    /// The bytes are not a well-formed message.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// HKDF refused to expand (cannot happen for the 32-byte keys used).
    #[error("key derivation failed")]
    KeyDerivation,
    /// The operating system's random source failed.
    #[error("the OS random source failed")]
    Random,
}
