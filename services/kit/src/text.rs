//! Text helpers the services share: the one HTML escape, and the one check of a
//! free text a person types (a note, a reason).

/// Checks a free text a person typed for the record (a note, a reason): at most
/// `max` characters and no control character but line breaks. The problem
/// names `field` ("note", "reason") and never repeats the text.
pub fn check_free_text(field: &str, text: &str, max: usize) -> Result<(), krisbud_proto::Problem> {
    if text.chars().count() > max {
        return Err(krisbud_proto::Problem::invalid(
            field,
            format!("the {field} is longer than {max} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(krisbud_proto::Problem::invalid(
            field,
            format!("the {field} contains a control character"),
        ));
    }
    Ok(())
}

/// Escapes `&`, `<`, `>`, `"` and `'` as character references, so the text stays
/// text wherever a page puts it, in an element or in a quoted attribute. Every
/// other character (å, ä, ö, an exercise marker) is left as it is.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_nothing_else_changes() {
        assert_eq!(
            escape_html(r#"<script>alert('x')</script> & "citat""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;citat&quot;"
        );
        let swedish = "ÖVNING: Vattnet är avstängt i Högdalen";
        assert_eq!(escape_html(swedish), swedish);
    }
}

/// Where the people who read krisbud live: staff and residents read local time.
pub const LOCAL_ZONE: chrono_tz::Tz = chrono_tz::Europe::Stockholm;

/// A moment as people in Stockholm read it, marked with its zone:
/// `2026-12-02 03:14:07 CET` (CEST in summer). Records and the API keep UTC.
pub fn local_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&LOCAL_ZONE)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// The clock time in Stockholm with its zone, for a message: `09:15 CET`.
pub fn local_clock(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&LOCAL_ZONE).format("%H:%M %Z").to_string()
}

/// The time of day in Stockholm with seconds and its zone: `09:15:07 CET`.
pub fn local_clock_seconds(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&LOCAL_ZONE)
        .format("%H:%M:%S %Z")
        .to_string()
}

#[cfg(test)]
mod local_time_tests {
    use chrono::{TimeZone, Utc};

    /// Summer time ends at 03:00 CEST on the last Sunday of October (2026-10-25),
    /// when clocks go back to 02:00 CET.
    #[test]
    fn local_time_follows_the_change_from_summer_time() {
        let before = Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 10, 25, 1, 30, 0).unwrap();
        assert_eq!(super::local_time(before), "2026-10-25 02:30:00 CEST");
        assert_eq!(super::local_time(after), "2026-10-25 02:30:00 CET");
        assert_eq!(super::local_clock(before), "02:30 CEST");
        assert_eq!(super::local_clock_seconds(after), "02:30:00 CET");
    }
}
