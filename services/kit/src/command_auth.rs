//! Signed commands: the gateway signs every command it sends with an Ed25519 key
//! only it holds; a serving service obeys a command only with a valid signature,
//! a time within [`MAX_SKEW`] of its own clock and a nonce it has not seen.
//!
//! NATS permissions already let only the gateway's user publish `krisbud.cmd.>`;
//! the signature is the second lock: a leaked service password, a
//! misconfigured server or a replayed message is still refused, and the refusal
//! is recorded.
//!
//! What is signed (one line each, UTF-8): `krisbud-command-v1`, the subject, the
//! time in Unix milliseconds, the nonce, and the SHA-256 of the body in hex.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::config::CommandsConfig;

/// Header with the signing time in Unix milliseconds.
pub const HEADER_TIME: &str = "Krisbud-Command-Time";
/// Header with a random nonce (32 hex digits).
pub const HEADER_NONCE: &str = "Krisbud-Command-Nonce";
/// Header with the Ed25519 signature (128 hex digits).
pub const HEADER_SIGNATURE: &str = "Krisbud-Command-Signature";

/// How far a command's time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No signature headers.
    Unsigned,
    /// Headers that cannot be read.
    Malformed,
    /// The signature does not match the gateway's key.
    BadSignature,
    /// Signed too long ago, or in the future.
    Stale,
    /// A nonce seen before: the same message again.
    Replayed,
}

impl Refusal {
    /// The reason as recorded and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::Malformed => "malformed signature headers",
            Refusal::BadSignature => "bad signature",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
        }
    }
}

/// The keys of one process: the gateway's signing key where it runs, the public
/// key where commands are served, and the nonces seen.
#[derive(Clone, Default)]
pub struct CommandKeys {
    signer: Option<Arc<SigningKey>>,
    verifier: Option<VerifyingKey>,
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

impl std::fmt::Debug for CommandKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandKeys")
            .field("signs", &self.signer.is_some())
            .field(
                "verifies",
                &self.verifier.map(|k| hex::encode(k.as_bytes())),
            )
            .finish()
    }
}

impl CommandKeys {
    /// The keys of `[commands]`.
    pub fn from_config(config: &CommandsConfig) -> anyhow::Result<CommandKeys> {
        let verifier = if config.public_key.is_empty() {
            None
        } else {
            Some(parse_public_key(&config.public_key).context("key `commands.public_key`")?)
        };
        let signer = match &config.signing_key_file {
            Some(path) => Some(Arc::new(
                read_signing_key(path).context("key `commands.signing_key_file`")?,
            )),
            None => None,
        };
        if let (Some(s), Some(v)) = (&signer, &verifier) {
            anyhow::ensure!(
                s.verifying_key() == *v,
                "key `commands.public_key` is not the public key of `commands.signing_key_file`"
            );
        }
        Ok(CommandKeys {
            verifier: verifier.or_else(|| signer.as_ref().map(|s| s.verifying_key())),
            signer,
            seen: Arc::default(),
        })
    }

    /// Keys that sign with `key` and verify with its public half.
    pub fn from_signing_key(key: SigningKey) -> CommandKeys {
        CommandKeys {
            verifier: Some(key.verifying_key()),
            signer: Some(Arc::new(key)),
            seen: Arc::default(),
        }
    }

    /// These keys without the private half, as a serving service holds them.
    pub fn verify_only(&self) -> CommandKeys {
        CommandKeys {
            signer: None,
            verifier: self.verifier,
            seen: Arc::default(),
        }
    }

    /// Whether commands can be signed.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Whether commands can be checked.
    pub fn can_verify(&self) -> bool {
        self.verifier.is_some()
    }

    /// Adds the signature headers for `body` on `subject`; nothing without a key.
    pub fn sign(&self, subject: &str, body: &[u8], headers: &mut HeaderMap) {
        let Some(key) = &self.signer else { return };
        let time = chrono::Utc::now().timestamp_millis().to_string();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let signature = key.sign(&signed_text(subject, &time, &nonce, body));
        headers.insert(HEADER_TIME, time.as_str());
        headers.insert(HEADER_NONCE, nonce.as_str());
        headers.insert(HEADER_SIGNATURE, hex::encode(signature.to_bytes()).as_str());
    }

