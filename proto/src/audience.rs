//! Audiences: named groups of people reached by SMS and email.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A named group of recipients, stored in the KRISBUD_AUDIENCES bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Audience {
    /// A slug, e.g. `farsta-boende`.
    pub id: String,
    pub name: String,
    /// Whether the audience may receive exercise and test messages.
    #[serde(default)]
    pub exercise: bool,
    pub members: Vec<Member>,
}

/// One person in an audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    /// E.164, e.g. `+46701234567`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Preferred BCP 47 language tag; Swedish when absent or not in the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
