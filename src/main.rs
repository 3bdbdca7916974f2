//! The `ringleader` coordinator binary.
//!
//! The built-in stages in `workers/` are compiled into this binary rather than into the
//! library, so they can only use the library's public API, as a user's stage would.

mod cli;
#[path = "../workers/mod.rs"]
mod workers;

fn main() -> std::process::ExitCode {
    cli::main()
}
