//! A generated site for the crawler's scale test: any number of pages, made on the fly
//! (nothing is stored, so the server's own memory stays flat), served on 127.0.0.1 with
//! keep-alive, and a way to measure a crawl of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Page 0 is `/`, page n is `/p/n.html`. Each links to its two children (a binary tree, so
/// every page is reachable, about 18 links deep at 200,000 pages), to home, to its parent
/// and to one page far away; loads a stylesheet and one of 100 images; links to one of 10
/// external pages; and every thousandth page links to a page that does not exist.
pub(crate) struct GeneratedSite {
    base: String,
    requests: Arc<AtomicU64>,
}

impl GeneratedSite {
    pub(crate) fn serve(pages: usize) -> GeneratedSite {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                thread::spawn(move || serve_connection(stream, pages, &counter));
            }
        });
        GeneratedSite { base, requests }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/", self.base)
    }

    /// Requests served since the start, or the last reset.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
    }

    /// How many dead links a site of `pages` pages has: one per thousand pages.
    pub(crate) fn dead_links(pages: usize) -> usize {
        (0..pages).filter(|n| n % 1000 == 999).count()
    }
}

fn page_path(n: usize) -> String {
    if n == 0 {
        "/".to_owned()
    } else {
        format!("/p/{n}.html")
    }
}

fn page(n: usize, pages: usize) -> String {
    let mut html = format!(
        "<!DOCTYPE html><html><head><title>Page {n}</title>\
         <link rel=\"stylesheet\" href=\"/style.css\"></head><body>\
         <nav><a href=\"/\">home</a> <a href=\"{}\">up</a></nav><h1>Page {n}</h1>",
        page_path(n.saturating_sub(1) / 2)
    );
    for _ in 0..8 {
        html.push_str(
            "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
             tempor incididunt ut labore et dolore magna aliqua.</p>",
        );
    }
    html.push_str("<ul>");
    for child in [2 * n + 1, 2 * n + 2, (n * 7919 + 13) % pages] {
        if child < pages {
            html.push_str(&format!(
                "<li><a href=\"{}\">page {child}</a></li>",
                page_path(child)
            ));
        }
    }
    html.push_str("</ul>");
    html.push_str(&format!(
        "<img src=\"/img/{}.png\" alt=\"\"><a href=\"http://external.invalid/{}\">out</a>",
        n % 100,
        n % 10
    ));
    if n % 1000 == 999 {
        html.push_str(&format!("<a href=\"/missing/{n}.html\">dead</a>"));
    }
    html.push_str("</body></html>");
    html
}

/// Answers requests on one connection until the client closes it.
fn serve_connection(stream: TcpStream, pages: usize, requests: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut close = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => close |= line.to_ascii_lowercase().starts_with("connection: close"),
            }
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or("");
        let target = words.next().unwrap_or("");
        let found = if target == "/" {
            Some(("text/html", page(0, pages)))
        } else if let Some(n) = target
            .strip_prefix("/p/")
            .and_then(|rest| rest.strip_suffix(".html"))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0 && n < pages)
        {
            Some(("text/html", page(n, pages)))
        } else if target == "/style.css" {
            Some(("text/css", "body { font-family: serif }".to_owned()))
        } else if target.starts_with("/img/") {
            Some(("image/png", "\u{89}PNG".to_owned()))
        } else {
            None
        };
        let (status, content_type, body) = match found {
            Some((content_type, body)) => ("200 OK", content_type, body),
            None => (
                "404 Not Found",
                "text/html",
                "<h1>not found</h1>".to_owned(),
            ),
        };
        // LinkChecker paces itself to about 10 requests a second per host unless the server
        // sends this header; a side-by-side run should measure the checker, not its pace.
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             LinkChecker: unthrottled\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        if writer.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// What a measured run did.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
    /// Peak resident memory in KiB: the process first, then each of its children.
    pub(crate) peak_rss: Vec<u64>,
}

/// Runs `command` to its end, sampling the peak resident memory (`VmHWM`) of it and its
/// children. The samples only read a high-water mark the kernel keeps, so sampling every
/// 20 ms misses at most the growth of the last 20 ms.
pub(crate) fn measure(command: &mut Command, deadline: Duration) -> Measured {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let mut peaks: Vec<(u32, u64)> = vec![(pid, 0)];
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("{command:?} ran past {deadline:?}");
        }
        let mut pids = vec![pid];
        pids.extend(children(pid));
        for p in pids {
            if let Some(hwm) = vm_hwm(p) {
                match peaks.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, peak)) => *peak = (*peak).max(hwm),
                    None => peaks.push((p, hwm)),
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    Measured {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed,
        peak_rss: peaks.into_iter().map(|(_, peak)| peak).collect(),
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The peak resident set of a process, in KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
