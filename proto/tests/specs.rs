//! The stream specs keep the guarantees DESIGN.md gives: the append-only streams
//! (events and the audit chain) refuse deletes and purges, and every stream has a
//! duplicate window so a repeated `Nats-Msg-Id` is dropped.

use std::time::Duration;

use krisbud_proto::spec::{self, Retention};

#[test]
fn append_only_streams_deny_delete_and_purge() {
    for stream in [&spec::EVENTS, &spec::AUDIT, &spec::AUDIT_CHECKPOINTS] {
        assert!(stream.deny_delete, "{} denies delete", stream.name);
        assert!(stream.deny_purge, "{} denies purge", stream.name);
        assert_eq!(stream.retention, Retention::Limits, "{}", stream.name);
    }
}

#[test]
fn every_stream_drops_duplicate_message_ids() {
    for stream in spec::STREAMS {
        assert!(
            stream.duplicate_window >= Duration::from_secs(60),
            "{} has a duplicate window of {:?}",
            stream.name,
            stream.duplicate_window
        );
    }
    assert_eq!(spec::DISPATCH.retention, Retention::WorkQueue);
}