    /// Checks a received command: signature, time, and that its nonce is new.
    pub fn check(
        &self,
        subject: &str,
        body: &[u8],
        headers: Option<&HeaderMap>,
    ) -> Result<(), Refusal> {
        let verifier = self.verifier.ok_or(Refusal::BadSignature)?;
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let (Some(time), Some(nonce), Some(signature)) =
            (get(HEADER_TIME), get(HEADER_NONCE), get(HEADER_SIGNATURE))
        else {
            return Err(Refusal::Unsigned);
        };
        let at: i64 = time.parse().map_err(|_| Refusal::Malformed)?;
        let bytes: [u8; 64] = hex::decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Refusal::Malformed)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refusal::Malformed);
        }
        verifier
            .verify(
                &signed_text(subject, time, nonce, body),
                &Signature::from_bytes(&bytes),
            )
            .map_err(|_| Refusal::BadSignature)?;
        let now = chrono::Utc::now().timestamp_millis();
        let skew = i64::try_from(MAX_SKEW.as_millis()).unwrap_or(i64::MAX);
        if (now - at).abs() > skew {
            return Err(Refusal::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // A nonce needs remembering only while its time is acceptable.
        seen.retain(|_, at| now - *at <= skew);
        if seen.insert(nonce.to_owned(), at).is_some() {
            return Err(Refusal::Replayed);
        }
        Ok(())
    }
}

fn signed_text(subject: &str, time: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "krisbud-command-v1\n{subject}\n{time}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// A public key in hex.
pub fn parse_public_key(hex_key: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("not 64 hex digits")?;
    VerifyingKey::from_bytes(&bytes).context("not an Ed25519 public key")
}

/// Reads a signing key file (the 32-byte seed in hex).
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} does not hold 64 hex digits", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads the signing key at `path`, creating one (mode 0600) when there is none.
pub fn load_or_create_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return read_signing_key(path);
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    crate::secret_file::write(path, &hex::encode(key.to_bytes()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CommandKeys {
        CommandKeys::from_signing_key(SigningKey::from_bytes(&[7; 32]))
    }

    #[test]
    fn a_signed_command_passes_once() {
        let keys = keys();
        let mut headers = HeaderMap::new();
        keys.sign("krisbud.cmd.crisis.declare", b"{}", &mut headers);
        let verifier = keys.verify_only();
        assert_eq!(
            verifier.check("krisbud.cmd.crisis.declare", b"{}", Some(&headers)),
            Ok(())
        );
        assert_eq!(
            verifier.check("krisbud.cmd.crisis.declare", b"{}", Some(&headers)),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn another_body_subject_or_key_is_refused() {
        let keys = keys();
        let verifier = keys.verify_only();
        let mut headers = HeaderMap::new();
        keys.sign("krisbud.cmd.crisis.declare", b"{}", &mut headers);
        assert_eq!(
            verifier.check("krisbud.cmd.crisis.declare", b"{ }", Some(&headers)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verifier.check("krisbud.cmd.crisis.cancel", b"{}", Some(&headers)),
            Err(Refusal::BadSignature)
        );
        let other = CommandKeys::from_signing_key(SigningKey::from_bytes(&[8; 32]));
        let mut forged = HeaderMap::new();
        other.sign("krisbud.cmd.crisis.declare", b"{}", &mut forged);
        assert_eq!(
            verifier.check("krisbud.cmd.crisis.declare", b"{}", Some(&forged)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verifier.check("krisbud.cmd.crisis.declare", b"{}", None),
            Err(Refusal::Unsigned)
        );
    }

    #[test]
    fn an_old_signature_is_stale() {
        let keys = keys();
        let key = SigningKey::from_bytes(&[7; 32]);
        let time = (chrono::Utc::now().timestamp_millis() - 60_000).to_string();
        let nonce = "0".repeat(32);
        let signature = key.sign(&signed_text("s", &time, &nonce, b"x"));
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TIME, time.as_str());
        headers.insert(HEADER_NONCE, nonce.as_str());
        headers.insert(HEADER_SIGNATURE, hex::encode(signature.to_bytes()).as_str());
        assert_eq!(keys.check("s", b"x", Some(&headers)), Err(Refusal::Stale));
    }
}
