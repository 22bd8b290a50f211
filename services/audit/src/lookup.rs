//! "Was this person notified?": an auditor gives a phone number or an email
//! address; it is normalised as audiences store addresses (E.164, lower-case
//! email), turned into the keyed hash the channels report outcomes under, and the
//! chain is searched for that hash. The lookup itself is appended as a
//! `RecipientLookedUp` event holding the hash, never the address, before the
//! answer goes out: an auditor cannot ask without it being on record.
//!
//! Nothing here logs the address or puts it into an error: problem details are
//! logged by the command loop.

use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
use krisbud_kit::privacy::{self, recipient_ref};
use krisbud_proto::audit::{
    AddressKind, AuditRecord, RecipientDelivery, RecipientLookedUp, RecipientLookup,
    RecipientLookupAnswer,
};
use krisbud_proto::event::DeliveryReported;
use krisbud_proto::{Actor, Envelope, Event, Problem, spec, subject};

use crate::read;

/// An address in the form audiences hold it, with its kind; the error says what
/// is wrong without repeating the address.
pub fn normalise(address: &str) -> Result<(String, AddressKind), &'static str> {
    privacy::normalise_address(address).map(|(address, kind)| {
        let kind = match kind {
            privacy::AddressKind::Phone => AddressKind::Phone,
            privacy::AddressKind::Email => AddressKind::Email,
        };
        (address, kind)
    })
}

/// Answers a lookup and records it. The answer is only sent once the
/// `RecipientLookedUp` event is stored.
pub async fn lookup(
    bus: &Bus,
    key: &[u8],
    actor: Actor,
    request: RecipientLookup,
) -> Result<RecipientLookupAnswer, Problem> {
    if key.is_empty() {
        return Err(Problem::unavailable(
            "mottagaruppslag kräver privacy.recipient_key, som inte är konfigurerad",
        ));
    }
    let (address, kind) =
        normalise(&request.address).map_err(|why| Problem::invalid("address", why))?;
    let crisis = request.crisis.filter(|c| !c.trim().is_empty());
    if crisis.as_deref().is_some_and(|c| !subject::is_token(c)) {
        return Err(Problem::invalid("crisis", "not a crisis id"));
    }
    let recipient = recipient_ref(key, &address);
    let outcomes = find(bus, &recipient, crisis.as_deref())
        .await
        .map_err(|e| crate::unavailable(&e))?;
    let event = Envelope::new(
        actor,
        Event::RecipientLookedUp(RecipientLookedUp {
            recipient: recipient.clone(),
            address_kind: kind,
            crisis_id: crisis,
            outcomes: outcomes.len() as u64,
        }),
    );
    bus.append(&event, Expect::Any).await.map_err(|e| {
        tracing::error!(error = %e, "cannot record a recipient lookup; not answering it");
        Problem::unavailable(
            "uppslaget kan inte registreras i granskningsloggen just nu; försök igen",
        )
    })?;
    tracing::info!(recipient = %recipient, outcomes = outcomes.len(), "recipient looked up");
    Ok(RecipientLookupAnswer {
        recipient,
        address_kind: kind,
        outcomes,
    })
}

/// Every recorded outcome for `recipient`, in chain order.
async fn find(
    bus: &Bus,
    recipient: &str,
    crisis: Option<&str>,
) -> anyhow::Result<Vec<RecipientDelivery>> {
    let last = read::last_sequence(&bus.js, spec::AUDIT.name).await?;
    let messages = read::messages(
        bus.js.clone(),
        spec::AUDIT.name,
        subject::AUDIT_LOG,
        1,
        last,
    );
    futures::pin_mut!(messages);
    let mut found = Vec::new();
    while let Some(item) = messages.next().await {
        let (_, body) = item?;
        // Only records that mention the hash are parsed.
        let Ok(bytes) = body else { continue };
        if !std::str::from_utf8(&bytes).is_ok_and(|text| text.contains(recipient)) {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<AuditRecord>(&bytes) else {
            continue;
        };
        found.extend(outcomes_in(&record, recipient, crisis));
    }
    Ok(found)
}

/// The outcomes for `recipient` in one record.
pub fn outcomes_in(
    record: &AuditRecord,
    recipient: &str,
    crisis: Option<&str>,
) -> Vec<RecipientDelivery> {
    let Ok(envelope) = serde_json::from_value::<Envelope>(record.event.clone()) else {
        return Vec::new();
    };
    let Event::DeliveryReported(DeliveryReported {
        crisis_id,
        channel,
        job_id,
        provider,
        outcomes,
        ..
    }) = envelope.event
    else {
        return Vec::new();
    };
    if crisis.is_some_and(|c| c != crisis_id) {
        return Vec::new();
    }
    outcomes
        .into_iter()
        .filter(|o| o.recipient == recipient)
        .map(|o| RecipientDelivery {
            sequence: record.sequence,
            crisis_id: crisis_id.clone(),
            channel,
            job_id: job_id.clone(),
            provider: provider.clone(),
            state: o.state,
            reason: o.reason,
            occurred_at: envelope.occurred_at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_become_e164() {
        for given in [
            "070-123 45 67",
            "0701234567",
            "+46 70 123 45 67",
            "+46 (0)70-123 45 67",
            "0046701234567",
            " +46701234567 ",
        ] {
            assert_eq!(
                normalise(given),
                Ok(("+46701234567".to_owned(), AddressKind::Phone)),
                "{given}"
            );
        }
        assert_eq!(
            normalise("+4420 7946 0958"),
            Ok(("+442079460958".to_owned(), AddressKind::Phone))
        );
        for bad in [
            "",
            "701234567",
            "07012x4567",
            "+46",
            "+1234567890123456",
            "07+01",
        ] {
            let why = normalise(bad).unwrap_err();
            assert!(!why.contains("701"), "{why}");
        }
    }

    #[test]
    fn email_addresses_become_lower_case() {
        assert_eq!(
            normalise(" Anna.Lind@Example.SE "),
            Ok(("anna.lind@example.se".to_owned(), AddressKind::Email))
        );
        for bad in [
            "@example.se",
            "anna@",
            "anna@example",
            "a b@example.se",
            "a@b@c.se",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }
}
