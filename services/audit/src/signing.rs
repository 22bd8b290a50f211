//! Ed25519 for the audit chain: the signing key file, key ids, and signing and
//! checking checkpoints and key endorsements. Pure functions (apart from reading
//! and writing the key file), so an export can be checked offline.
//!
//! What is signed is always the canonical JSON (see [`crate::chain`]) of the
//! object without its signature member: for a [`Checkpoint`] that is
//! `{"hash":…,"key_id":…,"sequence":N,"signed_at":…}`, for an
//! [`AuditKeyRotated`] `{"algorithm":…,"key_id":…,"previous_key_id":…,"public_key":…}`.
//! The two have different members, so one can never pass for the other.

use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _};
use krisbud_proto::audit::{AuditKeyRotated, AuditPublicKey, Checkpoint, SIGNATURE_ALGORITHM};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::chain::canonical_json;

/// The key types of checkpoint signatures.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("the public key is not 64 hex digits of a valid Ed25519 key")]
    BadPublicKey,
    #[error("the signature is not 128 hex digits")]
    Malformed,
    #[error("the signature does not match the signed content and key")]
    Invalid,
}

/// The id of a public key: the first 16 hex digits of the SHA-256 of its bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// The public half of `key` as served and exported.
pub fn public_key(key: &VerifyingKey) -> AuditPublicKey {
    AuditPublicKey {
        key_id: key_id(key),
        algorithm: SIGNATURE_ALGORITHM.to_owned(),
        public_key: hex::encode(key.as_bytes()),
        since: None,
    }
}

/// Reads a public key written as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, SignatureProblem> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureProblem::BadPublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureProblem::BadPublicKey)
}

/// Reads a signing key file: the 32-byte Ed25519 seed as 64 hex digits
/// (surrounding whitespace ignored).
pub fn read_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the audit signing key {}", path.display()))?;
    parse_signing_key(&text).with_context(|| {
        format!(
            "{} is not an audit signing key (64 hex digits of an Ed25519 seed)",
            path.display()
        )
    })
}

fn parse_signing_key(text: &str) -> anyhow::Result<SigningKey> {
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("expected 64 hex digits")?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a fresh signing key to `path`, readable by its owner only; refuses to
/// overwrite an existing file, since losing a key loses the ability to continue
/// its signatures.
pub fn create_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the audit signing key {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(seed)).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// The key in `path`, created first when the file does not exist (for a local
/// installation's data directory; a configured key must exist).
pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        read_key_file(path)
    } else {
        create_key_file(path)
    }
}

/// The bytes a checkpoint's signature covers: the canonical JSON of the
/// checkpoint without `signature` (`chain_id` only when it has one).
pub fn checkpoint_message(
    sequence: u64,
    hash: &str,
    signed_at: DateTime<Utc>,
    key: &str,
    chain_id: Option<&str>,
) -> Vec<u8> {
    let mut value = json!({
        "hash": hash,
        "key_id": key,
        "sequence": sequence,
        "signed_at": signed_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    });
    if let (Some(chain), Value::Object(members)) = (chain_id, &mut value) {
        members.insert("chain_id".into(), Value::String(chain.to_owned()));
    }
    canonical_json(&value)
}

/// A checkpoint over record `sequence` with hash `hash` of the chain
/// `chain_id`, signed now by `key`.
pub fn sign_checkpoint(
    key: &SigningKey,
    sequence: u64,
    hash: &str,
    now: DateTime<Utc>,
    chain_id: Option<&str>,
) -> Checkpoint {
    let id = key_id(&key.verifying_key());
    let signature = key.sign(&checkpoint_message(sequence, hash, now, &id, chain_id));
    Checkpoint {
        sequence,
        hash: hash.to_owned(),
        signed_at: now,
        key_id: id,
        chain_id: chain_id.map(str::to_owned),
        signature: hex::encode(signature.to_bytes()),
    }
}

/// Checks a checkpoint's signature with `key` (its `key_id` is checked by the caller).
pub fn verify_checkpoint(
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
) -> Result<(), SignatureProblem> {
    let message = checkpoint_message(
        checkpoint.sequence,
        &checkpoint.hash,
        checkpoint.signed_at,
        &checkpoint.key_id,
        checkpoint.chain_id.as_deref(),
    );
    verify(key, &message, &checkpoint.signature)
}

/// The bytes a key endorsement covers: the rotation without `endorsement`.
pub fn rotation_message(rotation: &AuditKeyRotated) -> Vec<u8> {
    let mut value = json!({
        "algorithm": rotation.algorithm,
        "key_id": rotation.key_id,
        "public_key": rotation.public_key,
    });
    if let (Some(previous), Value::Object(members)) = (&rotation.previous_key_id, &mut value) {
        members.insert("previous_key_id".into(), Value::String(previous.clone()));
    }
    canonical_json(&value)
}

