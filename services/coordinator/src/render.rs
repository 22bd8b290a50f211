//! Rendering a template version with the duty officer's values: validation against
//! the variable schema first, then minijinja in strict mode for every language ×
//! channel.
//!
//! Contexts differ by where the text ends up: email HTML is auto-escaped, the
//! intranet body is Markdown and gets Markdown-escaped values, everything else is
//! plain text. The banner's text stays plain here too (so its length is what a
//! reader sees); the banner channel HTML-escapes it when it serves the banner.

use std::collections::BTreeMap;

use krisbud_kit::text::escape_html;
use krisbud_proto::template::{
    BannerLevel, BannerMessage, ClosingTemplate, CrisisParts, EmailMessage, IntranetMessage,
    LanguageTemplate, RenderWarning, RenderedLanguage, SmsMessage, TemplateVersion, VariableSpec,
    VariableType,
};
use krisbud_proto::{AlertStatus, Channel, Problem};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::gsm;

/// Checks every value against the template's variable schema.
pub fn validate(specs: &[VariableSpec], values: &BTreeMap<String, String>) -> Result<(), Problem> {
    for name in values.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(Problem::invalid(
                format!("variables.{name}"),
                format!(
                    "unknown variable `{name}`; this template has: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    for spec in specs {
        let field = format!("variables.{}", spec.name);
        let value = match values.get(&spec.name) {
            Some(v) if !v.trim().is_empty() => v,
            _ if spec.required => {
                return Err(Problem::invalid(
                    field,
                    format!("missing required variable `{}` ({})", spec.name, spec.label),
                ));
            }
            _ => continue,
        };
        let length = value.chars().count();
        if length > spec.max_length {
            return Err(Problem::invalid(
                field,
                format!(
                    "`{}` is {length} characters long; at most {} are allowed",
                    spec.name, spec.max_length
                ),
            ));
        }
        if let Some(c) = value.chars().find(|c| is_control(*c)) {
            return Err(Problem::invalid(
                field,
                format!(
                    "`{}` contains the control character U+{:04X}; write it on one line without special characters",
                    spec.name, c as u32
                ),
            ));
        }
        let type_ok = match spec.kind {
            VariableType::Text => true,
            VariableType::Enum => spec.allowed.iter().any(|a| a == value),
            VariableType::Datetime => {
                chrono::DateTime::parse_from_rfc3339(value).is_ok()
                    || chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M").is_ok()
            }
            VariableType::Url => is_web_address(value),
            VariableType::Phone => {
                let digits = value.chars().filter(char::is_ascii_digit).count();
                (6..=15).contains(&digits)
                    && value
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-'))
            }
        };
        if !type_ok {
            let expected = match spec.kind {
                VariableType::Text => String::new(),
                VariableType::Enum => format!("one of: {}", spec.allowed.join(", ")),
                VariableType::Datetime => "a date and time like 2026-11-26 14:00".into(),
                VariableType::Url => {
                    "a web address like https://stockholm.se/vatten, without spaces, quotes or angle brackets".into()
                }
                VariableType::Phone => "a phone number like 08-508 000 00".into(),
            };
            return Err(Problem::invalid(
                field,
                format!("`{}` must be {expected}", spec.name),
            ));
        }
    }
    Ok(())
}

/// Whether a value may not contain `c`: the C0 and C1 controls (line breaks and
/// tabs among them), the Unicode line and paragraph separators, and the
/// bidirectional embeddings, overrides and isolates that make text read otherwise
/// than it is stored.
fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An absolute `http(s)://` address with a host and nothing a page would have to
/// escape or a reader could misread: no whitespace, quotes, angle brackets,
/// backslashes or braces.
fn is_web_address(value: &str) -> bool {
    let Some(rest) = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !host.is_empty()
        && !value.chars().any(|c| {
            c.is_whitespace()
                || matches!(
                    c,
                    '"' | '\'' | '<' | '>' | '\\' | '`' | '{' | '}' | '|' | '^'
                )
        })
}

/// Renders every language of `template` with `values`; exercise and test crises get
/// their marker in every message.
pub fn render(
    template: &TemplateVersion,
    values: &BTreeMap<String, String>,
    status: AlertStatus,
) -> Result<Vec<RenderedLanguage>, Problem> {
    validate(&template.variables, values)?;
    let mut out = Vec::with_capacity(template.languages.len());
    for (language, wording) in &template.languages {
        out.push(render_language(
            template, language, wording, values, status,
        )?);
    }
    Ok(out)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// What rendering one language's texts shares: the environment, the values as
/// plain text and Markdown-escaped, the practice marker, and errors that name
/// the template, the language and the field.
struct LanguageRenderer<'a> {
    env: Environment<'static>,
    template: &'a TemplateVersion,
    language: &'a str,
    /// Put before a field's name in errors: `all_clear.` for the closing texts.
    field_prefix: &'static str,
    plain: Value,
    markdown: Value,
    marker: Option<&'static str>,
}

impl<'a> LanguageRenderer<'a> {
    fn new(
        template: &'a TemplateVersion,
        language: &'a str,
        values: &BTreeMap<String, String>,
        status: AlertStatus,
        field_prefix: &'static str,
    ) -> Self {
        let markdown_values: BTreeMap<&str, String> = values
            .iter()
            .map(|(k, v)| (k.as_str(), escape_markdown(v)))
            .collect();
        LanguageRenderer {
            env: environment(),
            template,
            language,
            field_prefix,
            plain: Value::from_serialize(values),
            markdown: Value::from_serialize(&markdown_values),
            marker: marker(status, language),
        }
    }

    /// `source` rendered in `ctx`, trimmed; `name` ends in `.html` for HTML.
    fn render(&self, name: &str, source: &str, ctx: &Value) -> Result<String, Problem> {
        self.env
            .render_named_str(name, source, ctx)
            .map(|s| s.trim().to_owned())
            .map_err(|e| {
                Problem::new(
                    422,
                    "template cannot be rendered",
                    format!(
                        "template `{}` version {} ({}, {}{name}): {e}",
                        self.template.id, self.template.version, self.language, self.field_prefix
                    ),
                )
            })
    }

    /// `text` after the practice marker, if there is one.
    fn mark(&self, text: String) -> String {
        match self.marker {
            Some(m) => format!("{m}: {text}"),
            None => text,
        }
    }

    /// `html` after the practice marker as a paragraph of its own.
    fn mark_html(&self, html: String) -> String {
        match self.marker {
            Some(m) => format!("<p><strong>{m}</strong></p>\n{html}"),
            None => html,
        }
    }

    /// The SMS of `text`, marked, with its encoding and segments.
    fn sms(&self, text: String) -> SmsMessage {
        let text = self.mark(text);
        let cost = gsm::cost(&text);
        SmsMessage {
            text,
            encoding: cost.encoding.as_str().to_owned(),
            segments: cost.segments,
        }
    }
}

fn render_language(
    template: &TemplateVersion,
    language: &str,
    wording: &LanguageTemplate,
    values: &BTreeMap<String, String>,
    status: AlertStatus,
) -> Result<RenderedLanguage, Problem> {
    let r = LanguageRenderer::new(template, language, values, status, "");
    let render_parts = |vars: &Value| -> Result<CrisisParts, Problem> {
        Ok(CrisisParts {
            what_happened: r.render("what_happened", &wording.parts.what_happened, vars)?,
            affects_me: r.render("affects_me", &wording.parts.affects_me, vars)?,
            city_actions: r.render("city_actions", &wording.parts.city_actions, vars)?,
            what_to_do: r.render("what_to_do", &wording.parts.what_to_do, vars)?,
            learn_more: r.render("learn_more", &wording.parts.learn_more, vars)?,
        })
    };
    let parts = render_parts(&r.plain)?;
    let markdown_parts = render_parts(&r.markdown)?;
    let plain = minijinja::context! { parts => Value::from_serialize(&parts), ..r.plain.clone() };
    let markdown = minijinja::context! { parts => Value::from_serialize(&markdown_parts), ..r.markdown.clone() };
    Ok(RenderedLanguage {
        language: language.to_owned(),
        sms: r.sms(r.render("sms", &wording.sms, &plain)?),
        email: EmailMessage {
            subject: r.mark(r.render("email_subject", &wording.email_subject, &plain)?),
            text: r.mark(r.render("email_text", &wording.email_text, &plain)?),
            html: r.mark_html(r.render("email.html", &wording.email_html, &plain)?),
        },
        banner: BannerMessage {
            headline: r.mark(r.render("banner_headline", &wording.banner_headline, &plain)?),
            body: r.render("banner_body", &wording.banner_body, &plain)?,
            link_text: r.render("banner_link_text", &wording.banner_link_text, &plain)?,
            link_url: r.render("banner_link_url", &wording.banner_link_url, &plain)?,
            level: wording.banner_level,
        },
        intranet: IntranetMessage {
            title: r.mark(r.render("intranet_title", &wording.intranet_title, &plain)?),
            body: r.render("intranet_body", &wording.intranet_body, &markdown)?,
        },
        parts,
    })
}

/// Every template text of one language, by field name (the closing texts as
/// `all_clear.sms`, `cancel.banner_body` …).
pub fn sources(wording: &LanguageTemplate) -> Vec<(&'static str, &str)> {
    let p = &wording.parts;
    let mut out = vec![
        ("parts.what_happened", p.what_happened.as_str()),
        ("parts.affects_me", &p.affects_me),
        ("parts.city_actions", &p.city_actions),
        ("parts.what_to_do", &p.what_to_do),
        ("parts.learn_more", &p.learn_more),
        ("sms", &wording.sms),
        ("email_subject", &wording.email_subject),
        ("email_text", &wording.email_text),
        ("email_html", &wording.email_html),
        ("banner_headline", &wording.banner_headline),
        ("banner_body", &wording.banner_body),
        ("banner_link_text", &wording.banner_link_text),
        ("banner_link_url", &wording.banner_link_url),
        ("intranet_title", &wording.intranet_title),
        ("intranet_body", &wording.intranet_body),
    ];
    if let Some(c) = &wording.all_clear {
        out.extend([
            ("all_clear.sms", c.sms.as_str()),
            ("all_clear.email_subject", &c.email_subject),
            ("all_clear.email_text", &c.email_text),
            ("all_clear.banner_headline", &c.banner_headline),
            ("all_clear.banner_body", &c.banner_body),
            ("all_clear.intranet_title", &c.intranet_title),
            ("all_clear.intranet_body", &c.intranet_body),
        ]);
    }
    if let Some(c) = &wording.cancel {
        out.extend([
            ("cancel.sms", c.sms.as_str()),
            ("cancel.email_subject", &c.email_subject),
            ("cancel.email_text", &c.email_text),
            ("cancel.banner_headline", &c.banner_headline),
            ("cancel.banner_body", &c.banner_body),
            ("cancel.intranet_title", &c.intranet_title),
            ("cancel.intranet_body", &c.intranet_body),
        ]);
    }
    out
}

/// The closing texts a language must carry: the all-clear or the correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosingKind {
    AllClear,
    Cancel,
}

impl ClosingKind {
    /// The key of the texts in a template (`languages.sv.all_clear`).
    pub fn key(self) -> &'static str {
        match self {
            ClosingKind::AllClear => "all_clear",
            ClosingKind::Cancel => "cancel",
        }
    }

    /// This kind's texts in `wording`, when it has them.
    pub fn of(self, wording: &LanguageTemplate) -> Option<&ClosingTemplate> {
        match self {
            ClosingKind::AllClear => wording.all_clear.as_ref(),
            ClosingKind::Cancel => wording.cancel.as_ref(),
        }
    }
}

