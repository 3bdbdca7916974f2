//! Finding a page's links: an HTML5 tokenizer, not a pattern match, so upper-case tags,
//! either quote style, unquoted values, entities and comments all read as a browser reads
//! them.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, StartTag, TagToken, Token, TokenSink, TokenSinkResult, Tokenizer,
};
use url::Url;

/// The absolute URLs that a page's `<a href>` and `<area href>` point to, resolved against
/// the page's URL (or its `<base href>`), without fragments, in document order. Hrefs that
/// do not resolve to a URL are skipped.
pub(crate) fn links(page: &Url, html: &str) -> Vec<Url> {
    let sink = Hrefs::default();
    let tokenizer = Tokenizer::new(sink, Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never pauses the tokenizer for a script, so one feed reads everything.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let found = tokenizer.sink.found.take();
    let mut base = page.clone();
    let mut out = Vec::new();
    for href in found {
        match href {
            Href::Base(href) => {
                // Only the first <base> counts, and only before links use it; good enough.
                if let Ok(url) = page.join(href.trim()) {
                    base = url;
                }
            }
            Href::Link(href) => {
                if let Ok(mut url) = base.join(href.trim()) {
                    url.set_fragment(None);
                    out.push(url);
                }
            }
        }
    }
    out
}

enum Href {
    Base(String),
    Link(String),
}

#[derive(Default)]
struct Hrefs {
    found: RefCell<Vec<Href>>,
}

impl TokenSink for Hrefs {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        if tag.kind != StartTag {
            return TokenSinkResult::Continue;
        }
        // The tokenizer lower-cases tag and attribute names.
        let name: &str = &tag.name;
        let href = || {
            tag.attrs
                .iter()
                .find(|attr| &*attr.name.local == "href")
                .map(|attr| attr.value.to_string())
        };
        match name {
            "a" | "area" => {
                if let Some(href) = href() {
                    self.found.borrow_mut().push(Href::Link(href));
                }
            }
            "base" => {
                if let Some(href) = href() {
                    self.found.borrow_mut().push(Href::Base(href));
                }
            }
            // Without a tree builder, the sink must switch the tokenizer into the raw-text
            // states itself, or a `"<a href=..."` inside a script would count as a link.
            "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
            "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                return TokenSinkResult::RawData(RawKind::Rawtext);
            }
            "title" | "textarea" => return TokenSinkResult::RawData(RawKind::Rcdata),
            "plaintext" => return TokenSinkResult::Plaintext,
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(html: &str) -> Vec<String> {
        let page = Url::parse("http://host:8000/dir/page.html").unwrap();
        links(&page, html).into_iter().map(String::from).collect()
    }

    #[test]
    fn resolves_relative_root_relative_and_absolute_links() {
        let html = r#"<a href="a.html">a</a> <a href='/b.html'>b</a>
            <a href="http://other:1/c">c</a> <a href=../d.html>d</a>"#;
        assert_eq!(
            found(html),
            [
                "http://host:8000/dir/a.html",
                "http://host:8000/b.html",
                "http://other:1/c",
                "http://host:8000/d.html",
            ]
        );
    }

    #[test]
    fn reads_upper_case_tags_and_entities_and_drops_fragments() {
        let html = r#"<A HREF="x.html#top">x</A><AREA Href='y?a=1&amp;b=2'>"#;
        assert_eq!(
            found(html),
            [
                "http://host:8000/dir/x.html",
                "http://host:8000/dir/y?a=1&b=2"
            ]
        );
    }

    #[test]
    fn ignores_links_in_comments_scripts_and_other_tags() {
        let html = r#"<!-- <a href="c.html"> --><script>var s = '<a href="s.html">';</script>
            <link href="style.css"><img src="i.png"><a name="anchor">n</a><a href="ok">ok</a>"#;
        assert_eq!(found(html), ["http://host:8000/dir/ok"]);
    }

    #[test]
    fn base_href_changes_where_links_resolve() {
        let html = r#"<base href="/root/"><a href="x">x</a>"#;
        assert_eq!(found(html), ["http://host:8000/root/x"]);
    }
}
