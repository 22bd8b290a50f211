//! The language krisbud speaks to a person: Swedish unless the person asks for
//! English. The CLI asks `--lang`, then `KRISBUD_LANG`, then the POSIX locale
//! (`LC_ALL`, `LC_MESSAGES`, `LANG`, first one set); the console asks the user's
//! choice. Anything that names neither Swedish nor English (`C.UTF-8`, `de_DE`)
//! gives Swedish, the city's language. Records, logs and the API stay as they are.

/// A language a person reads krisbud's own words in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Lang {
    /// Svenska, the default.
    #[default]
    Sv,
    /// English.
    En,
}

impl Lang {
    /// Both, Swedish first.
    pub const ALL: [Lang; 2] = [Lang::Sv, Lang::En];

    /// The BCP 47 tag: `sv` or `en`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Sv => "sv",
            Lang::En => "en",
        }
    }

    /// The language's own name, for a language switch: `Svenska`, `English`.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::Sv => "Svenska",
            Lang::En => "English",
        }
    }

    /// The language a tag or a POSIX locale names (`en`, `EN-gb`, `sv_SE.UTF-8`),
    /// or `None` when it names neither Swedish nor English.
    pub fn parse(text: &str) -> Option<Lang> {
        let primary = text
            .split(['-', '_', '.', '@'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match primary.as_str() {
            "sv" => Some(Lang::Sv),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language the environment asks for: `KRISBUD_LANG`, else the first of
    /// `LC_ALL`, `LC_MESSAGES` and `LANG` that is set and not empty (POSIX order).
    /// Swedish when that names another language or nothing is set.
    pub fn from_env() -> Lang {
        Lang::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Lang::from_env`] over any source of variables (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Lang {
        if let Some(lang) = var("KRISBUD_LANG").as_deref().and_then(Lang::parse) {
            return lang;
        }
        ["LC_ALL", "LC_MESSAGES", "LANG"]
            .into_iter()
            .filter_map(&var)
            .find(|value| !value.is_empty())
            .and_then(|value| Lang::parse(&value))
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Lang {
        Lang::from_vars(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn swedish_unless_english_is_asked_for() {
        assert_eq!(env(&[]), Lang::Sv);
        assert_eq!(env(&[("LANG", "C.UTF-8")]), Lang::Sv);
        assert_eq!(env(&[("LANG", "de_DE.UTF-8")]), Lang::Sv);
        assert_eq!(env(&[("LANG", "en_GB.UTF-8")]), Lang::En);
        assert_eq!(env(&[("LANG", "sv_SE.UTF-8")]), Lang::Sv);
    }

    #[test]
    fn posix_order_then_krisbud_lang_first() {
        // LC_ALL wins over LANG; an empty LC_ALL does not count.
        assert_eq!(env(&[("LC_ALL", "sv_SE"), ("LANG", "en_US")]), Lang::Sv);
        assert_eq!(env(&[("LC_ALL", ""), ("LANG", "en_US")]), Lang::En);
        assert_eq!(env(&[("LC_MESSAGES", "en"), ("LANG", "sv_SE")]), Lang::En);
        // KRISBUD_LANG wins over the locale; an unknown value falls through.
        assert_eq!(env(&[("KRISBUD_LANG", "sv"), ("LANG", "en_US")]), Lang::Sv);
        assert_eq!(env(&[("KRISBUD_LANG", "fi"), ("LANG", "en_US")]), Lang::En);
    }

    #[test]
    fn tags_in_any_case() {
        assert_eq!(Lang::parse("EN-gb"), Some(Lang::En));
        assert_eq!(Lang::parse("sv"), Some(Lang::Sv));
        assert_eq!(Lang::parse("english"), None);
        assert_eq!(Lang::parse(""), None);
    }
}