/// Renders the all-clear or the correction of every language of `template` with
/// the crisis's `values`: the practice marker as in the alert, the email's HTML
/// made from its text, the banner at level info with the alert's link. `None`
/// when a language lacks the texts (a version approved before they were
/// required).
pub fn render_closing(
    template: &TemplateVersion,
    kind: ClosingKind,
    values: &BTreeMap<String, String>,
    status: AlertStatus,
) -> Result<Option<Vec<RenderedLanguage>>, Problem> {
    let mut out = Vec::with_capacity(template.languages.len());
    for (language, wording) in &template.languages {
        let Some(texts) = kind.of(wording) else {
            return Ok(None);
        };
        let field_prefix = match kind {
            ClosingKind::AllClear => "all_clear.",
            ClosingKind::Cancel => "cancel.",
        };
        let r = LanguageRenderer::new(template, language, values, status, field_prefix);
        let plain = &r.plain;
        let email_text = r.render("email_text", &texts.email_text, plain)?;
        let html: Vec<String> = email_text
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .map(|p| format!("<p>{}</p>", escape_html(p.trim()).replace('\n', "<br>\n")))
            .collect();
        let banner_body = r.render("banner_body", &texts.banner_body, plain)?;
        let link_url = r.render("banner_link_url", &wording.banner_link_url, plain)?;
        out.push(RenderedLanguage {
            language: language.clone(),
            parts: CrisisParts {
                what_happened: banner_body.clone(),
                learn_more: link_url.clone(),
                ..CrisisParts::default()
            },
            sms: r.sms(r.render("sms", &texts.sms, plain)?),
            email: EmailMessage {
                subject: r.mark(r.render("email_subject", &texts.email_subject, plain)?),
                text: r.mark(email_text),
                html: r.mark_html(html.join("\n")),
            },
            banner: BannerMessage {
                headline: r.mark(r.render("banner_headline", &texts.banner_headline, plain)?),
                body: banner_body,
                link_text: r.render("banner_link_text", &wording.banner_link_text, plain)?,
                link_url,
                level: BannerLevel::Info,
            },
            intranet: IntranetMessage {
                title: r.mark(r.render("intranet_title", &texts.intranet_title, plain)?),
                body: r.render("intranet_body", &texts.intranet_body, &r.markdown)?,
            },
        });
    }
    Ok(Some(out))
}

