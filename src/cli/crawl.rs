//! `ringleader crawl`: find the dead links of a site.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use url::Url;

use super::usage;
use crate::workers::crawl::{Config, Outcome, crawl};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints each dead link as STATUS<TAB>URL<TAB>FOUND_ON, sorted; STATUS is the \
HTTP status (400 or more) or ERR when no answer came. Exits 0 with no dead links, 1 with any.

Examples:
  ringleader crawl http://127.0.0.1:8000/ -p 8
  ringleader crawl https://example.org/docs/ --max-pages 200 --timeout 5"
)]
pub(crate) struct Args {
    /// The first page; links on its scheme, host and port are followed, others only counted.
    url: String,
    /// Worker processes fetching pages.
    #[arg(short = 'p', long = "processes", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    processes: u16,
    /// Fetch at most N pages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_pages: Option<u64>,
    /// Give up on a request after SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    timeout: f64,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs <= 86_400.0 => Ok(secs),
        Ok(_) => Err("must be more than 0 and at most 86400 seconds".to_owned()),
        Err(e) => Err(e.to_string()),
    }
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
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let report = crawl(&config)?;
    let mut lines: Vec<String> = report
        .dead
        .iter()
        .map(|(outcome, url, page)| {
            let status = match outcome {
                Outcome::Status(status) => status.to_string(),
                Outcome::Failed(_) => "ERR".to_owned(),
            };
            format!("{status}\t{url}\t{}", page.as_deref().unwrap_or("-"))
        })
        .collect();
    lines.sort_unstable();
    let mut out = io::stdout().lock();
    for line in &lines {
        writeln!(out, "{line}").context("writing the dead links")?;
    }
    out.flush().context("writing the dead links")?;
    let mut summary = format!(
        "crawl: {} fetched by {}; {} distinct links, {} external (not fetched); {} dead",
        count(report.fetched, "page"),
        count(config.workers as u64, "worker"),
        report.links,
        report.external,
        lines.len()
    );
    if report.unfetched > 0 {
        summary.push_str(&format!(
            "; {} not fetched (--max-pages)",
            count(report.unfetched as u64, "page")
        ));
    }
    eprintln!("{summary}");
    Ok(if lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `1 page`, `2 pages`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
