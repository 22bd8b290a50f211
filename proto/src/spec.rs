//! Stream and bucket specs: what must exist in JetStream for krisbud to run.
//!
//! These are plain data so the contract does not depend on a NATS client; the kit
//! turns them into JetStream configurations and creates them idempotently.

use std::time::Duration;

use crate::subject;

/// How a stream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Kept until limits are reached.
    Limits,
    /// Removed once acknowledged.
    WorkQueue,
}

/// A JetStream stream krisbud needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub retention: Retention,
    pub deny_delete: bool,
    pub deny_purge: bool,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop duplicates.
    pub duplicate_window: Duration,
    pub description: &'static str,
}

/// A key-value bucket krisbud needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: &'static str,
    /// Revisions kept per key.
    pub history: i64,
    pub description: &'static str,
}

/// Every domain fact, once.
pub const EVENTS: StreamSpec = StreamSpec {
    name: "KRISBUD_EVENTS",
    subjects: &[subject::ALL_EVENTS],
    retention: Retention::Limits,
    deny_delete: true,
    deny_purge: true,
    duplicate_window: Duration::from_secs(600),
    description: "krisbud domain events: crisis, template, delivery, confirmation",
};

/// Delivery jobs for the channel services.
pub const DISPATCH: StreamSpec = StreamSpec {
    name: "KRISBUD_DISPATCH",
    subjects: &[subject::ALL_DISPATCH],
    retention: Retention::WorkQueue,
    deny_delete: false,
    deny_purge: false,
    duplicate_window: Duration::from_secs(600),
    description: "krisbud dispatch jobs, removed when a channel acknowledges them",
};

/// The hash chain.
pub const AUDIT: StreamSpec = StreamSpec {
    name: "KRISBUD_AUDIT",
    subjects: &[subject::AUDIT_LOG],
    retention: Retention::Limits,
    deny_delete: true,
    deny_purge: true,
    duplicate_window: Duration::from_secs(600),
    description: "krisbud audit hash chain; append-only",
};

/// The audit chain's signed checkpoints: a stream of their own, so the chain's
/// record sequences stay equal to KRISBUD_AUDIT's stream sequences.
pub const AUDIT_CHECKPOINTS: StreamSpec = StreamSpec {
    name: "KRISBUD_AUDIT_CHECKPOINTS",
    subjects: &[subject::AUDIT_CHECKPOINTS],
    retention: Retention::Limits,
    deny_delete: true,
    deny_purge: true,
    duplicate_window: Duration::from_secs(600),
    description: "krisbud audit checkpoints signed with Ed25519; append-only",
};

/// The crisis status read model, one key per crisis.
pub const CRISES: BucketSpec = BucketSpec {
    name: "KRISBUD_CRISES",
    history: 1,
    description: "crisis status read model",
};

/// Active banners, one key per crisis.
pub const BANNERS: BucketSpec = BucketSpec {
    name: "KRISBUD_BANNERS",
    history: 1,
    description: "banners shown on the public site",
};

/// Audiences: one key per audience with its name, marks and member counts.
pub const AUDIENCES: BucketSpec = BucketSpec {
    name: "KRISBUD_AUDIENCES",
    history: 1,
    description: "audiences: names, exercise marks, member counts and current generation",
};

/// Audience members in chunks of JSON lines, `<audience>.<generation>.<chunk>`.
pub const AUDIENCE_MEMBERS: BucketSpec = BucketSpec {
    name: "KRISBUD_AUDIENCE_MEMBERS",
    history: 1,
    description: "audience members (personal data) in chunks per import generation",
};

/// The template read model: one key per template (`<id>`, its versions' lifecycle)
/// and one per version (`<id>.<version>`, its wording).
pub const TEMPLATES: BucketSpec = BucketSpec {
    name: "KRISBUD_TEMPLATES",
    history: 1,
    description: "template read model: versions, states and wording",
};

/// Send claims of the channels: one key per batch of a dispatch job
/// (`<job>.b<n>`), created before the provider is called and holding the batch's
/// outcomes after, so a crash re-sends only the batches that were in flight.
pub const SEND_CLAIMS: BucketSpec = BucketSpec {
    name: "KRISBUD_SEND_CLAIMS",
    history: 1,
    description: "send claims: batches handed to a provider, and their outcomes",
};

/// Every stream.
pub const STREAMS: [&StreamSpec; 4] = [&EVENTS, &DISPATCH, &AUDIT, &AUDIT_CHECKPOINTS];
/// Every bucket.
pub const BUCKETS: [&BucketSpec; 6] = [
    &CRISES,
    &BANNERS,
    &AUDIENCES,
    &AUDIENCE_MEMBERS,
    &TEMPLATES,
    &SEND_CLAIMS,
];