/// Checks that minijinja can parse a template text (variables are checked when
/// rendering, where strict mode refuses unknown ones).
pub fn parse_source(source: &str) -> Result<(), minijinja::Error> {
    environment().template_from_str(source).map(|_| ())
}

/// Longest banner headline before a warning; longer ones wrap badly on phones.
pub const BANNER_HEADLINE_MAX: usize = 120;
/// Longest banner body before a warning.
pub const BANNER_BODY_MAX: usize = 400;
/// Longest email subject before a warning (RFC 5322's recommended line length).
pub const EMAIL_SUBJECT_MAX: usize = 78;
/// Longest intranet title before a warning.
pub const INTRANET_TITLE_MAX: usize = 120;

/// What a person should look at in one rendered language: a character that forces
/// UCS-2 (and where it came from), an SMS over the template's segment limit, and
/// banner, subject and title lengths that read badly.
pub fn warnings(
    template: &TemplateVersion,
    rendered: &RenderedLanguage,
    values: &BTreeMap<String, String>,
) -> Vec<RenderWarning> {
    let mut out = Vec::new();
    let mut warn = |channel: Channel, message: String| {
        out.push(RenderWarning {
            channel: Some(channel),
            message,
        })
    };
    if let Some(c) = gsm::first_non_gsm(&rendered.sms.text) {
        let origin = values
            .iter()
            .find(|(_, v)| v.contains(c))
            .map(|(name, _)| format!(" (in the value of `{name}`)"))
            .unwrap_or_default();
        warn(
            Channel::Sms,
            format!(
                "{} forces UCS-2{origin}: 70 characters per segment instead of 160",
                gsm::describe(c)
            ),
        );
    }
    if rendered.sms.segments > template.max_sms_segments {
        warn(
            Channel::Sms,
            format!(
                "the SMS takes {} segments; the template allows {}",
                rendered.sms.segments, template.max_sms_segments
            ),
        );
    }
    let long = |text: &str, max: usize| {
        let n = text.chars().count();
        (n > max).then_some(n)
    };
    if let Some(n) = long(&rendered.banner.headline, BANNER_HEADLINE_MAX) {
        warn(
            Channel::Banner,
            format!("banner headline over {BANNER_HEADLINE_MAX} characters ({n})"),
        );
    }
    if let Some(n) = long(&rendered.banner.body, BANNER_BODY_MAX) {
        warn(
            Channel::Banner,
            format!("banner body over {BANNER_BODY_MAX} characters ({n})"),
        );
    }
    if let Some(n) = long(&rendered.email.subject, EMAIL_SUBJECT_MAX) {
        warn(
            Channel::Email,
            format!(
                "email subject over {EMAIL_SUBJECT_MAX} characters ({n}); mail programs may cut it"
            ),
        );
    }
    if let Some(n) = long(&rendered.intranet.title, INTRANET_TITLE_MAX) {
        warn(
            Channel::Intranet,
            format!("intranet title over {INTRANET_TITLE_MAX} characters ({n})"),
        );
    }
    out
}

