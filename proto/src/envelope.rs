//! The envelope every event travels in.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::Event;
use crate::model::Role;

/// Who caused something: a person with their roles, or a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    /// The user name (for people) or `service:<name>` (for services).
    pub user: String,
    /// The roles the actor held when acting.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The channels an operator is assigned to confirm; every channel when empty
    /// (and left out of the JSON, so records from before read the same).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<crate::Channel>,
}

impl Actor {
    /// A krisbud service acting on its own behalf.
    pub fn service(name: &str) -> Actor {
        Actor {
            user: format!("service:{name}"),
            roles: vec![Role::System],
            channels: Vec::new(),
        }
    }

    /// Whether the actor holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// An event with the metadata every event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Unique id of this event; also its `Nats-Msg-Id`.
    pub id: String,
    /// Version of the JSON shape, see [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// The crisis this event belongs to, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis_id: Option<String>,
    /// The id of the message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The id shared by everything that one request set off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event itself: `kind` and `payload`.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// A new envelope with a fresh id, stamped now.
    /// Reads an event that arrived on `subject`, refusing one whose kind does not
    /// belong there: NATS lets each service publish only on its own subjects, so
    /// an event on the wrong one (a confirmation on a channel's delivery subject)
    /// did not come from the service that owns it.
    pub fn read_on(subject: &str, payload: &[u8]) -> Result<Envelope, String> {
        let envelope: Envelope =
            serde_json::from_slice(payload).map_err(|e| format!("not an event: {e}"))?;
        let own = envelope.event.subject();
        if own != subject {
            return Err(format!(
                "a {} belongs on {own}, not on {subject}",
                envelope.event.kind()
            ));
        }
        Ok(envelope)
    }

    pub fn new(actor: Actor, event: Event) -> Envelope {
        Envelope::with_id(Uuid::now_v7().to_string(), actor, event)
    }

    /// A new envelope with a deterministic id, so a retried publish is dropped by
    /// JetStream's duplicate window.
    pub fn with_id(id: String, actor: Actor, event: Event) -> Envelope {
        Envelope {
            id,
            schema_version: crate::SCHEMA_VERSION,
            occurred_at: Utc::now(),
            actor,
            crisis_id: event.crisis_id().map(str::to_owned),
            causation_id: None,
            correlation_id: None,
            event,
        }
    }

    /// The subject this event is appended to.
    pub fn subject(&self) -> String {
        self.event.subject()
    }
}
