//! The words of a crisis's later messages: the prefix an update gets and the
//! all-clear and correction built from the last message, per language (Swedish,
//! easy-to-read Swedish, English for every other language).

use krisbud_kit::text::escape_html;
use krisbud_proto::AlertStatus;
use krisbud_proto::template::{
    BannerLevel, BannerMessage, CrisisParts, EmailMessage, IntranetMessage, RenderedLanguage,
    SmsMessage,
};

use crate::{gsm, render};

/// The all-clear or the correction.
pub use crate::render::ClosingKind as Closing;

/// How the language's messages are worded: Swedish, easy-to-read Swedish, or
/// English for every other language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wording {
    Swedish,
    EasySwedish,
    English,
}

fn wording(language: &str) -> Wording {
    if language == "sv-x-lattlast" {
        Wording::EasySwedish
    } else if language == "sv" || language.starts_with("sv-") {
        Wording::Swedish
    } else {
        Wording::English
    }
}

/// The word an update starts with, in the message's language.
pub fn update_prefix(language: &str) -> &'static str {
    match wording(language) {
        Wording::Swedish => "UPPDATERING",
        Wording::EasySwedish => "NY INFORMATION",
        Wording::English => "UPDATE",
    }
}

/// `text` with `word: ` after the practice marker (or at the start without one).
fn insert_after_marker(text: &str, marker: Option<&str>, word: &str) -> String {
    if let Some(m) = marker
        && let Some(rest) = text.strip_prefix(&format!("{m}: "))
    {
        return format!("{m}: {word}: {rest}");
    }
    format!("{word}: {text}")
}

/// Marks an update's rendering: "UPPDATERING: " (per language) after the practice
/// marker in every text a person reads first.
pub fn prefix_update(language: &mut RenderedLanguage, status: AlertStatus) {
    let word = update_prefix(&language.language);
    let marker = render::marker(status, &language.language);
    let add = |text: &str| insert_after_marker(text, marker, word);
    language.sms.text = add(&language.sms.text);
    let cost = gsm::cost(&language.sms.text);
    language.sms.encoding = cost.encoding.as_str().to_owned();
    language.sms.segments = cost.segments;
    language.email.subject = add(&language.email.subject);
    language.email.text = add(&language.email.text);
    language.banner.headline = add(&language.banner.headline);
    language.intranet.title = add(&language.intranet.title);
    let flag = format!("<p><strong>{word}</strong></p>\n");
    language.email.html = match marker {
        Some(m) => {
            let marked = format!("<p><strong>{m}</strong></p>\n");
            match language.email.html.strip_prefix(&marked) {
                Some(rest) => format!("{marked}{flag}{rest}"),
                None => format!("{flag}{}", language.email.html),
            }
        }
        None => format!("{flag}{}", language.email.html),
    };
}

/// The headline of a rendering without the practice marker and update prefix.
fn bare_headline(language: &RenderedLanguage, status: AlertStatus) -> String {
    let mut headline = language.banner.headline.as_str();
    if let Some(m) = render::marker(status, &language.language) {
        headline = headline.strip_prefix(&format!("{m}: ")).unwrap_or(headline);
    }
    let word = format!("{}: ", update_prefix(&language.language));
    headline = headline.strip_prefix(&word).unwrap_or(headline);
    headline.trim_end_matches('.').to_owned()
}

/// The fixed words of an all-clear or a correction in one language.
struct Words {
    label: &'static str,
    /// The text after the label, quoting the headline.
    core: fn(&str, &str) -> String,
    /// The banner's and intranet's body.
    body: fn(&str) -> String,
}