/// Refuses a declaration whose SMS would take more segments than the template
/// allows (a value with a character outside GSM-7 can triple the cost), naming the
/// character and the variable it came from.
pub fn check_sms_segments(
    template: &TemplateVersion,
    rendered: &[RenderedLanguage],
    values: &BTreeMap<String, String>,
) -> Result<(), Problem> {
    for language in rendered {
        if language.sms.segments <= template.max_sms_segments {
            continue;
        }
        let culprit = gsm::first_non_gsm(&language.sms.text).and_then(|c| {
            values
                .iter()
                .find(|(_, v)| v.contains(c))
                .map(|(name, _)| (name.clone(), c))
        });
        let (field, cause) = match &culprit {
            Some((name, c)) => (
                format!("variables.{name}"),
                format!(
                    "`{name}` contains the {}, which forces UCS-2 encoding; write it without that character",
                    gsm::describe(*c)
                ),
            ),
            None => ("variables".to_owned(), "shorten the values".to_owned()),
        };
        return Err(Problem::invalid(
            field,
            format!(
                "the {} SMS would take {} segments and the template allows {}: {cause}",
                language.language, language.sms.segments, template.max_sms_segments
            ),
        ));
    }
    Ok(())
}

/// The word that marks practice messages, in the message's language.
pub fn marker(status: AlertStatus, language: &str) -> Option<&'static str> {
    let swedish = language == "sv" || language.starts_with("sv-");
    match status {
        AlertStatus::Actual => None,
        AlertStatus::Exercise if swedish => Some("ÖVNING"),
        AlertStatus::Exercise => Some("EXERCISE"),
        AlertStatus::Test => Some("TEST"),
    }
}

