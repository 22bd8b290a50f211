//! Connecting to NATS and provisioning JetStream streams and buckets.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use krisbud_proto::access;
use krisbud_proto::spec::{BucketSpec, Retention, StreamSpec};

use crate::config::NatsCredentials;
use tokio_util::sync::CancellationToken;

/// Connects to `url` as `credentials` (anonymously when `None`), retrying the
/// initial connect with backoff until it succeeds or `shutdown` is cancelled. Once
/// connected, the client reconnects by itself. Replies come to the user's own
/// inbox prefix (`krisbud_proto::access::inbox_prefix`), the only inbox it may
/// read. A refused login is not retried: a wrong password does not heal.
pub async fn connect(
    url: &str,
    name: &str,
    credentials: Option<&NatsCredentials>,
    shutdown: &CancellationToken,
) -> anyhow::Result<async_nats::Client> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    let user = credentials.map_or("", |c| c.user.as_str());
    loop {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(|event| async move {
                // Permission violations and the like: what a forged or
                // misconfigured publish looks like from inside.
                if let async_nats::Event::ServerError(e) = event {
                    tracing::warn!(error = %e, "nats server error");
                }
            });
        if let Some(c) = credentials {
            options = options
                .user_and_password(c.user.clone(), c.password.expose().to_owned())
                .custom_inbox_prefix(access::inbox_prefix(&c.user));
        }
        let client = options.connect(url).await;
        match client {
            Ok(client) => {
                match tokio::time::timeout(Duration::from_secs(2), client.flush()).await {
                    Ok(Ok(())) => {
                        tracing::info!(url = %redact(url), user, attempt, "connected to nats");
                        return Ok(client);
                    }
                    _ => {
                        tracing::warn!(url = %redact(url), user, attempt, "nats not reachable yet; retrying");
                        drop(client);
                    }
                }
            }
            Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                anyhow::bail!(
                    "nats at {} refused user `{user}`: check its password and the server's users",
                    redact(url)
                );
            }
            Err(e) => {
                tracing::warn!(url = %redact(url), user, attempt, error = %e, "cannot connect to nats; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down before nats at {} was reachable", redact(url)),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// Waits until the server has processed everything `client` sent before, such as
/// its subscriptions: a message to the client's own inbox comes back only after
/// them, for a server handles one connection's messages in order. (`flush` only
/// empties the client's buffer.)
pub async fn round_trip(client: &async_nats::Client) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .map_err(|_| anyhow::anyhow!("nats did not answer a round trip within 10 s"))?
        .ok_or_else(|| anyhow::anyhow!("the connection closed during a round trip"))?;
    let _ = echo.unsubscribe().await;
    Ok(())
}

/// `url` without any `user:password@` in it, fit for a log line.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***@{}", &part[..scheme + 3], &part[at + 1..])
            }
            (None, Some(at)) => format!("***@{}", &part[at + 1..]),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The JetStream configuration of a stream spec.
pub fn stream_config(spec: &StreamSpec) -> stream::Config {
    stream::Config {
        name: spec.name.to_owned(),
        description: Some(spec.description.to_owned()),
        subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
        retention: match spec.retention {
            Retention::Limits => stream::RetentionPolicy::Limits,
            Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
        },
        storage: stream::StorageType::File,
        deny_delete: spec.deny_delete,
        deny_purge: spec.deny_purge,
        duplicate_window: spec.duplicate_window,
        ..Default::default()
    }
}

/// Creates the streams and buckets that do not exist yet; existing ones are left
/// as they are, so every service can call this at start-up.
pub async fn provision(
    js: &jetstream::Context,
    streams: &[&StreamSpec],
    buckets: &[&BucketSpec],
) -> anyhow::Result<()> {
    for spec in streams {
        js.get_or_create_stream(stream_config(spec))
            .await
            .with_context(|| format!("cannot create stream {}", spec.name))?;
    }
    for spec in buckets {
        // The bucket's stream is created directly: async-nats' `create_key_value`
        // first asks `$JS.API.INFO` for fields nats-server 2.9 does not send.
        js.get_or_create_stream(bucket_stream_config(spec))
            .await
            .with_context(|| format!("cannot create bucket {}", spec.name))?;
    }
    Ok(())
}

/// Provisions everything krisbud needs on the server: every stream, bucket and
/// durable consumer (`krisbud_proto::access::durables`). Only the provisioning
/// user may; `krisbud up` runs it at start and a deployment as its own step.
pub async fn provision_all(js: &jetstream::Context) -> anyhow::Result<()> {
    provision(
        js,
        &krisbud_proto::spec::STREAMS,
        &krisbud_proto::spec::BUCKETS,
    )
    .await?;
    for durable in krisbud_proto::access::durables() {
        let spec = crate::consumer::ConsumerSpec::of(durable);
        let stream = js
            .get_stream_no_info(spec.stream)
            .await
            .with_context(|| format!("stream {} is missing", spec.stream))?;
        stream
            .get_or_create_consumer::<jetstream::consumer::pull::Config>(
                &spec.durable,
                crate::consumer::pull_config(&spec),
            )
            .await
            .with_context(|| format!("cannot create consumer {}", spec.durable))?;
    }
    Ok(())
}

/// The stream behind a key-value bucket, as `nats kv add` would create it.
pub fn bucket_stream_config(spec: &BucketSpec) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", spec.name),
        description: Some(spec.description.to_owned()),
        subjects: vec![format!("$KV.{}.>", spec.name)],
        max_messages_per_subject: spec.history,
        max_age: Duration::ZERO,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_logged_without_passwords() {
        assert_eq!(super::redact("nats://a:pw@h:4222"), "nats://***@h:4222");
        assert_eq!(
            super::redact("nats://h1:4222,nats://u:p@h2:4222"),
            "nats://h1:4222,nats://***@h2:4222"
        );
        assert_eq!(super::redact("nats://h:4222"), "nats://h:4222");
    }
}
