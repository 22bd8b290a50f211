//! Who may publish and subscribe to what on NATS: one user per service, each with
//! exactly the subjects its work needs, and a provisioning user that creates the
//! streams and buckets. This is the one source of the model: `krisbud up`
//! generates its nats-server's configuration from it, and so does
//! `deploy/nats/accounts.conf` (`krisbud nats accounts`, checked by a test).
//!
//! Plain data, like [`crate::spec`]: the kit renders it for nats-server.

use crate::model::Channel;
use crate::spec::{self, BucketSpec, StreamSpec};
use crate::subject;

/// The user that creates streams, buckets and nothing else at run time.
pub const PROVISION_USER: &str = "provision";

/// Every service that connects to NATS, by its user name.
pub const SERVICES: [&str; 7] = [
    "gateway",
    "coordinator",
    "channel-sms",
    "channel-email",
    "channel-banner",
    "channel-intranet",
    "audit",
];

/// The durable consumers, named once. A service may create, read and pull only
/// its own.
pub mod durable {
    pub const PLANNER: &str = "coordinator-planner";
    pub const ESCALATION: &str = "coordinator-escalation";
    pub const TEMPLATES: &str = "coordinator-templates";
    pub const STATUS: &str = "coordinator-status";
    pub const BANNER_CLOSE: &str = "channel-banner-close";
}

/// A durable pull consumer. The provisioning user creates every one of them
/// (`krisbud up` at start, `krisbud nats provision` in a deployment); a service
/// only binds to its own and may not create, change or delete any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    pub stream: &'static str,
    pub name: String,
    pub filter: String,
    /// Messages handed out but not yet acknowledged, across all instances.
    pub max_ack_pending: i64,
    /// How long a message may stay unacknowledged (progress acks extend it).
    pub ack_wait_secs: u64,
}

/// Every durable consumer of krisbud, with its configuration: the one source
/// both provisioning and the services read.
pub fn durables() -> Vec<Durable> {
    let durable = |stream: &'static str, name: &str, filter: &str| Durable {
        stream,
        name: name.to_owned(),
        filter: filter.to_owned(),
        max_ack_pending: 1_000,
        ack_wait_secs: 30,
    };
    let mut out = vec![
        durable(
            spec::EVENTS.name,
            durable::PLANNER,
            subject::ALL_CRISIS_EVENTS,
        ),
        durable(
            spec::EVENTS.name,
            durable::ESCALATION,
            subject::ALL_CRISIS_EVENTS,
        ),
        durable(
            spec::EVENTS.name,
            durable::TEMPLATES,
            subject::ALL_TEMPLATE_EVENTS,
        ),
        durable(spec::EVENTS.name, durable::STATUS, subject::ALL_EVENTS),
        durable(
            spec::EVENTS.name,
            durable::BANNER_CLOSE,
            subject::ALL_CRISIS_EVENTS,
        ),
    ];
    for channel in Channel::ALL {
        out.push(durable(
            spec::DISPATCH.name,
            &format!("channel-{channel}"),
            &subject::dispatch_filter(channel),
        ));
    }
    out
}

/// The durable consumer named `name`, if krisbud has one.
pub fn durable_named(name: &str) -> Option<Durable> {
    durables().into_iter().find(|d| d.name == name)
}

/// What one NATS user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub user: String,
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    /// Whether the user may answer requests it received (reply subjects it does
    /// not otherwise hold), once each: commands are answered this way.
    pub allow_responses: bool,
}

/// The inbox prefix of a user: replies to its requests and the messages of its
/// ordered consumers arrive only there, and no other user may read them.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{}", user.replace('-', "_"))
}

/// The streams whose deletion, purge or reconfiguration no user may ever ask for.
pub const PROTECTED_STREAMS: [&StreamSpec; 3] =
    [&spec::EVENTS, &spec::AUDIT, &spec::AUDIT_CHECKPOINTS];

