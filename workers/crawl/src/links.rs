//! Finding a page's links: an HTML5 tokenizer, not a pattern match, so upper-case tags,
//! either quote style, unquoted values, entities and comments all read as a browser reads
//! them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;

use encoding_rs::{Encoding, UTF_8};
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, StartTag, Tag, TagToken, Token, TokenSink, TokenSinkResult, Tokenizer,
};
use serde::{Deserialize, Serialize};
use url::Url;

/// One link of a page.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Link {
    /// `<a href>` or `<area href>`: a page to crawl, if it is on the site. The fragment is
    /// kept only when the crawl checks fragments.
    Page {
        url: String,
        fragment: Option<String>,
    },
    /// What the page loads: `img`, `script`, `link rel=stylesheet` or `icon`, `iframe`,
    /// `source`, `video` and `audio`. Checked, never crawled.
    Resource { url: String },
    /// An href or src that is no URL at all, as written, and why.
    Malformed { href: String, reason: String },
}

/// What a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// Each distinct link once, in document order.
    pub links: Vec<Link>,
    /// Every `id` and every `<a name>`: what a fragment may point to.
    pub ids: Vec<String>,
}

/// The links of `html`, resolved against the page's URL (or its first `<base href>`, which
/// counts for the whole document, as in a browser). Queries are encoded in `encoding`, the
/// page's own, as a browser encodes them; paths are always UTF-8. With `fragments`, page
/// links keep their fragments and the page's ids are collected.
pub(crate) fn find(page: &Url, html: &str, encoding: &'static Encoding, fragments: bool) -> Found {
    let sink = Refs {
        fragments,
        ..Refs::default()
    };
    let tokenizer = Tokenizer::new(sink, Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never pauses the tokenizer for a script, so one feed reads everything.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let refs = tokenizer.sink.refs.take();
    let ids = tokenizer.sink.ids.take();
    let base = tokenizer
        .sink
        .base
        .take()
        .and_then(|href| page.join(trim(&href)).ok())
        .unwrap_or_else(|| page.clone());
    let encoding = encoding.output_encoding();
    let encode: &dyn Fn(&str) -> Cow<'_, [u8]> = &|text| encoding.encode(text).0;
    let mut options = Url::options().base_url(Some(&base));
    if encoding != UTF_8 {
        options = options.encoding_override(Some(encode));
    }
    let mut seen = HashSet::new();
    let mut links = Vec::new();
    for (kind, href) in refs {
        let href = trim(&href);
        let link = match options.parse(href) {
            Err(err) => Link::Malformed {
                href: href.to_owned(),
                reason: format!("malformed URL: {err}"),
            },
            Ok(mut url) => {
                let fragment = url.fragment().map(str::to_owned);
                url.set_fragment(None);
                match kind {
                    Kind::Page => Link::Page {
                        url: url.into(),
                        fragment: fragment.filter(|_| fragments),
                    },
                    Kind::Resource => Link::Resource { url: url.into() },
                }
            }
        };
        if seen.insert(link.clone()) {
            links.push(link);
        }
    }
    Found { links, ids }
}

/// What the URL parser strips too: leading and trailing C0 controls and spaces.
fn trim(href: &str) -> &str {
    href.trim_matches(|c: char| c <= ' ')
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Page,
    Resource,
}

#[derive(Default)]
struct Refs {
    fragments: bool,
    base: RefCell<Option<String>>,
    refs: RefCell<Vec<(Kind, String)>>,
    ids: RefCell<Vec<String>>,
}

impl Refs {
    fn push(&self, kind: Kind, value: Option<String>) {
        if let Some(value) = value {
            self.refs.borrow_mut().push((kind, value));
        }
    }
}

fn attr(tag: &Tag, name: &str) -> Option<String> {
    tag.attrs
        .iter()
        .find(|attr| &*attr.name.local == name)
        .map(|attr| attr.value.to_string())
}

/// A `src` that is empty loads nothing in a browser (it is an error, not the page itself).
fn src(tag: &Tag) -> Option<String> {
    attr(tag, "src").filter(|src| !trim(src).is_empty())
}

/// `rel` values whose `href` the page loads.
fn loaded_rel(rel: &str) -> bool {
    rel.split_ascii_whitespace().any(|token| {
        let token = token.to_ascii_lowercase();
        token == "stylesheet" || token.ends_with("icon")
    })
}

impl TokenSink for Refs {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        if tag.kind != StartTag {
            return TokenSinkResult::Continue;
        }
        if self.fragments {
            let mut ids = self.ids.borrow_mut();
            ids.extend(attr(&tag, "id"));
            if &*tag.name == "a" {
                ids.extend(attr(&tag, "name"));
            }
        }
        // The tokenizer lower-cases tag and attribute names.
        match &*tag.name {
            "a" | "area" => self.push(Kind::Page, attr(&tag, "href")),
            "base" => {
                let mut base = self.base.borrow_mut();
                if base.is_none() {
                    *base = attr(&tag, "href");
                }
            }
            "img" | "source" | "video" | "audio" => self.push(Kind::Resource, src(&tag)),
            "link" if attr(&tag, "rel").is_some_and(|rel| loaded_rel(&rel)) => {
                self.push(Kind::Resource, attr(&tag, "href"));
            }
            // Without a tree builder, the sink must switch the tokenizer into the raw-text
            // states itself, or a `"<a href=..."` inside a script would count as a link.
            "script" => {
                self.push(Kind::Resource, src(&tag));
                return TokenSinkResult::RawData(RawKind::ScriptData);
            }
            "iframe" => {
                self.push(Kind::Resource, src(&tag));
                return TokenSinkResult::RawData(RawKind::Rawtext);
            }
            "style" | "xmp" | "noembed" | "noframes" => {
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
    use encoding_rs::WINDOWS_1252;

    use super::*;

    fn page() -> Url {
        Url::parse("http://host:8000/dir/page.html").unwrap()
    }

    fn found(html: &str) -> Vec<String> {
        find(&page(), html, UTF_8, false)
            .links
            .into_iter()
            .map(|link| match link {
                Link::Page { url, .. } => url,
                Link::Resource { url } => format!("resource {url}"),
                Link::Malformed { href, reason } => format!("malformed {href}: {reason}"),
            })
            .collect()
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
    fn ignores_links_in_comments_and_scripts_and_anchors_without_href() {
        let html = r#"<!-- <a href="c.html"> --><script>var s = '<a href="s.html">';</script>
            <a name="anchor">n</a><a href="ok">ok</a><a href="ok">ok twice</a>"#;
        assert_eq!(found(html), ["http://host:8000/dir/ok"]);
    }

    #[test]
    fn sub_resources_are_found_and_told_apart_from_pages() {
        let html = r#"<link rel=stylesheet href="s.css"><link rel="shortcut icon" href=/f.ico>
            <link rel=canonical href="/canonical"><LINK REL="Apple-Touch-Icon" href="t.png">
            <script src="j.js"></script><img src="i.png"><img src="">
            <iframe src="frame.html"><a href="not-in-a-frame.html"></iframe>
            <video src="v.mp4"><source src="v.webm"></video><audio src="a.ogg"></audio>
            <a href="i.png">the image as a page</a>"#;
        assert_eq!(
            found(html),
            [
                "resource http://host:8000/dir/s.css",
                "resource http://host:8000/f.ico",
                "resource http://host:8000/dir/t.png",
                "resource http://host:8000/dir/j.js",
                "resource http://host:8000/dir/i.png",
                "resource http://host:8000/dir/frame.html",
                "resource http://host:8000/dir/v.mp4",
                "resource http://host:8000/dir/v.webm",
                "resource http://host:8000/dir/a.ogg",
                "http://host:8000/dir/i.png",
            ]
        );
    }

    #[test]
    fn the_first_base_href_counts_for_the_whole_page() {
        let html =
            r#"<a href="before">b</a><base href="/root/"><base href="/other/"><a href="x">x</a>"#;
        assert_eq!(
            found(html),
            ["http://host:8000/root/before", "http://host:8000/root/x"]
        );
    }

    #[test]
    fn malformed_links_are_kept_with_the_reason() {
        let html = r#"<a href=" http://[::1 ">v6</a><img src="http://exa mple.org/">"#;
        assert_eq!(
            found(html),
            [
                "malformed http://[::1: malformed URL: invalid IPv6 address",
                "malformed http://exa mple.org/: malformed URL: invalid international domain name",
            ]
        );
    }

    #[test]
    fn the_path_is_utf8_and_the_query_is_in_the_page_encoding() {
        let html = "<a href=\"/café.html?q=é\">";
        let links = find(&page(), html, WINDOWS_1252, false).links;
        assert_eq!(
            links,
            [Link::Page {
                url: "http://host:8000/caf%C3%A9.html?q=%E9".to_owned(),
                fragment: None
            }]
        );
        let links = find(&page(), html, UTF_8, false).links;
        assert_eq!(
            links,
            [Link::Page {
                url: "http://host:8000/caf%C3%A9.html?q=%C3%A9".to_owned(),
                fragment: None
            }]
        );
    }

    #[test]
    fn with_fragments_links_keep_them_and_ids_are_collected() {
        let html = r##"<h1 id="top-heading">t</h1><a name="old">o</a><p ID=para>
            <a href="x.html#part">x</a><a href="x.html#other">x</a><a href="#para">here</a>
            <img name="not-an-anchor" src="i.png">"##;
        let found = find(&page(), html, UTF_8, true);
        assert_eq!(found.ids, ["top-heading", "old", "para"]);
        let page_link = |url: &str, fragment: &str| Link::Page {
            url: url.to_owned(),
            fragment: Some(fragment.to_owned()),
        };
        assert_eq!(
            found.links,
            [
                page_link("http://host:8000/dir/x.html", "part"),
                page_link("http://host:8000/dir/x.html", "other"),
                page_link("http://host:8000/dir/page.html", "para"),
                Link::Resource {
                    url: "http://host:8000/dir/i.png".to_owned()
                },
            ]
        );
    }
}
