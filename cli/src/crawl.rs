//! `ringleader crawl`: find the dead links of a site.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use regex::Regex;
use url::Url;

use super::usage;
use ringleader_crawl::{Config, Counts, MAX_PARSED, Problem, Report, crawl};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints each dead link as STATUS<TAB>URL<TAB>FOUND_ON, sorted, one line per page \
that links to it. STATUS is the HTTP status (400 or more), or ERR with a fourth column saying \
why: no answer (connection refused, timed out, too many redirects), a malformed URL, or a \
missing fragment. Exits 0 with no dead links, 1 with any, 130 on Ctrl-C after printing what \
was found so far.

Examples:
  ringleader crawl http://127.0.0.1:8000/ -p 8
  ringleader crawl https://example.org/docs/ --check-external --rate 2 --exclude '/archive/'
  ringleader crawl https://example.org/ --format json --max-depth 3"
)]
pub(crate) struct Args {
    /// The first page; pages on its scheme, host and port are crawled, others only counted
    /// (or checked, with --check-external).
    url: String,
    /// Worker processes fetching pages.
    #[arg(allow_negative_numbers = true, short = 'p', long = "processes", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    processes: u16,
    /// Crawl at most N pages (checks of sub-resources and external links not counted).
    #[arg(allow_negative_numbers = true, long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_pages: Option<u64>,
    /// Follow links at most N deep: pages N links from the start page are checked, not
    /// crawled (0: check the start page only).
    #[arg(allow_negative_numbers = true, long, value_name = "N", value_parser = clap::value_parser!(u32))]
    max_depth: Option<u32>,
    /// Give up on a request after SECS seconds.
    #[arg(allow_negative_numbers = true, long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    timeout: f64,
    /// Check links to other origins too (HEAD, then GET if HEAD is refused), without
    /// crawling them.
    #[arg(long)]
    check_external: bool,
    /// Report page#fragment links whose page has no element with that id (or <a name>).
    #[arg(long)]
    check_fragments: bool,
    /// Neither fetch nor report URLs that match REGEX (repeatable; the start URL is always
    /// fetched).
    #[arg(long, value_name = "REGEX", value_parser = regex)]
    exclude: Vec<Regex>,
    /// Do not read the site's /robots.txt (by default its rules for `ringleader`, or `*`,
    /// are honoured).
    #[arg(long)]
    ignore_robots: bool,
    /// At most R requests per second to each host (fractions allowed: 0.5 is one every two
    /// seconds). Unlimited by default.
    #[arg(allow_negative_numbers = true, long, value_name = "R", value_parser = rate)]
    rate: Option<f64>,
    /// Retry a URL up to N times after a 429, a 503 or a failed connection, waiting 0.5 s,
    /// 1 s, 2 s… or what the server's Retry-After asks, up to 60 s.
    #[arg(allow_negative_numbers = true, long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    retries: u32,
    /// If a worker fails (killed or crashed), stop and reap the
    /// ring and start a new one, up to N times: every fetch already back is kept, those in
    /// flight are queued again.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "N",
        default_value_t = 0
    )]
    restarts: u32,
    /// `text`: STATUS<TAB>URL<TAB>FOUND_ON[<TAB>REASON] lines; `json`: one object per dead
    /// URL per line, {"url", "status", "reason", "found_on"}.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs <= 86_400.0 => Ok(secs),
        Ok(_) => Err("must be more than 0 and at most 86400 seconds".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate >= 0.001 && rate.is_finite() => Ok(rate),
        Ok(_) => Err("must be at least 0.001 requests per second".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn regex(text: &str) -> Result<Regex, String> {
    // The first line of the parser's message is enough for one line of usage error.
    Regex::new(text).map_err(|e| e.to_string().lines().last().unwrap_or("").trim().to_owned())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let start = match Url::parse(&args.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        Ok(url) => return usage(format!("cannot crawl {url}: only http and https URLs")),
        Err(e) => return usage(format!("invalid URL {:?}: {e}", args.url)),
    };
    let config = Config {
        start,
        workers: usize::from(args.processes),
        max_pages: args.max_pages,
        max_depth: args.max_depth,
        timeout: Duration::from_secs_f64(args.timeout),
        check_external: args.check_external,
        check_fragments: args.check_fragments,
        exclude: args.exclude,
        robots: !args.ignore_robots,
        rate: args.rate,
        retries: args.retries,
        progress: true,
        restarts: args.restarts,
    };
    let Report {
        findings,
        interrupted,
    } = crawl(&config)?;
    let mut out = io::stdout().lock();
    let dead = match args.format {
        Format::Text => write_text(&findings.dead, &mut out),
        Format::Json => write_json(&findings.dead, &mut out),
    }
    .and_then(|dead| out.flush().map(|()| dead))
    .context("writing the dead links")?;
    drop(out);
    for warning in &findings.warnings {
        eprintln!(
            "ringleader: warning: {} {} (found on {})",
            warning.url,
            warning.reason,
            pages(&warning.found_on)
        );
    }
    eprintln!(
        "{}",
        summary(
            &findings.counts,
            config.workers,
            config.check_external,
            dead,
            &findings
        )
    );
    if let Some(signal) = interrupted {
        eprintln!(
            "ringleader: interrupted by {signal}; {} still to check",
            count(findings.unchecked, "URL")
        );
        return Ok(ExitCode::from(signal.exit_code()));
    }
    Ok(if dead == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per dead URL and page linking to it, sorted. Returns how many.
fn write_text(dead: &[Problem], out: &mut impl Write) -> io::Result<usize> {
    let mut lines = Vec::new();
    for problem in dead {
        let (status, reason) = match problem.status {
            Some(status) if status >= 400 => (status.to_string(), String::new()),
            _ => ("ERR".to_owned(), format!("\t{}", one_line(&problem.reason))),
        };
        let url = &problem.url;
        if problem.found_on.is_empty() {
            lines.push(format!("{status}\t{url}\t-{reason}"));
        }
        for page in &problem.found_on {
            lines.push(format!("{status}\t{url}\t{page}{reason}"));
        }
    }
    lines.sort_unstable();
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    Ok(lines.len())
}

/// One JSON object per dead URL, sorted by URL. Returns how many links (URL and page).
fn write_json(dead: &[Problem], out: &mut impl Write) -> io::Result<usize> {
    let mut count = 0;
    for problem in dead {
        let object = serde_json::json!({
            "url": problem.url,
            "status": problem.status,
            "reason": problem.reason,
            "found_on": problem.found_on,
        });
        writeln!(out, "{object}")?;
        count += problem.found_on.len().max(1);
    }
    Ok(count)
}

/// Tabs or line breaks in a reason would break the columns.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn pages(found_on: &[String]) -> String {
    if found_on.is_empty() {
        "-".to_owned()
    } else {
        found_on.join(", ")
    }
}

fn summary(
    counts: &Counts,
    workers: usize,
    check_external: bool,
    dead: usize,
    findings: &ringleader_crawl::Findings,
) -> String {
    let external = if check_external {
        format!("{} checked", counts.external_checked)
    } else {
        "not fetched".to_owned()
    };
    let mut clauses = vec![format!(
        "crawl: {} fetched by {}; {} distinct links, {} external ({external}); {dead} dead",
        count(counts.fetched, "page"),
        count(workers as u64, "worker"),
        counts.links,
        counts.external,
    )];
    let mut add = |n: u64, what: String| {
        if n > 0 {
            clauses.push(what);
        }
    };
    let n = counts.resources_checked;
    add(n, format!("{} checked", count(n, "sub-resource")));
    let n = findings.warnings.len() as u64;
    add(n, format!("{n} still rate-limited (warnings, not dead)"));
    let n = counts.depth_checked;
    add(
        n,
        format!("{} at --max-depth checked, not crawled", count(n, "page")),
    );
    let n = counts.left_origin;
    add(
        n,
        format!("{n} redirected to another origin (checked, not crawled)"),
    );
    let (n, mib) = (counts.truncated, MAX_PARSED >> 20);
    add(
        n,
        format!("{n} larger than {mib} MiB (links read from the first {mib} MiB only)"),
    );
    let n = counts.excluded;
    add(n, format!("{n} excluded (--exclude)"));
    let n = counts.disallowed;
    add(n, format!("{n} disallowed by robots.txt"));
    let n = findings.unfetched;
    add(n, format!("{} not fetched (--max-pages)", count(n, "page")));
    if let Some(note) = &findings.robots_note {
        clauses.push(format!(
            "{note}, so only the start page was fetched (RFC 9309; --ignore-robots to crawl)"
        ));
    }
    clauses.join("; ")
}

/// `1 page`, `2 pages`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
