//! Sealing of outbox bodies at rest (RELIABILITY W5: tokens only as hashes in the database).
//!
//! A welcome, invitation or reset email carries a password or a one-time link, and the
//! persisted outbox must keep it until delivery (across restarts). sled is a log: a value
//! written once stays in its files until the segment is reused, even after the record is
//! cleared. So the store seals such bodies before they reach sled, with a key kept in a file
//! of its own (`outbox.key`, mode 0600, beside the sled files): a dump or copy of the sled
//! files, or a stale page in them, holds no usable secret.
//!
//! The construction is the AEAD XChaCha20-Poly1305 from the RustCrypto `chacha20poly1305`
//! crate, keyed directly with the file's 32 random bytes: a sealed body is
//! `qorgan-sealed-v2:` ‖ base64(nonce ‖ ciphertext ‖ tag), with a fresh random 24-byte nonce
//! per message (wide enough that random nonces never collide in practice) and a 16-byte
//! Poly1305 tag that rejects any other key or damage. A reviewed, standard AEAD replaces the
//! former hand-written HMAC-SHA256 counter-mode cipher (`qorgan-sealed-v1:`, only ever in
//! development stores): such bodies, like any other body that does not verify, do not open.

use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::Aead as _;
use chacha20poly1305::{Key, KeyInit as _, XChaCha20Poly1305, XNonce};
use rand::Rng as _;

use crate::error::ControlError;

/// Marks a sealed body (an unsealed one, e.g. a receipt without secrets, is kept as is).
const PREFIX: &str = "qorgan-sealed-v2:";
/// What every sealed body has begun with, in any version: one under another version's
/// prefix (the old `v1`) is refused, not passed through as plain text.
const ANY_VERSION: &str = "qorgan-sealed-";
const NONCE: usize = 24;
const TAG: usize = 16;

