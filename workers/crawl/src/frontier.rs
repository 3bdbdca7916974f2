//! The coordinator's state: every URL seen, what is to fetch next, and what came back.
//!
//! Memory grows with the number of distinct URLs, not of links: a URL is one string and one
//! small entry, and the pages that link to it are kept only while it may still turn out
//! dead (queued or in flight) or once it has. A link to a page already known to be alive
//! costs one hash lookup and is forgotten.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use url::Url;

use super::fetch::{Answer, Body, Purpose};
use super::links::Link;
use super::retry;
use super::robots::Robots;

/// What the frontier needs to know of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub origin: url::Origin,
    pub check_external: bool,
    pub check_fragments: bool,
    pub exclude: Vec<Regex>,
    pub max_depth: Option<u32>,
    pub max_pages: Option<u64>,
    pub retries: u32,
    /// Requests per second per host.
    pub rate: Option<f64>,
    pub robots: bool,
}

/// A URL's place in the crawl.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Linked, but never to be fetched, and why.
    Skipped(Skip),
    /// In a queue.
    Queued,
    /// Waiting for a retry, in `waiting`.
    Waiting,
    InFlight(Purpose),
    /// Answered below 400. `crawled`: fetched as a page (its links were read if it was
    /// HTML), not only checked.
    Alive {
        status: u16,
        crawled: bool,
    },
    Dead(Box<Failure>),
    /// Still rate-limited after every retry: not known to be dead.
    Warned(Box<Failure>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// On another origin, and `--check-external` is off.
    External,
    /// Not http or https (`mailto:`, `javascript:`).
    NotHttp,
    Excluded,
    Robots,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    status: Option<u16>,
    reason: String,
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    /// On the start origin.
    local: bool,
    /// Crawl it (GET, read its links) rather than only check it: some page links to it, on
    /// the site, above `--max-depth`.
    crawl: bool,
    /// Some page links to it with `<a>` or `<area>`.
    page_link: bool,
    /// Counted among the pages `--max-pages` allows.
    counted: bool,
    /// Some page links to it (the start page may not be).
    linked: bool,
    /// The fewest links from the start page.
    depth: u32,
    retries: u32,
    /// The pages that link to it, while that may still be needed: sorted and deduplicated
    /// only for the report.
    referrers: Vec<u32>,
}

/// A problem to report: a dead link, or a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub url: String,
    /// The HTTP status the server gave, if it gave one.
    pub status: Option<u16>,
    /// Why, in words: the status's reason phrase, or what went wrong.
    pub reason: String,
    /// The pages that link to it, sorted; none for the start page.
    pub found_on: Vec<String>,
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pages fetched as pages (whatever their status).
    pub fetched: u64,
    /// Distinct URLs linked to, malformed ones included.
    pub links: u64,
    /// Of those, on another origin or not http(s).
    pub external: u64,
    /// External URLs checked (`--check-external`).
    pub external_checked: u64,
    /// Sub-resources of the site checked.
    pub resources_checked: u64,
    /// Pages of the site at `--max-depth`, checked but not crawled.
    pub depth_checked: u64,
    pub excluded: u64,
    pub disallowed: u64,
    /// Pages of the site whose redirects ended on another origin: checked, not parsed.
    pub left_origin: u64,
    /// Pages larger than the parsing limit.
    pub truncated: u64,
}

/// What the crawl found, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Sorted by URL.
    pub dead: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub counts: Counts,
    /// Pages of the site left unfetched by `--max-pages`.
    pub unfetched: u64,
    /// URLs still to check when the crawl was interrupted.
    pub unchecked: u64,
    /// Why robots.txt disallowed everything, when it did.
    pub robots_note: Option<String>,
}

/// A fetch to hand a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dispatch {
    pub url: String,
    pub purpose: Purpose,
    /// How long the worker waits first: the host's rate, or a retry's backoff.
    pub wait: Duration,
}

#[derive(Debug, Clone)]
enum RobotsState {
    /// To fetch, not before this.
    Due {
        at: Instant,
        retries: u32,
    },
    InFlight {
        retries: u32,
    },
    Known(Robots),
}

