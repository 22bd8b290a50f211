//! The in-memory copy of the `KRISBUD_BANNERS` bucket, kept current by a KV watch,
//! and the rendering of the public list (active banners, sorted, their text
//! HTML-escaped, with an ETag).

use krisbud_kit::text::escape_html;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use krisbud_kit::CancellationToken;
use krisbud_proto::model::Severity;
use krisbud_proto::publish::PublicBanner;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Every stored banner by key, expired ones included (expiry depends on when one
/// asks).
pub type Snapshot = Arc<BTreeMap<String, PublicBanner>>;

/// Readers' handle on the live copy of the bucket.
#[derive(Clone)]
pub struct Banners {
    rx: watch::Receiver<Snapshot>,
}

/// The watch task and the signal that the first complete copy is loaded.
pub struct Loading {
    /// Fires once the whole bucket has been read.
    pub ready: oneshot::Receiver<()>,
    /// Ends after shutdown.
    pub task: JoinHandle<()>,
}

/// The public list as served: body, ETag, and when it changes by itself next.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// JSON array of the active banners.
    pub body: Bytes,
    /// Strong ETag (quoted), a hash of `body`.
    pub etag: String,
    /// The earliest `expires_at` of the banners shown, when one has one.
    pub next_expiry: Option<DateTime<Utc>>,
}

impl Banners {
    /// Starts watching `kv` until `shutdown`.
    pub fn watch(kv: kv::Store, shutdown: CancellationToken) -> (Banners, Loading) {
        let (tx, rx) = watch::channel(Snapshot::default());
        let (ready_tx, ready) = oneshot::channel();
        let task = tokio::spawn(keep_current(kv, tx, ready_tx, shutdown));
        (Banners { rx }, Loading { ready, task })
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }

    /// The current snapshot.
    pub fn current(&self) -> Snapshot {
        self.rx.borrow().clone()
    }
}

