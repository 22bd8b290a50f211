//! JSON Schemas of the wire types, generated into `proto/schema/`.
//!
//! The checked-in files are what other teams consume; `tests/schema_drift.rs` fails
//! when they no longer match the code. Regenerate with
//! `KRISBUD_BLESS=1 cargo test -p krisbud-proto --test schema_drift`.

use schemars::generate::SchemaSettings;
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema};

use crate::{api, audience, audit, command, envelope, job, publish, status, template};

/// Every published schema, by file stem.
pub fn all() -> Vec<(&'static str, Schema)> {
    fn one<T: JsonSchema>(name: &'static str) -> (&'static str, Schema) {
        let generator = SchemaSettings::draft2020_12()
            .with_transform(bound_integers)
            .into_generator();
        (name, generator.into_root_schema_for::<T>())
    }
    vec![
        one::<envelope::Envelope>("envelope"),
        one::<job::DispatchJob>("dispatch-job"),
        one::<audit::AuditRecord>("audit-record"),
        one::<audit::Checkpoint>("audit-checkpoint"),
        one::<audit::BundleLine>("audit-bundle-line"),
        one::<audience::Audience>("audience"),
        one::<audience::Member>("audience-member"),
        one::<audience::ImportReport>("audience-import-report"),
        one::<template::TemplateVersion>("template-version"),
        one::<template::TemplateRecord>("template-record"),
        one::<template::TemplatePreview>("template-preview"),
        one::<template::TemplateDiff>("template-diff"),
        one::<status::CrisisStatus>("crisis-status"),
        one::<command::DeclareCrisis>("declare-crisis"),
        one::<command::Declared>("declared"),
        one::<command::ConfirmChannel>("confirm-channel"),
        one::<command::Problem>("problem"),
        one::<api::ProblemDetails>("problem-details"),
        one::<api::ConfirmBody>("confirm-body"),
        one::<api::ReasonBody>("reason-body"),
        one::<api::PreviewBody>("preview-body"),
        // Every other body the gateway reads or writes.
        one::<command::UpdateCrisis>("update-crisis"),
        one::<command::ExpectRevision>("expect-revision"),
        one::<command::CancelCrisis>("cancel-crisis"),
        one::<command::Revised>("revised"),
        one::<command::DraftResult>("draft-result"),
        one::<template::TemplateSummary>("template-summary"),
        one::<template::VersionInfo>("version-info"),
        one::<audience::CreateAudience>("create-audience"),
        one::<audit::AuditPage>("audit-page"),
        one::<audit::CheckpointPage>("audit-checkpoint-page"),
        one::<audit::AuditKeys>("audit-keys"),
        one::<audit::VerifyReport>("audit-verify-report"),
        one::<audit::CrisisReport>("crisis-report"),
        one::<audit::RecipientLookup>("recipient-lookup"),
        one::<audit::RecipientLookupAnswer>("recipient-lookup-answer"),
        one::<publish::PublicBanner>("public-banner"),
        one::<publish::IntranetArticle>("intranet-article"),
    ]
}

/// Gives every integer schema of a Rust integer type its range: schemars writes
/// `"format": "uint32"` and `"minimum": 0` but no maximum, so a client (or a
/// fuzzer) reading the schema alone would send 2^40 where the server refuses it.
pub fn bound_integers(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        let range: Option<(serde_json::Value, serde_json::Value)> =
            match object.get("format").and_then(serde_json::Value::as_str) {
                Some("uint32") => Some((0.into(), u32::MAX.into())),
                Some("uint64" | "uint") => Some((0.into(), u64::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
        if let Some((minimum, maximum)) = range {
            object.entry("minimum").or_insert(minimum);
            object.entry("maximum").or_insert(maximum);
        }
    }
    transform_subschemas(&mut bound_integers, schema);
}

/// The schema rendered as the checked-in file's text.
pub fn render(schema: &Schema) -> String {
    #[allow(clippy::expect_used, reason = "a JSON Schema value always serializes")]
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serializes");
    text.push('\n');
    text
}
