//! The bodies of the HTTP API that are neither commands nor read models: the
//! RFC 9457 problem every error is, and the small optional bodies of a
//! confirmation, a lifecycle step and a preview. The gateway reads and writes
//! exactly these; their JSON Schemas are in `proto/schema/`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::AlertStatus;

/// Prefix of every problem `type` URI.
pub const TYPE_PREFIX: &str = "https://krisbud.se/problems/";

/// The body of an error response (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProblemDetails {
    /// `https://krisbud.se/problems/<slug>`: what kind of problem this is.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, fixed summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What exactly is wrong, for a person.
    pub detail: String,
    /// The offending field, as a JSON path (`variables.district`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The path of the request that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The optional body of a confirmation.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// What the operator wants on record ("bannern syns på stockholm.se"): at
    /// most 500 characters, no control character but line breaks.
    #[serde(default)]
    #[schemars(
        length(max = 500),
        regex(pattern = r"^[^\x00-\x09\x0B-\x1F\x7F-\x9F]*$")
    )]
    pub note: Option<String>,
}

/// The optional body of a lifecycle step.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why: required to reject, optional to retire. At most 1,000 characters,
    /// no control character but line breaks.
    #[serde(default)]
    #[schemars(
        length(max = 1000),
        regex(pattern = r"^[^\x00-\x09\x0B-\x1F\x7F-\x9F]*$")
    )]
    pub reason: Option<String>,
}

/// The body of a preview.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// Values for the template's variables, as a declaration would give them.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Actual (default), Exercise or Test: shows the practice marking.
    #[serde(default)]
    pub status: AlertStatus,
}
