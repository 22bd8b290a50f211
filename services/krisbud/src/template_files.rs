//! `krisbud templates export|import`: one TOML file per template version, so the
//! city can keep its templates under version control.
//!
//! An export writes every version of every template as `<id>.v<version>.toml`, in
//! the shape of the built-in demo files. An import reads every `*.toml` of a
//! directory, refuses the whole import when any file is malformed (naming its path
//! and line), and drafts each version in order. Imported versions are drafts by
//! the importing user: they still need submitting and a second person's approval,
//! whatever state the file says. A file whose wording a live version already has
//! is reported as unchanged, so importing an export again adds nothing.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use krisbud_proto::template::TemplateVersion;

use crate::client::Client;

/// The file name of one version.
pub fn file_name(id: &str, version: u32) -> String {
    format!("{id}.v{version}.toml")
}

/// The text of one version's file.
pub fn to_toml(t: &TemplateVersion) -> anyhow::Result<String> {
    let body = toml::to_string_pretty(t)
        .with_context(|| format!("cannot write {} version {} as TOML", t.id, t.version))?;
    Ok(format!(
        "# krisbud template `{}` version {} ({} when exported).\n\
         # `krisbud templates import` makes it a new draft that needs approval again.\n{body}",
        t.id, t.version, t.state
    ))
}

/// Writes every version of every template into `dir`; returns the files written.
pub async fn export(client: &Client, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| rust_i18n::t!("cli.cannot_write", path = dir.display()))?;
    let mut written = Vec::new();
    for summary in client.templates(true).await? {
        let t = client
            .template_version(&summary.id, summary.version)
            .await?;
        let path = dir.join(file_name(&t.id, t.version));
        std::fs::write(&path, to_toml(&t)?)
            .with_context(|| rust_i18n::t!("cli.cannot_write", path = path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Reads every `*.toml` in `dir`, sorted by template id and version; the first
/// malformed file stops everything, named with its path and line.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<(PathBuf, TemplateVersion)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| rust_i18n::t!("cli.cannot_read", path = dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| rust_i18n::t!("cli.cannot_read", path = path.display()))?;
        let template = krisbud_coordinator::template::parse(&path.display().to_string(), &text)?;
        anyhow::ensure!(
            !template.id.is_empty(),
            rust_i18n::t!("templates.missing_id", path = path.display())
        );
        out.push((path, template));
    }
    out.sort_by(|(pa, a), (pb, b)| (&a.id, a.version, pa).cmp(&(&b.id, b.version, pb)));
    Ok(out)
}

/// What happened to one file of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    pub path: PathBuf,
    /// The version it is now (a new draft, or the live version with its wording).
    pub template: TemplateVersion,
    pub created: bool,
}

/// Drafts every version found in `dir`, in order; nothing is sent when any file
/// is malformed.
pub async fn import(client: &Client, dir: &Path) -> anyhow::Result<Vec<Imported>> {
    let files = read_dir(dir)?;
    anyhow::ensure!(
        !files.is_empty(),
        rust_i18n::t!("templates.no_files", dir = dir.display())
    );
    let mut out = Vec::with_capacity(files.len());
    for (path, template) in files {
        let result = client
            .draft(&template)
            .await
            .with_context(|| format!("{}", path.display()))?;
        out.push(Imported {
            path,
            template: result.template,
            created: result.created,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_template_survives_the_round_trip_through_toml() {
        for (name, text) in krisbud_coordinator::template::DEMO {
            let t = krisbud_coordinator::template::parse(name, text).unwrap();
            let back = krisbud_coordinator::template::parse(name, &to_toml(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{name}");
        }
    }

    #[test]
    fn a_malformed_file_stops_the_import_naming_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let (name, text) = krisbud_coordinator::template::DEMO[0];
        std::fs::write(dir.path().join(name), text).unwrap();
        std::fs::write(
            dir.path().join("trasig.toml"),
            "id = \"trasig\"\nname = \"Trasig\"\nmax_sms_segments = \"tre\"\n",
        )
        .unwrap();
        let err = format!("{:#}", read_dir(dir.path()).unwrap_err());
        assert!(err.contains("trasig.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }
}
