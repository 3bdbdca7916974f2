//! robots.txt, as RFC 9309 reads it: the group for our product token (`ringleader`), or
//! else the `*` group; the longest matching rule decides, and `Allow` wins a tie. Patterns
//! may use `*` (any run of characters) and a final `$` (the end of the path).

/// The product token our groups are looked up by; the User-Agent header carries it.
pub(crate) const PRODUCT: &str = "ringleader";

/// The rules that apply to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Robots {
    /// `(allow, pattern)`, patterns percent-encoded as in a URL's path.
    rules: Vec<(bool, String)>,
}

impl Robots {
    /// Everything allowed: no robots.txt (a 4xx), or `--ignore-robots`.
    pub(crate) fn allow_all() -> Robots {
        Robots::default()
    }

    /// Nothing allowed: what RFC 9309 tells a crawler to assume while robots.txt is
    /// unreachable (a 5xx, or no answer).
    pub(crate) fn disallow_all() -> Robots {
        Robots {
            rules: vec![(false, "/".to_owned())],
        }
    }

    /// Reads a robots.txt. Lines that mean nothing are skipped, as the RFC asks.
    pub(crate) fn parse(text: &str) -> Robots {
        let mut ours = Group::default();
        let mut any = Group::default();
        // The user agents of the group being read, and whether its rules have begun (a
        // user-agent line after a rule starts a new group).
        let mut agents: Vec<String> = Vec::new();
        let mut in_rules = false;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match key.as_str() {
                "user-agent" => {
                    if in_rules {
                        agents.clear();
                        in_rules = false;
                    }
                    agents.push(value.to_ascii_lowercase());
                }
                "allow" | "disallow" => {
                    in_rules = true;
                    // An empty Disallow allows everything: it is no rule.
                    if value.is_empty() {
                        for group in targets(&agents, &mut ours, &mut any) {
                            group.seen = true;
                        }
                        continue;
                    }
                    let rule = (key == "allow", normalise(value));
                    for group in targets(&agents, &mut ours, &mut any) {
                        group.seen = true;
                        group.rules.push(rule.clone());
                    }
                }
                _ => {}
            }
        }
        // Groups of the same agent merge; a group for us replaces the `*` group whole.
        let group = if ours.seen || !ours.rules.is_empty() {
            ours
        } else {
            any
        };
        Robots { rules: group.rules }
    }

    /// Whether `path` (the path and query of a URL, percent-encoded) may be fetched.
    pub(crate) fn allowed(&self, path: &str) -> bool {
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches(pattern, path) {
                let better = match best {
                    None => true,
                    Some((len, was_allow)) => {
                        pattern.len() > len || (pattern.len() == len && *allow && !was_allow)
                    }
                };
                if better {
                    best = Some((pattern.len(), *allow));
                }
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

#[derive(Debug, Default)]
struct Group {
    /// Whether any group named this agent, even one without rules.
    seen: bool,
    rules: Vec<(bool, String)>,
}

/// The groups the current user-agent lines select: ours and `*`.
fn targets<'a>(agents: &[String], ours: &'a mut Group, any: &'a mut Group) -> Vec<&'a mut Group> {
    let mut out = Vec::new();
    let mine = agents.iter().any(|agent| {
        // "ringleader", or a name that starts with our token, such as "ringleader-crawl".
        agent == PRODUCT
            || agent
                .strip_prefix(PRODUCT)
                .is_some_and(|rest| rest.starts_with(['-', '/']))
    });
    if mine {
        out.push(ours);
    }
    if agents.iter().any(|agent| agent == "*") {
        out.push(any);
    }
    out
}

/// Patterns compare with paths as the URL writes them: percent-encode what a URL would
/// (non-ASCII, spaces), and upper-case existing escapes.
fn normalise(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            out.push('%');
            out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
            out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
            i += 3;
            continue;
        }
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    out
}

/// Whether `pattern` matches the start of `path`, with `*` for any run of characters and
/// a final `$` for the end of the path.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(pattern) => (pattern, true),
        None => (pattern, false),
    };
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = path.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last && anchored {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    !anchored || rest.is_empty()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_star_group_applies_when_none_names_us() {
        let robots = Robots::parse(
            "User-agent: othercrawler\nDisallow: /\n\nUser-agent: *\nDisallow: /private/\n",
        );
        assert!(robots.allowed("/"));
        assert!(robots.allowed("/public/x"));
        assert!(!robots.allowed("/private/x"));
    }

    #[test]
    fn a_group_for_ringleader_replaces_the_star_group() {
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /\n\nUser-agent: Ringleader\nDisallow: /slow/\n",
        );
        assert!(robots.allowed("/fast"));
        assert!(!robots.allowed("/slow/page"));
        // A group naming us with no rules allows everything.
        let robots =
            Robots::parse("User-agent: *\nDisallow: /\n\nUser-agent: ringleader\nDisallow:\n");
        assert!(robots.allowed("/anything"));
    }

    #[test]
    fn agents_listed_together_share_a_group_and_groups_merge() {
        let robots = Robots::parse(
            "User-agent: a\nUser-agent: ringleader\nDisallow: /x\n\nUser-agent: ringleader\nDisallow: /y\n",
        );
        assert!(!robots.allowed("/x"));
        assert!(!robots.allowed("/y"));
        assert!(robots.allowed("/z"));
    }

    #[test]
    fn the_longest_rule_wins_and_allow_wins_a_tie() {
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /docs/\nAllow: /docs/public/\nDisallow: /tie\nAllow: /tie\n",
        );
        assert!(!robots.allowed("/docs/secret"));
        assert!(robots.allowed("/docs/public/page"));
        assert!(robots.allowed("/tie"));
    }

    #[test]
    fn wildcards_and_end_anchors() {
        let robots = Robots::parse(
            "User-agent: *\nDisallow: /*.pdf$\nDisallow: /search*q=\nDisallow: /exact$\n# Disallow: /comment\n",
        );
        assert!(!robots.allowed("/files/report.pdf"));
        assert!(robots.allowed("/files/report.pdf?download=1"));
        assert!(!robots.allowed("/search?lang=en&q=x"));
        assert!(robots.allowed("/search?lang=en"));
        assert!(!robots.allowed("/exact"));
        assert!(robots.allowed("/exact/more"));
        assert!(robots.allowed("/comment"));
    }

    #[test]
    fn patterns_compare_percent_encoded() {
        let robots = Robots::parse("User-agent: *\nDisallow: /café\nDisallow: /a%2fb\n");
        assert!(!robots.allowed("/caf%C3%A9"));
        assert!(!robots.allowed("/a%2Fb"));
    }

    #[test]
    fn all_or_nothing() {
        assert!(Robots::allow_all().allowed("/x"));
        assert!(!Robots::disallow_all().allowed("/"));
        assert!(Robots::parse("").allowed("/x"));
    }

    proptest! {
        // robots.txt is outside bytes: no input may panic the parser or the matcher.
        #[test]
        fn any_text_parses_and_matches_without_panicking(text in ".{0,300}", path in "/.{0,40}") {
            let robots = Robots::parse(&text);
            let _ = robots.allowed(&path);
        }
    }
}