/// The permissions of `user`, or `None` for a name that is no krisbud user.
pub fn permissions(user: &str) -> Option<Permissions> {
    let mut p = Builder::new(user);
    match user {
        PROVISION_USER => {
            p.publish("$JS.API.>");
            for stream in PROTECTED_STREAMS {
                for action in ["DELETE", "PURGE", "UPDATE"] {
                    p.deny(format!("$JS.API.STREAM.{action}.{}", stream.name));
                }
            }
            // No message is ever taken out of a stream by hand.
            p.deny("$JS.API.STREAM.MSG.DELETE.>");
            for bucket in spec::BUCKETS {
                p.deny(format!("$JS.API.STREAM.DELETE.KV_{}", bucket.name));
            }
        }
        "gateway" => {
            p.publish("krisbud.cmd.>");
            p.read_bucket(&spec::CRISES);
        }
        "coordinator" => {
            for s in [
                subject::ALL_CRISIS_EVENTS,
                subject::ALL_TEMPLATE_EVENTS,
                subject::ALL_AUDIENCE_EVENTS,
                subject::EXERCISE_GUARD_EVENTS,
                subject::ALL_DISPATCH,
            ] {
                p.publish(s);
            }
            p.publish(subject::command_guard_events(user));
            for c in ["crisis", "template", "audience"] {
                p.subscribe(format!("krisbud.cmd.{c}.>"));
            }
            p.read_stream(&spec::EVENTS);
            // The janitor of the dispatch queue (coordinator::janitor): it reads
            // each channel consumer's acknowledgement floor and removes the jobs
            // below it that a crashed server left behind. No other stream.
            p.publish(format!("$JS.API.STREAM.INFO.{}", spec::DISPATCH.name));
            p.publish(format!("$JS.API.STREAM.MSG.GET.{}", spec::DISPATCH.name));
            p.publish(format!("$JS.API.STREAM.MSG.DELETE.{}", spec::DISPATCH.name));
            for channel in Channel::ALL {
                p.publish(format!(
                    "$JS.API.CONSUMER.INFO.{}.channel-{channel}",
                    spec::DISPATCH.name
                ));
            }
            for d in [
                durable::PLANNER,
                durable::ESCALATION,
                durable::TEMPLATES,
                durable::STATUS,
            ] {
                p.durable(&spec::EVENTS, d);
            }
            for b in [
                &spec::CRISES,
                &spec::TEMPLATES,
                &spec::AUDIENCES,
                &spec::AUDIENCE_MEMBERS,
            ] {
                p.write_bucket(b);
            }
        }
        "audit" => {
            for s in [
                subject::AUDIT_LOG,
                subject::AUDIT_CHECKPOINTS,
                subject::AUDIT_KEY_EVENTS,
                subject::AUDIT_LOOKUP_EVENTS,
                subject::AUDIT_SESSION_EVENTS,
            ] {
                p.publish(s);
            }
            p.publish(subject::command_guard_events(user));
            p.subscribe("krisbud.cmd.audit.>");
            for s in [&spec::EVENTS, &spec::AUDIT, &spec::AUDIT_CHECKPOINTS] {
                p.read_stream(s);
            }
        }
        _ => {
            let channel = channel_of(user)?;
            p.publish(format!("krisbud.evt.delivery.{channel}.>"));
            // A channel records the exercise jobs it refuses.
            p.publish(subject::EXERCISE_GUARD_EVENTS);
            p.durable(&spec::DISPATCH, user);
            p.read_bucket(&spec::AUDIENCES);
            if channel == Channel::Sms {
                // Batches handed to a provider, so a crash re-sends only those.
                p.write_bucket(&spec::SEND_CLAIMS);
            }
            if channel == Channel::Banner {
                p.write_bucket(&spec::BANNERS);
                p.durable(&spec::EVENTS, durable::BANNER_CLOSE);
            }
        }
    }
    Some(p.done())
}

/// The channel a `channel-<name>` user delivers.
pub fn channel_of(user: &str) -> Option<Channel> {
    let name = user.strip_prefix("channel-")?;
    Channel::ALL.into_iter().find(|c| c.as_str() == name)
}

struct Builder(Permissions);