/// The coordinator's state.
#[derive(Debug, Clone)]
pub(crate) struct Frontier {
    rules: Rules,
    ids: HashMap<Arc<str>, u32>,
    urls: Vec<Arc<str>>,
    entries: Vec<Entry>,
    /// Pages to crawl, first in first out: the crawl goes breadth first.
    pages: VecDeque<u32>,
    /// URLs to check; they go before pages, which would only add more of them.
    checks: VecDeque<u32>,
    /// Retries, by when they are due.
    waiting: BinaryHeap<Reverse<(Instant, u32)>>,
    robots: RobotsState,
    robots_url: String,
    robots_note: Option<String>,
    /// When each host may next be asked: the rate, or a `Retry-After` pause.
    hosts: HashMap<String, Instant>,
    in_flight: u64,
    pages_dispatched: u64,
    /// Malformed hrefs, as written, with why and where.
    malformed: BTreeMap<String, (String, BTreeSet<u32>)>,
    /// Fragments linked to pages not yet parsed: `(fragment, page linking)`.
    pending_fragments: HashMap<u32, Vec<(Box<str>, u32)>>,
    /// The ids of every page parsed, hashed (`--check-fragments` only).
    page_ids: HashMap<u32, Box<[u64]>>,
    dead_fragments: BTreeMap<(u32, Box<str>), BTreeSet<u32>>,
    counts: Counts,
}

impl Frontier {
    pub(crate) fn new(start: &Url, rules: Rules, now: Instant) -> Frontier {
        let robots = if rules.robots {
            RobotsState::Due {
                at: now,
                retries: 0,
            }
        } else {
            RobotsState::Known(Robots::allow_all())
        };
        let crawl = rules.max_depth.is_none_or(|max| max > 0);
        let mut frontier = Frontier {
            rules,
            ids: HashMap::new(),
            urls: Vec::new(),
            entries: Vec::new(),
            pages: VecDeque::new(),
            checks: VecDeque::new(),
            waiting: BinaryHeap::new(),
            robots,
            robots_url: start
                .join("/robots.txt")
                .map_or_else(|_| String::new(), String::from),
            robots_note: None,
            hosts: HashMap::new(),
            in_flight: 0,
            pages_dispatched: 0,
            malformed: BTreeMap::new(),
            pending_fragments: HashMap::new(),
            page_ids: HashMap::new(),
            dead_fragments: BTreeMap::new(),
            counts: Counts::default(),
        };
        // The start page is fetched whatever robots.txt or --exclude say: the user named it.
        let id = frontier.intern(start.as_str());
        frontier.entries.push(Entry {
            state: State::Queued,
            local: true,
            crawl,
            page_link: true,
            counted: false,
            linked: false,
            depth: 0,
            retries: 0,
            referrers: Vec::new(),
        });
        frontier.enqueue(id);
        frontier
    }

    /// Fetches handed out and not yet back.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// After the workers were lost: every fetch that was in flight goes back to the front
    /// of its queue (robots.txt is asked for again first), as if never handed out.
    pub(crate) fn requeue_in_flight(&mut self, now: Instant) {
        if let RobotsState::InFlight { retries } = self.robots {
            self.robots = RobotsState::Due { at: now, retries };
        }
        for (id, entry) in self.entries.iter_mut().enumerate().rev() {
            if let State::InFlight(_) = entry.state {
                entry.state = State::Queued;
                let id = id as u32;
                if entry.crawl {
                    self.pages.push_front(id);
                } else {
                    self.checks.push_front(id);
                }
            }
        }
        self.in_flight = 0;
    }

