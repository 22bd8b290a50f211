//! The approved template versions the coordinator can declare from.
//!
//! Templates are loaded at start from the built-in demo set and from TOML files in
//! `coordinator.templates_dir`, one file per template version. Each is checked at
//! load: ids are subject tokens, Swedish is present, every rendering works with
//! every variable at its maximum length, and the SMS stays within its segment limit.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use krisbud_proto::template::{
    TemplateState, TemplateSummary, TemplateVersion, VariableSpec, VariableType,
};
use krisbud_proto::{AlertStatus, Problem, subject};

use crate::render;

/// The demo templates compiled into the binary.
pub const DEMO: [(&str, &str); 2] = [
    (
        "vattenlacka.toml",
        include_str!("../templates/vattenlacka.toml"),
    ),
    (
        "it-storning.toml",
        include_str!("../templates/it-storning.toml"),
    ),
];

/// Template versions by id, oldest version first.
#[derive(Debug, Clone, Default)]
pub struct TemplateStore {
    templates: BTreeMap<String, Vec<TemplateVersion>>,
}

impl TemplateStore {
    /// Loads the demo set (when asked) and every `*.toml` in `dir`.
    pub fn load(demo: bool, dir: Option<&Path>) -> anyhow::Result<TemplateStore> {
        let mut store = TemplateStore::default();
        if demo {
            for (name, text) in DEMO {
                store.add(parse(name, text)?)?;
            }
        }
        if let Some(dir) = dir {
            let mut paths: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read templates dir {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                store.add(parse(&path.display().to_string(), &text)?)?;
            }
        }
        Ok(store)
    }

    /// Adds a version after checking it.
    pub fn add(&mut self, template: TemplateVersion) -> anyhow::Result<()> {
        check(&template)?;
        let versions = self.templates.entry(template.id.clone()).or_default();
        if versions.iter().any(|v| v.version == template.version) {
            anyhow::bail!(
                "template {} version {} is defined twice",
                template.id,
                template.version
            );
        }
        versions.push(template);
        versions.sort_by_key(|v| v.version);
        Ok(())
    }

    /// The version to declare: the given one, or the newest approved.
    pub fn declarable(&self, id: &str, version: Option<u32>) -> Result<&TemplateVersion, Problem> {
        let versions = self.templates.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.templates.keys().map(String::as_str).collect();
            Problem {
                field: Some("template".into()),
                ..Problem::new(
                    422,
                    "unknown template",
                    format!(
                        "there is no template `{id}`; known templates: {}",
                        known.join(", ")
                    ),
                )
            }
        })?;
        let chosen = match version {
            Some(v) => versions.iter().find(|t| t.version == v).ok_or_else(|| {
                Problem::invalid(
                    "template_version",
                    format!("template `{id}` has no version {v}"),
                )
            })?,
            None => versions
                .iter()
                .rev()
                .find(|t| t.state == TemplateState::Approved)
                .ok_or_else(|| {
                    Problem::invalid(
                        "template",
                        format!("template `{id}` has no approved version"),
                    )
                })?,
        };
        if chosen.state != TemplateState::Approved {
            return Err(Problem::invalid(
                "template_version",
                format!(
                    "template `{id}` version {} is {:?}, not approved; only approved versions can be declared",
                    chosen.version, chosen.state
                )
                .to_lowercase(),
            ));
        }
        Ok(chosen)
    }

    /// The newest approved version of every template, for the duty officer's list.
    pub fn summaries(&self) -> Vec<TemplateSummary> {
        self.templates
            .values()
            .filter_map(|versions| {
                versions
                    .iter()
                    .rev()
                    .find(|t| t.state == TemplateState::Approved)
            })
            .map(|t| TemplateSummary {
                id: t.id.clone(),
                version: t.version,
                name: t.name.clone(),
                state: t.state,
                cap: t.cap.clone(),
                languages: t.languages.keys().cloned().collect(),
                variables: t.variables.clone(),
            })
            .collect()
    }
}

/// Parses one template file; errors name the file and line.
pub fn parse(name: &str, text: &str) -> anyhow::Result<TemplateVersion> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("template file {name}: {e}"))
}

fn check(t: &TemplateVersion) -> anyhow::Result<()> {
    let name = format!("template {} version {}", t.id, t.version);
    anyhow::ensure!(
        subject::is_token(&t.id),
        "{name}: the id must be a slug of letters, digits, - and _"
    );
    anyhow::ensure!(
        t.languages.contains_key("sv"),
        "{name}: a Swedish (sv) wording is required"
    );
    let worst = worst_case_values(&t.variables);
    let rendered = render::render(t, &worst, AlertStatus::Exercise)
        .map_err(|p| anyhow::anyhow!("{name}: {}", p.detail))?;
    for language in rendered {
        anyhow::ensure!(
            language.sms.segments <= t.max_sms_segments,
            "{name}: the {} SMS can take {} segments with every variable at its maximum length; at most {} are allowed",
            language.language,
            language.sms.segments,
            t.max_sms_segments
        );
    }
    Ok(())
}

/// Values at their maximum length, with a character that costs the most in GSM-7.
fn worst_case_values(specs: &[VariableSpec]) -> BTreeMap<String, String> {
    specs
        .iter()
        .map(|s| {
            let value = match s.kind {
                VariableType::Enum => s
                    .allowed
                    .iter()
                    .max_by_key(|a| a.chars().count())
                    .cloned()
                    .unwrap_or_default(),
                VariableType::Datetime => "2026-11-26 14:00".to_owned(),
                VariableType::Url => {
                    format!("https://{}", "a".repeat(s.max_length.saturating_sub(8)))
                }
                VariableType::Phone => "+46701234567".to_owned(),
                VariableType::Text => "€"
                    .repeat(s.max_length.max(1))
                    .chars()
                    .take(s.max_length)
                    .collect(),
            };
            (s.name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_set_loads_and_fits_its_segment_limits() {
        let store = TemplateStore::load(true, None).unwrap();
        let ids: Vec<String> = store.summaries().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["it-storning", "vattenlacka"]);
    }

    #[test]
    fn a_template_that_can_overflow_is_refused() {
        let mut t = parse("vattenlacka.toml", DEMO[0].1).unwrap();
        t.max_sms_segments = 1;
        let err = TemplateStore::default().add(t).unwrap_err().to_string();
        assert!(err.contains("segments"), "{err}");
    }

    #[test]
    fn a_malformed_file_names_its_line() {
        let err = parse("bad.toml", "id = \"x\"\nversion = \"one\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn only_approved_versions_are_declarable() {
        let mut store = TemplateStore::default();
        let mut draft = parse("v.toml", DEMO[0].1).unwrap();
        draft.state = TemplateState::Draft;
        store.add(draft).unwrap();
        let p = store.declarable("vattenlacka", Some(1)).unwrap_err();
        assert!(p.detail.contains("not approved"), "{}", p.detail);
        assert!(store.declarable("vattenlacka", None).is_err());
        let p = store.declarable("finns-inte", None).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("template"));
    }
}
