//! The textbook's parallel dead-link finder, rebuilt on message passing.
//!
//! The coordinator owns the queue of pages to fetch and the set of URLs seen, so nothing
//! is shared and nothing needs a lock. Each worker process asks for a URL, fetches it,
//! parses its links, and reports the status and the links back with its next request.
//! When the queue is empty and no fetch is in flight, the coordinator ends the workers.

mod fetch;
mod links;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use ringleader::{Coordinator, LaunchError, Launcher, Ring, Stage, StageError};
use serde::{Deserialize, Serialize};
use url::Url;

pub(crate) use self::fetch::Outcome;

/// What to crawl and how.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The first page; only URLs with its scheme, host and port are fetched.
    pub(crate) start: Url,
    /// Worker processes.
    pub(crate) workers: usize,
    /// The most pages to fetch.
    pub(crate) max_pages: Option<u64>,
    /// Deadline of each request.
    pub(crate) timeout: Duration,
}

/// What a crawl found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// Dead links: `(outcome, url, page it was found on)`, one per page that links to it;
    /// the start page, if dead, has no page it was found on.
    pub(crate) dead: Vec<(Outcome, String, Option<String>)>,
    /// Pages fetched.
    pub(crate) fetched: u64,
    /// Distinct URLs the pages link to.
    pub(crate) links: usize,
    /// Distinct linked URLs on another scheme, host or port: counted, not fetched.
    pub(crate) external: usize,
    /// Same-site URLs left unfetched because of the page limit.
    pub(crate) unfetched: usize,
}

/// Crawls from `config.start` on a ring of worker processes.
pub(crate) fn crawl(config: &Config) -> Result<Report, LaunchError> {
    let start = without_fragment(&config.start);
    let mut stage = Crawl {
        origin: start.origin(),
        timeout: config.timeout,
        max_pages: config.max_pages,
        frontier: Frontier::new(start.to_string()),
    };
    Launcher::new().workers(config.workers).launch(&mut stage)?;
    Ok(stage.frontier.report(&stage.origin))
}

fn without_fragment(url: &Url) -> Url {
    let mut url = url.clone();
    url.set_fragment(None);
    url
}

/// The stage. Workers use only `timeout`; the frontier lives on the coordinator's copy.
#[derive(Debug, Clone)]
struct Crawl {
    origin: url::Origin,
    timeout: Duration,
    max_pages: Option<u64>,
    frontier: Frontier,
}

/// Worker to coordinator.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Give me a URL to fetch.
    Ready,
    /// Here is what I fetched; give me the next URL.
    Fetched {
        url: String,
        outcome: Outcome,
        links: Vec<String>,
    },
}

/// Coordinator to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    Fetch(String),
    /// The crawl is over: return.
    Finish,
}

impl Stage for Crawl {
    type Message = ();
    type Report = Request;
    type Answer = Job;
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        let agent = fetch::agent(self.timeout);
        let mut job = ring.ask(Request::Ready)?;
        while let Job::Fetch(url) = job {
            let (outcome, links) = fetch::fetch(&agent, &url);
            job = ring.ask(Request::Fetched {
                url,
                outcome,
                links,
            })?;
        }
        Ok(())
    }

    fn on_report(
        &mut self,
        from: usize,
        request: Request,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        let frontier = &mut self.frontier;
        if frontier.finished {
            return Ok(());
        }
        if let Request::Fetched {
            url,
            outcome,
            links,
        } = request
        {
            frontier.record(&self.origin, url, outcome, links);
        }
        frontier.idle.push(from);
        while self.max_pages.is_none_or(|max| frontier.dispatched < max)
            && !frontier.queue.is_empty()
        {
            let Some(rank) = frontier.idle.pop() else {
                break;
            };
            let Some(url) = frontier.queue.pop_front() else {
                break;
            };
            coordinator.send(rank, Job::Fetch(url))?;
            frontier.in_flight += 1;
            frontier.dispatched += 1;
        }
        if frontier.in_flight == 0 {
            // Nothing queued that may still be fetched, and nothing left to come back.
            frontier.finished = true;
            coordinator.broadcast(Job::Finish)?;
        }
        Ok(())
    }
}