fn words(closing: Closing, wording: Wording) -> Words {
    fn link(url: &str) -> String {
        if url.is_empty() {
            String::new()
        } else {
            format!(" {url}")
        }
    }
    match (closing, wording) {
        (Closing::AllClear, Wording::Swedish) => Words {
            label: "FARAN ÖVER",
            core: |h, url| format!("{h}.{}", link(url)),
            body: |_| "Faran är över.".to_owned(),
        },
        (Closing::AllClear, Wording::EasySwedish) => Words {
            label: "FARAN ÄR ÖVER",
            core: |h, url| format!("{h}.{}", link(url)),
            body: |_| "Faran är över nu.".to_owned(),
        },
        (Closing::AllClear, Wording::English) => Words {
            label: "ALL CLEAR",
            core: |h, url| format!("{h}.{}", link(url)),
            body: |_| "The danger is over.".to_owned(),
        },
        (Closing::Cancel, Wording::Swedish) => Words {
            label: "RÄTTELSE",
            core: |h, _| format!("Meddelandet \"{h}\" skickades av misstag. Bortse från det."),
            body: |h| format!("Meddelandet \"{h}\" skickades av misstag. Bortse från det."),
        },
        (Closing::Cancel, Wording::EasySwedish) => Words {
            label: "RÄTTELSE",
            core: |h, _| format!("Meddelandet \"{h}\" skickades av misstag. Bry dig inte om det."),
            body: |h| format!("Meddelandet \"{h}\" skickades av misstag. Bry dig inte om det."),
        },
        (Closing::Cancel, Wording::English) => Words {
            label: "CORRECTION",
            core: |h, _| format!("The message \"{h}\" was sent in error. Please disregard it."),
            body: |h| format!("The message \"{h}\" was sent in error. Please disregard it."),
        },
    }
}