/// Escapes a value for Markdown, so it stays text: no markup, no HTML, no links.
pub fn escape_markdown(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '!'
            | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn water() -> TemplateVersion {
        crate::template::parse("vattenlacka.toml", crate::template::DEMO[0].1).unwrap()
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn good() -> BTreeMap<String, String> {
        values(&[
            ("omrade", "Farsta"),
            ("beraknat_klart", "i kväll kl. 20"),
            ("vattenpunkt", "Farsta centrum"),
        ])
    }

    #[test]
    fn renders_every_language_and_channel() {
        let out = render(&water(), &good(), AlertStatus::Actual).unwrap();
        let langs: Vec<&str> = out.iter().map(|l| l.language.as_str()).collect();
        assert_eq!(langs, ["en", "sv", "sv-x-lattlast"]);
        let sv = out.iter().find(|l| l.language == "sv").unwrap();
        assert!(
            sv.sms.text.contains("Vattnet är avstängt i Farsta"),
            "{}",
            sv.sms.text
        );
        assert_eq!(sv.sms.encoding, "gsm7");
        assert_eq!(sv.email.subject, "Vattnet är avstängt i Farsta");
        assert!(sv.intranet.body.contains("## Vad har hänt?"));
        assert!(sv.parts.what_happened.contains("Farsta"));
    }

    #[test]
    fn hostile_values_are_escaped_where_they_could_run() {
        let mut v = good();
        v.insert("omrade".into(), "<script>alert(1)</script>".into());
        let out = render(&water(), &v, AlertStatus::Actual).unwrap();
        let sv = out.iter().find(|l| l.language == "sv").unwrap();
        assert!(!sv.email.html.contains("<script>"), "{}", sv.email.html);
        assert!(sv.email.html.contains("&lt;script&gt;"));
        assert!(
            !sv.intranet.body.contains("<script>"),
            "{}",
            sv.intranet.body
        );
        assert!(sv.intranet.body.contains("&lt;script&gt;"));
        // The banner's text stays as typed here, so its length is what a reader sees;
        // the banner channel HTML-escapes it when it serves it.
        assert!(sv.banner.headline.contains("<script>alert(1)</script>"));
    }

    #[test]
    fn missing_unknown_and_too_long_values_name_the_variable() {
        let t = water();
        let mut missing = good();
        missing.remove("omrade");
        let p = render(&t, &missing, AlertStatus::Actual).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("variables.omrade"));
        assert!(p.detail.contains("missing"), "{}", p.detail);

        let mut unknown = good();
        unknown.insert("gata".into(), "Storgatan".into());
        let p = render(&t, &unknown, AlertStatus::Actual).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("variables.gata"));

        let mut long = good();
        long.insert("omrade".into(), "x".repeat(41));
        let p = render(&t, &long, AlertStatus::Actual).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("variables.omrade"));
        assert!(p.detail.contains("41"), "{}", p.detail);

        let mut control = good();
        control.insert("omrade".into(), "Farsta\u{7}".into());
        let p = render(&t, &control, AlertStatus::Actual).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("variables.omrade"));
    }

    #[test]
    fn exercises_are_marked_in_every_message() {
        let out = render(&water(), &good(), AlertStatus::Exercise).unwrap();
        for l in &out {
            let word = if l.language.starts_with("sv") {
                "ÖVNING"
            } else {
                "EXERCISE"
            };
            assert!(l.sms.text.starts_with(word), "{}", l.sms.text);
            assert!(l.email.subject.starts_with(word));
            assert!(l.email.text.starts_with(word));
            assert!(l.email.html.contains(word));
            assert!(l.banner.headline.starts_with(word));
            assert!(l.intranet.title.starts_with(word));
        }
    }

    #[test]
    fn an_unknown_variable_in_the_template_is_an_error_not_an_empty_string() {
        let mut t = water();
        t.languages.get_mut("sv").unwrap().sms = "Hej {{ finns_inte }}".into();
        let p = render(&t, &good(), AlertStatus::Actual).unwrap_err();
        assert!(p.detail.contains("sms"), "{}", p.detail);
    }
}

