//! What a version changes against another, field by field, for the approver.
//!
//! A version's wording is flattened into fields named by path (`name`,
//! `cap.severity`, `variables.omrade.max_length`, `languages.sv.sms` ...); fields
//! that differ get a line diff of their text.

use std::collections::BTreeMap;

use krisbud_proto::template::{ChangeKind, FieldChange, TemplateVersion};
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

/// The fields of a version's wording (lifecycle fields left out), by path.
#[allow(
    clippy::expect_used,
    reason = "a template version serializes to an object of strings"
)]
pub fn fields(t: &TemplateVersion) -> BTreeMap<String, String> {
    let mut value = serde_json::to_value(t).expect("a template serializes");
    let object = value.as_object_mut().expect("a template is an object");
    for lifecycle in ["id", "version", "state", "author", "approved_by"] {
        object.remove(lifecycle);
    }
    // Variables are compared by name, not by their place in the list.
    if let Some(Value::Array(variables)) = object.remove("variables") {
        let by_name: serde_json::Map<String, Value> = variables
            .into_iter()
            .map(|mut v| {
                let name = v
                    .as_object_mut()
                    .and_then(|o| o.remove("name"))
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .unwrap_or_default();
                (name, v)
            })
            .collect();
        object.insert("variables".into(), Value::Object(by_name));
    }
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(path: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        Value::Array(items) => {
            let lines: Vec<String> = items.iter().map(scalar).collect();
            out.insert(path.to_owned(), lines.join("\n"));
        }
        other => {
            out.insert(path.to_owned(), scalar(other));
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every field that differs between `before` (none: everything is new) and `after`.
pub fn diff(before: Option<&TemplateVersion>, after: &TemplateVersion) -> Vec<FieldChange> {
    let old = before.map(fields).unwrap_or_default();
    let new = fields(after);
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (a, b) = (old.get(path), new.get(path));
            let change = match (a, b) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(_), Some(_)) => ChangeKind::Changed,
                (None, _) => ChangeKind::Added,
                (_, None) => ChangeKind::Removed,
            };
            Some(FieldChange {
                field: path.clone(),
                change,
                lines: lines(
                    a.map(String::as_str).unwrap_or_default(),
                    b.map(String::as_str).unwrap_or_default(),
                ),
            })
        })
        .collect()
}

/// A line diff: `-` before only, `+` after only, a space for both.
fn lines(before: &str, after: &str) -> Vec<String> {
    TextDiff::from_lines(before, after)
        .iter_all_changes()
        .map(|change| {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            format!("{sign}{}", change.value().trim_end_matches(['\n', '\r']))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::aggregate::{DEMO, parse};

    fn water() -> TemplateVersion {
        parse("vattenlacka.toml", DEMO[0].1).unwrap()
    }

    #[test]
    fn only_changed_fields_are_listed_with_their_lines() {
        let before = water();
        let mut after = water();
        after.version = 2;
        after.author = "someone.else".into();
        after.max_sms_segments = 2;
        after.languages.get_mut("sv").unwrap().email_text = before.languages["sv"]
            .email_text
            .replace("Stockholms stad", "Stockholms stad, socialförvaltningen");
        after.variables[0].max_length = 30;
        let changes = diff(Some(&before), &after);
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "languages.sv.email_text",
                "max_sms_segments",
                "variables.omrade.max_length"
            ]
        );
        let text = &changes[0];
        assert_eq!(text.change, ChangeKind::Changed);
        assert!(
            text.lines.contains(&"-Stockholms stad".to_owned()),
            "{:?}",
            text.lines
        );
        assert!(
            text.lines
                .contains(&"+Stockholms stad, socialförvaltningen".to_owned()),
            "{:?}",
            text.lines
        );
        assert!(
            text.lines.iter().any(|l| l.starts_with(' ')),
            "context lines kept"
        );
        assert_eq!(changes[1].lines, ["-3", "+2"]);
    }

    #[test]
    fn added_and_removed_languages_and_variables() {
        let before = water();
        let mut after = water();
        after.languages.remove("sv-x-lattlast");
        after.variables.push(krisbud_proto::template::VariableSpec {
            name: "telefon".into(),
            label: "Telefon".into(),
            kind: krisbud_proto::template::VariableType::Phone,
            required: false,
            max_length: 20,
            allowed: vec![],
        });
        let changes = diff(Some(&before), &after);
        assert!(
            changes.iter().any(
                |c| c.field == "languages.sv-x-lattlast.sms" && c.change == ChangeKind::Removed
            )
        );
        assert!(changes.iter().any(|c| c.field == "variables.telefon.type"
            && c.change == ChangeKind::Added
            && c.lines == ["+phone"]));
        assert!(
            diff(None, &before)
                .iter()
                .all(|c| c.change == ChangeKind::Added)
        );
        assert!(diff(Some(&before), &before).is_empty());
    }
}
