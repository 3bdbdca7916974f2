//! A page's bytes to text, choosing the encoding as a browser does: a byte order mark,
//! then the `charset` of the `Content-Type` header, then a `<meta>` in the first 1024
//! bytes. An undeclared page is UTF-8 if it is valid UTF-8, else windows-1252.
//!
//! The encoding matters beyond the text: a browser encodes the query of a URL in the page's
//! encoding (the path is always UTF-8), so `links` needs it too.

use std::borrow::Cow;
use std::cell::RefCell;

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, StartTag, TagToken, Token, TokenSink, TokenSinkResult, Tokenizer,
};

/// How far into the page a `<meta>` declaration counts (the HTML standard's prescan).
const PRESCAN: usize = 1024;

/// Decodes `bytes` with the encoding a browser would choose. `header` is the `charset`
/// parameter of the `Content-Type` header, if any.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    header: Option<&str>,
) -> (Cow<'a, str>, &'static Encoding) {
    if let Some((encoding, bom)) = Encoding::for_bom(bytes) {
        let (text, _) = encoding.decode_without_bom_handling(&bytes[bom..]);
        return (text, encoding);
    }
    let declared = header
        .and_then(|label| Encoding::for_label(label.trim().as_bytes()))
        .or_else(|| prescan(&bytes[..bytes.len().min(PRESCAN)]));
    let encoding = declared.unwrap_or_else(|| {
        if std::str::from_utf8(bytes).is_ok() {
            UTF_8
        } else {
            WINDOWS_1252
        }
    });
    let (text, _) = encoding.decode_without_bom_handling(bytes);
    (text, encoding)
}

/// The encoding a `<meta charset>` or `<meta http-equiv="Content-Type" content="…;
/// charset=…">` in `head` names, as the HTML standard reads it: UTF-16 there means UTF-8
/// (a page that could declare itself in ASCII is not UTF-16), x-user-defined means
/// windows-1252.
fn prescan(head: &[u8]) -> Option<&'static Encoding> {
    // windows-1252 maps every byte to one character, so the tags read as they are.
    let (text, _) = WINDOWS_1252.decode_without_bom_handling(head);
    let tokenizer = Tokenizer::new(Metas::default(), Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(&text));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let label = tokenizer.sink.label.take()?;
    let encoding = Encoding::for_label(label.as_bytes())?;
    Some(match encoding.name() {
        "UTF-16LE" | "UTF-16BE" => UTF_8,
        "x-user-defined" => WINDOWS_1252,
        _ => encoding,
    })
}

/// Collects the first charset label a `<meta>` declares.
#[derive(Default)]
struct Metas {
    label: RefCell<Option<String>>,
}

impl TokenSink for Metas {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        if tag.kind != StartTag || &*tag.name != "meta" || self.label.borrow().is_some() {
            return TokenSinkResult::Continue;
        }
        let attr = |name: &str| {
            tag.attrs
                .iter()
                .find(|attr| &*attr.name.local == name)
                .map(|attr| attr.value.to_string())
        };
        let label = attr("charset").or_else(|| {
            let content_type = attr("http-equiv")
                .is_some_and(|equiv| equiv.trim().eq_ignore_ascii_case("content-type"));
            if content_type {
                attr("content").and_then(|content| charset_in_content(&content))
            } else {
                None
            }
        });
        if let Some(label) = label.filter(|label| !label.trim().is_empty()) {
            *self.label.borrow_mut() = Some(label.trim().to_owned());
        }
        TokenSinkResult::Continue
    }
}

/// The standard's "extract a character encoding from a meta element": the value after the
/// first `charset`, `=` and optional quotes in a `content` attribute.
fn charset_in_content(content: &str) -> Option<String> {
    let lower = content.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("charset") {
        let rest = lower[from + at + "charset".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            from += at + "charset".len();
            continue;
        };
        let rest = rest.trim_start();
        return match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let value = &rest[1..];
                value.find(quote).map(|end| value[..end].to_owned())
            }
            Some(_) => Some(
                rest.split(|c: char| c == ';' || c.is_ascii_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            None => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_charset_decodes_the_page() {
        let (text, encoding) = decode(b"caf\xe9", Some("ISO-8859-1"));
        assert_eq!(text, "café");
        // Browsers read ISO-8859-1 as windows-1252.
        assert_eq!(encoding, WINDOWS_1252);
    }

    #[test]
    fn a_meta_charset_counts_when_the_header_says_nothing() {
        let page = b"<html><head><META CHARSET='iso-8859-1'></head><a href='/caf\xe9'>";
        let (text, encoding) = decode(page, None);
        assert!(text.ends_with("/café'>"), "{text}");
        assert_eq!(encoding, WINDOWS_1252);
        let page = b"<meta http-equiv=Content-Type content=\"text/html; charset=koi8-r\">\xc1";
        assert_eq!(decode(page, None).1.name(), "KOI8-R");
    }

    #[test]
    fn the_header_wins_over_the_meta_and_the_bom_over_both() {
        let page = b"<meta charset=windows-1251>\xe9";
        assert_eq!(decode(page, Some("iso-8859-2")).1.name(), "ISO-8859-2");
        let page = b"\xef\xbb\xbf<meta charset=windows-1251>caf\xc3\xa9";
        let (text, encoding) = decode(page, Some("iso-8859-2"));
        assert_eq!(
            (text.as_ref(), encoding),
            ("<meta charset=windows-1251>café", UTF_8)
        );
    }

    #[test]
    fn a_meta_past_the_first_1024_bytes_does_not_count() {
        let mut page = vec![b' '; 1100];
        page.extend_from_slice(b"<meta charset=koi8-r>");
        assert_eq!(decode(&page, None).1, UTF_8);
    }

    #[test]
    fn an_undeclared_page_is_utf8_when_it_can_be() {
        assert_eq!(decode("café".as_bytes(), None).1, UTF_8);
        assert_eq!(decode(b"caf\xe9", None), (Cow::from("café"), WINDOWS_1252));
    }

    #[test]
    fn a_meta_that_says_utf16_means_utf8() {
        assert_eq!(decode(b"<meta charset=utf-16le>", None).1, UTF_8);
    }

    #[test]
    fn charset_values_in_content_attributes() {
        for (content, label) in [
            ("text/html; charset=utf-8", Some("utf-8")),
            ("text/html;charset=\"latin1\"", Some("latin1")),
            ("text/html; CHARSET = 'koi8-r' ", Some("koi8-r")),
            ("text/html; charsetx; charset=big5", Some("big5")),
            ("text/html", None),
            ("charset=\"unclosed", None),
        ] {
            assert_eq!(charset_in_content(content).as_deref(), label, "{content}");
        }
    }
}