    /// URLs waiting to be fetched.
    pub(crate) fn queued(&self) -> usize {
        self.pages.len() + self.checks.len() + self.waiting.len()
    }

    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Dead URLs found so far.
    pub(crate) fn dead_so_far(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| matches!(entry.state, State::Dead(_)))
            .count()
            + self.malformed.len()
            + self.dead_fragments.len()
    }

    fn intern(&mut self, url: &str) -> u32 {
        let id = self.urls.len() as u32;
        let url: Arc<str> = Arc::from(url);
        self.ids.insert(Arc::clone(&url), id);
        self.urls.push(url);
        id
    }

    fn enqueue(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        entry.state = State::Queued;
        if entry.crawl {
            self.pages.push_back(id);
        } else {
            self.checks.push_back(id);
        }
    }

    /// The next fetch for an idle worker, if one may start now.
    pub(crate) fn next(&mut self, now: Instant) -> Option<Dispatch> {
        match self.robots {
            RobotsState::Known(_) => {}
            RobotsState::InFlight { .. } => return None,
            RobotsState::Due { at, retries } => {
                // Nothing else starts before robots.txt is known.
                self.robots = RobotsState::InFlight { retries };
                let url = self.robots_url.clone();
                return Some(self.dispatch_url(url, Purpose::Robots, at, now));
            }
        }
        while let Some(&Reverse((at, id))) = self.waiting.peek()
            && (at <= now || self.in_flight == 0)
        {
            // A retry that is due; or, with nothing else in flight to wake us later, the
            // next retry, which the worker waits for.
            self.waiting.pop();
            if self.entries[id as usize].state == State::Waiting {
                return Some(self.dispatch(id, at, now));
            }
        }
        while let Some(id) = self.checks.pop_front() {
            let entry = &self.entries[id as usize];
            if entry.state == State::Queued && !entry.crawl {
                return Some(self.dispatch(id, now, now));
            }
        }
        while self
            .rules
            .max_pages
            .is_none_or(|max| self.pages_dispatched < max)
        {
            let id = self.pages.pop_front()?;
            let entry = &self.entries[id as usize];
            if entry.state == State::Queued && entry.crawl {
                return Some(self.dispatch(id, now, now));
            }
        }
        None
    }

    fn dispatch(&mut self, id: u32, not_before: Instant, now: Instant) -> Dispatch {
        let entry = &mut self.entries[id as usize];
        let purpose = if entry.crawl {
            Purpose::Crawl
        } else {
            Purpose::Check
        };
        if purpose == Purpose::Crawl && !entry.counted {
            entry.counted = true;
            self.pages_dispatched += 1;
        }
        entry.state = State::InFlight(purpose);
        let url = self.urls[id as usize].to_string();
        self.dispatch_url(url, purpose, not_before, now)
    }

    fn dispatch_url(
        &mut self,
        url: String,
        purpose: Purpose,
        not_before: Instant,
        now: Instant,
    ) -> Dispatch {
        self.in_flight += 1;
        let mut at = not_before.max(now);
        // Only parse the URL when a rate or a pause may apply to its host.
        if self.rules.rate.is_some() || !self.hosts.is_empty() {
            let host = host_of(&url);
            let next = self.hosts.entry(host).or_insert(at);
            at = at.max(*next);
            *next = match self.rules.rate {
                Some(rate) => at + Duration::from_secs_f64(1.0 / rate),
                None => at,
            };
        }
        Dispatch {
            url,
            purpose,
            wait: at.saturating_duration_since(now),
        }
    }

    /// Takes in what a worker brought back from `url`.
    pub(crate) fn record(
        &mut self,
        url: &str,
        purpose: Purpose,
        answer: Answer,
        body: Body,
        now: Instant,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if purpose == Purpose::Robots {
            self.record_robots(url, answer, body, now);
            return;
        }
        let Some(&id) = self.ids.get(url) else {
            return;
        };
        if let Some(wait) = self.retry_wait(id, &answer) {
            let at = now + wait;
            let entry = &mut self.entries[id as usize];
            entry.retries += 1;
            entry.state = State::Waiting;
            self.waiting.push(Reverse((at, id)));
            if let Answer::Status {
                retry_after: Some(_),
                ..
            } = answer
            {
                // The server asked for a pause: give it to the whole host.
                let next = self.hosts.entry(host_of(url)).or_insert(at);
                *next = (*next).max(at);
            }
            return;
        }
        let entry = &mut self.entries[id as usize];
        let state = match &answer {
            Answer::Status { code, .. } if *code < 400 => State::Alive {
                status: *code,
                crawled: purpose == Purpose::Crawl,
            },
            Answer::Status { code: 429, .. } => State::Warned(Box::new(Failure {
                status: Some(429),
                reason: format!(
                    "still rate-limited (429 Too Many Requests) after {} {}",
                    entry.retries,
                    if entry.retries == 1 {
                        "retry"
                    } else {
                        "retries"
                    }
                ),
            })),
            Answer::Status { code, .. } => State::Dead(Box::new(Failure {
                status: Some(*code),
                reason: reason_phrase(*code),
            })),
            Answer::Failed { reason, .. } => State::Dead(Box::new(Failure {
                status: None,
                reason: reason.clone(),
            })),
        };
        let alive = matches!(state, State::Alive { .. });
        entry.state = state;
        if alive {
            // Nobody will ask who links to a live URL.
            entry.referrers = Vec::new();
        }
        match purpose {
            Purpose::Crawl => self.counts.fetched += 1,
            Purpose::Check if !entry.local => self.counts.external_checked += 1,
            Purpose::Check if entry.page_link && !entry.crawl => self.counts.depth_checked += 1,
            Purpose::Check => self.counts.resources_checked += 1,
            Purpose::Robots => {}
        }
        if body.left_origin {
            self.counts.left_origin += 1;
        }
        if body.truncated {
            self.counts.truncated += 1;
        }
        let entry = &self.entries[id as usize];
        if alive && purpose == Purpose::Check && entry.crawl {
            // A page link arrived while it was only being checked: crawl it now.
            self.enqueue(id);
            return;
        }
        if body.parsed {
            self.parsed(id, body);
        }
        // Fragments of a page that was not parsed cannot be checked.
        self.pending_fragments.remove(&id);
    }

    /// How long to wait before trying `id` again, if it is to be tried again.
    fn retry_wait(&self, id: u32, answer: &Answer) -> Option<Duration> {
        let retries = self.entries[id as usize].retries;
        (answer.transient() && retries < self.rules.retries)
            .then(|| retry::backoff(retries, answer.retry_after()))
    }

    fn record_robots(&mut self, url: &str, answer: Answer, body: Body, now: Instant) {
        let RobotsState::InFlight { retries } = self.robots else {
            return;
        };
        if answer.transient() && retries < self.rules.retries {
            self.robots = RobotsState::Due {
                at: now + retry::backoff(retries, answer.retry_after()),
                retries: retries + 1,
            };
            return;
        }
        let robots = match answer {
            Answer::Status { code, .. } if code < 300 => {
                Robots::parse(body.robots.as_deref().unwrap_or(""))
            }
            // No robots.txt: everything is allowed.
            Answer::Status { code, .. } if code < 500 && code != 429 => Robots::allow_all(),
            // Unreachable: RFC 9309 says assume everything is disallowed.
            Answer::Status { code, .. } => {
                self.robots_note = Some(format!("{url} answered {code}"));
                Robots::disallow_all()
            }
            Answer::Failed { reason, .. } => {
                self.robots_note = Some(format!("{url} is unreachable ({reason})"));
                Robots::disallow_all()
            }
        };
        self.robots = RobotsState::Known(robots);
    }

    /// Takes in the links and ids of a page that was parsed.
    fn parsed(&mut self, id: u32, body: Body) {
        if self.rules.check_fragments {
            let mut hashes: Vec<u64> = body.ids.iter().map(|id| hash(id)).collect();
            hashes.sort_unstable();
            hashes.dedup();
            let hashes = hashes.into_boxed_slice();
            // Only a page read whole can say an id is missing.
            if !body.truncated {
                if let Some(pending) = self.pending_fragments.remove(&id) {
                    for (fragment, from) in pending {
                        if !has_fragment(&hashes, &fragment) {
                            self.dead_fragment(id, fragment, from);
                        }
                    }
                }
                self.page_ids.insert(id, hashes);
            }
        }
        let depth = self.entries[id as usize].depth;
        for link in body.links {
            self.link(id, depth, link);
        }
    }

    fn link(&mut self, from: u32, from_depth: u32, link: Link) {
        match link {
            Link::Malformed { href, reason } => {
                let (_, pages) = self.malformed.entry(href).or_insert_with(|| {
                    self.counts.links += 1;
                    (reason, BTreeSet::new())
                });
                pages.insert(from);
            }
            Link::Page { url, fragment } => {
                let id = self.see(&url, from_depth.saturating_add(1), true);
                self.refer(id, from);
                if let Some(fragment) = fragment {
                    self.fragment(id, fragment, from);
                }
            }
            Link::Resource { url } => {
                // What a page loads is part of it: the page's depth, not one more.
                let id = self.see(&url, from_depth, false);
                self.refer(id, from);
            }
        }
    }

    /// The id of a linked URL, creating and queueing its entry the first time; `page` for
    /// `<a>` and `<area>` links.
    fn see(&mut self, url: &str, depth: u32, page: bool) -> u32 {
        let below_max = self.rules.max_depth.is_none_or(|max| depth < max);
        if let Some(&id) = self.ids.get(url) {
            let entry = &mut self.entries[id as usize];
            entry.page_link |= page;
            if depth < entry.depth {
                entry.depth = depth;
            }
            if page && entry.local && below_max && !entry.crawl {
                entry.crawl = true;
                match entry.state {
                    State::Queued => self.pages.push_back(id),
                    State::Alive { crawled: false, .. } => self.enqueue(id),
                    // In flight or waiting: crawled once its check comes back alive.
                    _ => {}
                }
            }
            return id;
        }
        let parsed = Url::parse(url).ok();
        let local = parsed
            .as_ref()
            .is_some_and(|url| url.origin() == self.rules.origin);
        let http = parsed
            .as_ref()
            .is_some_and(|url| matches!(url.scheme(), "http" | "https"));
        let skip = if self.rules.exclude.iter().any(|re| re.is_match(url)) {
            Some(Skip::Excluded)
        } else if !http {
            Some(Skip::NotHttp)
        } else if !local && !self.rules.check_external {
            Some(Skip::External)
        } else if local && !self.robots_allow(parsed.as_ref()) {
            Some(Skip::Robots)
        } else {
            None
        };
        match skip {
            Some(Skip::Excluded) => self.counts.excluded += 1,
            Some(Skip::Robots) => self.counts.disallowed += 1,
            _ => {}
        }
        if !local && skip != Some(Skip::Excluded) {
            self.counts.external += 1;
        }
        let id = self.intern(url);
        self.entries.push(Entry {
            state: State::Queued,
            local,
            crawl: page && local && below_max,
            page_link: page,
            counted: false,
            linked: false,
            depth,
            retries: 0,
            referrers: Vec::new(),
        });
        match skip {
            Some(skip) => self.entries[id as usize].state = State::Skipped(skip),
            None => self.enqueue(id),
        }
        id
    }

    fn robots_allow(&self, url: Option<&Url>) -> bool {
        let (RobotsState::Known(robots), Some(url)) = (&self.robots, url) else {
            return true;
        };
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        robots.allowed(&path)
    }

    fn refer(&mut self, id: u32, from: u32) {
        let entry = &mut self.entries[id as usize];
        if !entry.linked {
            entry.linked = true;
            if entry.state != State::Skipped(Skip::Excluded) {
                self.counts.links += 1;
            }
        }
        match entry.state {
            State::Queued
            | State::Waiting
            | State::InFlight(_)
            | State::Dead(_)
            | State::Warned(_) => entry.referrers.push(from),
            State::Alive { .. } | State::Skipped(_) => {}
        }
    }

    fn fragment(&mut self, id: u32, fragment: String, from: u32) {
        if let Some(ids) = self.page_ids.get(&id) {
            if !has_fragment(ids, &fragment) {
                self.dead_fragment(id, fragment.into(), from);
            }
            return;
        }
        let entry = &self.entries[id as usize];
        let pending = match entry.state {
            State::Queued | State::Waiting | State::InFlight(_) => entry.crawl,
            State::Alive { crawled: false, .. } => entry.crawl,
            _ => false,
        };
        if pending {
            self.pending_fragments
                .entry(id)
                .or_default()
                .push((fragment.into(), from));
        }
    }

    fn dead_fragment(&mut self, id: u32, fragment: Box<str>, from: u32) {
        self.dead_fragments
            .entry((id, fragment))
            .or_default()
            .insert(from);
    }

    /// What the crawl found, so far if `interrupted`.
    pub(crate) fn findings(&self, interrupted: bool) -> Findings {
        let mut dead = Vec::new();
        let mut warnings = Vec::new();
        let pages = |ids: &mut dyn Iterator<Item = u32>| -> Vec<String> {
            let mut pages: Vec<String> = ids.map(|id| self.urls[id as usize].to_string()).collect();
            pages.sort_unstable();
            pages.dedup();
            pages
        };
        for (id, entry) in self.entries.iter().enumerate() {
            let (list, failure) = match &entry.state {
                State::Dead(failure) => (&mut dead, failure),
                State::Warned(failure) => (&mut warnings, failure),
                _ => continue,
            };
            list.push(Problem {
                url: self.urls[id].to_string(),
                status: failure.status,
                reason: failure.reason.clone(),
                found_on: pages(&mut entry.referrers.iter().copied()),
            });
        }
        for (href, (reason, from)) in &self.malformed {
            dead.push(Problem {
                url: href.clone(),
                status: None,
                reason: reason.clone(),
                found_on: pages(&mut from.iter().copied()),
            });
        }
        for ((id, fragment), from) in &self.dead_fragments {
            let status = match self.entries[*id as usize].state {
                State::Alive { status, .. } => Some(status),
                _ => None,
            };
            dead.push(Problem {
                url: format!("{}#{fragment}", self.urls[*id as usize]),
                status,
                reason: format!("no element with id \"{}\"", percent_decode(fragment)),
                found_on: pages(&mut from.iter().copied()),
            });
        }
        dead.sort_by(|a, b| a.url.cmp(&b.url));
        warnings.sort_by(|a, b| a.url.cmp(&b.url));
        let pending = |entry: &&Entry| {
            matches!(
                entry.state,
                State::Queued | State::Waiting | State::InFlight(_)
            )
        };
        let unchecked = if interrupted {
            self.entries.iter().filter(pending).count() as u64
        } else {
            0
        };
        let unfetched = if interrupted {
            0
        } else {
            self.entries
                .iter()
                .filter(pending)
                .filter(|entry| entry.crawl)
                .count() as u64
        };
        Findings {
            dead,
            warnings,
            counts: self.counts.clone(),
            unfetched,
            unchecked,
            robots_note: self.robots_note.clone(),
        }
    }
}

