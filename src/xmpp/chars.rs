//! Character classes of XML 1.0 (fifth edition), escaping for output and resolution of
//! the references the XMPP subset allows (RFC 6120 section 11.1).

use std::borrow::Cow;

/// `Char` production: what may appear in a document at all, literally or as a reference.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\u{9}' | '\u{A}' | '\u{D}'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// `S` production.
pub(crate) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(crate) fn is_all_space(s: &str) -> bool {
    s.chars().all(is_xml_space)
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// `NCName` of XML Namespaces: a name without a colon.
pub(crate) fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if is_name_start_char(c) => chars.all(is_name_char),
        _ => false,
    }
}

/// Splits a `QName` into prefix and local part, or `None` if it is not one.
pub(crate) fn split_qname(s: &str) -> Option<(Option<&str>, &str)> {
    match s.split_once(':') {
        None if is_ncname(s) => Some((None, s)),
        Some((prefix, local)) if is_ncname(prefix) && is_ncname(local) => {
            Some((Some(prefix), local))
        }
        _ => None,
    }
}

/// Why a reference (`&name;`) could not be resolved: the two cases get different stream
/// error conditions.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadReference {
    /// A well-formed entity reference other than the five predefined ones: it could only
    /// be declared in a DTD, which RFC 6120 section 11.1 forbids (restricted-xml).
    Undeclared,
    /// Not a reference XML allows at all, or a character reference to a non-`Char`.
    Malformed,
}

/// Resolves the body of a reference (between `&` and `;`).
pub(crate) fn resolve_reference(body: &str) -> Result<char, BadReference> {
    let code = if let Some(hex) = body.strip_prefix("#x") {
        parse_code(hex, 16)?
    } else if let Some(dec) = body.strip_prefix('#') {
        parse_code(dec, 10)?
    } else {
        return match body {
            "amp" => Ok('&'),
            "lt" => Ok('<'),
            "gt" => Ok('>'),
            "quot" => Ok('"'),
            "apos" => Ok('\''),
            _ if is_ncname(body) => Err(BadReference::Undeclared),
            _ => Err(BadReference::Malformed),
        };
    };
    char::from_u32(code)
        .filter(|c| is_xml_char(*c))
        .ok_or(BadReference::Malformed)
}

fn parse_code(digits: &str, radix: u32) -> Result<u32, BadReference> {
    // from_str_radix alone would accept a leading '+'.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(BadReference::Malformed);
    }
    // Overflow is an invalid character too, not a reason to fail differently.
    u32::from_str_radix(digits, radix).map_err(|_| BadReference::Malformed)
}

/// Appends `s` escaped for character data.
///
/// `\r` is written as a reference because a parser turns a literal one into `\n`
/// (end-of-line handling); characters XML cannot carry at all become U+FFFD so that the
/// output is always well-formed.
pub(crate) fn push_text(out: &mut String, s: &str) {
    push_escaped(out, s, false);
}

/// Appends `s` escaped for an attribute value in either kind of quotes.
///
/// Tab and newlines are references because attribute-value normalization turns literal
/// ones into spaces.
pub(crate) fn push_attr(out: &mut String, s: &str) {
    push_escaped(out, s, true);
}

fn push_escaped(out: &mut String, s: &str, attr: bool) {
    let mut rest = s;
    while let Some(pos) = rest.find(|c: char| needs_escape(c, attr)) {
        out.push_str(&rest[..pos]);
        let c = rest[pos..].chars().next().unwrap_or('\u{FFFD}');
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            _ => out.push('\u{FFFD}'),
        }
        rest = &rest[pos + c.len_utf8()..];
    }
    out.push_str(rest);
}

fn needs_escape(c: char, attr: bool) -> bool {
    match c {
        '&' | '<' | '>' | '\r' => true,
        '"' | '\'' | '\t' | '\n' => attr,
        _ => !is_xml_char(c),
    }
}

/// `s` escaped for character data (see [`push_text`]).
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if s.contains(|c: char| needs_escape(c, false)) {
        let mut out = String::with_capacity(s.len() + 16);
        push_text(&mut out, s);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` escaped for an attribute value (see [`push_attr`]).
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    if s.contains(|c: char| needs_escape(c, true)) {
        let mut out = String::with_capacity(s.len() + 16);
        push_attr(&mut out, s);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_and_character_references_resolve() {
        assert_eq!(resolve_reference("amp"), Ok('&'));
        assert_eq!(resolve_reference("lt"), Ok('<'));
        assert_eq!(resolve_reference("gt"), Ok('>'));
        assert_eq!(resolve_reference("quot"), Ok('"'));
        assert_eq!(resolve_reference("apos"), Ok('\''));
        assert_eq!(resolve_reference("#65"), Ok('A'));
        assert_eq!(resolve_reference("#x1F600"), Ok('😀'));
        assert_eq!(resolve_reference("#xa"), Ok('\n'));
    }

    #[test]
    fn other_entities_are_undeclared_and_junk_is_malformed() {
        assert_eq!(resolve_reference("nbsp"), Err(BadReference::Undeclared));
        assert_eq!(resolve_reference("lol9"), Err(BadReference::Undeclared));
        for bad in [
            "",
            "#",
            "#x",
            "#0",
            "#x0",
            "#xD800",
            "#xFFFE",
            "#1114112",
            "#99999999999",
            "#+65",
            "#X41",
            "#x-1",
            "a b",
            "1abc",
        ] {
            assert_eq!(
                resolve_reference(bad),
                Err(BadReference::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn qnames_split_and_bad_names_are_refused() {
        assert_eq!(
            split_qname("stream:stream"),
            Some((Some("stream"), "stream"))
        );
        assert_eq!(split_qname("body"), Some((None, "body")));
        assert_eq!(split_qname("é-1.x"), Some((None, "é-1.x")));
        for bad in [
            "", ":a", "a:", "a:b:c", "1a", "-a", "a b", "a\"", "a=", "a/",
        ] {
            assert_eq!(split_qname(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn escaping_covers_markup_quotes_and_unrepresentable_characters() {
        assert_eq!(escape_text("a<b>&c\"'"), "a&lt;b&gt;&amp;c\"'");
        assert_eq!(
            escape_attr("a<b>&c\"'\t\n\r"),
            "a&lt;b&gt;&amp;c&quot;&apos;&#9;&#10;&#13;"
        );
        assert_eq!(escape_text("x\u{0}y\u{FFFF}\r"), "x\u{FFFD}y\u{FFFD}&#13;");
        assert!(matches!(escape_text("plain ✓"), Cow::Borrowed(_)));
    }
}
