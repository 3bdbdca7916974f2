//! The files a command writes, checked before it runs: each one can be written, and no two
//! write the same file (one of them would be lost).

use std::io::IsTerminal;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::usage;
use crate::checkpoint::{is_template, path_at, step_named};
use crate::destination::{self, Destination, Identity};

/// One file a command will write.
#[derive(Debug, Clone)]
pub(crate) struct Output<'a> {
    /// The flag that names it, such as `--out`.
    pub(crate) flag: &'static str,
    /// What the error message calls it before its path: `""` or `"checkpoint "`.
    pub(crate) noun: &'static str,
    /// The path as given.
    pub(crate) path: &'a Path,
    /// For a path with `{step}` in it: the steps it may be written after.
    pub(crate) steps: Option<RangeInclusive<u64>>,
}

impl<'a> Output<'a> {
    /// An output named by `flag`, if given.
    pub(crate) fn new(flag: &'static str, path: Option<&'a PathBuf>) -> Option<Output<'a>> {
        path.map(|path| Output {
            flag,
            noun: "",
            path,
            steps: None,
        })
    }
}

/// An output as it will be written.
#[derive(Debug)]
struct Resolved<'a> {
    output: &'a Output<'a>,
    /// The file it writes as the user names it: for a `{step}` template, its last step's.
    path: PathBuf,
    destination: Destination,
    identity: Identity,
}

/// Checks, before any work, that every output can be written (a runtime error, exit 1, if
/// not) and that no two would write the same file: the same path, one file by two names
/// (symlinks, hard links), stdout twice, or a `{step}` template and a file it names (a
/// usage error, exit 2). Outputs may share the null device, which keeps nothing. Creates
/// no file. Returns whether an output goes to stdout (as `-`, or by a name such as
/// `/dev/stdout`), where the command's own messages must then not go.
///
/// # Errors
/// As above.
pub(crate) fn check(outputs: &[Output<'_>]) -> anyhow::Result<bool> {
    let mut resolved: Vec<Resolved<'_>> = Vec::with_capacity(outputs.len());
    for output in outputs {
        let path = match &output.steps {
            Some(steps) => path_at(output.path, *steps.end()),
            None => output.path.to_owned(),
        };
        let cannot = || format!("cannot write {}{}", output.noun, path.display());
        let destination = Destination::resolve(&path).with_context(cannot)?;
        let identity = destination.identity().with_context(cannot)?;
        let this = Resolved {
            output,
            path,
            destination,
            identity,
        };
        if let Some((other, place)) = resolved
            .iter()
            .find_map(|other| collision(other, &this).map(|place| (other, place)))
        {
            return usage(format!(
                "{} and {} both write {place}: give each its own file",
                other.output.flag, output.flag
            ));
        }
        resolved.push(this);
    }
    let stdout = Destination::Stdout.identity().ok();
    Ok(resolved.iter().any(|output| {
        output.destination == Destination::Stdout
            || (output.identity != Identity::Null && Some(&output.identity) == stdout.as_ref())
    }))
}

/// Writes the output at `path` (`-` for stdout) with `write`, without clobbering what the
/// path names: see [`Destination`].
///
/// # Errors
/// When it cannot be written.
pub(crate) fn write(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    Destination::resolve(path)?.write_with(write)
}

/// The path as a message names it: `-` is stdout.
pub(crate) fn shown(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "to stdout".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Refuses a binary output on a terminal: `-` may name stdout only when it goes to a file
/// or a pipe.
///
/// # Errors
/// A usage error when `path` is `-` and stdout is a terminal.
pub(crate) fn refuse_binary_on_terminal(flag: &str, path: &Path) -> anyhow::Result<()> {
    if path.as_os_str() == "-" && std::io::stdout().is_terminal() {
        return usage(format!(
            "{flag} - would write binary to the terminal: redirect stdout to a file or a pipe, or name a file"
        ));
    }
    Ok(())
}

/// Where `a` and `b` would both write, if they would: `stdout`, or the path of the file
/// (as `b` names it, or as a `{step}` checkpoint and the other file share it).
fn collision(a: &Resolved<'_>, b: &Resolved<'_>) -> Option<String> {
    if a.identity != Identity::Null && a.identity == b.identity {
        return Some(match b.destination {
            Destination::Stdout => "stdout".to_owned(),
            _ => b.path.display().to_string(),
        });
    }
    [(a, b), (b, a)]
        .into_iter()
        .find(|(template, other)| names_step(template, other))
        .map(|(_, other)| other.output.path.display().to_string())
}

/// Whether `template` is a `{step}` checkpoint that may be written, at some step, to the
/// file `other` writes.
fn names_step(template: &Resolved<'_>, other: &Resolved<'_>) -> bool {
    let Some(steps) = &template.output.steps else {
        return false;
    };
    let Ok((dir, name)) = destination::split(template.output.path) else {
        return false;
    };
    let file = match &other.destination {
        Destination::Stdout => return false,
        Destination::Through { path, .. } | Destination::Replace(path) => path,
    };
    let Ok((other_dir, other_name)) = destination::split(file) else {
        return false;
    };
    // A `{step}` in a directory names many directories: only the last step's file, checked
    // above, is compared.
    if is_template(dir) || !same_dir(dir, other_dir) {
        return false;
    }
    step_named(name, other_name).is_some_and(|step| steps.contains(&step))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
