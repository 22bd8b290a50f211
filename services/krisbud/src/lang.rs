//! The CLI's language: Swedish unless `--lang en`, `KRISBUD_LANG` or the POSIX
//! locale asks for English ([`krisbud_kit::lang::Lang`] has the rule).
//!
//! Every text the CLI writes for a person comes from `locales/cli.toml`, Swedish
//! and English side by side, through rust-i18n's `t!`. The help of each command
//! and argument is written in English as its doc comment (clap reads it) and in
//! Swedish in the same file under `help.<command path>[.<argument>]`; in Swedish
//! the command tree is rewritten from there, with clap's own headings, flags and
//! parse errors too. `tests` below walk the whole tree, so a new command or
//! argument without a Swedish text fails the build's tests.

use std::ffi::OsString;
use std::fmt::Write as _;

use clap::error::{ContextKind, ContextValue, Error as ClapError, ErrorFormatter, ErrorKind};
use clap::{Arg, Command};
pub use krisbud_kit::lang::Lang;

/// The language the command line or the environment asks for: `--lang X` or
/// `--lang=X` anywhere before `--`, else [`Lang::from_env`].
pub fn pick(args: &[OsString]) -> Lang {
    let mut words = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--");
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("--lang") {
            Some("") => words.next().map(|v| v.into_owned()),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        };
        if let Some(lang) = value.as_deref().and_then(Lang::parse) {
            return lang;
        }
    }
    Lang::from_env()
}

/// Makes `lang` the language of every `t!` from here on, and of `cmd`'s help.
pub fn apply(cmd: Command, lang: Lang) -> Command {
    rust_i18n::set_locale(lang.tag());
    let mut cmd = cmd.arg(
        Arg::new("lang")
            .long("lang")
            .global(true)
            .value_name("sv|en")
            .value_parser(["sv", "en"])
            .help("Language of help, messages and output: sv (default) or en"),
    );
    if lang == Lang::En {
        return cmd;
    }
    // Built first, so the help and version flags and the help subcommand exist
    // and can be rewritten like the rest.
    cmd.build();
    swedish(cmd, "krisbud")
}

/// The Swedish text of `key`, when the catalogue has one.
fn swedish_text(key: &str) -> Option<String> {
    crate::_rust_i18n_try_translate("sv", key).map(|t| t.into_owned())
}

/// The Swedish help of argument `id` of the command at `path`: its own, or the
/// one shared by every command with that argument (`help.arg.<id>`).
fn arg_help(path: &str, id: &str) -> Option<String> {
    swedish_text(&format!("help.{path}.{id}")).or_else(|| swedish_text(&format!("help.arg.{id}")))
}

fn swedish(cmd: Command, path: &str) -> Command {
    let about = swedish_text(&format!("help.{path}"));
    let arg_ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().as_str().to_owned())
        .collect();
    let sub_names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut cmd = cmd
        .help_template(
            "{before-help}{about-with-newline}\nAnvändning: {usage}\n\n{all-args}{after-help}",
        )
        .subcommand_help_heading("Kommandon")
        .subcommand_value_name("KOMMANDO");
    // clap writes `Usage:` and `[OPTIONS]` itself; the usage is rendered once
    // and given back in Swedish.
    let usage = cmd.render_usage().to_string();
    let usage = usage
        .trim_start_matches("Usage:")
        .trim()
        .replace("[OPTIONS]", "[FLAGGOR]");
    cmd = cmd.override_usage(usage);
    if let Some(about) = about {
        cmd = cmd.about(about).long_about(None);
    }
    for id in arg_ids {
        let help = arg_help(path, &id);
        cmd = cmd.mut_arg(&id, |arg| {
            let heading = if arg.is_positional() {
                "Argument"
            } else {
                "Flaggor"
            };
            let help = help.or_else(|| arg.get_help().map(|h| h.to_string()));
            let help = format!("{}{}", help.unwrap_or_default(), bracketed(&arg));
            arg.help_heading(heading)
                .help(help)
                .long_help(None)
                .hide_env(true)
                .hide_default_value(true)
                .hide_possible_values(true)
        });
    }
    for name in sub_names {
        if name == "help" {
            // clap's own `help` subcommand; its children only mirror the tree.
            let about = swedish_text("help.help-subcommand");
            cmd = cmd.mut_subcommand("help", |sub| match about {
                Some(about) => sub.about(about),
                None => sub,
            });
            continue;
        }
        let sub_path = format!("{path}.{name}");
        cmd = cmd.mut_subcommand(&name, |sub| swedish(sub, &sub_path));
    }
    cmd
}

