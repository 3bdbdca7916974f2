//! `ringleader crawl` against a small site served by the test itself on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use common::{ringleader, ringleader_within};

/// What the server does for a path.
#[derive(Clone)]
enum Page {
    Html(&'static str),
    Png,
    /// Accepts the request and closes the connection without an answer.
    HangUp,
    /// Accepts the request and never answers; waits for the client to give up.
    Stall,
    /// As `Stall`, and says so on the channel once the request has arrived.
    StallAndTell(mpsc::SyncSender<()>),
}

/// A tiny HTTP/1.1 server on 127.0.0.1 with an ephemeral port. `{base}` in a page stands
/// for `http://127.0.0.1:PORT`. Unknown paths are 404. Every request's target is logged.
struct Site {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Site {
    fn serve(pages: &[(&'static str, Page)]) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let pages: Arc<HashMap<&'static str, Page>> = Arc::new(pages.iter().cloned().collect());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let page_base = base.clone();
        // The server lives as long as the test process; the crawler is a separate process.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let pages = Arc::clone(&pages);
                let log = Arc::clone(&log);
                let base = page_base.clone();
                thread::spawn(move || answer(stream, &pages, &log, &base));
            }
        });
        Site { base, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(
    stream: TcpStream,
    pages: &HashMap<&'static str, Page>,
    log: &Mutex<Vec<String>>,
    base: &str,
) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    // Read the rest of the head.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    log.lock().unwrap().push(target.clone());
    let mut stream = reader.into_inner();
    let (status, content_type, body) = match pages.get(target.as_str()) {
        Some(Page::Html(html)) => (
            "200 OK",
            "text/html; charset=utf-8",
            html.replace("{base}", base),
        ),
        Some(Page::Png) => ("200 OK", "image/png", "<a href=\"/never.html\">".to_owned()),
        Some(Page::HangUp) => return,
        Some(Page::StallAndTell(arrived)) => {
            let _ = arrived.try_send(());
            let _ = stream.read_to_end(&mut Vec::new());
            return;
        }
        Some(Page::Stall) => {
            // Wait until the crawler gives up and closes its end.
            let _ = stream.read_to_end(&mut Vec::new());
            return;
        }
        None => (
            "404 Not Found",
            "text/html",
            "<h1>not found</h1>".to_owned(),
        ),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A site with dead links, a cycle, relative, absolute and root-relative links, upper-case
/// tags, both quote styles, unquoted values, an external link, a fragment and a query.
fn site() -> Site {
    Site::serve(&[
        (
            "/",
            Page::Html(
                r#"<!DOCTYPE html><html><head><title>home <a href="/title-not-a-link"></title></head>
                <body>
                <a href="a.html">relative, double quotes</a>
                <A HREF='/b.html'>root-relative, upper case, single quotes</A>
                <a href="{base}/c.html">absolute</a>
                <a href="a.html#part">a fragment of a page already linked</a>
                <a href="missing.html">dead</a>
                <a href="search?q=1">a query</a>
                <a href="http://external.invalid/page">external, never fetched</a>
                <a href="mailto:someone@example.org">not http</a>
                <a href=/logo.png>unquoted</a>
                <a href="/hangup">a server that hangs up</a>
                <!-- <a href="/commented-out.html"> -->
                </body></html>"#,
            ),
        ),
        (
            "/a.html",
            Page::Html(r#"<p><a href="/">back home: a cycle</a> <a href='b.html'>b</a></p>"#),
        ),
        (
            "/b.html",
            Page::Html(
                r#"<a href="c.html">c</a><a href="/a.html">a again</a><a href="gone/deep.html">dead, relative</a>"#,
            ),
        ),
        (
            "/c.html",
            Page::Html(r#"<A href="sub/d.html">d</A><a HREF="missing.html">dead again</a>"#),
        ),
        (
            "/sub/d.html",
            Page::Html(r#"<a href="../a.html">up</a><a href="e.html">dead, in a folder</a>"#),
        ),
        (
            "/search?q=1",
            Page::Html(r#"<a href="search?q=2#results">another query, a 404</a>"#),
        ),
        ("/logo.png", Page::Png),
        ("/hangup", Page::HangUp),
    ])
}

#[test]
fn crawl_reports_every_dead_link_sorted_with_the_page_it_is_on() {
    let site = site();
    let run = ringleader(&["crawl", &site.url("/"), "-p", "3", "--timeout", "20"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let u = |path: &str| site.url(path);
    let expected = [
        format!("404\t{}\t{}", u("/gone/deep.html"), u("/b.html")),
        format!("404\t{}\t{}", u("/missing.html"), u("/")),
        format!("404\t{}\t{}", u("/missing.html"), u("/c.html")),
        format!("404\t{}\t{}", u("/search?q=2"), u("/search?q=1")),
        format!("404\t{}\t{}", u("/sub/e.html"), u("/sub/d.html")),
        format!("ERR\t{}\t{}", u("/hangup"), u("/")),
    ];
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        run.stderr
    );
    // Links: a, b, c (a.html#part is a.html), missing, search?q=1, external, mailto,
    // logo, hangup, /, gone/deep, sub/d, sub/e, search?q=2: 14 distinct, 2 off-site, and
    // the 12 on the site are every page fetched.
    assert_eq!(
        run.stderr,
        "crawl: 12 pages fetched by 3 workers; 14 distinct links, 2 external (not fetched); 6 dead\n"
    );
    let mut requests = site.requests();
    requests.sort_unstable();
    requests.dedup();
    // Each page once (a retry after a hang-up may repeat one), nothing off-site, nothing
    // from the comment, the title or the image.
    assert_eq!(
        requests,
        [
            "/",
            "/a.html",
            "/b.html",
            "/c.html",
            "/gone/deep.html",
            "/hangup",
            "/logo.png",
            "/missing.html",
            "/search?q=1",
            "/search?q=2",
            "/sub/d.html",
            "/sub/e.html",
        ]
    );
}

#[test]
fn crawl_with_one_worker_finds_the_same() {
    let site = site();
    let many = ringleader(&["crawl", &site.url("/"), "-p", "4"]);
    let one = ringleader(&["crawl", &site.url("/"), "-p", "1"]);
    assert_eq!(one.code, Some(1));
    assert_eq!(one.stdout, many.stdout);
}

#[test]
fn max_pages_bounds_the_crawl() {
    let site = site();
    let run = ringleader(&["crawl", &site.url("/"), "--max-pages", "3", "-p", "2"]);
    // The queue is first in, first out, and the start page's links are queued in document
    // order: the start page, then a.html and b.html, neither of them dead.
    let mut requests = site.requests();
    requests.sort_unstable();
    assert_eq!(requests, ["/", "/a.html", "/b.html"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    // Still queued: c, missing, search?q=1, logo, hangup (the start page's other links) and
    // gone/deep.html (b's).
    assert_eq!(
        run.stderr,
        "crawl: 3 pages fetched by 2 workers; 11 distinct links, 2 external (not fetched); \
         0 dead; 6 pages not fetched (--max-pages)\n"
    );
}

#[test]
fn max_pages_one_fetches_only_the_start_and_finds_nothing_dead() {
    let site = site();
    let run = ringleader(&["crawl", &site.url("/"), "--max-pages", "1"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(site.requests(), ["/"]);
}

#[test]
fn a_site_without_dead_links_exits_zero() {
    let site = Site::serve(&[
        ("/", Page::Html(r#"<a href="x.html">x</a>"#)),
        (
            "/x.html",
            Page::Html(r#"<a href="/">home</a><a href="https://elsewhere.invalid/">out</a>"#),
        ),
    ]);
    let run = ringleader(&["crawl", &site.url("/")]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "crawl: 2 pages fetched by 4 workers; 3 distinct links, 1 external (not fetched); 0 dead\n"
    );
}

#[test]
fn a_closed_port_is_an_err_line() {
    // Bind, read the port, and close: nothing listens there any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let run = ringleader(&["crawl", &url, "-p", "2"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, format!("ERR\t{url}\t-\n"));
}

#[test]
fn a_request_that_never_answers_times_out_as_err() {
    let site = Site::serve(&[
        ("/", Page::Html(r#"<a href="/stall">slow</a>"#)),
        ("/stall", Page::Stall),
    ]);
    let run = ringleader_within(
        &["crawl", &site.url("/"), "--timeout", "1"],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("ERR\t{}\t{}\n", site.url("/stall"), site.url("/"))
    );
}

#[test]
fn bad_usage_exits_two() {
    for args in [
        &["crawl"][..],
        &["crawl", "not a url"],
        &["crawl", "ftp://127.0.0.1/"],
        &["crawl", "http://127.0.0.1/", "-p", "0"],
        &["crawl", "http://127.0.0.1/", "--max-pages", "0"],
        &["crawl", "http://127.0.0.1/", "--timeout", "-1"],
        &["crawl", "http://127.0.0.1/", "--timeout", "soon"],
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

/// The live processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // The parent pid is the second field after the parenthesised command name.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

#[test]
fn a_worker_that_dies_ends_the_crawl_with_one_line() {
    let (arrived, wait_for_request) = mpsc::sync_channel(1);
    let site = Site::serve(&[
        ("/", Page::Html(r#"<a href="/stall">slow</a>"#)),
        ("/stall", Page::StallAndTell(arrived)),
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["crawl", &site.url("/"), "-p", "2", "--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let coordinator = child.id();
    // A worker is now blocked in the fetch of /stall.
    wait_for_request
        .recv_timeout(Duration::from_secs(60))
        .expect("the crawler requested /stall");
    let workers = children_of(coordinator);
    assert_eq!(workers.len(), 2, "{workers:?}");
    let victim = workers[0];
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // A watchdog kills the crawler if it hangs; finishing first cancels it.
    let (done, cancelled) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        let hung = cancelled.recv_timeout(Duration::from_secs(120)).is_err();
        if hung {
            let _ = Command::new("kill")
                .args(["-KILL", &coordinator.to_string()])
                .status();
        }
        hung
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(
        !watchdog.join().unwrap(),
        "the crawler hung after losing a worker"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(output.stdout, b"");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ringleader: worker rank ")
            && stderr.contains(&format!("(pid {victim}) was killed by SIGKILL")),
        "{stderr}"
    );
    // Every worker was reaped: none is left, not even as an orphan.
    for worker in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{worker}")).exists(),
            "worker {worker} outlived the crawl"
        );
    }
}