/// The rotation to `new`, after `previous` (its id), endorsed by `previous_key`
/// when the old key is at hand.
pub fn rotation(
    new: &VerifyingKey,
    previous: Option<String>,
    previous_key: Option<&SigningKey>,
) -> AuditKeyRotated {
    let mut rotation = AuditKeyRotated {
        key_id: key_id(new),
        algorithm: SIGNATURE_ALGORITHM.to_owned(),
        public_key: hex::encode(new.as_bytes()),
        previous_key_id: previous,
        endorsement: None,
    };
    if let Some(old) = previous_key
        && rotation.previous_key_id.as_deref() == Some(key_id(&old.verifying_key()).as_str())
    {
        rotation.endorsement = Some(hex::encode(
            old.sign(&rotation_message(&rotation)).to_bytes(),
        ));
    }
    rotation
}

/// Checks a rotation's endorsement with the previous key.
pub fn verify_endorsement(
    rotation: &AuditKeyRotated,
    endorsement: &str,
    previous: &VerifyingKey,
) -> Result<(), SignatureProblem> {
    verify(previous, &rotation_message(rotation), endorsement)
}

fn verify(key: &VerifyingKey, message: &[u8], signature_hex: &str) -> Result<(), SignatureProblem> {
    let bytes: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureProblem::Malformed)?;
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| SignatureProblem::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn a_checkpoint_verifies_and_any_change_breaks_it() {
        let at: DateTime<Utc> = "2026-03-01T10:00:00.5Z".parse().unwrap();
        let cp = sign_checkpoint(&key(1), 42, &"ab".repeat(32), at, Some(&"ef".repeat(32)));
        assert_eq!(cp.key_id.len(), 16);
        let public = key(1).verifying_key();
        assert_eq!(verify_checkpoint(&cp, &public), Ok(()));
        for changed in [
            Checkpoint {
                sequence: 43,
                ..cp.clone()
            },
            Checkpoint {
                hash: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                signed_at: at + chrono::Duration::seconds(1),
                ..cp.clone()
            },
            Checkpoint {
                key_id: "0".repeat(16),
                ..cp.clone()
            },
            Checkpoint {
                chain_id: Some("00".repeat(32)),
                ..cp.clone()
            },
            Checkpoint {
                chain_id: None,
                ..cp.clone()
            },
        ] {
            assert_eq!(
                verify_checkpoint(&changed, &public),
                Err(SignatureProblem::Invalid)
            );
        }
        assert_eq!(
            verify_checkpoint(&cp, &key(2).verifying_key()),
            Err(SignatureProblem::Invalid)
        );
        let mut garbled = cp;
        garbled.signature.pop();
        assert_eq!(
            verify_checkpoint(&garbled, &public),
            Err(SignatureProblem::Malformed)
        );
    }

    /// Pins what is signed, so a verifier written from docs/audit-format.md agrees.
    #[test]
    fn the_signed_checkpoint_text_is_canonical_json() {
        let at: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let text = String::from_utf8(checkpoint_message(7, "h", at, "k", None)).unwrap();
        assert_eq!(
            text,
            r#"{"hash":"h","key_id":"k","sequence":7,"signed_at":"2026-03-01T10:00:00Z"}"#
        );
    }

    #[test]
    fn a_rotation_is_endorsed_by_the_previous_key_only() {
        let old = key(1);
        let new = key(2).verifying_key();
        let endorsed = rotation(&new, Some(key_id(&old.verifying_key())), Some(&old));
        let endorsement = endorsed.endorsement.clone().expect("endorsed");
        assert_eq!(
            verify_endorsement(&endorsed, &endorsement, &old.verifying_key()),
            Ok(())
        );
        assert_eq!(
            verify_endorsement(&endorsed, &endorsement, &new),
            Err(SignatureProblem::Invalid)
        );
        // The old key can only endorse when it is the one being replaced.
        let wrong = rotation(&new, Some("0123456789abcdef".into()), Some(&old));
        assert_eq!(wrong.endorsement, None);
        let first = rotation(&new, None, None);
        assert_eq!(first.previous_key_id, None);
        assert_eq!(first.public_key, hex::encode(new.as_bytes()));
    }

    #[test]
    fn key_files_are_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let created = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(created.to_bytes(), again.to_bytes());
        assert!(create_key_file(&path).is_err(), "never overwritten");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(read_key_file(&path).is_err());
        assert!(parse_public_key("zz").is_err());
        let public = created.verifying_key();
        assert_eq!(
            parse_public_key(&hex::encode(public.as_bytes())),
            Ok(public)
        );
    }
}
