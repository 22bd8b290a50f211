//! Writing banners to the `KRISBUD_BANNERS` bucket so that a later revision
//! replaces an earlier one and an older revision never overwrites a newer one,
//! however many instances write at once.
//!
//! Taking a banner down (a cancellation, a close, a cleared all-clear) writes a
//! [`Withdrawn`] marker in its place rather than deleting the key, so a late or
//! redelivered job of an earlier revision cannot bring the banner back. A
//! withdrawal at revision n outranks the banner of revision n.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use krisbud_proto::publish::PublicBanner;
use serde::{Deserialize, Serialize};

/// How often a write is retried when another instance wrote the same key between
/// our read and our write.
const MAX_RACES: usize = 10;

/// What storing a banner did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The banner is now the key's value.
    Written,
    /// The same revision was already stored (a redelivered job); nothing changed.
    AlreadyThere,
    /// A newer revision is stored; it stays.
    Superseded {
        /// The revision that is shown instead.
        shown: u32,
    },
}

/// Why storing failed; every cause is worth a retry later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

/// The bucket key of one crisis's banner in one language: `<crisis_id>.<language>`.
pub fn key(crisis_id: &str, language: &str) -> String {
    format!("{crisis_id}.{language}")
}

/// Whether `key` is a valid KV key (the rule of the NATS KV specification:
/// `[-/_=.a-zA-Z0-9]+`, not starting or ending with a dot).
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

/// What stands in the bucket where a banner was taken down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub crisis_id: String,
    pub language: String,
    /// The revision up to which banners stay down.
    pub revision: u32,
    pub withdrawn_at: DateTime<Utc>,
    /// Why: `cancelled`, `closed` or `cleared`.
    pub withdrawn: String,
}

/// A value of the bucket: a banner, or the marker of one taken down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Withdrawn(Withdrawn),
    Banner(PublicBanner),
}

impl Value {
    /// Order of precedence: revision, then a withdrawal over a banner.
    fn rank(&self) -> (u32, u8) {
        match self {
            Value::Banner(b) => (b.revision, 0),
            Value::Withdrawn(w) => (w.revision, 1),
        }
    }

    /// Reads a bucket value.
    pub fn parse(bytes: &[u8]) -> serde_json::Result<Value> {
        serde_json::from_slice(bytes)
    }
}

/// Stores `banner` unless the bucket holds the same or a newer revision. Writes
/// are compare-and-set on the key's revision, so a concurrent writer makes us read
/// again instead of overwriting blindly.
pub async fn store(kv: &kv::Store, banner: &PublicBanner) -> Result<Stored, StoreError> {
    put(kv, &Value::Banner(banner.clone())).await
}

/// Takes the banner of `crisis_id` in `language` down up to `revision`.
pub async fn withdraw(
    kv: &kv::Store,
    crisis_id: &str,
    language: &str,
    revision: u32,
    why: &str,
) -> Result<Stored, StoreError> {
    put(
        kv,
        &Value::Withdrawn(Withdrawn {
            crisis_id: crisis_id.to_owned(),
            language: language.to_owned(),
            revision,
            withdrawn_at: Utc::now(),
            withdrawn: why.to_owned(),
        }),
    )
    .await
}

/// Writes `new` unless the key holds a value of the same or higher rank.
async fn put(kv: &kv::Store, new: &Value) -> Result<Stored, StoreError> {
    let (crisis_id, language) = match new {
        Value::Banner(b) => (&b.crisis_id, &b.language),
        Value::Withdrawn(w) => (&w.crisis_id, &w.language),
    };
    let key = key(crisis_id, language);
    #[allow(clippy::expect_used, reason = "a banner is strings and times only")]
    let value: bytes::Bytes = serde_json::to_vec(new).expect("a banner serializes").into();
    for _ in 0..MAX_RACES {
        let current = kv
            .entry(key.as_str())
            .await
            .map_err(|e| StoreError(format!("cannot read banner {key}: {e}")))?;
        let written = match current {
            Some(entry) if entry.operation == Operation::Put => {
                match Value::parse(&entry.value) {
                    Ok(existing) if existing.rank() > new.rank() => {
                        return Ok(Stored::Superseded {
                            shown: existing.rank().0,
                        });
                    }
                    Ok(existing) if existing.rank() == new.rank() => {
                        return Ok(Stored::AlreadyThere);
                    }
                    // An older revision, or a value nobody can read: replace it.
                    _ => match kv.update(key.as_str(), value.clone(), entry.revision).await {
                        Ok(_) => true,
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => false,
                        Err(e) => {
                            return Err(StoreError(format!("cannot write banner {key}: {e}")));
                        }
                    },
                }
            }
            // Missing, deleted or purged: only create if still so.
            _ => match kv.create(key.as_str(), value.clone()).await {
                Ok(_) => true,
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                Err(e) => return Err(StoreError(format!("cannot write banner {key}: {e}"))),
            },
        };
        if written {
            return Ok(Stored::Written);
        }
    }
    Err(StoreError(format!(
        "banner {key} kept changing under {MAX_RACES} attempts to write it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_kv_rules() {
        assert!(is_valid_key(&key("vattenlacka-2026", "sv")));
        assert!(is_valid_key(&key("c1", "sv-x-lattlast")));
        assert!(!is_valid_key(&key("c1", "")));
        assert!(!is_valid_key(&key("c1", "sv se")));
        assert!(!is_valid_key(&key("c1", "sv*")));
    }
}
