//! Pictures, progress and the live view, through the built binary.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_same_state, fixture, processes_tagged, read_state, ringleader, scratch};

const BLUE: [u8; 3] = [0, 0, 255];
const ORANGE: [u8; 3] = [255, 165, 0];
const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 128, 0];

/// Every frame of a GIF, as RGBA pixels, with its size.
fn gif_frames(path: &Path) -> Vec<(u16, u16, Vec<u8>)> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(File::open(path).unwrap()).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        frames.push((frame.width, frame.height, frame.buffer.to_vec()));
    }
    frames
}

fn count(pixels: &[u8], channels: usize, colour: [u8; 3]) -> usize {
    pixels
        .chunks_exact(channels)
        .filter(|p| p[..3] == colour)
        .count()
}

#[test]
fn gif_has_the_start_a_frame_every_k_steps_and_the_last_in_every_mode() {
    let dir = scratch("gif-frames");
    for (i, mode) in [
        vec![],
        vec!["-p", "3"],
        vec!["-t", "3"],
        vec!["--algorithm", "cells", "-p", "3"],
        vec!["--algorithm", "cells", "-t", "3"],
    ]
    .iter()
    .enumerate()
    {
        let gif = dir.join(format!("run{i}.gif"));
        let mut args = vec!["particles", "-n", "100", "-s", "25", "--every", "10"];
        args.extend(mode);
        args.extend(["--render", gif.to_str().unwrap()]);
        ringleader(&args).success();
        let frames = gif_frames(&gif);
        // Steps 0, 10, 20 and 25.
        assert_eq!(frames.len(), 4, "{args:?}");
        for (width, height, _) in &frames {
            assert_eq!((*width, *height), (400, 400));
        }
        // Each worker's particles in its own colour, and no colour for a worker that
        // does not exist.
        let last = &frames[3].2;
        let workers = if mode.is_empty() { 1 } else { 3 };
        for (rank, colour) in [BLUE, ORANGE, RED, GREEN].into_iter().enumerate() {
            assert_eq!(
                count(last, 4, colour) > 0,
                rank < workers,
                "{args:?} rank {rank}"
            );
        }
        assert_ne!(frames[0].2, frames[3].2, "the particles move");
    }
}

#[test]
fn gif_of_zero_steps_is_the_start_alone() {
    let dir = scratch("gif-zero");
    let gif = dir.join("zero.gif");
    ringleader(&["particles", "-s", "0", "--render", gif.to_str().unwrap()]).success();
    assert_eq!(gif_frames(&gif).len(), 1);
}

#[test]
fn png_snapshot_is_the_final_frame() {
    let dir = scratch("png");
    let png_path = dir.join("final.png");
    let gif_path = dir.join("run.gif");
    ringleader(&[
        "particles",
        "-n",
        "200",
        "-s",
        "30",
        "-p",
        "2",
        "--render",
        gif_path.to_str().unwrap(),
        "--every",
        "15",
        "--snapshot",
        png_path.to_str().unwrap(),
    ])
    .success();
    let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (400, 400));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert!(count(&pixels, 3, BLUE) > 0);
    assert!(count(&pixels, 3, ORANGE) > 0);
    assert_eq!(count(&pixels, 3, RED), 0);
    // The GIF's last frame is the same picture, in its palette.
    let frames = gif_frames(&gif_path);
    let last = &frames.last().unwrap().2;
    let rgb: Vec<u8> = last
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    assert_eq!(count(&rgb, 3, BLUE), count(&pixels, 3, BLUE));
}

/// Asserts that a run of `-n 300 -s 100 -e` wrote the textbook's energy log and final
/// state, bit for bit.
fn assert_textbook_n300e(log: &Path, out: &Path, what: &str) {
    let want_energy: Vec<u64> = std::fs::read_to_string(fixture("textbook-n300-s100-e.energy"))
        .unwrap()
        .lines()
        .map(|l| l.parse::<f64>().unwrap().to_bits())
        .collect();
    let got: Vec<u64> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (_, energy) = l.split_once(',').unwrap();
            energy.parse::<f64>().unwrap().to_bits()
        })
        .collect();
    assert_eq!(got, want_energy, "{what}");
    let want_state = read_state(&fixture("textbook-n300-s100-e.csv"));
    assert_same_state(&read_state(out), &want_state, what);
}

