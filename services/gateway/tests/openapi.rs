//! Fails when the checked-in `openapi.json` drifts from the code. Regenerate with
//! `KRISBUD_BLESS=1 cargo test -p krisbud-gateway --test openapi`.

use std::path::Path;

#[test]
fn the_checked_in_document_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let text = krisbud_gateway::openapi::render();
    if std::env::var_os("KRISBUD_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == text,
        "{} is out of date; regenerate with \
         KRISBUD_BLESS=1 cargo test -p krisbud-gateway --test openapi",
        path.display()
    );
}

#[test]
fn the_document_is_openapi_3_1() {
    let document = krisbud_gateway::openapi::document();
    assert_eq!(document["openapi"], "3.1.0");
    // Paths, operations and security read back as utoipa's OpenAPI model; the
    // component schemas are JSON Schema 2020-12 from schemars, which that model
    // does not cover, so they are checked by name here and by resolving every
    // reference in `tests/api.rs`.
    let mut without_schemas = document.clone();
    without_schemas["components"]
        .as_object_mut()
        .unwrap()
        .remove("schemas");
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(without_schemas).expect("the document parses as OpenAPI");
    assert_eq!(parsed.paths.paths.len(), 31);
    assert!(
        parsed
            .components
            .unwrap()
            .security_schemes
            .contains_key("bearer")
    );
    for name in [
        "DeclareCrisis",
        "Declared",
        "CrisisStatus",
        "ProblemDetails",
        "AuditPage",
        "TemplateVersion",
        "TemplatePreview",
        "TemplateDiff",
        "TemplateRecord",
        "Audience",
        "ImportReport",
    ] {
        assert!(
            document["components"]["schemas"][name].is_object(),
            "components.schemas.{name} is missing"
        );
    }
}
