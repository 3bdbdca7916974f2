//! `ringleader crawl` against small sites served by the test itself on 127.0.0.1; a
//! second site on another port plays "another origin".

mod common;
mod crawl_site;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{default_stop_signals, ringleader, ringleader_within};

/// What the server does for a path.
#[derive(Clone)]
enum Page {
    /// 200, `text/html; charset=utf-8`; `{base}` stands for `http://127.0.0.1:PORT`.
    Html(Cow<'static, str>),
    /// 200 with this content type and these bytes.
    Bytes(&'static str, Vec<u8>),
    /// A status with extra headers and a small body.
    Status(u16, Vec<(&'static str, String)>),
    /// 302 to this URL (`{base}` as in `Html`).
    Redirect(String),
    /// As `Html`, but HEAD is refused with 405.
    NoHead(&'static str),
    /// The pages in turn, one per request; the last one answers every request after.
    Turns(Arc<Mutex<VecDeque<Page>>>),
    Png,
    /// Accepts the request and closes the connection without an answer.
    HangUp,
    /// Accepts the request and never answers; waits for the client to give up.
    Stall,
    /// As `Stall`, and says so on the channel once the request has arrived.
    StallAndTell(mpsc::SyncSender<()>),
}

fn html(text: &'static str) -> Page {
    Page::Html(Cow::Borrowed(text))
}

fn turns(pages: Vec<Page>) -> Page {
    Page::Turns(Arc::new(Mutex::new(pages.into())))
}

/// One request the server received.
#[derive(Debug, Clone)]
struct Hit {
    method: String,
    target: String,
    at: Instant,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 with an ephemeral port. Unknown paths are 404.
/// Every request is logged.
struct Site {
    base: String,
    pages: Arc<Mutex<HashMap<String, Page>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Site {
    fn serve(pages: &[(&str, Page)]) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let pages: Arc<Mutex<HashMap<String, Page>>> = Arc::new(Mutex::new(
            pages
                .iter()
                .map(|(path, page)| ((*path).to_owned(), page.clone()))
                .collect(),
        ));
        let served = Arc::clone(&pages);
        let hits = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&hits);
        let page_base = base.clone();
        // The server lives as long as the test process; the crawler is a separate process.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let pages = Arc::clone(&served);
                let log = Arc::clone(&log);
                let base = page_base.clone();
                thread::spawn(move || answer(stream, &pages, &log, &base));
            }
        });
        Site { base, pages, hits }
    }

    /// Adds a page, for sites that link to each other.
    fn add(&self, path: &str, page: Page) {
        self.pages.lock().unwrap().insert(path.to_owned(), page);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The target of every request, in order.
    fn requests(&self) -> Vec<String> {
        self.hits().into_iter().map(|hit| hit.target).collect()
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The requests for one path.
    fn hits_of(&self, target: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|hit| hit.target == target)
            .collect()
    }
}

fn answer(
    stream: TcpStream,
    pages: &Mutex<HashMap<String, Page>>,
    log: &Mutex<Vec<Hit>>,
    base: &str,
) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let target = words.next().unwrap_or("").to_owned();
    // Read the rest of the head.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    log.lock().unwrap().push(Hit {
        method: method.clone(),
        target: target.clone(),
        at: Instant::now(),
    });
    let mut stream = reader.into_inner();
    let mut page = pages.lock().unwrap().get(target.as_str()).cloned();
    if let Some(Page::Turns(turns)) = page.clone() {
        let mut turns = turns.lock().unwrap();
        page = if turns.len() > 1 {
            turns.pop_front()
        } else {
            turns.front().cloned()
        };
    }
    let head = method == "HEAD";
    let (status, headers, body): (u16, Vec<(&str, String)>, Vec<u8>) = match page {
        Some(Page::Html(text)) => (
            200,
            vec![("Content-Type", "text/html; charset=utf-8".to_owned())],
            text.replace("{base}", base).into_bytes(),
        ),
        Some(Page::NoHead(_)) if head => (405, Vec::new(), Vec::new()),
        Some(Page::NoHead(text)) => (
            200,
            vec![("Content-Type", "text/html".to_owned())],
            text.as_bytes().to_vec(),
        ),
        Some(Page::Bytes(content_type, bytes)) => {
            (200, vec![("Content-Type", content_type.to_owned())], bytes)
        }
        Some(Page::Status(status, headers)) => (status, headers, b"<p>status</p>".to_vec()),
        Some(Page::Redirect(to)) => (
            302,
            vec![("Location", to.replace("{base}", base))],
            Vec::new(),
        ),
        Some(Page::Png) => (
            200,
            vec![("Content-Type", "image/png".to_owned())],
            b"<a href=\"/never.html\">".to_vec(),
        ),
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
        Some(Page::Turns(_)) | None => (
            404,
            vec![("Content-Type", "text/html".to_owned())],
            b"<h1>not found</h1>".to_vec(),
        ),
    };
    let mut head_text = format!("HTTP/1.1 {status} Status\r\n");
    for (name, value) in headers {
        head_text.push_str(&format!("{name}: {value}\r\n"));
    }
    head_text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let _ = stream.write_all(head_text.as_bytes());
    if !head {
        let _ = stream.write_all(&body);
    }
}