#[test]
fn pictures_leave_the_numbers_alone() {
    let dir = scratch("pictures-bits");
    let modes = [
        vec![],
        vec!["-p", "3"],
        vec!["-p", "3", "--transport", "threads"],
        vec!["-t", "3"],
    ];
    for (i, mode) in modes.iter().enumerate() {
        let log = dir.join(format!("e{i}.csv"));
        let out = dir.join(format!("s{i}.csv"));
        let gif = dir.join(format!("r{i}.gif"));
        let png = dir.join(format!("f{i}.png"));
        let mut args = vec!["particles", "-n", "300", "-s", "100", "-e"];
        args.extend(mode);
        args.extend(["--energy-log", log.to_str().unwrap()]);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(["--render", gif.to_str().unwrap(), "--every", "7"]);
        args.extend(["--snapshot", png.to_str().unwrap()]);
        ringleader(&args).success();
        assert_textbook_n300e(&log, &out, &format!("{args:?}"));
    }
}

#[test]
fn redirected_output_has_no_control_characters() {
    let dir = scratch("no-control");
    let gif = dir.join("run.gif");
    let runs: Vec<Vec<&str>> = vec![
        vec!["particles", "-n", "100", "-s", "50"],
        vec!["particles", "-n", "100", "-s", "50", "-p", "2"],
        vec!["particles", "-n", "100", "-s", "50", "-t", "2"],
        vec![
            "particles",
            "-n",
            "100",
            "-s",
            "50",
            "-p",
            "2",
            "-g",
            "-u",
            "5",
        ],
        vec![
            "particles",
            "-n",
            "100",
            "-s",
            "50",
            "--render",
            gif.to_str().unwrap(),
        ],
    ];
    for args in runs {
        let run = ringleader(&args);
        run.success();
        for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains(['\x1b', '\r']),
                "{args:?} wrote a control character to {name}: {text:?}"
            );
        }
        assert!(run.stdout.contains("simulation took"), "{args:?}");
    }
}

#[test]
fn live_view_without_a_terminal_says_so_in_one_line_and_runs() {
    let run = ringleader(&["particles", "-n", "50", "-s", "20", "-g"]);
    run.success();
    assert_eq!(
        run.stderr,
        "ringleader: stdout is not a terminal, so -g runs without the live view\n"
    );
    assert!(run.stdout.starts_with("serial simulation took"));
}

#[test]
fn quiet_prints_nothing() {
    let run = ringleader(&["particles", "-n", "50", "-s", "20", "-q", "-g"]);
    run.success();
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
}

