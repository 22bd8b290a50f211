//! Text helpers every service that writes HTML shares.

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