#[cfg(test)]
mod warning_tests {
    use super::*;

    fn water() -> TemplateVersion {
        crate::template::parse("vattenlacka.toml", crate::template::DEMO[0].1).unwrap()
    }

    fn values(omrade: &str) -> BTreeMap<String, String> {
        [
            ("omrade", omrade),
            ("beraknat_klart", "i kväll kl. 20"),
            (
                "vattenpunkt",
                "Farsta centrum, vid ingången mot Farstavägen",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn a_typographic_quote_in_a_value_is_named_with_its_variable() {
        let t = water();
        let v = values("”Farsta” och ”Hökarängen”");
        let out = render(&t, &v, AlertStatus::Actual).unwrap();
        let sv = out.iter().find(|l| l.language == "sv").unwrap();
        let w = warnings(&t, sv, &v);
        assert!(
            w.iter().any(|w| w.channel == Some(Channel::Sms)
                && w.message.starts_with(
                    "typographic quote ” (U+201D) forces UCS-2 (in the value of `omrade`)"
                )),
            "{w:?}"
        );
        // The UCS-2 text takes more segments than the template allows: declaring
        // it is refused, naming the variable and the character.
        let p = check_sms_segments(&t, &out, &v).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("variables.omrade"));
        assert!(p.detail.contains("typographic quote"), "{}", p.detail);
    }

    #[test]
    fn banner_lengths_count_the_characters_a_reader_sees_not_their_escapes() {
        // 100 ampersands, a space and a 19-character value: exactly 120 characters,
        // which HTML escaping would make 500 and more.
        let mut t = water();
        t.languages.get_mut("sv").unwrap().banner_headline =
            format!("{} {{{{ omrade }}}}", "&".repeat(100));
        let at_limit = values(&format!("{}{}", "<".repeat(10), ">".repeat(9)));
        let out = render(&t, &at_limit, AlertStatus::Actual).unwrap();
        let sv = out.iter().find(|l| l.language == "sv").unwrap();
        assert_eq!(sv.banner.headline.chars().count(), BANNER_HEADLINE_MAX);
        let w = warnings(&t, sv, &at_limit);
        assert!(
            w.iter().all(|w| w.channel != Some(Channel::Banner)),
            "{w:?}"
        );

        let over = values(&format!("{}{}", "<".repeat(10), ">".repeat(10)));
        let out = render(&t, &over, AlertStatus::Actual).unwrap();
        let sv = out.iter().find(|l| l.language == "sv").unwrap();
        let w = warnings(&t, sv, &over);
        assert!(
            w.iter().any(|w| w.channel == Some(Channel::Banner)
                && w.message == "banner headline over 120 characters (121)"),
            "{w:?}"
        );
    }

    #[test]
    fn a_long_banner_headline_is_flagged() {
        let mut t = water();
        t.languages.get_mut("sv").unwrap().banner_headline =
            format!("{} {{{{ omrade }}}}", "Vattnet är avstängt ".repeat(6));
        let v = values("Farsta");
        let out = render(&t, &v, AlertStatus::Actual).unwrap();
        let sv = out.iter().find(|l| l.language == "sv").unwrap();
        let w = warnings(&t, sv, &v);
        assert!(
            w.iter().any(|w| w.channel == Some(Channel::Banner)
                && w.message.starts_with("banner headline over 120 characters")),
            "{w:?}"
        );
        let plain = warnings(
            &water(),
            &render(&water(), &v, AlertStatus::Actual).unwrap()[1],
            &v,
        );
        assert!(plain.is_empty(), "{plain:?}");
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;

    fn spec(name: &str, kind: VariableType, allowed: &[&str]) -> VariableSpec {
        VariableSpec {
            name: name.to_owned(),
            label: format!("Etikett för {name}"),
            kind,
            required: true,
            max_length: 60,
            allowed: allowed.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn check(spec: &VariableSpec, value: &str) -> Result<(), Problem> {
        let values = BTreeMap::from([(spec.name.clone(), value.to_owned())]);
        validate(std::slice::from_ref(spec), &values)
    }

    fn accepted(spec: &VariableSpec, value: &str) {
        if let Err(p) = check(spec, value) {
            panic!("{value:?} should be a good {:?}: {}", spec.kind, p.detail);
        }
    }

    /// Asserts that `value` is refused, naming the variable (as the field and in
    /// the text) and giving `reason`.
    fn refused(spec: &VariableSpec, value: &str, reason: &str) {
        let p = check(spec, value).expect_err(value);
        assert_eq!(p.status, 422, "{value:?}");
        assert_eq!(
            p.field.as_deref(),
            Some(format!("variables.{}", spec.name).as_str()),
            "{value:?}"
        );
        assert!(
            p.detail.contains(&format!("`{}`", spec.name)) && p.detail.contains(reason),
            "{value:?}: {}",
            p.detail
        );
    }

    #[test]
    fn an_enum_takes_only_its_allowed_values_exactly() {
        let s = spec("niva", VariableType::Enum, &["gul", "orange", "röd"]);
        for good in ["gul", "orange", "röd"] {
            accepted(&s, good);
        }
        for bad in ["lila", "Röd", "röd ", "gul,röd", "<b>röd</b>"] {
            refused(&s, bad, "must be one of: gul, orange, röd");
        }
    }

    #[test]
    fn a_datetime_is_a_real_date_and_time() {
        let s = spec("tid", VariableType::Datetime, &[]);
        for good in [
            "2026-11-26 14:00",
            "2026-11-26T14:00:00+01:00",
            "2026-11-26T13:00:00Z",
        ] {
            accepted(&s, good);
        }
        for bad in [
            "i morgon kl. 14",
            "2026-11-26",
            "26/11/2026 14:00",
            "2026-02-30 10:00",
            "2026-11-26 25:00",
            "2026-11-26 14:00 <script>",
        ] {
            refused(&s, bad, "must be a date and time like 2026-11-26 14:00");
        }
    }

    #[test]
    fn a_url_is_an_http_address_with_a_host_and_nothing_to_escape() {
        let s = spec("lank", VariableType::Url, &[]);
        for good in [
            "https://stockholm.se/vatten",
            "https://stockholm.se/vatten#farsta",
            "http://intranat.stad.local/kris?id=1&lang=sv",
            "https://start.stockholm/~kris/%C3%B6",
        ] {
            accepted(&s, good);
        }
        for bad in [
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "stockholm.se/vatten",
            "ftp://stockholm.se/vatten",
            "https://",
            "https:///vatten",
            "https://stockholm.se/\"><script>alert(1)</script>",
            "https://stockholm.se/a b",
            "https://stockholm.se/'onmouseover",
            " https://stockholm.se",
        ] {
            refused(&s, bad, "must be a web address");
        }
    }

    #[test]
    fn a_phone_number_has_digits_and_little_else() {
        let s = spec("telefon", VariableType::Phone, &[]);
        for good in ["08-508 000 00", "+46 8 508 000 00", "0701740650", "112 112"] {
            accepted(&s, good);
        }
        for bad in [
            "ring växeln",
            "12345",
            "+46 8 508 000 00 00 00 00",
            "08/508 000 00",
            "tel:0850800000",
            "08-508 000 00 <script>",
        ] {
            refused(&s, bad, "must be a phone number like 08-508 000 00");
        }
    }

    #[test]
    fn control_characters_are_refused_in_every_type() {
        let text = spec("omrade", VariableType::Text, &[]);
        for (value, code) in [
            ("Farsta\nHökarängen", "U+000A"),
            ("Farsta\r", "U+000D"),
            ("\tFarsta", "U+0009"),
            ("Farsta\u{0}", "U+0000"),
            ("Farsta\u{1b}[31m", "U+001B"),
            ("Farsta\u{7f}", "U+007F"),
            ("Farsta\u{85}", "U+0085"),
            ("Farsta\u{2028}Hökarängen", "U+2028"),
            ("Farsta\u{202E}atsraF", "U+202E"),
            ("Farsta\u{2067}x", "U+2067"),
        ] {
            refused(
                &text,
                value,
                &format!("contains the control character {code}"),
            );
        }
        // The other types refuse them too, before their own check.
        refused(
            &spec("lank", VariableType::Url, &[]),
            "https://stockholm.se/\nvatten",
            "control character U+000A",
        );
        refused(
            &spec("niva", VariableType::Enum, &["gul"]),
            "gul\u{0}",
            "control character U+0000",
        );
        // Letters, typographic quotes and emoji are text (the SMS warns about
        // UCS-2; that is not a reason to refuse).
        for good in ["Åsögatan, Hökarängen", "”Farsta”", "Farsta 🌊", "حي فارستا"]
        {
            accepted(&text, good);
        }
    }
}