/// The all-clear or the correction of a template version approved before each
/// language had to carry its own: fixed words in the language of `base` (the
/// last alert or update), quoting its headline; the SMS keeps within `max_segments`, cutting the
/// headline when it must.
pub fn closing_message(
    closing: Closing,
    base: &RenderedLanguage,
    status: AlertStatus,
    max_segments: u32,
) -> RenderedLanguage {
    let language = base.language.as_str();
    let words = words(closing, wording(language));
    let marker = render::marker(status, language);
    let mark = |text: String| match marker {
        Some(m) => format!("{m}: {text}"),
        None => text,
    };
    let headline = bare_headline(base, status);
    let url = base.banner.link_url.as_str();
    let sms_url = if closing == Closing::AllClear {
        url
    } else {
        ""
    };
    // Cut the headline, a character at a time, until the SMS fits.
    let mut chars: Vec<char> = headline.chars().collect();
    let mut short = headline.clone();
    let sms_text = loop {
        let text = mark(format!(
            "{}: {}",
            words.label,
            (words.core)(&short, sms_url)
        ));
        if gsm::cost(&text).segments <= max_segments.max(1) || chars.is_empty() {
            break text;
        }
        chars.pop();
        short = format!("{}...", chars.iter().collect::<String>().trim_end());
    };
    let cost = gsm::cost(&sms_text);
    let full = format!("{}: {}", words.label, (words.core)(&headline, sms_url));
    let body = (words.body)(&headline);
    let titled = mark(format!("{}: {headline}", words.label));
    let html = {
        let paragraph = format!("<p>{}</p>", escape_html(&full));
        match marker {
            Some(m) => format!("<p><strong>{m}</strong></p>\n{paragraph}"),
            None => paragraph,
        }
    };
    let mut intranet_body = render::escape_markdown(&body);
    if closing == Closing::AllClear && !url.is_empty() {
        intranet_body.push_str(&format!("\n\n{}", render::escape_markdown(url)));
    }
    RenderedLanguage {
        language: language.to_owned(),
        parts: CrisisParts {
            what_happened: body.clone(),
            learn_more: if closing == Closing::AllClear {
                url.to_owned()
            } else {
                String::new()
            },
            ..CrisisParts::default()
        },
        sms: SmsMessage {
            text: sms_text,
            encoding: cost.encoding.as_str().to_owned(),
            segments: cost.segments,
        },
        email: EmailMessage {
            subject: titled.clone(),
            text: mark(full),
            html,
        },
        banner: BannerMessage {
            headline: titled.clone(),
            body,
            link_text: base.banner.link_text.clone(),
            link_url: base.banner.link_url.clone(),
            level: BannerLevel::Info,
        },
        intranet: IntranetMessage {
            title: titled,
            body: intranet_body,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn water(status: AlertStatus) -> Vec<RenderedLanguage> {
        let t = crate::template::parse("vattenlacka.toml", crate::template::DEMO[0].1).unwrap();
        let values = [
            ("omrade", "Farsta"),
            ("beraknat_klart", "i kväll kl. 20"),
            ("vattenpunkt", "Farsta centrum"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        render::render(&t, &values, status).unwrap()
    }

    fn lang<'a>(all: &'a [RenderedLanguage], l: &str) -> &'a RenderedLanguage {
        all.iter().find(|m| m.language == l).unwrap()
    }

    #[test]
    fn an_update_is_prefixed_per_language_after_the_practice_marker() {
        let mut actual = water(AlertStatus::Actual);
        for l in &mut actual {
            prefix_update(l, AlertStatus::Actual);
        }
        assert!(
            lang(&actual, "sv")
                .sms
                .text
                .starts_with("UPPDATERING: Stockholms stad")
        );
        assert!(
            lang(&actual, "en")
                .banner
                .headline
                .starts_with("UPDATE: The water")
        );
        assert!(
            lang(&actual, "sv-x-lattlast")
                .email
                .subject
                .starts_with("NY INFORMATION: ")
        );
        let mut exercise = water(AlertStatus::Exercise);
        for l in &mut exercise {
            prefix_update(l, AlertStatus::Exercise);
        }
        let sv = lang(&exercise, "sv");
        assert!(
            sv.sms.text.starts_with("ÖVNING: UPPDATERING: "),
            "{}",
            sv.sms.text
        );
        assert!(
            sv.email
                .html
                .starts_with("<p><strong>ÖVNING</strong></p>\n<p><strong>UPPDATERING</strong></p>")
        );
        assert!(
            lang(&exercise, "en")
                .intranet
                .title
                .starts_with("EXERCISE: UPDATE: ")
        );
    }

    #[test]
    fn all_clear_and_correction_quote_the_bare_headline() {
        let mut updated = water(AlertStatus::Exercise);
        for l in &mut updated {
            prefix_update(l, AlertStatus::Exercise);
        }
        let sv = closing_message(
            Closing::AllClear,
            lang(&updated, "sv"),
            AlertStatus::Exercise,
            3,
        );
        assert_eq!(
            sv.sms.text,
            "ÖVNING: FARAN ÖVER: Vattnet är avstängt i Farsta. https://stockholm.se/vatten"
        );
        assert_eq!(
            sv.banner.headline,
            "ÖVNING: FARAN ÖVER: Vattnet är avstängt i Farsta"
        );
        assert_eq!(sv.banner.level, BannerLevel::Info);
        let actual = water(AlertStatus::Actual);
        let en = closing_message(Closing::Cancel, lang(&actual, "en"), AlertStatus::Actual, 3);
        assert_eq!(
            en.sms.text,
            "CORRECTION: The message \"The water is shut off in Farsta\" was sent in error. Please disregard it."
        );
        let sv = closing_message(Closing::Cancel, lang(&actual, "sv"), AlertStatus::Actual, 3);
        assert_eq!(
            sv.sms.text,
            "RÄTTELSE: Meddelandet \"Vattnet är avstängt i Farsta\" skickades av misstag. Bortse från det."
        );
        assert!(sv.email.html.contains("&quot;Vattnet"), "{}", sv.email.html);
    }

    #[test]
    fn a_long_headline_is_cut_to_keep_the_sms_within_the_limit() {
        let mut base = water(AlertStatus::Actual)[1].clone();
        base.banner.headline = "Vattnet är avstängt ".repeat(12);
        let one = closing_message(Closing::Cancel, &base, AlertStatus::Actual, 1);
        assert_eq!(one.sms.segments, 1, "{}", one.sms.text);
        assert!(
            one.sms.text.contains("...\" skickades av misstag"),
            "{}",
            one.sms.text
        );
        let three = closing_message(Closing::Cancel, &base, AlertStatus::Actual, 3);
        assert!(!three.sms.text.contains("..."));
    }
}
