//! The textbook's parallel dead-link finder, rebuilt on message passing.
//!
//! The coordinator owns the queue of URLs to fetch and the set of URLs seen, so nothing
//! is shared and nothing needs a lock. Each worker process asks for a URL, fetches it,
//! parses its links, and reports the answer and the links back with its next request.
//! When the queue is empty and no fetch is in flight, the coordinator ends the workers.
//!
//! Politeness lives on the coordinator too, because only it sees every request: it fetches
//! robots.txt before anything else, paces each host (`--rate`), and schedules retries. A
//! fetch that must wait goes out with the time to wait, and the worker sleeps it off; the
//! coordinator only acts when a report arrives, so it never needs a timer of its own.
//!
//! Ctrl-C stops the workers at once; the coordinator's side still holds all that came
//! back, so the caller reports it. With `--restarts`, a worker that fails (killed, say)
//! costs only the fetches in flight: the frontier queues them again and a new ring goes on.

mod charset;
mod fetch;
mod frontier;
mod links;
mod progress;
mod retry;
mod robots;

use std::time::{Duration, Instant};

use regex::Regex;
use ringleader::{
    Coordinator, Handler, LaunchError, Launcher, Restart, Restarted, Rewind, Ring, Stage,
    StageError, StopSignal,
};
use serde::{Deserialize, Serialize};
use url::Url;

use self::fetch::{Answer, Body, Fetcher, Purpose};
use self::frontier::{Frontier, Rules};
use self::progress::Progress;

pub use self::fetch::MAX_PARSED;
pub use self::frontier::{Counts, Findings, Problem};

/// What to crawl and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first page; only URLs with its scheme, host and port are crawled.
    pub start: Url,
    /// Worker processes.
    pub workers: usize,
    /// The most pages to crawl.
    pub max_pages: Option<u64>,
    /// Pages this many links from the start are checked, not crawled.
    pub max_depth: Option<u32>,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Check links to other origins (without crawling them).
    pub check_external: bool,
    /// Report `page#fragment` links whose page has no such id.
    pub check_fragments: bool,
    /// URLs matching any of these are neither fetched nor reported.
    pub exclude: Vec<Regex>,
    /// Honour the start origin's robots.txt.
    pub robots: bool,
    /// Requests per second per host.
    pub rate: Option<f64>,
    /// Retries after 429, 503 or a failed connection.
    pub retries: u32,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// How many times a failed ring may be replaced by a new one.
    pub restarts: u32,
}

/// What a crawl found, and whether a signal cut it short.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Findings,
    pub interrupted: Option<StopSignal>,
}

/// Crawls from `config.start` on a ring of worker processes.
pub fn crawl(config: &Config) -> Result<Report, LaunchError> {
    let mut start = config.start.clone();
    start.set_fragment(None);
    let rules = Rules {
        origin: start.origin(),
        check_external: config.check_external,
        check_fragments: config.check_fragments,
        exclude: config.exclude.clone(),
        max_depth: config.max_depth,
        max_pages: config.max_pages,
        retries: config.retries,
        rate: config.rate,
        robots: config.robots,
    };
    let stage = Crawl {
        origin: start.origin(),
        timeout: config.timeout,
        fragments: config.check_fragments,
    };
    let mut dispatch = Dispatch {
        frontier: Frontier::new(&start, rules, Instant::now()),
        progress: Progress::new(config.progress),
        finished: false,
        idle: Vec::new(),
    };
    let restarts = config.restarts;
    let launched = Launcher::new()
        .workers(config.workers)
        .restarts(restarts)
        .launch_restarting(stage, &mut dispatch, |restarted: &Restarted| {
            eprintln!(
                "ringleader: {}; restarting the workers, the fetches they had in flight queued \
                 again ({} of {restarts})",
                restarted.failure, restarted.attempt
            );
        });
    dispatch.progress.clear();
    let interrupted = match launched {
        Ok(_) => None,
        // Every worker is stopped and reaped; what came back before is still here.
        Err(LaunchError::Interrupted { signal }) => Some(signal),
        Err(err) => return Err(err),
    };
    Ok(Report {
        findings: dispatch.frontier.findings(interrupted.is_some()),
        interrupted,
    })
}

/// The workers' side: what each needs to fetch.
#[derive(Debug, Clone)]
struct Crawl {
    origin: url::Origin,
    timeout: Duration,
    fragments: bool,
}

/// The coordinator's side: the frontier, and who waits for a job.
#[derive(Debug)]
struct Dispatch {
    frontier: Frontier,
    progress: Progress,
    finished: bool,
    /// Workers waiting for a job.
    idle: Vec<usize>,
}

/// Worker to coordinator.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Give me a URL to fetch.
    Ready,
    /// Here is what I fetched; give me the next URL.
    Fetched {
        url: String,
        purpose: Purpose,
        answer: Answer,
        body: Body,
    },
}

/// Coordinator to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// Wait `wait`, then fetch `url`.
    Fetch {
        url: String,
        purpose: Purpose,
        wait: Duration,
    },
    /// The crawl is over: return.
    Finish,
}

impl Stage for Crawl {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        let fetcher = Fetcher::new(self.origin, self.timeout, self.fragments);
        let mut job: Job = ring.ask(&Request::Ready)?;
        while let Job::Fetch { url, purpose, wait } = job {
            // The coordinator's schedule: a host's rate, or a retry's backoff.
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let (answer, body) = fetcher.fetch(&url, purpose);
            job = ring.ask(&Request::Fetched {
                url,
                purpose,
                answer,
                body,
            })?;
        }
        Ok(())
    }
}

impl Handler for Dispatch {
    type Report = Request;
    type Answer = Job;

    fn on_report(
        &mut self,
        from: usize,
        request: Request,
        coordinator: &mut Coordinator<'_, Job>,
    ) -> Result<(), StageError> {
        if self.finished {
            return Ok(());
        }
        let now = Instant::now();
        if let Request::Fetched {
            url,
            purpose,
            answer,
            body,
        } = request
        {
            self.frontier.record(&url, purpose, answer, body, now);
        }
        self.idle.push(from);
        while !self.idle.is_empty() {
            let Some(next) = self.frontier.next(now) else {
                break;
            };
            let Some(rank) = self.idle.pop() else {
                break;
            };
            coordinator.send(
                rank,
                Job::Fetch {
                    url: next.url,
                    purpose: next.purpose,
                    wait: next.wait,
                },
            )?;
        }
        if self.frontier.in_flight() == 0 {
            // Nothing queued that may still be fetched, and nothing left to come back.
            self.finished = true;
            coordinator.broadcast(Job::Finish)?;
        }
        let frontier = &self.frontier;
        self.progress.show(|| {
            let counts = frontier.counts();
            format!(
                "crawl: {} pages fetched, {} checked, {} queued, {} in flight, {} dead",
                counts.fetched,
                counts.resources_checked + counts.external_checked + counts.depth_checked,
                frontier.queued(),
                frontier.in_flight(),
                frontier.dead_so_far()
            )
        });
        Ok(())
    }
}

impl Restart<Crawl> for Dispatch {
    /// Everything that came back is kept; what was in flight on the failed ring is queued
    /// again, and the new workers start by asking for jobs.
    fn rewind(&mut self, _stage: &mut Crawl, _failure: &LaunchError) -> Option<Rewind> {
        self.frontier.requeue_in_flight(Instant::now());
        self.finished = false;
        self.idle.clear();
        Some(Rewind::over())
    }
}