#[test]
fn picture_flag_mistakes_point_at_the_fix() {
    for (args, hint) in [
        (vec!["particles", "--render", "run.png"], "ending in .gif"),
        (vec!["particles", "--snapshot", "run.gif"], "ending in .png"),
        (vec!["particles", "--every", "5"], "--render"),
        (vec!["particles", "-u", "5"], "--live"),
        (
            vec!["particles", "--render", "x.gif", "--every", "0"],
            "at least 1",
        ),
    ] {
        let run = ringleader(&args);
        assert_eq!(run.code, Some(2), "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(hint), "{args:?}: {}", run.stderr);
    }
    let dir = scratch("bad-picture-path");
    let gif = dir.join("missing/run.gif");
    let run = ringleader(&["particles", "--render", gif.to_str().unwrap()]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("cannot write"), "{}", run.stderr);
}

#[test]
fn help_shows_every_picture_flag_with_examples() {
    let run = ringleader(&["particles", "--help"]);
    run.success();
    for flag in [
        "--render",
        "--every",
        "--snapshot",
        "--live",
        "--update-every",
        "--quiet",
        "Examples:",
    ] {
        assert!(run.stdout.contains(flag), "--help lacks {flag}");
    }
    assert!(
        run.stdout
            .contains("ringleader particles -n 300 -s 200 -p 4 --render run.gif")
    );
}

/// The binary running on a pseudo-terminal of 100 columns and 40 rows.
struct OnTerminal {
    child: std::process::Child,
    master: File,
    /// What the program drew, as a terminal would show it.
    screen: vt100::Parser,
    /// Every byte it wrote, for what shows too briefly to catch on the screen.
    written: Vec<u8>,
    output: mpsc::Receiver<Vec<u8>>,
    /// Written to, it ends the reader thread, which then closes its copy of the master.
    stop_reading: OwnedFd,
    reader: Option<std::thread::JoinHandle<()>>,
    tag: String,
}

impl OnTerminal {
    fn start(args: &[&str]) -> OnTerminal {
        // Opened close-on-exec, so that processes other tests start at the same time
        // cannot inherit the terminal and keep it open.
        let master = nix::pty::posix_openpt(
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        )
        .unwrap();
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let slave_path = nix::pty::ptsname_r(&master).unwrap();
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the descriptor is ours.
        let set = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(set, 0, "set the terminal size");
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(slave_path)
            .unwrap()
            .into();
        let tag = format!("visuals-live-{}-{}", std::process::id(), args.join("_"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringleader"));
        command
            .args(args)
            .env("RINGLEADER_TEST_TAG", &tag)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe, and the closure touches nothing
        // but the child's own descriptor 0, which is the terminal's slave side.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop(command);
        let master = File::from(OwnedFd::from(master));
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        let (stop_rx, stop_reading) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("a pipe");
        // Reading ends with an error (EIO) once every slave descriptor is closed, or when
        // the test writes to `stop_reading`.
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let mut fds = [
                    libc::pollfd {
                        fd: reader.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: stop_rx.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: two valid pollfds on descriptors this thread holds.
                let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                if ready < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                if ready < 0 || fds[1].revents != 0 {
                    break;
                }
                match reader.read(&mut buf) {
                    Ok(n @ 1..) if tx.send(buf[..n].to_vec()).is_ok() => {}
                    _ => break,
                }
            }
        });
        OnTerminal {
            child,
            master,
            screen: vt100::Parser::new(40.try_into().unwrap(), 100.try_into().unwrap(), 0),
            written: Vec::new(),
            output,
            stop_reading,
            reader: Some(reader),
            tag,
        }
    }

    /// Closes the terminal, as a closed terminal window or a dropped ssh connection does:
    /// the kernel hangs it up and sends the program SIGHUP. Returns its exit code once it
    /// has ended.
    fn hang_up(&mut self, deadline: Duration) -> Option<i32> {
        File::from(self.stop_reading.try_clone().unwrap())
            .write_all(b"x")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        // The last descriptor of the master side goes.
        drop(std::mem::replace(
            &mut self.master,
            File::open("/dev/null").unwrap(),
        ));
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).unwrap();
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let mut exited = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(deadline.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd; the pidfd is ours and closed below.
        let ready = unsafe { libc::poll(&raw mut exited, 1, millis) };
        // SAFETY: the pidfd was opened above and is not used again.
        unsafe { libc::close(fd) };
        assert_eq!(ready, 1, "pid {pid} did not end after its terminal hung up");
        self.child.wait().unwrap().code()
    }

    /// The text on the screen now.
    fn text(&self) -> String {
        self.screen.screen().contents()
    }

    /// Waits until the terminal has shown `needle`.
    fn wait_for(&mut self, needle: &str, deadline: Duration) {
        let until = Instant::now() + deadline;
        while !self.text().contains(needle) {
            let left = until.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) if !left.is_zero() => self.take(&bytes),
                _ => {
                    panic!("never showed {needle:?}; the screen:\n{}", self.text());
                }
            }
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.screen.process(bytes);
        self.written.extend_from_slice(bytes);
    }

    fn written(&self) -> String {
        String::from_utf8_lossy(&self.written).into_owned()
    }

    fn press(&mut self, key: &str) {
        self.master.write_all(key.as_bytes()).unwrap();
    }

    /// Waits for the program to exit, reading the rest of what it showed; returns its
    /// exit code and the screen it left.
    fn wait(&mut self, deadline: Duration) -> (Option<i32>, String) {
        let until = Instant::now() + deadline;
        // The reader thread ends when the program and its workers have closed the terminal.
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) if !left.is_zero() => self.take(&bytes),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("did not exit in time; the screen:\n{}", self.text());
                }
            }
        }
        let status = self.child.wait().unwrap();
        let left = processes_tagged(&self.tag);
        assert!(left.is_empty(), "processes left behind: {left:?}");
        // The terminal is given back: the main screen and the cursor return.
        let screen = self.screen.screen();
        assert!(!screen.alternate_screen(), "left on the alternate screen");
        assert!(!screen.hide_cursor(), "left the cursor hidden");
        (status.code(), self.text())
    }
}

