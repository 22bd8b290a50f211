//! Fails when the checked-in JSON Schemas in `proto/schema/` drift from the code.

use std::path::Path;

#[test]
fn checked_in_schemas_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let bless = std::env::var_os("KRISBUD_BLESS").is_some();
    let mut stale = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for (name, schema) in krisbud_proto::schema::all() {
        let path = dir.join(format!("{name}.json"));
        expected.insert(path.clone());
        let text = krisbud_proto::schema::render(&schema);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !expected.contains(&path) {
            stale.push(format!("{} (no longer generated)", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "JSON Schemas out of date: {stale:?}; regenerate with \
         KRISBUD_BLESS=1 cargo test -p krisbud-proto --test schema_drift"
    );
}
