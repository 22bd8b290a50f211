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
use krisbud_kit::privacy::recipient_ref;
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
    let address = address.trim();
    if address.is_empty() {
        return Err("give a phone number or an email address");
    }
    if address.contains('@') {
        let email = address.to_lowercase();
        let valid = matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@'))
            && !email.chars().any(char::is_whitespace);
        return if valid {
            Ok((email, AddressKind::Email))
        } else {
            Err("the email address is not of the form namn@exempel.se")
        };
    }
    let mut digits = String::with_capacity(address.len());
    for (i, c) in address.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' | '/' | '\u{a0}' => {}
            _ => {
                return Err(
                    "a phone number may hold only digits, spaces, dashes, parentheses and a leading +",
                );
            }
        }
    }
    let international = if let Some(rest) = digits.strip_prefix('+') {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix('0') {
        // A Swedish number in national form: 070-123 45 67.
        format!("46{rest}")
    } else {
        return Err(
            "write the phone number with its leading 0 (070-123 45 67) or with + and the country code",
        );
    };
    // A Swedish number written +46 (0)70 … keeps its trunk 0 by mistake.
    let international = match international.strip_prefix("460") {
        Some(rest) => format!("46{rest}"),
        None => international,
    };
    if !(8..=15).contains(&international.len()) || international.starts_with('0') {
        return Err("the phone number has too few or too many digits");
    }
    Ok((format!("+{international}"), AddressKind::Phone))
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
