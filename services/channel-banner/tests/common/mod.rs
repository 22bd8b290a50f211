//! Test set-up shared by this crate's integration tests.

use async_nats::jetstream::{self, stream};

/// Creates krisbud's KV buckets as plain streams, the way `create_key_value` would.
///
/// Why: async-nats 0.51's `create_key_value` first asks for the account info and
/// cannot parse nats-server 2.9's answer (it lacks `reserved_memory` and
/// `reserved_storage`), so `krisbud_kit::nats::provision` fails on 2.9.10. Once
/// the buckets exist, provisioning only opens them, which works on 2.9.
pub async fn create_buckets(js: &jetstream::Context) {
    for spec in krisbud_proto::spec::BUCKETS {
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{}", spec.name),
            description: Some(spec.description.to_owned()),
            subjects: vec![format!("$KV.{}.>", spec.name)],
            max_messages_per_subject: spec.history,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            duplicate_window: std::time::Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("cannot create bucket {}: {e}", spec.name));
    }
}
