//! The runner of the test targets that fork workers (`harness = false`). It speaks the
//! standard harness's command line and output (libtest-mimic), so filters, `--list`,
//! `--exact` and the test runners that use them work; but every test runs on the main
//! thread, one after another, because a process with a second thread may not fork.

use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};

/// Runs `tests`, each named once, and checks after each that it left no child process.
pub(crate) fn run(tests: Vec<(&'static str, fn())>) -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            Trial::test(name, move || {
                test();
                assert_no_children();
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Every child this process forked has been reaped: no zombies.
pub(crate) fn assert_no_children() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        Err(nix::errno::Errno::ECHILD) => {}
        other => panic!("a child was left behind: {other:?}"),
    }
}

/// The tests of a target, each named once by its function.
#[macro_export]
macro_rules! tests {
    ($($test:ident),* $(,)?) => {
        vec![$((stringify!($test), $test as fn())),*]
    };
}