/// Watches the whole bucket, re-watching after an error. Each watch session
/// builds a fresh map from the bucket's current values, so a deletion missed while
/// disconnected cannot leave a stale banner behind.
async fn keep_current(
    kv: kv::Store,
    tx: watch::Sender<Snapshot>,
    ready: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut ready = Some(ready);
    while !shutdown.is_cancelled() {
        match kv.watch_with_history(">").await {
            Ok(mut entries) => {
                let mut map = BTreeMap::new();
                // An empty bucket yields no entry to say "caught up"; its message
                // count tells. A value written after the watch started still arrives.
                let mut current = match kv.status().await {
                    Ok(status) => status.values() == 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the banner bucket status");
                        false
                    }
                };
                if current {
                    publish(&tx, &map, &mut ready);
                }
                loop {
                    let entry = tokio::select! {
                        () = shutdown.cancelled() => return,
                        entry = entries.next() => entry,
                    };
                    match entry {
                        Some(Ok(entry)) => {
                            current |= entry.seen_current;
                            apply(&mut map, &entry);
                            if current {
                                publish(&tx, &map, &mut ready);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "banner watch failed; watching again");
                            break;
                        }
                        None => {
                            tracing::warn!("banner watch ended; watching again");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the banner bucket; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn apply(map: &mut BTreeMap<String, PublicBanner>, entry: &kv::Entry) {
    match entry.operation {
        Operation::Put => match crate::store::Value::parse(&entry.value) {
            Ok(crate::store::Value::Banner(banner)) => {
                map.insert(entry.key.clone(), banner);
            }
            Ok(crate::store::Value::Withdrawn(_)) => {
                map.remove(&entry.key);
            }
            Err(e) => {
                tracing::warn!(key = %entry.key, error = %e, "unreadable banner in the bucket; not shown");
                map.remove(&entry.key);
            }
        },
        Operation::Delete | Operation::Purge => {
            map.remove(&entry.key);
        }
    }
}

fn publish(
    tx: &watch::Sender<Snapshot>,
    map: &BTreeMap<String, PublicBanner>,
    ready: &mut Option<oneshot::Sender<()>>,
) {
    tx.send_replace(Arc::new(map.clone()));
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
}

/// The public list at `now`: banners not expired, in `language` when given, most
/// severe first, then newest first; crisis and language break ties so the body
/// (and so its ETag) is the same on every instance.
pub fn render(
    snapshot: &BTreeMap<String, PublicBanner>,
    now: DateTime<Utc>,
    language: Option<&str>,
) -> Rendered {
    let mut active: Vec<&PublicBanner> = snapshot
        .values()
        .filter(|b| b.expires_at.is_none_or(|at| at > now))
        .filter(|b| language.is_none_or(|l| b.language == l))
        .collect();
    active.sort_by(|a, b| {
        severity_rank(a.severity)
            .cmp(&severity_rank(b.severity))
            .then_with(|| b.published_at.cmp(&a.published_at))
            .then_with(|| a.crisis_id.cmp(&b.crisis_id))
            .then_with(|| a.language.cmp(&b.language))
    });
    let shown: Vec<PublicBanner> = active.iter().copied().map(as_markup).collect();
    #[allow(clippy::expect_used, reason = "a banner is strings and times only")]
    let body = serde_json::to_vec(&shown).expect("banners serialize");
    let digest = Sha256::digest(&body);
    let etag = format!(
        "\"{}\"",
        hex::encode(digest.iter().take(16).copied().collect::<Vec<u8>>())
    );
    let next_expiry = active.iter().filter_map(|b| b.expires_at).min();
    Rendered {
        body: body.into(),
        etag,
        next_expiry,
    }
}

/// A banner as pages receive it: headline, body and link text HTML-escaped, since
/// pages insert them into their HTML; the bucket keeps the text as written. The
/// link URL is left as it is, for a page to set as a link's `href`.
fn as_markup(banner: &PublicBanner) -> PublicBanner {
    PublicBanner {
        headline: escape_html(&banner.headline),
        body: escape_html(&banner.body),
        link_text: escape_html(&banner.link_text),
        ..banner.clone()
    }
}

fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Extreme => 0,
        Severity::Severe => 1,
        Severity::Moderate => 2,
        Severity::Minor => 3,
        Severity::Unknown => 4,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use krisbud_proto::AlertStatus;
    use krisbud_proto::template::BannerLevel;

    use super::*;

    fn banner(crisis: &str, severity: Severity, minutes_ago: i64) -> PublicBanner {
        let now = Utc::now();
        PublicBanner {
            crisis_id: crisis.into(),
            revision: 1,
            language: "sv".into(),
            status: AlertStatus::Actual,
            severity,
            level: BannerLevel::Warning,
            headline: format!("rubrik {crisis}"),
            body: "text".into(),
            link_text: "Läs mer".into(),
            link_url: "https://example.se".into(),
            published_at: now - TimeDelta::minutes(minutes_ago),
            expires_at: None,
        }
    }

    #[test]
    fn sorted_by_severity_then_newest_and_expired_left_out() {
        let now = Utc::now();
        let mut expired = banner("gone", Severity::Extreme, 1);
        expired.expires_at = Some(now - TimeDelta::seconds(1));
        let mut later = banner("later", Severity::Minor, 1);
        later.expires_at = Some(now + TimeDelta::hours(1));
        let map: BTreeMap<String, PublicBanner> = [
            banner("old-minor", Severity::Minor, 30),
            later.clone(),
            banner("severe", Severity::Severe, 60),
            expired,
        ]
        .into_iter()
        .map(|b| (format!("{}.{}", b.crisis_id, b.language), b))
        .collect();
        let rendered = render(&map, now, None);
        let list: Vec<PublicBanner> = serde_json::from_slice(&rendered.body).unwrap();
        let order: Vec<&str> = list.iter().map(|b| b.crisis_id.as_str()).collect();
        assert_eq!(order, ["severe", "later", "old-minor"]);
        assert_eq!(rendered.next_expiry, later.expires_at);
        assert_eq!(render(&map, now, None).etag, rendered.etag);
        assert_ne!(render(&map, now, Some("en")).etag, rendered.etag);
    }

    #[test]
    fn text_is_served_html_escaped_and_nothing_else_changes() {
        assert_eq!(
            escape_html(r#"<script>alert('x')</script> & "citat""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;citat&quot;"
        );
        let swedish = "ÖVNING: Vattnet är avstängt på Åsögatan – läs mer";
        assert_eq!(escape_html(swedish), swedish);

        let mut hostile = banner("xss", Severity::Severe, 1);
        hostile.headline = "ÖVNING: <b>Brand</b> & rök".into();
        hostile.body = "<img src=x onerror=alert(1)>".into();
        hostile.link_text = "Läs \"mer\"".into();
        hostile.link_url = "https://example.se/?a=1&b=2".into();
        let map = BTreeMap::from([("xss.sv".to_owned(), hostile.clone())]);
        let list: Vec<PublicBanner> =
            serde_json::from_slice(&render(&map, Utc::now(), None).body).unwrap();
        assert_eq!(
            list[0].headline,
            "ÖVNING: &lt;b&gt;Brand&lt;/b&gt; &amp; rök"
        );
        assert_eq!(list[0].body, "&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(list[0].link_text, "Läs &quot;mer&quot;");
        assert_eq!(list[0].link_url, hostile.link_url, "a URL, not markup");
        // The snapshot (the bucket's copy) keeps the text as written.
        assert_eq!(map["xss.sv"].headline, "ÖVNING: <b>Brand</b> & rök");
    }
}