impl Builder {
    fn new(user: &str) -> Builder {
        Builder(Permissions {
            user: user.to_owned(),
            // Its own inbox, so a message to itself can prove the server has
            // processed everything it sent before (`krisbud_kit::nats::round_trip`).
            publish_allow: vec![format!("{}.>", inbox_prefix(user))],
            publish_deny: Vec::new(),
            // Replies and ordered-consumer messages, on the user's own prefix.
            subscribe_allow: vec![format!("{}.>", inbox_prefix(user))],
            allow_responses: user != PROVISION_USER,
        })
    }

    fn publish(&mut self, subject: impl Into<String>) {
        self.0.publish_allow.push(subject.into());
    }

    fn deny(&mut self, subject: impl Into<String>) {
        self.0.publish_deny.push(subject.into());
    }

    fn subscribe(&mut self, subject: impl Into<String>) {
        self.0.subscribe_allow.push(subject.into());
    }

    /// Reads a stream: its info, single messages, and ordered consumers of its
    /// own (ephemeral, delivered to the user's inbox).
    fn read_stream(&mut self, stream: &StreamSpec) {
        self.read_stream_named(stream.name);
    }

    fn read_stream_named(&mut self, name: &str) {
        for api in [
            format!("STREAM.INFO.{name}"),
            format!("STREAM.MSG.GET.{name}"),
            format!("DIRECT.GET.{name}"),
            format!("DIRECT.GET.{name}.>"),
            // Without a consumer name this creates only an ephemeral consumer:
            // nats-server refuses a durable name on this subject.
            format!("CONSUMER.CREATE.{name}"),
        ] {
            self.publish(format!("$JS.API.{api}"));
        }
        // Flow control answers of the ordered consumers.
        let fc = format!("$JS.FC.{name}.>");
        if !self.0.publish_allow.contains(&fc) {
            self.publish(fc);
        }
    }

    /// Uses the durable pull consumer `name` on `stream` that provisioning made:
    /// reads its info, pulls and acknowledges, and nothing of any other consumer.
    /// It may not create, change or delete it.
    fn durable(&mut self, stream: &StreamSpec, name: &str) {
        let s = stream.name;
        let info = format!("$JS.API.STREAM.INFO.{s}");
        if !self.0.publish_allow.contains(&info) {
            self.publish(info);
        }
        for api in [
            format!("CONSUMER.INFO.{s}.{name}"),
            format!("CONSUMER.MSG.NEXT.{s}.{name}"),
        ] {
            self.publish(format!("$JS.API.{api}"));
        }
        self.publish(format!("$JS.ACK.{s}.{name}.>"));
    }

    fn read_bucket(&mut self, bucket: &BucketSpec) {
        self.read_stream_named(&format!("KV_{}", bucket.name));
    }

    fn write_bucket(&mut self, bucket: &BucketSpec) {
        self.read_bucket(bucket);
        self.publish(format!("$KV.{}.>", bucket.name));
    }

    fn done(self) -> Permissions {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_a_user_and_no_other_name_does() {
        for user in SERVICES {
            assert!(permissions(user).is_some(), "{user}");
        }
        assert!(permissions(PROVISION_USER).is_some());
        assert!(permissions("mallory").is_none());
        assert!(permissions("channel-fax").is_none());
    }

    #[test]
    fn no_service_may_touch_streams_or_another_service_s_subjects() {
        for user in SERVICES {
            let p = permissions(user).unwrap();
            for s in &p.publish_allow {
                assert!(!s.contains("STREAM.DELETE"), "{user}: {s}");
                assert!(!s.contains("STREAM.PURGE"), "{user}: {s}");
                assert!(!s.contains("STREAM.CREATE"), "{user}: {s}");
                assert!(!s.contains("STREAM.UPDATE"), "{user}: {s}");
                // Only the coordinator, only jobs of the dispatch queue.
                let janitor = user == "coordinator"
                    && s == &format!("$JS.API.STREAM.MSG.DELETE.{}", spec::DISPATCH.name);
                assert!(!s.contains("MSG.DELETE") || janitor, "{user}: {s}");
                assert_ne!(s, "$JS.API.>", "{user}");
                assert_ne!(s, ">", "{user}");
            }
            let commands = p.publish_allow.iter().any(|s| s.starts_with("krisbud.cmd"));
            assert_eq!(commands, user == "gateway", "{user} publishes commands");
        }
    }
}
