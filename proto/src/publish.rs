//! What the public and staff channels publish: the banner JSON and the intranet
//! article, as their consumers read them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{AlertStatus, Severity};
use crate::template::BannerLevel;

/// One language of an active banner, as `GET /v1/banners` serves it.
///
/// `headline`, `body` and `link_text` are HTML-escaped markup (`&`, `<`, `>`, `"`
/// and `'` as character references): a web page inserts them into its HTML as they
/// are. `link_url` is a URL, not escaped, for a link's `href`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PublicBanner {
    pub crisis_id: String,
    pub revision: u32,
    pub language: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub level: BannerLevel,
    pub headline: String,
    pub body: String,
    pub link_text: String,
    pub link_url: String,
    pub published_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An intranet article, as the signed webhook receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntranetArticle {
    pub crisis_id: String,
    pub revision: u32,
    pub language: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub title: String,
    /// Markdown.
    pub body: String,
    pub published_at: DateTime<Utc>,
    /// The article this one is a revision of: `<crisis>.<language>`, the same for
    /// every revision, so the intranet replaces the page instead of adding one.
    #[serde(default)]
    pub article_id: String,
    /// CAP `msgType`: `Alert`, `Update` (also the all-clear) or `Cancel`.
    #[serde(default)]
    pub msg_type: crate::job::MsgType,
    /// The earlier revisions' message ids (`<crisis>.r<n>`) this one updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
}