/// A site with dead links, a cycle, relative, absolute and root-relative links, upper-case
/// tags, both quote styles, unquoted values, an external link, a fragment and a query.
fn site() -> Site {
    Site::serve(&[
        (
            "/",
            html(
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
            html(r#"<p><a href="/">back home: a cycle</a> <a href='b.html'>b</a></p>"#),
        ),
        (
            "/b.html",
            html(
                r#"<a href="c.html">c</a><a href="/a.html">a again</a><a href="gone/deep.html">dead, relative</a>"#,
            ),
        ),
        (
            "/c.html",
            html(r#"<A href="sub/d.html">d</A><a HREF="missing.html">dead again</a>"#),
        ),
        (
            "/sub/d.html",
            html(r#"<a href="../a.html">up</a><a href="e.html">dead, in a folder</a>"#),
        ),
        (
            "/search?q=1",
            html(r#"<a href="search?q=2#results">another query, a 404</a>"#),
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
        format!(
            "ERR\t{}\t{}\tconnection closed before the answer ended",
            u("/hangup"),
            u("/")
        ),
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
    // Each page once (the hang-up is retried), nothing off-site, nothing from the comment,
    // the title or the image; robots.txt first.
    assert_eq!(site.requests()[0], "/robots.txt");
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
            "/robots.txt",
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
    assert_eq!(requests, ["/", "/a.html", "/b.html", "/robots.txt"]);
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
    assert_eq!(site.requests(), ["/robots.txt", "/"]);
}

#[test]
fn a_site_without_dead_links_exits_zero() {
    let site = Site::serve(&[
        ("/", html(r#"<a href="x.html">x</a>"#)),
        (
            "/x.html",
            html(r#"<a href="/">home</a><a href="https://elsewhere.invalid/">out</a>"#),
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
    assert_eq!(run.stdout, format!("ERR\t{url}\t-\tconnection refused\n"));
}

#[test]
fn a_request_that_never_answers_times_out_as_err() {
    let site = Site::serve(&[
        ("/", html(r#"<a href="/stall">slow</a>"#)),
        ("/stall", Page::Stall),
    ]);
    let run = ringleader_within(
        &["crawl", &site.url("/"), "--timeout", "1"],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!(
            "ERR\t{}\t{}\ttimed out after 1 s\n",
            site.url("/stall"),
            site.url("/")
        )
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
        &["crawl", "http://127.0.0.1/", "--format", "xml"],
        &["crawl", "http://127.0.0.1/", "--exclude", "(unclosed"],
        &["crawl", "http://127.0.0.1/", "--rate", "0"],
        &["crawl", "http://127.0.0.1/", "--rate", "fast"],
        &["crawl", "http://127.0.0.1/", "--retries", "11"],
        &["crawl", "http://127.0.0.1/", "--max-depth", "-1"],
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

/// Starts `ringleader crawl ARGS` in the background, its output piped, for a test that
/// signals it or its workers while it runs.
fn spawn_crawl(args: &[&str]) -> std::process::Child {
    default_stop_signals(&mut Command::new(env!("CARGO_BIN_EXE_ringleader")))
        .arg("crawl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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

/// Kills `victim`, a worker of the crawler `child`, with SIGKILL and waits for the crawler
/// to end. A watchdog kills the crawler if it hangs; finishing first cancels it.
fn kill_worker_and_wait(child: std::process::Child, victim: u32) -> std::process::Output {
    let coordinator = child.id();
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
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
    output
}

#[test]
fn a_worker_that_dies_ends_the_crawl_with_one_line() {
    let (arrived, wait_for_request) = mpsc::sync_channel(1);
    let site = Site::serve(&[
        ("/", html(r#"<a href="/stall">slow</a>"#)),
        ("/stall", Page::StallAndTell(arrived)),
    ]);
    let child = spawn_crawl(&[&site.url("/"), "-p", "2", "--timeout", "60"]);
    let coordinator = child.id();
    // A worker is now blocked in the fetch of /stall.
    wait_for_request
        .recv_timeout(Duration::from_secs(60))
        .expect("the crawler requested /stall");
    let workers = children_of(coordinator);
    assert_eq!(workers.len(), 2, "{workers:?}");
    let victim = workers[0];
    let output = kill_worker_and_wait(child, victim);
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

/// The pages of the restart test: `/slow` stalls on its first request (`first`) and then
/// links to a dead page.
fn restart_site(first: Page) -> Site {
    Site::serve(&[
        (
            "/",
            html(r#"<a href="/slow">slow</a> <a href="/a.html">a</a> <a href="/gone">dead</a>"#),
        ),
        (
            "/a.html",
            html(r#"<a href="/">home</a> <a href="/gone-too">dead too</a>"#),
        ),
        (
            "/slow",
            turns(vec![
                first,
                html(r#"<a href="/slow-dead">dead, behind the slow page</a>"#),
            ]),
        ),
    ])
}

#[test]
fn restarts_requeue_the_fetches_of_a_killed_worker_and_find_the_same_links() {
    // The uninterrupted crawl: /slow answers at once.
    let site = restart_site(html(
        r#"<a href="/slow-dead">dead, behind the slow page</a>"#,
    ));
    let whole = Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["crawl", &site.url("/"), "-p", "2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let whole_stdout = String::from_utf8_lossy(&whole.stdout).replace(&site.url(""), "BASE");
    assert_eq!(whole.status.code(), Some(1), "{whole:?}");
    assert_eq!(lines(&whole_stdout).len(), 3, "{whole_stdout}");

    // The same site, but a worker is killed while its fetch of /slow hangs.
    let (arrived, wait_for_request) = mpsc::sync_channel(1);
    let site = restart_site(Page::StallAndTell(arrived));
    let child = spawn_crawl(&[
        &site.url("/"),
        "-p",
        "2",
        "--timeout",
        "60",
        "--restarts",
        "1",
    ]);
    let coordinator = child.id();
    wait_for_request
        .recv_timeout(Duration::from_secs(60))
        .expect("the crawler requested /slow");
    let workers = children_of(coordinator);
    assert_eq!(workers.len(), 2, "{workers:?}");
    let output = kill_worker_and_wait(child, workers[0]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout).replace(&site.url(""), "BASE");
    // One line says what failed and that the ring starts again; the findings and the
    // summary are the uninterrupted crawl's, the dead link behind the re-fetched page
    // among them.
    let whole_stderr = String::from_utf8_lossy(&whole.stderr);
    let (restarted, summary) = stderr.split_once('\n').unwrap_or_default();
    assert_eq!(summary, whole_stderr, "{stderr}");
    assert!(
        restarted.contains(&format!("(pid {}) was killed by SIGKILL", workers[0]))
            && stderr.contains("restarting the workers")
            && stderr.contains("(1 of 1)"),
        "{stderr}"
    );
    assert_eq!(stdout, whole_stdout);
    assert_eq!(output.status.code(), whole.status.code());
    assert_eq!(site.hits_of("/slow").len(), 2, "/slow was fetched again");
    for worker in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{worker}")).exists(),
            "worker {worker} outlived the crawl"
        );
    }
}

/// The lines of a run's stdout.
fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().collect()
}

#[test]
fn a_latin1_page_links_to_the_utf8_encoded_path_as_a_browser_does() {
    // "caf\xe9" is "café" in ISO-8859-1; a browser requests /caf%C3%A9.html.
    let site = Site::serve(&[
        (
            "/",
            Page::Bytes(
                "text/html; charset=ISO-8859-1",
                b"<a href=\"/caf\xe9.html\">caf\xe9</a><a href=\"/meta.html\">m</a>".to_vec(),
            ),
        ),
        // No charset in the header: the <meta> says how to read the page.
        (
            "/meta.html",
            Page::Bytes(
                "text/html",
                b"<head><meta charset=\"iso-8859-1\"></head><a href=\"na\xefve.html\">n</a>"
                    .to_vec(),
            ),
        ),
        ("/caf%C3%A9.html", html("<p>café</p>")),
        ("/na%C3%AFve.html", html("<p>naïve</p>")),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    let mut requests = site.requests();
    requests.sort_unstable();
    assert_eq!(
        requests,
        [
            "/",
            "/caf%C3%A9.html",
            "/meta.html",
            "/na%C3%AFve.html",
            "/robots.txt"
        ]
    );
}

#[test]
fn a_200_page_over_10_mib_is_alive_and_its_first_links_are_followed() {
    let mut big = b"<html><a href=\"/first.html\">first</a><p>".to_vec();
    big.resize(11 * 1024 * 1024, b'x');
    big.extend_from_slice(b"<a href=\"/past-the-limit.html\">never read</a>");
    let site = Site::serve(&[
        ("/", html(r#"<a href="/big.html">big</a>"#)),
        ("/big.html", Page::Bytes("text/html", big)),
        ("/first.html", html("<p>first</p>")),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("; 1 larger than 10 MiB (links read from the first 10 MiB only)"),
        "{}",
        run.stderr
    );
    assert_eq!(site.hits_of("/first.html").len(), 1);
    assert!(site.hits_of("/past-the-limit.html").is_empty());
}

#[test]
fn a_429_with_retry_after_is_retried_after_the_wait_and_then_alive() {
    let busy = turns(vec![
        Page::Status(429, vec![("Retry-After", "1".to_owned())]),
        html("<p>ok now</p>"),
    ]);
    let site = Site::serve(&[("/", html(r#"<a href="/busy">busy</a>"#)), ("/busy", busy)]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    let hits = site.hits_of("/busy");
    assert_eq!(hits.len(), 2, "{hits:?}");
    let waited = hits[1].at - hits[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[test]
fn a_link_that_stays_rate_limited_is_a_warning_not_dead() {
    let site = Site::serve(&[
        ("/", html(r#"<a href="/busy">busy</a>"#)),
        (
            "/busy",
            Page::Status(429, vec![("Retry-After", "0".to_owned())]),
        ),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    // The first try and the two default retries.
    assert_eq!(site.hits_of("/busy").len(), 3);
    assert!(
        run.stderr.contains(&format!(
            "ringleader: warning: {} still rate-limited (429 Too Many Requests) after 2 retries (found on {})\n",
            site.url("/busy"),
            site.url("/")
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("; 1 still rate-limited (warnings, not dead)"),
        "{}",
        run.stderr
    );
}

#[test]
fn retries_sets_how_often_a_503_is_tried_before_it_is_dead() {
    let site = Site::serve(&[
        ("/", html(r#"<a href="/down">down</a>"#)),
        ("/down", Page::Status(503, Vec::new())),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "--retries", "1"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("503\t{}\t{}\n", site.url("/down"), site.url("/"))
    );
    assert_eq!(site.hits_of("/down").len(), 2);
    let site = Site::serve(&[
        ("/", html(r#"<a href="/down">down</a>"#)),
        ("/down", Page::Status(503, Vec::new())),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "--retries", "0"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(site.hits_of("/down").len(), 1);
}

#[test]
fn malformed_links_are_dead_with_the_reason() {
    let site = Site::serve(&[
        (
            "/",
            html(
                r#"<a href="http://[::1">v6</a><a href="http://a b/">space</a><a href="/ok">ok</a>"#,
            ),
        ),
        ("/ok", html("ok")),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let page = site.url("/");
    assert_eq!(
        lines(&run.stdout),
        [
            format!("ERR\thttp://[::1\t{page}\tmalformed URL: invalid IPv6 address"),
            format!("ERR\thttp://a b/\t{page}\tmalformed URL: invalid international domain name"),
        ]
    );
}

#[test]
fn a_same_site_link_that_redirects_to_another_origin_is_checked_not_crawled() {
    let secret_target = "/secret.html";
    let site = Site::serve(&[
        (
            "/",
            html(r#"<a href="/away">away</a><a href="/away-and-gone">gone</a>"#),
        ),
        (secret_target, html("secret")),
    ]);
    // Were the landing page parsed, its link back to the first site would be crawled.
    let landing = format!(
        r#"<a href="/elsewhere">x</a><a href="{}">back</a>"#,
        site.url(secret_target)
    );
    let other = Site::serve(&[("/landing", Page::Html(Cow::Owned(landing)))]);
    site.add("/away", Page::Redirect(other.url("/landing")));
    site.add("/away-and-gone", Page::Redirect(other.url("/gone")));
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Where the redirect ends decides the link's status.
    assert_eq!(
        run.stdout,
        format!("404\t{}\t{}\n", site.url("/away-and-gone"), site.url("/"))
    );
    assert!(
        run.stderr
            .contains("; 1 redirected to another origin (checked, not crawled)"),
        "{}",
        run.stderr
    );
    // The landing page was fetched once, and never parsed: nothing it links to was asked.
    assert_eq!(other.hits_of("/landing").len(), 1);
    assert!(other.hits_of("/elsewhere").is_empty());
    assert!(site.hits_of(secret_target).is_empty());
}

#[test]
fn why_a_link_has_no_answer_is_the_fourth_column() {
    let site = Site::serve(&[
        (
            "/",
            html(r#"<a href="/loop">loop</a><a href="/hangup">hang up</a>"#),
        ),
        ("/loop", Page::Redirect("{base}/loop".to_owned())),
        ("/hangup", Page::HangUp),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2", "--retries", "0"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let page = site.url("/");
    assert_eq!(
        lines(&run.stdout),
        [
            format!(
                "ERR\t{}\t{page}\tconnection closed before the answer ended",
                site.url("/hangup")
            ),
            format!("ERR\t{}\t{page}\ttoo many redirects", site.url("/loop")),
        ]
    );
}

#[test]
fn ctrl_c_prints_what_was_found_so_far_and_exits_130() {
    let (arrived, wait_for_request) = mpsc::sync_channel(1);
    let site = Site::serve(&[
        (
            "/",
            html(r#"<a href="/missing.html">dead</a><a href="/stall">slow</a>"#),
        ),
        ("/stall", Page::StallAndTell(arrived)),
    ]);
    // One worker: by the time it asks for /stall, it has reported /missing.html.
    let child = spawn_crawl(&[&site.url("/"), "-p", "1", "--timeout", "60"]);
    let coordinator = child.id();
    wait_for_request
        .recv_timeout(Duration::from_secs(60))
        .expect("the crawler requested /stall");
    let sent = Command::new("kill")
        .args(["-INT", &coordinator.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert_eq!(
        stdout,
        format!("404\t{}\t{}\n", site.url("/missing.html"), site.url("/"))
    );
    assert!(
        stderr.contains("crawl: 2 pages fetched by 1 worker; 2 distinct links"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("ringleader: interrupted by SIGINT; 1 URL still to check\n"),
        "{stderr}"
    );
}

#[test]
fn sub_resources_are_checked_not_crawled() {
    let site = Site::serve(&[
        (
            "/",
            html(
                r#"<html><head><link rel="stylesheet" href="/missing.css"><link rel=icon href="/favicon.ico">
                <script src="/app.js"></script></head><body>
                <img src="/missing.png"><img src="/logo.png"><iframe src="/frame.html"></iframe>
                <video src="/clip.mp4"><source src="/missing.webm"></video><audio src="/missing.ogg"></audio>
                </body></html>"#,
            ),
        ),
        ("/favicon.ico", Page::Png),
        (
            "/app.js",
            Page::Bytes("text/javascript", b"'<a href=\"/from-js\">'".to_vec()),
        ),
        ("/logo.png", Page::Png),
        ("/clip.mp4", Page::Png),
        // A frame's links are the frame's business: it is checked, not crawled.
        ("/frame.html", html(r#"<a href="/from-frame.html">x</a>"#)),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let page = site.url("/");
    let dead = |path: &str| format!("404\t{}\t{page}", site.url(path));
    assert_eq!(
        lines(&run.stdout),
        [
            dead("/missing.css"),
            dead("/missing.ogg"),
            dead("/missing.png"),
            dead("/missing.webm")
        ]
    );
    assert!(
        run.stderr.contains("; 9 sub-resources checked"),
        "{}",
        run.stderr
    );
    // Checked with HEAD (and GET only for those HEAD found missing).
    for path in [
        "/favicon.ico",
        "/app.js",
        "/logo.png",
        "/clip.mp4",
        "/frame.html",
    ] {
        let methods: Vec<String> = site
            .hits_of(path)
            .into_iter()
            .map(|hit| hit.method)
            .collect();
        assert_eq!(methods, ["HEAD"], "{path}");
    }
    assert!(site.hits_of("/from-frame.html").is_empty());
    assert!(site.hits_of("/from-js").is_empty());
}

#[test]
fn check_external_checks_other_origins_without_crawling_them() {
    let other = Site::serve(&[
        ("/ok", html(r#"<a href="/deeper">never crawled</a>"#)),
        ("/no-head", Page::NoHead("<p>HEAD is refused here</p>")),
        ("/style.css", Page::Png),
    ]);
    let page = format!(
        r#"<a href="{0}/ok">ok</a><a href="{0}/gone">gone</a><a href="{0}/no-head">no head</a>
        <link rel=stylesheet href="{0}/style.css"><a href="mailto:someone@example.org">mail</a>"#,
        other.base
    );
    let site = Site::serve(&[("/", Page::Html(Cow::Owned(page)))]);
    // Without the flag, nothing on the other origin is asked.
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(other.hits().is_empty(), "{:?}", other.hits());
    assert!(
        run.stderr
            .contains("; 5 distinct links, 5 external (not fetched); 0 dead"),
        "{}",
        run.stderr
    );
    let run = ringleader(&["crawl", &site.url("/"), "-p", "2", "--check-external"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("404\t{}\t{}\n", other.url("/gone"), site.url("/"))
    );
    assert!(
        run.stderr
            .contains("; 5 distinct links, 5 external (4 checked); 1 dead"),
        "{}",
        run.stderr
    );
    let methods = |path: &str| -> Vec<String> {
        other
            .hits_of(path)
            .into_iter()
            .map(|hit| hit.method)
            .collect()
    };
    assert_eq!(methods("/ok"), ["HEAD"]);
    assert_eq!(methods("/style.css"), ["HEAD"]);
    // HEAD refused: GET tells.
    assert_eq!(methods("/no-head"), ["HEAD", "GET"]);
    assert_eq!(methods("/gone"), ["HEAD", "GET"]);
    assert!(other.hits_of("/deeper").is_empty());
    // The robots.txt of other origins is not read.
    assert!(other.hits_of("/robots.txt").is_empty());
}

#[test]
fn exclude_skips_matching_urls_entirely() {
    let site = Site::serve(&[(
        "/",
        html(
            r#"<a href="/private/gone.html">p</a><a href="/logout?x=1">l</a><a href="/missing">m</a>"#,
        ),
    )]);
    let run = ringleader(&[
        "crawl",
        &site.url("/"),
        "--exclude",
        "/private/",
        "--exclude",
        r"logout\?",
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("404\t{}\t{}\n", site.url("/missing"), site.url("/"))
    );
    assert!(site.hits_of("/private/gone.html").is_empty());
    assert!(site.hits_of("/logout?x=1").is_empty());
    assert!(
        run.stderr.contains("; 2 excluded (--exclude)"),
        "{}",
        run.stderr
    );
}

#[test]
fn max_depth_checks_the_deepest_pages_without_crawling_them() {
    let site = Site::serve(&[
        ("/", html(r#"<a href="/1">1</a>"#)),
        ("/1", html(r#"<a href="/2">2</a><img src="/1.png">"#)),
        ("/2", html(r#"<a href="/3">3</a>"#)),
        ("/3", html("three")),
        ("/1.png", Page::Png),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "--max-depth", "2"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let methods = |path: &str| -> Vec<String> {
        site.hits_of(path)
            .into_iter()
            .map(|hit| hit.method)
            .collect()
    };
    assert_eq!(methods("/"), ["GET"]);
    assert_eq!(methods("/1"), ["GET"]);
    assert_eq!(methods("/1.png"), ["HEAD"]);
    assert_eq!(methods("/2"), ["HEAD"]);
    assert!(methods("/3").is_empty());
    assert!(
        run.stderr
            .contains("; 1 page at --max-depth checked, not crawled"),
        "{}",
        run.stderr
    );
    let run = ringleader(&["crawl", &site.url("/"), "--max-depth", "0"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .starts_with("crawl: 0 pages fetched by 4 workers; 0 distinct links"),
        "{}",
        run.stderr
    );
}

#[test]
fn robots_txt_is_honoured_unless_ignored() {
    let pages = [
        (
            "/robots.txt",
            Page::Bytes(
                "text/plain",
                b"User-agent: *\nDisallow: /\n\nUser-agent: ringleader\nDisallow: /secret/\n"
                    .to_vec(),
            ),
        ),
        (
            "/",
            html(r#"<a href="/secret/a.html">s</a><a href="/open.html">o</a>"#),
        ),
        ("/open.html", html("open")),
        ("/secret/a.html", html("secret")),
    ];
    let site = Site::serve(&pages);
    let run = ringleader(&["crawl", &site.url("/")]);
    assert_eq!(run.code, Some(0), "{run:?}");
    // Our group replaces the `*` group: /open.html is allowed, /secret/ is not.
    assert_eq!(site.requests(), ["/robots.txt", "/", "/open.html"]);
    assert!(
        run.stderr.contains("; 1 disallowed by robots.txt"),
        "{}",
        run.stderr
    );
    let site = Site::serve(&pages);
    let run = ringleader(&["crawl", &site.url("/"), "--ignore-robots"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let mut requests = site.requests();
    requests.sort_unstable();
    assert_eq!(requests, ["/", "/open.html", "/secret/a.html"]);
}

#[test]
fn a_robots_txt_that_fails_allows_only_the_start_page() {
    let site = Site::serve(&[
        ("/robots.txt", Page::Status(500, Vec::new())),
        ("/", html(r#"<a href="/a.html">a</a>"#)),
        ("/a.html", html("a")),
    ]);
    let run = ringleader(&["crawl", &site.url("/")]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(site.requests(), ["/robots.txt", "/"]);
    assert!(
        run.stderr.contains(&format!(
            "; 1 disallowed by robots.txt; {} answered 500, so only the start page was fetched",
            site.url("/robots.txt")
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn rate_paces_the_requests_to_a_host() {
    let site = Site::serve(&[
        (
            "/",
            html(r#"<a href="/1">1</a><a href="/2">2</a><a href="/3">3</a><a href="/4">4</a>"#),
        ),
        ("/1", html("1")),
        ("/2", html("2")),
        ("/3", html("3")),
        ("/4", html("4")),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "--rate", "5", "-p", "4"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let hits = site.hits();
    // robots.txt, the start page and four more, paced 0.2 s apart.
    assert_eq!(hits.len(), 6, "{hits:?}");
    let mut times: Vec<Instant> = hits.iter().map(|hit| hit.at).collect();
    times.sort_unstable();
    for (i, at) in times.iter().enumerate() {
        // Each request starts on its slot or later, but the first slot may be up to one
        // message's delivery before the first request: allow for that, no more.
        let since_first = *at - times[0];
        let slot = Duration::from_millis(200) * i as u32;
        assert!(
            since_first + Duration::from_millis(100) >= slot,
            "request {i} after {since_first:?}"
        );
    }
}

#[test]
fn check_fragments_reports_links_to_ids_that_are_not_there() {
    let site = Site::serve(&[
        (
            "/",
            html(
                r##"<h1 id="intro">i</h1>
                <a href="/doc.html#present">ok</a><a href="/doc.html#named">ok, a name</a>
                <a href="/doc.html#missing">dead</a><a href="/doc.html#top">top is always there</a>
                <a href="/doc.html#caf%C3%A9">ok, decoded</a><a href="/doc.html">no fragment</a>
                <a href="#intro">ok, this page</a><a href="#nowhere">dead, this page</a>"##,
            ),
        ),
        (
            "/doc.html",
            html(
                r#"<p id="present">p</p><a name="named">n</a><p id="café">c</p><a href="/#intro">ok</a>"#,
            ),
        ),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "--check-fragments"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let page = site.url("/");
    assert_eq!(
        lines(&run.stdout),
        [
            format!("ERR\t{page}#nowhere\t{page}\tno element with id \"nowhere\""),
            format!(
                "ERR\t{}#missing\t{page}\tno element with id \"missing\"",
                site.url("/doc.html")
            ),
        ]
    );
    // Without the flag, fragments are dropped and nothing is dead.
    let run = ringleader(&["crawl", &site.url("/")]);
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn json_format_prints_one_object_per_dead_url() {
    let site = Site::serve(&[
        (
            "/",
            html(r#"<a href="/gone">g</a><a href="/a">a</a><a href="http://[::1">bad</a>"#),
        ),
        ("/a", html(r#"<a href="/gone">g</a>"#)),
    ]);
    let run = ringleader(&["crawl", &site.url("/"), "--format", "json"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let objects: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        objects,
        [
            serde_json::json!({
                "url": site.url("/gone"),
                "status": 404,
                "reason": "Not Found",
                "found_on": [site.url("/"), site.url("/a")],
            }),
            serde_json::json!({
                "url": "http://[::1",
                "status": null,
                "reason": "malformed URL: invalid IPv6 address",
                "found_on": [site.url("/")],
            }),
        ]
    );
    assert!(run.stderr.ends_with("; 3 dead\n"), "{}", run.stderr);
}

/// The crawler with its stderr on a pseudo-terminal, as a user at a terminal runs it.
/// Returns its exit code, its stdout, and every byte it wrote to the terminal.
fn on_terminal(args: &[&str]) -> (Option<i32>, String, String) {
    let master = nix::pty::posix_openpt(
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
    )
    .unwrap();
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let slave_path = nix::pty::ptsname_r(&master).unwrap();
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slave_path)
        .unwrap()
        .into();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // SAFETY: dup of a descriptor we own; the new one is owned by the File below.
    let reader_fd = unsafe { libc::dup(master.as_raw_fd()) };
    assert!(reader_fd >= 0);
    // SAFETY: `reader_fd` is a fresh descriptor that nothing else owns.
    let mut reader = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(reader_fd) };
    // Reading ends with an error (EIO) once every slave descriptor is closed.
    let written = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let written = written.join().unwrap();
    drop(master);
    (
        status.code(),
        stdout,
        String::from_utf8_lossy(&written).into_owned(),
    )
}

#[test]
fn progress_shows_on_a_terminal_and_clears_itself() {
    let site = site();
    let (code, stdout, written) = on_terminal(&["crawl", &site.url("/"), "-p", "2"]);
    assert_eq!(code, Some(1), "{written}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(
        written.contains("\rcrawl: 0 pages fetched, 0 checked, "),
        "{written:?}"
    );
    // The line is cleared before the summary, which then starts on a clean line.
    assert!(
        written.contains("\r\x1b[Kcrawl: 12 pages fetched by 2 workers;"),
        "{written:?}"
    );
}

/// The pages the generated site has by default for the scale test.
const GENERATED_PAGES: usize = 200_000;

/// Crawls a generated site of 200,000 pages (or `CRAWL_PAGES`) and prints the rate and the
/// peak memory; run with `cargo test --release --test crawl -- --ignored --nocapture`.
/// With `CRAWL_COMPARE` set to a command (`{url}` for the start URL), runs it against the
/// same site and prints the same figures for it.
#[test]
#[ignore = "slow: a crawl of 200,000 pages"]
fn a_crawl_of_200000_generated_pages_stays_in_bounded_memory() {
    let pages = std::env::var("CRAWL_PAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(GENERATED_PAGES);
    let site = crawl_site::GeneratedSite::serve(pages);
    let url = site.url();
    let binary = env!("CARGO_BIN_EXE_ringleader");
    let workers = std::env::var("CRAWL_WORKERS").unwrap_or_else(|_| "4".to_owned());
    let run = crawl_site::measure(
        Command::new(binary).args(["crawl", &url, "-p", &workers]),
        Duration::from_secs(3600),
    );
    let dead = run.stdout.lines().count();
    println!(
        "ringleader crawl -p {workers}: {pages} pages in {:.1} s, {:.0} pages/s; peak RSS: \
         coordinator {:.1} MiB, largest worker {:.1} MiB; {dead} dead",
        run.elapsed.as_secs_f64(),
        pages as f64 / run.elapsed.as_secs_f64(),
        run.peak_rss[0] as f64 / 1024.0,
        run.peak_rss[1..].iter().max().copied().unwrap_or(0) as f64 / 1024.0,
    );
    println!("{}", run.stderr.trim_end());
    assert_eq!(run.code, Some(1));
    assert_eq!(dead, crawl_site::GeneratedSite::dead_links(pages));
    assert!(
        run.stderr.starts_with(&format!(
            "crawl: {} pages fetched",
            pages + crawl_site::GeneratedSite::dead_links(pages)
        )),
        "{}",
        run.stderr
    );
    // Bounded: about 300 bytes a URL on the coordinator, a few MiB on a worker.
    assert!(
        run.peak_rss[0] < 64 * 1024 + pages as u64 * 300 / 1024,
        "{:?} KiB",
        run.peak_rss
    );
    if let Ok(command) = std::env::var("CRAWL_COMPARE") {
        let command = command.replace("{url}", &url);
        site.reset();
        let run = crawl_site::measure(
            Command::new("sh").args(["-c", &format!("exec {command}")]),
            Duration::from_secs(3600),
        );
        println!(
            "{command}: exit {:?}, {pages} pages in {:.1} s, {:.0} pages/s; peak RSS {:.1} MiB \
             (largest process); {} requests served",
            run.code,
            run.elapsed.as_secs_f64(),
            pages as f64 / run.elapsed.as_secs_f64(),
            run.peak_rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0,
            site.requests(),
        );
        println!(
            "{}",
            run.stdout
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