/// Every command and argument of `cmd` (built, as [`apply`] builds it) without a
/// Swedish text, as `(catalogue key, English help)`.
pub fn missing_swedish(cmd: &Command) -> Vec<(String, String)> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut missing = Vec::new();
    if swedish_text("help.help-subcommand").is_none() {
        missing.push(("help.help-subcommand".to_owned(), String::new()));
    }
    walk(&cmd, "krisbud", &mut missing);
    missing
}

fn walk(cmd: &Command, path: &str, missing: &mut Vec<(String, String)>) {
    if swedish_text(&format!("help.{path}")).is_none() {
        let english = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        missing.push((format!("help.{path}"), english));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg_help(path, id).is_none() {
            let english = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            missing.push((format!("help.{path}.{id}"), english));
        }
    }
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(sub, &format!("{path}.{}", sub.get_name()), missing);
    }
}

/// What clap shows in brackets after an argument's help (its environment
/// variable, default and possible values), in Swedish.
fn bracketed(arg: &Arg) -> String {
    let mut out = String::new();
    if let Some(env) = arg.get_env().filter(|_| !arg.is_hide_env_set()) {
        let _ = write!(out, " [miljö: {}]", env.to_string_lossy());
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && !arg.is_hide_default_value_set() && arg.get_action().takes_values() {
        let _ = write!(out, " [standard: {}]", defaults.join(", "));
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .collect();
    if !possible.is_empty() && !arg.is_hide_possible_values_set() {
        let _ = write!(out, " [möjliga: {}]", possible.join(", "));
    }
    out
}

/// clap's parse errors in Swedish: what is wrong, the usage, and where help is.
pub struct SwedishErrors;

impl ErrorFormatter for SwedishErrors {
    fn format_error(error: &ClapError<Self>) -> clap::builder::StyledStr {
        let mut out = String::from("fel: ");
        out.push_str(&describe(error));
        if let Some(ContextValue::StyledStr(usage)) = error.get(ContextKind::Usage) {
            let usage = usage.to_string();
            let usage = usage.trim_start_matches("Usage:").trim();
            let _ = write!(out, "\n\nAnvändning: {usage}");
        }
        out.push_str("\n\nMer hjälp: --help\n");
        clap::builder::StyledStr::from(out)
    }
}

fn context(error: &ClapError<SwedishErrors>, kind: ContextKind) -> String {
    match error.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(list)) => list.join(", "),
        Some(ContextValue::Number(n)) => n.to_string(),
        Some(ContextValue::StyledStr(s)) => s.to_string(),
        _ => String::new(),
    }
}