/// The coordinator's state: the queue, the seen set, and what came back.
#[derive(Debug, Clone)]
struct Frontier {
    queue: VecDeque<String>,
    seen: HashSet<String>,
    /// Every linked URL, with the pages that link to it.
    found_on: BTreeMap<String, BTreeSet<String>>,
    outcomes: BTreeMap<String, Outcome>,
    idle: Vec<usize>,
    in_flight: u64,
    dispatched: u64,
    finished: bool,
}

impl Frontier {
    fn new(start: String) -> Self {
        Frontier {
            queue: VecDeque::from([start.clone()]),
            seen: HashSet::from([start]),
            found_on: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            idle: Vec::new(),
            in_flight: 0,
            dispatched: 0,
            finished: false,
        }
    }

    fn record(&mut self, origin: &url::Origin, page: String, outcome: Outcome, links: Vec<String>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        for link in links {
            let same_site = Url::parse(&link).is_ok_and(|url| url.origin() == *origin);
            if same_site && self.seen.insert(link.clone()) {
                self.queue.push_back(link.clone());
            }
            self.found_on.entry(link).or_default().insert(page.clone());
        }
        self.outcomes.insert(page, outcome);
    }

    fn report(&self, origin: &url::Origin) -> Report {
        let mut dead = Vec::new();
        for (url, outcome) in self.outcomes.iter().filter(|(_, o)| o.is_dead()) {
            match self.found_on.get(url) {
                Some(pages) => {
                    for page in pages {
                        dead.push((outcome.clone(), url.clone(), Some(page.clone())));
                    }
                }
                None => dead.push((outcome.clone(), url.clone(), None)),
            }
        }
        let external = self
            .found_on
            .keys()
            .filter(|link| !Url::parse(link).is_ok_and(|url| url.origin() == *origin))
            .count();
        Report {
            dead,
            fetched: self.outcomes.len() as u64,
            links: self.found_on.len(),
            external,
            unfetched: self.queue.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> url::Origin {
        Url::parse("http://site:80/").unwrap().origin()
    }

    fn strings(links: &[&str]) -> Vec<String> {
        links.iter().map(|link| (*link).to_owned()).collect()
    }

    #[test]
    fn the_frontier_queues_each_same_site_url_once_and_counts_the_rest() {
        let mut frontier = Frontier::new("http://site/".to_owned());
        assert_eq!(frontier.queue.pop_front().as_deref(), Some("http://site/"));
        frontier.in_flight = 1;
        frontier.record(
            &origin(),
            "http://site/".to_owned(),
            Outcome::Status(200),
            strings(&[
                "http://site/a",
                "http://site/a",
                "http://site/",
                "https://site/a",
                "http://site:8080/a",
                "mailto:x@site",
            ]),
        );
        assert_eq!(frontier.in_flight, 0);
        assert_eq!(frontier.queue, ["http://site/a"]);
        let report = frontier.report(&origin());
        assert_eq!(report.links, 5);
        assert_eq!(report.external, 3);
        assert_eq!(report.unfetched, 1);
        assert!(report.dead.is_empty());
    }

    #[test]
    fn a_dead_url_is_reported_once_per_page_that_links_to_it() {
        let mut frontier = Frontier::new("http://site/".to_owned());
        for page in ["http://site/", "http://site/b"] {
            frontier.record(
                &origin(),
                page.to_owned(),
                Outcome::Status(200),
                strings(&["http://site/gone"]),
            );
        }
        frontier.record(
            &origin(),
            "http://site/gone".to_owned(),
            Outcome::Status(404),
            Vec::new(),
        );
        let dead = frontier.report(&origin()).dead;
        assert_eq!(
            dead,
            [
                (
                    Outcome::Status(404),
                    "http://site/gone".to_owned(),
                    Some("http://site/".to_owned())
                ),
                (
                    Outcome::Status(404),
                    "http://site/gone".to_owned(),
                    Some("http://site/b".to_owned())
                ),
            ]
        );
    }

    #[test]
    fn a_dead_start_page_has_no_page_it_was_found_on() {
        let mut frontier = Frontier::new("http://site/".to_owned());
        let failed = Outcome::Failed("connection refused".to_owned());
        frontier.record(
            &origin(),
            "http://site/".to_owned(),
            failed.clone(),
            Vec::new(),
        );
        assert_eq!(
            frontier.report(&origin()).dead,
            [(failed, "http://site/".to_owned(), None)]
        );
    }
}