/// The outbox key: an XChaCha20-Poly1305 key, the key file's 32 random bytes.
#[derive(Clone)]
pub(crate) struct SealKey {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    fn from_bytes(key: [u8; 32]) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// A key that lives only in memory (temporary stores).
    pub(crate) fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        Self::from_bytes(key)
    }

    /// Reads the key file at `path`, creating it (32 random bytes, mode 0600) if missing.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the outbox key file must hold exactly 32 bytes",
                    ))
                })?;
                Ok(Self::from_bytes(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill(&mut key);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    opts.mode(0o600);
                }
                let mut f = opts.open(path).map_err(io)?;
                f.write_all(&key).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(Self::from_bytes(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The sealed text of `plain` (empty stays empty: nothing to hide).
    pub(crate) fn seal(&self, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let mut nonce = [0u8; NONCE];
        rand::rng().fill(&mut nonce);
        // Encryption fails only for a message over 256 GiB, which no email body reaches;
        // even then the plain text must not be stored, so the body becomes one that never
        // opens (the outbox marks such an email failed).
        let Ok(ct) = self.aead.encrypt(&XNonce::from(nonce), plain.as_bytes()) else {
            tracing::error!(len = plain.len(), "outbox body too long to seal: dropped");
            return PREFIX.to_owned();
        };
        let mut out = Vec::with_capacity(NONCE + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD_NO_PAD.encode(out))
    }

    /// The plain text of a body: a sealed one is checked and opened; `None` when it does not
    /// verify (another key, damage, an older sealing version). A body that was never sealed
    /// is returned as it is.
    pub(crate) fn open(&self, stored: &str) -> Option<String> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return (!stored.starts_with(ANY_VERSION)).then(|| stored.to_owned());
        };
        let raw = STANDARD_NO_PAD.decode(b64).ok()?;
        if raw.len() < NONCE + TAG {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE);
        let nonce = <[u8; NONCE]>::try_from(nonce).ok()?;
        let pt = self.aead.decrypt(&XNonce::from(nonce), ct).ok()?;
        String::from_utf8(pt).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "Пароль: Secr3tPassw0rd\nhttps://x/reset-password?token=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n";

    /// `sealed` with the byte at `at` of its decoded payload (nonce ‖ ciphertext ‖ tag) flipped.
    fn flipped(sealed: &str, at: usize) -> String {
        let mut raw = STANDARD_NO_PAD
            .decode(sealed.strip_prefix(PREFIX).expect("sealed"))
            .expect("base64");
        raw[at] ^= 0x01;
        format!("{PREFIX}{}", STANDARD_NO_PAD.encode(raw))
    }

    #[test]
    fn sealed_text_roundtrips_and_hides_the_plain_text() {
        let k = SealKey::ephemeral();
        let plain = PLAIN.repeat(3);
        let sealed = k.seal(&plain);
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("Secr3t") && !sealed.contains("abcdefghij"));
        assert_eq!(k.open(&sealed).as_deref(), Some(plain.as_str()));
        let raw = STANDARD_NO_PAD
            .decode(sealed.strip_prefix(PREFIX).expect("sealed"))
            .expect("base64");
        assert_eq!(raw.len(), NONCE + plain.len() + TAG);
        assert_eq!(k.seal(""), "");
    }

    #[test]
    fn two_seals_of_one_body_differ() {
        let k = SealKey::ephemeral();
        let (a, b) = (k.seal(PLAIN), k.seal(PLAIN));
        assert_ne!(a, b, "a fresh nonce each time");
        assert_ne!(
            a[..PREFIX.len() + 32],
            b[..PREFIX.len() + 32],
            "nonces differ"
        );
        assert_eq!(k.open(&a), k.open(&b));
    }

    #[test]
    fn a_flipped_byte_in_nonce_ciphertext_or_tag_is_rejected() {
        let k = SealKey::ephemeral();
        let sealed = k.seal(PLAIN);
        let len = NONCE + PLAIN.len() + TAG;
        for (what, at) in [
            ("nonce, first byte", 0),
            ("nonce, last byte", NONCE - 1),
            ("ciphertext, first byte", NONCE),
            ("ciphertext, last byte", len - TAG - 1),
            ("tag, first byte", len - TAG),
            ("tag, last byte", len - 1),
        ] {
            assert_eq!(k.open(&flipped(&sealed, at)), None, "{what}");
        }
        // Truncated (no room for nonce and tag), not base64, or nothing after the prefix.
        let short = &sealed[..PREFIX.len() + 50];
        assert_eq!(k.open(short), None);
        assert_eq!(k.open(&format!("{PREFIX}!!not base64!!")), None);
        assert_eq!(k.open(PREFIX), None);
    }

    #[test]
    fn another_key_is_rejected() {
        let sealed = SealKey::ephemeral().seal(PLAIN);
        assert_eq!(SealKey::ephemeral().open(&sealed), None);
    }

    #[test]
    fn an_unsealed_body_passes_through_and_an_old_version_does_not_open() {
        let k = SealKey::ephemeral();
        assert_eq!(
            k.open("a receipt, never sealed").as_deref(),
            Some("a receipt, never sealed")
        );
        assert_eq!(k.open("").as_deref(), Some(""));
        // A v1 body (HMAC-SHA256 counter mode) is refused like any body that does not verify.
        assert_eq!(k.open("qorgan-sealed-v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), None);
    }

    #[test]
    fn the_key_file_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("outbox.key");
        let a = SealKey::load_or_create(&path).expect("create");
        let b = SealKey::load_or_create(&path).expect("read");
        assert_eq!(b.open(&a.seal("x")).as_deref(), Some("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").expect("write");
        assert!(SealKey::load_or_create(&path).is_err());
    }

    #[test]
    fn the_key_file_bytes_are_the_aead_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("outbox.key");
        let key = [7u8; 32];
        std::fs::write(&path, key).expect("write");
        let nonce = [9u8; NONCE];
        let ct = XChaCha20Poly1305::new(&Key::from(key))
            .encrypt(&XNonce::from(nonce), PLAIN.as_bytes())
            .expect("encrypt");
        let sealed = format!(
            "{PREFIX}{}",
            STANDARD_NO_PAD.encode([&nonce[..], &ct].concat())
        );
        let k = SealKey::load_or_create(&path).expect("read");
        assert_eq!(k.open(&sealed).as_deref(), Some(PLAIN));
    }
}
