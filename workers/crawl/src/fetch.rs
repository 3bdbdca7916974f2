//! Fetching one URL on a worker: a blocking HTTP client with a deadline on every request.

use std::io::Read;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use ureq::{Agent, ResponseExt};
use url::Url;

use super::charset;
use super::links::{self, Link};
use super::retry;

/// The most of a page the crawler parses. A larger page is alive all the same; only its
/// links past this point go unseen.
pub const MAX_PARSED: u64 = 10 * 1024 * 1024;

/// The most of a robots.txt read, as RFC 9309 allows (at least 500 KiB).
const MAX_ROBOTS: u64 = 512 * 1024;

/// What a fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Purpose {
    /// A page of the site: GET, and read its links if it is HTML that stayed on the site.
    Crawl,
    /// A sub-resource, an external link, or a page past `--max-depth`: is it there? HEAD,
    /// and GET when HEAD is refused; the body is never read.
    Check,
    /// The site's robots.txt: GET, and bring the text back.
    Robots,
}

/// The server's answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// The final status, after redirects. `retry_after` is the server's `Retry-After`, when
    /// it sent one.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer. `reason` says why, in a few words; `transient` when trying again may help
    /// (the connection failed or broke, as opposed to a bad name or a protocol error).
    Failed { reason: String, transient: bool },
}

impl Answer {
    /// Whether trying again may help: a 429 or a 503, or a connection that failed or broke.
    pub(crate) fn transient(&self) -> bool {
        match self {
            Answer::Status { code, .. } => matches!(code, 429 | 503),
            Answer::Failed { transient, .. } => *transient,
        }
    }

    /// The wait the server asked for.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Answer::Status { retry_after, .. } => *retry_after,
            Answer::Failed { .. } => None,
        }
    }
}

/// What a worker brings back from one URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Body {
    /// The page's links, when it was crawled and parsed.
    pub links: Vec<Link>,
    /// The page's ids, when fragments are checked.
    pub ids: Vec<String>,
    /// Whether the links come from a page that was parsed (HTML on the site).
    pub parsed: bool,
    /// The page is larger than [`MAX_PARSED`]: its links are those of the first part.
    pub truncated: bool,
    /// Redirects took the request to another origin, so the page was not parsed.
    pub left_origin: bool,
    /// The text of a robots.txt.
    pub robots: Option<String>,
}

/// How a worker fetches: the same for every job.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    agent: Agent,
    origin: url::Origin,
    timeout: Duration,
    fragments: bool,
}

