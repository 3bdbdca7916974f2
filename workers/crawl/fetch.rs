//! Fetching one page on a worker: a blocking HTTP client with a deadline on every request.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ureq::{Agent, ResponseExt};
use url::Url;

use super::links::links;

/// The most of a page the crawler reads.
const MAX_BODY: u64 = 10 * 1024 * 1024;

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The server answered with this status.
    Status(u16),
    /// No answer: the connection failed, timed out or broke off. Why, in words.
    Failed(String),
}

impl Outcome {
    /// A dead link: status 400 or more, or no answer at all.
    pub(crate) fn is_dead(&self) -> bool {
        match self {
            Outcome::Status(status) => *status >= 400,
            Outcome::Failed(_) => true,
        }
    }
}

/// A client for one worker. Create it on the worker, after the fork, so that any thread it
/// may start belongs to the worker.
pub(crate) fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(timeout))
        // A 404 is an answer to record, not an error.
        .http_status_as_error(false)
        .user_agent(concat!("ringleader-crawl/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Fetches `url` and, for an HTML page that loaded, finds its links.
pub(crate) fn fetch(agent: &Agent, url: &str) -> (Outcome, Vec<String>) {
    let mut response = match agent.get(url).call() {
        Ok(response) => response,
        Err(err) => return (Outcome::Failed(err.to_string()), Vec::new()),
    };
    let status = response.status().as_u16();
    if status >= 400 {
        return (Outcome::Status(status), Vec::new());
    }
    // Links resolve against where redirects ended, as in a browser.
    let base = Url::parse(&response.get_uri().to_string()).or_else(|_| Url::parse(url));
    let body = response.body_mut();
    let html = body.mime_type().is_none_or(|mime| mime.contains("html"));
    let (true, Ok(base)) = (html, base) else {
        return (Outcome::Status(status), Vec::new());
    };
    match body.with_config().limit(MAX_BODY).read_to_vec() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let found = links(&base, &text).into_iter().map(String::from).collect();
            (Outcome::Status(status), found)
        }
        Err(err) => (
            Outcome::Failed(format!("reading the page: {err}")),
            Vec::new(),
        ),
    }
}