/// The host and port requests are paced by.
fn host_of(url: &str) -> String {
    match Url::parse(url) {
        Ok(url) => format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => String::new(),
    }
}

/// Whether a page with these (hashed) ids has an element a fragment points to.
fn has_fragment(ids: &[u64], fragment: &str) -> bool {
    let has = |name: &str| ids.binary_search(&hash(name)).is_ok();
    // An empty fragment and "top" scroll to the top of any page.
    fragment.is_empty()
        || fragment.eq_ignore_ascii_case("top")
        || has(fragment)
        || has(&percent_decode(fragment))
}

fn hash(text: &str) -> u64 {
    // SipHash with fixed keys: the same on every run, and collisions are as unlikely as
    // two ids of one page having the same 64-bit hash.
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// A fragment as a browser compares it with ids: percent-decoded as UTF-8.
fn percent_decode(fragment: &str) -> String {
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Not Found` for 404; `HTTP 599` for a status without a standard name.
fn reason_phrase(code: u16) -> String {
    ureq::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|status| status.canonical_reason())
        .map_or_else(|| format!("HTTP {code}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            origin: Url::parse("http://site/").unwrap().origin(),
            check_external: false,
            check_fragments: false,
            exclude: Vec::new(),
            max_depth: None,
            max_pages: None,
            retries: 2,
            rate: None,
            robots: false,
        }
    }

    fn frontier(rules: Rules) -> (Frontier, Instant) {
        let now = Instant::now();
        let start = Url::parse("http://site/").unwrap();
        (Frontier::new(&start, rules, now), now)
    }

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after: None,
        }
    }

    fn page(links: &[&str]) -> Body {
        Body {
            links: links
                .iter()
                .map(|url| Link::Page {
                    url: (*url).to_owned(),
                    fragment: None,
                })
                .collect(),
            parsed: true,
            ..Body::default()
        }
    }

    /// Hands out every fetch that may start now, as (url, purpose).
    fn drain(frontier: &mut Frontier, now: Instant) -> Vec<(String, Purpose)> {
        std::iter::from_fn(|| frontier.next(now))
            .map(|job| (job.url, job.purpose))
            .collect()
    }

    #[test]
    fn the_frontier_queues_each_same_site_url_once_and_counts_the_rest() {
        let (mut frontier, now) = frontier(rules());
        assert_eq!(
            drain(&mut frontier, now),
            [("http://site/".to_owned(), Purpose::Crawl)]
        );
        frontier.record(
            "http://site/",
            Purpose::Crawl,
            status(200),
            page(&[
                "http://site/a",
                "http://site/a",
                "http://site/",
                "https://site/a",
                "http://site:8080/a",
                "mailto:x@site",
            ]),
            now,
        );
        assert_eq!(frontier.in_flight(), 0);
        assert_eq!(
            drain(&mut frontier, now),
            [("http://site/a".to_owned(), Purpose::Crawl)]
        );
        let findings = frontier.findings(false);
        assert_eq!(findings.counts.links, 5);
        assert_eq!(findings.counts.external, 3);
        assert_eq!(findings.unfetched, 1);
        assert!(findings.dead.is_empty());
    }

    #[test]
    fn a_dead_url_is_reported_once_per_page_that_links_to_it() {
        let (mut frontier, now) = frontier(rules());
        drain(&mut frontier, now);
        frontier.record(
            "http://site/",
            Purpose::Crawl,
            status(200),
            page(&["http://site/gone", "http://site/b", "http://site/gone"]),
            now,
        );
        drain(&mut frontier, now);
        frontier.record(
            "http://site/gone",
            Purpose::Crawl,
            status(404),
            Body::default(),
            now,
        );
        // A link that arrives after the verdict counts too.
        frontier.record(
            "http://site/b",
            Purpose::Crawl,
            status(200),
            page(&["http://site/gone"]),
            now,
        );
        assert_eq!(
            frontier.findings(false).dead,
            [Problem {
                url: "http://site/gone".to_owned(),
                status: Some(404),
                reason: "Not Found".to_owned(),
                found_on: vec!["http://site/".to_owned(), "http://site/b".to_owned()],
            }]
        );
    }

    #[test]
    fn a_dead_start_page_has_no_page_it_was_found_on() {
        let (mut frontier, now) = frontier(Rules {
            retries: 0,
            ..rules()
        });
        drain(&mut frontier, now);
        let failed = Answer::Failed {
            reason: "connection refused".to_owned(),
            transient: true,
        };
        frontier.record("http://site/", Purpose::Crawl, failed, Body::default(), now);
        let dead = frontier.findings(false).dead;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "connection refused");
        assert!(dead[0].found_on.is_empty());
    }

    #[test]
    fn a_live_url_forgets_who_links_to_it() {
        let (mut frontier, now) = frontier(rules());
        drain(&mut frontier, now);
        frontier.record(
            "http://site/",
            Purpose::Crawl,
            status(200),
            page(&["http://site/a"]),
            now,
        );
        assert_eq!(frontier.entries[1].referrers, [0]);
        drain(&mut frontier, now);
        frontier.record(
            "http://site/a",
            Purpose::Crawl,
            status(200),
            page(&["http://site/"]),
            now,
        );
        assert!(
            frontier
                .entries
                .iter()
                .all(|entry| entry.referrers.is_empty())
        );
    }

    #[test]
    fn a_resource_later_linked_as_a_page_is_crawled_after_its_check() {
        let (mut frontier, now) = frontier(rules());
        drain(&mut frontier, now);
        let body = Body {
            links: vec![Link::Resource {
                url: "http://site/frame".to_owned(),
            }],
            parsed: true,
            ..Body::default()
        };
        frontier.record("http://site/", Purpose::Crawl, status(200), body, now);
        assert_eq!(
            drain(&mut frontier, now),
            [("http://site/frame".to_owned(), Purpose::Check)]
        );
        frontier.record(
            "http://site/frame",
            Purpose::Check,
            status(200),
            Body::default(),
            now,
        );
        frontier.in_flight += 1;
        frontier.record(
            "http://site/other",
            Purpose::Crawl,
            status(200),
            Body::default(),
            now,
        );
        let _ = frontier.see("http://site/frame", 1, true);
        assert_eq!(
            drain(&mut frontier, now),
            [("http://site/frame".to_owned(), Purpose::Crawl)]
        );
    }

    #[test]
    fn retries_wait_for_the_backoff_or_the_server_and_pause_the_host() {
        let (mut frontier, now) = frontier(rules());
        drain(&mut frontier, now);
        frontier.record(
            "http://site/",
            Purpose::Crawl,
            status(200),
            page(&["http://site/busy", "http://site/next"]),
            now,
        );
        let jobs = drain(&mut frontier, now);
        assert_eq!(jobs.len(), 2);
        let busy = Answer::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(5)),
        };
        frontier.record(
            "http://site/busy",
            Purpose::Crawl,
            busy,
            Body::default(),
            now,
        );
        // Not due, and another fetch is in flight to wake the coordinator later.
        assert_eq!(frontier.next(now), None);
        frontier.record(
            "http://site/next",
            Purpose::Crawl,
            status(200),
            Body::default(),
            now,
        );
        // Nothing else in flight: the retry goes out now, with the wait the server asked.
        let job = frontier.next(now).unwrap();
        assert_eq!(
            (job.url.as_str(), job.wait),
            ("http://site/busy", Duration::from_secs(5))
        );
        frontier.record(
            "http://site/busy",
            Purpose::Crawl,
            status(429),
            Body::default(),
            now,
        );
        // The second retry: the backoff's one second, but the host is paused longer.
        let job = frontier.next(now).unwrap();
        assert_eq!(job.wait, Duration::from_secs(5));
        frontier.record(
            "http://site/busy",
            Purpose::Crawl,
            status(429),
            Body::default(),
            now,
        );
        let findings = frontier.findings(false);
        assert!(findings.dead.is_empty());
        assert_eq!(findings.warnings.len(), 1);
        assert_eq!(
            findings.warnings[0].reason,
            "still rate-limited (429 Too Many Requests) after 2 retries"
        );
    }

    #[test]
    fn a_rate_spaces_the_fetches_of_a_host() {
        let (mut frontier, now) = frontier(Rules {
            rate: Some(4.0),
            check_external: true,
            ..rules()
        });
        assert_eq!(frontier.next(now).unwrap().wait, Duration::ZERO);
        frontier.record(
            "http://site/",
            Purpose::Crawl,
            status(200),
            page(&["http://site/a", "http://other/x", "http://site/b"]),
            now,
        );
        let waits: Vec<(String, Duration)> = std::iter::from_fn(|| frontier.next(now))
            .map(|job| (job.url, job.wait))
            .collect();
        assert_eq!(
            waits,
            [
                // The other host has its own pace; checks go first.
                ("http://other/x".to_owned(), Duration::ZERO),
                ("http://site/a".to_owned(), Duration::from_millis(250)),
                ("http://site/b".to_owned(), Duration::from_millis(500)),
            ]
        );
    }

    #[test]
    fn fragments_wait_for_their_page_and_are_checked_against_its_ids() {
        let (mut frontier, now) = frontier(Rules {
            check_fragments: true,
            ..rules()
        });
        drain(&mut frontier, now);
        let fragment = |url: &str, fragment: &str| Link::Page {
            url: url.to_owned(),
            fragment: Some(fragment.to_owned()),
        };
        let body = Body {
            links: vec![
                fragment("http://site/doc", "there"),
                fragment("http://site/doc", "gone"),
                fragment("http://site/", "self"),
            ],
            ids: vec!["self".to_owned()],
            parsed: true,
            ..Body::default()
        };
        frontier.record("http://site/", Purpose::Crawl, status(200), body, now);
        drain(&mut frontier, now);
        let body = Body {
            ids: vec!["there".to_owned()],
            parsed: true,
            links: vec![fragment("http://site/doc", "also-gone")],
            ..Body::default()
        };
        frontier.record("http://site/doc", Purpose::Crawl, status(200), body, now);
        let dead: Vec<String> = frontier
            .findings(false)
            .dead
            .into_iter()
            .map(|problem| problem.url)
            .collect();
        assert_eq!(dead, ["http://site/doc#also-gone", "http://site/doc#gone"]);
    }

    #[test]
    fn nothing_but_robots_txt_goes_out_until_it_is_known() {
        let (mut frontier, now) = frontier(Rules {
            robots: true,
            ..rules()
        });
        let job = frontier.next(now).unwrap();
        assert_eq!(
            (job.url.as_str(), job.purpose),
            ("http://site/robots.txt", Purpose::Robots)
        );
        assert_eq!(frontier.next(now), None);
        let body = Body {
            robots: Some("User-agent: *\nDisallow: /private\n".to_owned()),
            ..Body::default()
        };
        frontier.record(
            "http://site/robots.txt",
            Purpose::Robots,
            status(200),
            body,
            now,
        );
        drain(&mut frontier, now);
        frontier.record(
            "http://site/",
            Purpose::Crawl,
            status(200),
            page(&["http://site/private/x", "http://site/public"]),
            now,
        );
        assert_eq!(
            drain(&mut frontier, now),
            [("http://site/public".to_owned(), Purpose::Crawl)]
        );
        assert_eq!(frontier.findings(false).counts.disallowed, 1);
    }
}