impl Fetcher {
    /// A client for one worker. Create it on the worker, after the fork, so that any thread
    /// it may start belongs to the worker.
    pub(crate) fn new(origin: url::Origin, timeout: Duration, fragments: bool) -> Fetcher {
        let agent = Agent::config_builder()
            .timeout_global(Some(timeout))
            // A 404 is an answer to record, not an error.
            .http_status_as_error(false)
            // robots.txt groups are looked up by the product token this starts with.
            .user_agent(concat!("ringleader-crawl/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Fetcher {
            agent,
            origin,
            timeout,
            fragments,
        }
    }

    /// Fetches `url` for `purpose`.
    pub(crate) fn fetch(&self, url: &str, purpose: Purpose) -> (Answer, Body) {
        match purpose {
            Purpose::Crawl => self.crawl(url),
            Purpose::Check => (self.check(url), Body::default()),
            Purpose::Robots => self.robots(url),
        }
    }

    fn crawl(&self, url: &str) -> (Answer, Body) {
        let mut response = match self.agent.get(url).call() {
            Ok(response) => response,
            Err(err) => return (self.failed(&err), Body::default()),
        };
        let answer = status(&response);
        let mut body = Body::default();
        if response.status().as_u16() >= 300 {
            return (answer, body);
        }
        // Links resolve against where redirects ended, as in a browser.
        let Ok(base) = Url::parse(&response.get_uri().to_string()).or_else(|_| Url::parse(url))
        else {
            return (answer, body);
        };
        if base.origin() != self.origin {
            body.left_origin = true;
            return (answer, body);
        }
        let content = response.body_mut();
        if !content.mime_type().is_none_or(|mime| mime.contains("html")) {
            return (answer, body);
        }
        let charset = content.charset().map(str::to_owned);
        let mut bytes = Vec::new();
        // One byte past the limit tells a page that fills it from one that is larger.
        let read = content
            .as_reader()
            .take(MAX_PARSED + 1)
            .read_to_end(&mut bytes);
        if let Err(err) = read {
            let failed = Answer::Failed {
                reason: format!("reading the page: {}", io_reason(&err)),
                transient: true,
            };
            return (failed, body);
        }
        if bytes.len() as u64 > MAX_PARSED {
            body.truncated = true;
            bytes.truncate(MAX_PARSED as usize);
        }
        let (text, encoding) = charset::decode(&bytes, charset.as_deref());
        let found = links::find(&base, &text, encoding, self.fragments);
        body.links = found.links;
        body.ids = found.ids;
        body.parsed = true;
        (answer, body)
    }

    /// HEAD first; some servers refuse HEAD or answer it wrongly, so an error status or a
    /// broken answer is asked again with GET, whose answer counts.
    fn check(&self, url: &str) -> Answer {
        let head = match self.agent.head(url).call() {
            Ok(response) => status(&response),
            Err(err) => self.failed(&err),
        };
        let again = match &head {
            Answer::Status { code, .. } => *code >= 400 && !matches!(code, 429 | 503),
            Answer::Failed { transient, .. } => !transient,
        };
        if !again {
            return head;
        }
        // The body is dropped unread: only the status matters.
        match self.agent.get(url).call() {
            Ok(response) => status(&response),
            Err(err) => self.failed(&err),
        }
    }

    fn robots(&self, url: &str) -> (Answer, Body) {
        let mut response = match self.agent.get(url).call() {
            Ok(response) => response,
            Err(err) => return (self.failed(&err), Body::default()),
        };
        let answer = status(&response);
        let mut body = Body::default();
        if response.status().is_success() {
            let mut bytes = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(MAX_ROBOTS)
                .read_to_end(&mut bytes);
            if let Err(err) = read {
                let failed = Answer::Failed {
                    reason: format!("reading robots.txt: {}", io_reason(&err)),
                    transient: true,
                };
                return (failed, body);
            }
            body.robots = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        (answer, body)
    }

    fn failed(&self, err: &ureq::Error) -> Answer {
        let (reason, transient) = reason(err, self.timeout);
        Answer::Failed { reason, transient }
    }
}

fn status<B>(response: &ureq::http::Response<B>) -> Answer {
    let code = response.status().as_u16();
    let retry_after = if matches!(code, 429 | 503) {
        response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry::parse_retry_after(value, SystemTime::now()))
    } else {
        None
    };
    Answer::Status { code, retry_after }
}

/// Why a request got no answer, in a few words, and whether trying again may help.
fn reason(err: &ureq::Error, timeout: Duration) -> (String, bool) {
    use ureq::Error;
    use ureq::Timeout;
    match err {
        Error::Io(io) => (io_reason(io), transient_io(io)),
        Error::Timeout(Timeout::Connect | Timeout::Resolve) => {
            ("timed out connecting".to_owned(), true)
        }
        Error::Timeout(_) => (format!("timed out after {}", seconds(timeout)), false),
        Error::HostNotFound => ("host not found".to_owned(), false),
        Error::ConnectionFailed => ("connection failed".to_owned(), true),
        Error::TooManyRedirects => ("too many redirects".to_owned(), false),
        Error::RedirectFailed => ("a redirect failed".to_owned(), false),
        Error::BadUri(uri) => (format!("malformed URL: {uri}"), false),
        Error::LargeResponseHeader(..) => ("response header too large".to_owned(), false),
        Error::Tls(what) => (format!("TLS: {what}"), false),
        Error::Rustls(err) => (format!("TLS: {err}"), false),
        Error::Pem(err) => (format!("TLS: {err}"), false),
        Error::Protocol(err) => (format!("HTTP protocol error: {err}"), false),
        other => (other.to_string(), false),
    }
}

fn io_reason(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        ErrorKind::UnexpectedEof => "connection closed before the answer ended".to_owned(),
        ErrorKind::BrokenPipe => "connection closed while sending".to_owned(),
        ErrorKind::TimedOut => "timed out".to_owned(),
        ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        _ => err.to_string(),
    }
}

fn transient_io(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected
            | ErrorKind::Interrupted
    )
}

/// `10 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}