fn describe(error: &ClapError<SwedishErrors>) -> String {
    let arg = context(error, ContextKind::InvalidArg);
    let value = context(error, ContextKind::InvalidValue);
    let sub = context(error, ContextKind::InvalidSubcommand);
    let valid_values = context(error, ContextKind::ValidValue);
    let mut text = match error.kind() {
        ErrorKind::UnknownArgument => format!("okänt argument '{arg}'"),
        ErrorKind::InvalidSubcommand => format!("okänt kommando '{sub}'"),
        ErrorKind::MissingRequiredArgument => format!("saknas: {arg}"),
        ErrorKind::MissingSubcommand => format!("'{sub}' behöver ett kommando"),
        ErrorKind::InvalidValue if value.is_empty() => format!("'{arg}' behöver ett värde"),
        ErrorKind::InvalidValue => format!("ogiltigt värde '{value}' för '{arg}'"),
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(error)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("ogiltigt värde '{value}' för '{arg}'{why}")
        }
        ErrorKind::ArgumentConflict => {
            let prior = context(error, ContextKind::PriorArg);
            if prior.is_empty() || prior == arg {
                format!("'{arg}' kan bara anges en gång")
            } else {
                format!("'{arg}' kan inte anges tillsammans med '{prior}'")
            }
        }
        ErrorKind::TooManyValues => format!("oväntat värde '{value}' för '{arg}'"),
        ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => {
            format!("fel antal värden för '{arg}'")
        }
        ErrorKind::NoEquals => format!("'{arg}' behöver ett likhetstecken: {arg}=värde"),
        ErrorKind::InvalidUtf8 => "ett argument är inte giltig UTF-8".to_owned(),
        _ => format!("kommandoraden kan inte läsas ({})", error.kind()),
    };
    if !valid_values.is_empty() {
        let _ = write!(text, " (möjliga: {valid_values})");
    }
    let suggested = context(error, ContextKind::SuggestedArg)
        + &context(error, ContextKind::SuggestedSubcommand);
    if !suggested.is_empty() {
        let _ = write!(text, "; menade du '{suggested}'?");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        std::iter::once("krisbud")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn lang_flag_anywhere_before_a_double_dash() {
        assert_eq!(pick(&args(&["status", "--lang", "en"])), Lang::En);
        assert_eq!(pick(&args(&["--lang=en", "status"])), Lang::En);
        assert_eq!(pick(&args(&["--lang=sv", "status"])), Lang::Sv);
    }

    /// The catalogue's keys, each with the languages it has.
    fn catalogue() -> std::collections::BTreeMap<String, Vec<String>> {
        fn walk(
            prefix: &str,
            table: &toml::Table,
            out: &mut std::collections::BTreeMap<String, Vec<String>>,
        ) {
            for (key, value) in table {
                match value {
                    toml::Value::String(_) => {
                        out.entry(prefix.to_owned()).or_default().push(key.clone())
                    }
                    toml::Value::Table(inner) => {
                        let path = if prefix.is_empty() {
                            key.clone()
                        } else {
                            format!("{prefix}.{key}")
                        };
                        walk(&path, inner, out);
                    }
                    _ => {}
                }
            }
        }
        let text = include_str!("../locales/cli.toml");
        let table: toml::Table = toml::from_str(text).expect("cli.toml is TOML");
        let mut out = std::collections::BTreeMap::new();
        walk("", &table, &mut out);
        out
    }

    #[test]
    fn every_text_is_in_swedish_and_english() {
        for (key, langs) in catalogue() {
            assert!(
                langs.contains(&"sv".to_owned()) && langs.contains(&"en".to_owned()),
                "{key} has {langs:?}"
            );
        }
    }

    /// Every `t!("key"` in the crate's sources names a text the catalogue has, so
    /// a typo does not print the key to a person.
    #[test]
    fn every_text_used_exists() {
        let known = catalogue();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut missing = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).expect("src is readable") {
                    files.push(entry.expect("an entry").path());
                }
                continue;
            }
            if path.ends_with("lang.rs") {
                continue; // this test's own text
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            for (i, _) in text.match_indices("t!(") {
                let before = text[..i].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' {
                    continue; // format!( and the like
                }
                let rest = text[i + 3..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let key = rest.split('"').next().unwrap_or_default();
                if !key.starts_with("help.") && !known.contains_key(key) {
                    missing.push(format!("{}: {key}", path.display()));
                }
            }
        }
        assert!(missing.is_empty(), "not in cli.toml: {missing:#?}");
    }
}
