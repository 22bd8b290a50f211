//! The signing key's place in the chain: at start-up the audit service makes sure
//! the key it signs with is the one the chain last registered, appending an
//! `AuditKeyRotated` event (endorsed by the previous key when that key is at hand)
//! when it is not. The event goes to KRISBUD_EVENTS like every other and so gets
//! its record: the chain itself says which key signs from which record on.

use anyhow::Context as _;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::{AppendError, Expect};
use krisbud_proto::audit::{AuditKeyRotated, AuditPublicKey};
use krisbud_proto::{Actor, Envelope, Event, spec, subject};

use crate::{read, signing};

/// The last registered key: its rotation event and that event's sequence in
/// KRISBUD_EVENTS.
#[derive(Debug, Clone)]
pub struct Registered {
    pub rotation: AuditKeyRotated,
    pub event_sequence: u64,
}

/// The key the chain registered last, if any.
pub async fn last_registered(bus: &Bus) -> anyhow::Result<Option<Registered>> {
    let stream = bus
        .js
        .get_stream(spec::EVENTS.name)
        .await
        .with_context(|| format!("stream {} is missing", spec::EVENTS.name))?;
    match stream
        .get_last_raw_message_by_subject(subject::AUDIT_KEY_EVENTS)
        .await
    {
        Ok(message) => {
            let envelope: Envelope = serde_json::from_slice(&message.payload)
                .with_context(|| format!("event {} is not a key rotation", message.sequence))?;
            let Event::AuditKeyRotated(rotation) = envelope.event else {
                anyhow::bail!(
                    "event {} on {} is a {}",
                    message.sequence,
                    subject::AUDIT_KEY_EVENTS,
                    envelope.event.kind()
                );
            };
            Ok(Some(Registered {
                rotation,
                event_sequence: message.sequence,
            }))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read the audit key events: {e}")),
    }
}

/// Registers `key` unless the chain's last registered key is already it. Two
/// instances starting with the same key register it once: the event id is
/// derived from the key and its predecessor, and the append expects the subject
/// as it was read.
pub async fn register(
    bus: &Bus,
    key: &SigningKey,
    previous: Option<&SigningKey>,
) -> anyhow::Result<()> {
    let public = key.verifying_key();
    let id = signing::key_id(&public);
    for _ in 0..10 {
        let last = last_registered(bus).await?;
        if last.as_ref().is_some_and(|l| l.rotation.key_id == id) {
            tracing::info!(key_id = %id, "audit signing key is registered in the chain");
            return Ok(());
        }
        let previous_id = last.as_ref().map(|l| l.rotation.key_id.clone());
        let rotation = signing::rotation(&public, previous_id.clone(), previous);
        if previous_id.is_some() && rotation.endorsement.is_none() {
            tracing::warn!(
                key_id = %id,
                previous = previous_id.as_deref().unwrap_or_default(),
                "the audit signing key changes without an endorsement by the previous key \
                 (set audit.previous_signing_key_file to the old key to endorse it)"
            );
        }
        let after = last.as_ref().map_or(0, |l| l.event_sequence);
        let envelope = Envelope::with_id(
            format!("audit-key-{id}-after-{after}"),
            Actor::service("audit"),
            Event::AuditKeyRotated(rotation),
        );
        match bus
            .append(&envelope, Expect::LastSubjectSequence(after))
            .await
        {
            Ok(sequence) => {
                tracing::info!(key_id = %id, event_sequence = sequence, "audit signing key registered in the chain");
                return Ok(());
            }
            Err(AppendError::Conflict { .. }) => continue,
            Err(e) => return Err(e).context("cannot register the audit signing key"),
        }
    }
    anyhow::bail!("the audit key events kept changing while registering key {id}")
}

/// Every registered key, oldest first, with when it was registered.
pub async fn history(bus: &Bus) -> anyhow::Result<Vec<AuditPublicKey>> {
    let last = read::last_sequence(&bus.js, spec::EVENTS.name).await?;
    let messages = read::messages(
        bus.js.clone(),
        spec::EVENTS.name,
        subject::AUDIT_KEY_EVENTS,
        1,
        last,
    );
    futures::pin_mut!(messages);
    let mut keys = Vec::new();
    while let Some(item) = messages.next().await {
        let (sequence, body) = item?;
        let envelope = body
            .ok()
            .and_then(|b| serde_json::from_slice::<Envelope>(&b).ok());
        match envelope {
            Some(Envelope {
                occurred_at,
                event: Event::AuditKeyRotated(r),
                ..
            }) => keys.push(AuditPublicKey {
                key_id: r.key_id,
                algorithm: r.algorithm,
                public_key: r.public_key,
                since: Some(occurred_at),
            }),
            _ => tracing::warn!(
                sequence,
                "unreadable audit key event left out of the key history"
            ),
        }
    }
    Ok(keys)
}