/// A test that fails half way must not leave the program running.
impl Drop for OnTerminal {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn live_view_quits_on_q_and_stops_every_worker_in_every_mode() {
    for (mode, name) in [
        (vec!["-p", "2"], "multiprocess"),
        (
            vec!["-p", "3", "--transport", "threads"],
            "ring (threads transport)",
        ),
        (vec!["-t", "2"], "multithreaded"),
        (vec![], "serial"),
    ] {
        let mut args = vec!["particles", "-n", "200", "-s", "100000", "-g"];
        args.extend(&mode);
        let mut term = OnTerminal::start(&args);
        term.wait_for("step = ", Duration::from_secs(60));
        term.press("q");
        let (code, text) = term.wait(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{args:?}: {text}");
        assert!(
            text.contains("ringleader: stopped after step "),
            "{args:?}: {text}"
        );
        assert!(
            text.contains(&format!("{name} simulation took")),
            "{args:?}: {text}"
        );
    }
}

/// A terminal that hangs up (its window closed, its ssh connection dropped) ends the run
/// as SIGHUP does, exit 129, with no worker left. The view once spun on the dead
/// terminal's reads, its workers alive, and a drop of ratatui's terminal panicked.
#[test]
fn live_view_ends_when_its_terminal_hangs_up() {
    for mode in [vec!["-p", "2"], vec!["-t", "2"], vec![]] {
        let mut args = vec!["particles", "-n", "200", "-s", "100000000", "-g"];
        args.extend(&mode);
        let mut term = OnTerminal::start(&args);
        term.wait_for("step = ", Duration::from_secs(60));
        let code = term.hang_up(Duration::from_secs(60));
        assert_eq!(code, Some(129), "{args:?}");
        let left = processes_tagged(&term.tag);
        assert!(left.is_empty(), "{args:?}: processes left behind: {left:?}");
    }
}

/// A stop signal ends a run with a live view as it ends any other, without waiting for
/// `q`: SIGTERM at a step boundary (exit 143), and Ctrl-C, a key in the view's raw
/// terminal, as SIGINT (exit 130). The run once stopped, then showed its last picture
/// until someone pressed `q`, and took Ctrl-C for `q` (exit 0).
#[test]
fn live_view_ends_on_a_stop_signal_and_on_ctrl_c_as_on_sigint() {
    for (how, code) in [("SIGTERM", 143), ("SIGINT", 130)] {
        for mode in [vec!["-p", "2"], vec!["-t", "2"], vec![]] {
            let mut args = vec!["particles", "-n", "200", "-s", "100000000", "-g"];
            args.extend(&mode);
            let mut term = OnTerminal::start(&args);
            term.wait_for("step = ", Duration::from_secs(60));
            if how == "SIGTERM" {
                let pid = nix::unistd::Pid::from_raw(term.child.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
                    .expect("signal the run");
            } else {
                term.press("\x03");
            }
            let (exit, text) = term.wait(Duration::from_secs(60));
            assert_eq!(exit, Some(code), "{how} {args:?}: {text}");
            assert!(
                text.contains(&format!("ringleader: stopped by {how} after step ")),
                "{how} {args:?}: {text}"
            );
        }
    }
}

#[test]
fn live_view_shows_the_end_until_q_and_leaves_the_numbers_alone() {
    let dir = scratch("live-end");
    let (log, out) = (dir.join("energy.csv"), dir.join("final.csv"));
    for (mode, name) in [
        (vec!["-p", "3"], "multiprocess"),
        (vec!["-t", "2"], "multithreaded"),
    ] {
        let mut args = vec!["particles", "-n", "300", "-s", "100", "-e", "-u", "5"];
        // -v is the textbook's other spelling of -g.
        args.extend(["-v", "--energy-log", log.to_str().unwrap()]);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(&mode);
        let mut term = OnTerminal::start(&args);
        term.wait_for("finished: q closes", Duration::from_secs(60));
        assert!(
            term.text().contains("step = 100, energy = "),
            "{}",
            term.text()
        );
        term.press("q");
        let (code, text) = term.wait(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains(&format!("{name} simulation took")), "{text}");
        assert!(!text.contains("stopped after"), "{text}");
        assert_textbook_n300e(&log, &out, &format!("{args:?}"));
    }
}

#[test]
fn progress_bar_shows_on_a_terminal_and_clears_itself() {
    let dir = scratch("progress");
    let (log, out) = (dir.join("energy.csv"), dir.join("final.csv"));
    let mut term = OnTerminal::start(&[
        "particles",
        "-n",
        "300",
        "-s",
        "100",
        "-e",
        "-p",
        "2",
        "--energy-log",
        log.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (code, text) = term.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{text}");
    // The bar may come and go between two looks at the screen: look at what was written.
    let written = term.written();
    assert!(written.contains(" step 1/100  "), "{written:?}");
    assert!(written.contains(" steps/s  ETA "), "{written:?}");
    // It is gone at the end; the timing line stays.
    assert!(!text.contains("steps/s"), "{text}");
    assert!(text.contains("multiprocess simulation took"), "{text}");
    assert_textbook_n300e(&log, &out, "with a progress bar");
}

#[test]
fn readme_picture_is_what_its_command_draws() {
    let dir = scratch("readme-picture");
    let png = dir.join("particles.png");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let command =
        "cargo run --release -- particles -n 400 -s 200 -p 4 --snapshot docs/particles.png";
    assert!(readme.contains(command), "the README names the command");
    ringleader(&[
        "particles",
        "-n",
        "400",
        "-s",
        "200",
        "-p",
        "4",
        "--snapshot",
        png.to_str().unwrap(),
    ])
    .success();
    let committed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/particles.png")).unwrap();
    assert!(
        std::fs::read(&png).unwrap() == committed,
        "docs/particles.png is stale: run `{command}`"
    );
}

/// With `--algorithm cells -p`, each worker owns a vertical strip of the box, so its
/// colour is a band: the bands go left to right in rank order.
#[test]
fn cells_on_a_ring_colour_each_strip() {
    let dir = scratch("png-strips");
    let png_path = dir.join("strips.png");
    let args = [
        "particles",
        "-n",
        "400",
        "-s",
        "5",
        "--algorithm",
        "cells",
        "-p",
        "3",
    ];
    let snapshot = ["--snapshot", png_path.to_str().unwrap()];
    ringleader(&[&args[..], &snapshot[..]].concat()).success();
    let decoder = png::Decoder::new(std::io::BufReader::new(File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let width = info.width as usize;
    let mean_column = |colour: [u8; 3]| {
        let columns: Vec<usize> = pixels
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, p)| p[..] == colour)
            .map(|(i, _)| i % width)
            .collect();
        assert!(!columns.is_empty(), "no pixel of {colour:?}");
        columns.iter().sum::<usize>() as f64 / columns.len() as f64
    };
    let (first, second, third) = (mean_column(BLUE), mean_column(ORANGE), mean_column(RED));
    assert!(first < second && second < third, "{first} {second} {third}");
}
