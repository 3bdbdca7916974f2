//! Where an output goes, and writing it there without clobbering what the path names.
//!
//! A path a user gives for an output is one of:
//! - `-`: standard output;
//! - an existing device or FIFO: opened and written through, never replaced (replacing
//!   `/dev/null` with a regular file breaks the machine);
//! - a regular file, new or existing: replaced atomically. A symlink is followed, so its
//!   target is replaced and the link stays a link;
//! - a name for an open descriptor (`/dev/stdout`, `/dev/fd/N`, `/proc/PID/fd/N`): written
//!   through, appended to, as the descriptor's own file.
//!
//! An atomic write goes through a temporary file next to the target, named
//! `.NAME.PID.XXXXXX.tmp`. A process killed mid-write leaves it behind; the next write to
//! the same target removes it (see [`remove_stale`] for when a temporary is provably
//! abandoned).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::statfs::{self, FsType};
use nix::unistd::AccessFlags;

/// How an output reaches its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// `-`: standard output.
    Stdout,
    /// An existing file written where it is: a device, a FIFO, a descriptor's file, or a
    /// regular file whose directory does not let us create the temporary.
    Through {
        /// The file, symlinks followed.
        path: PathBuf,
        /// How it is opened.
        opening: Opening,
    },
    /// A regular file replaced atomically, or created. The path has its symlinks followed
    /// and its directory made canonical.
    Replace(PathBuf),
}

/// How a file written through is opened; it is never created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A device or FIFO, as it is: appending would put a block device's writes past its end.
    Stream,
    /// A regular file written in place: emptied first.
    Emptied,
    /// A regular file a descriptor names (say stdout redirected to a file): appended to,
    /// after what the program's other writes put there.
    Appended,
}

/// What two outputs compare by: they collide when they would write the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The null device: outputs may share it, as nothing sent there is kept.
    Null,
    /// An existing file: its device and inode.
    File(u64, u64),
    /// A file yet to be created: its path, directory canonical.
    New(PathBuf),
}

/// How many symlinks a path may pass through, as the kernel's own limit.
const MAX_LINKS: usize = 40;

impl Destination {
    /// How `path` is written, after checking that it can be: `-` is stdout; a directory,
    /// a socket or a missing parent directory are errors; no probe file is created.
    ///
    /// # Errors
    /// When the output could not be written there.
    pub(crate) fn resolve(path: &Path) -> io::Result<Destination> {
        if path.as_os_str() == "-" {
            return Ok(Destination::Stdout);
        }
        let (target, meta, descriptor) = follow(path)?;
        if meta.is_none() && names_a_directory(path) {
            // `out/` would otherwise create a file named `out`.
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "it names a directory (it ends in /), and there is none: an output is a file",
            ));
        }
        match meta {
            Some(meta) if meta.is_dir() => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a directory",
            )),
            Some(meta) if meta.file_type().is_socket() => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "it is a socket"))
            }
            Some(meta) if descriptor || !meta.is_file() => {
                writable(&target)?;
                let opening = if meta.is_file() {
                    Opening::Appended
                } else {
                    Opening::Stream
                };
                Ok(Destination::Through {
                    path: target,
                    opening,
                })
            }
            // A regular file, or none yet.
            exists => {
                let (dir, name) = split(&target)?;
                let dir = canonical_dir(dir)?;
                kernel_interface(&dir)?;
                let target = dir.join(name);
                match (writable_dir(&dir), exists) {
                    // A file the user may not write is not replaced behind their back,
                    // though its directory would let us.
                    (Ok(()), Some(_)) if let Err(err) = writable(&target) => Err(err),
                    (Ok(()), _) => Ok(Destination::Replace(target)),
                    // We may not create the temporary, but may write the file itself: write
                    // it in place, which is not atomic but is what the user asked for.
                    (Err(_), Some(_)) if writable(&target).is_ok() => Ok(Destination::Through {
                        path: target,
                        opening: Opening::Emptied,
                    }),
                    (Err(err), _) => Err(err),
                }
            }
        }
    }

    /// Writes the output with `write`, buffered: through, or atomically (see
    /// [`write_atomically_with`]).
    ///
    /// # Errors
    /// When `write` or any step of writing fails.
    pub(crate) fn write_with(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        match self {
            Destination::Stdout => {
                let mut out = BufWriter::new(io::stdout().lock());
                write(&mut out)?;
                out.flush()
            }
            Destination::Through { path, opening } => {
                // Never create: a device or FIFO that went away is an error, not a new
                // regular file in its place.
                let file = if *opening == Opening::Stream {
                    open_stream(path)?
                } else {
                    OpenOptions::new()
                        .write(true)
                        .truncate(*opening == Opening::Emptied)
                        .append(*opening == Opening::Appended)
                        .open(path)?
                };
                let mut out = BufWriter::new(&file);
                write(&mut out)?;
                out.flush()?;
                drop(out);
                if file.metadata()?.is_file() {
                    file.sync_all()?;
                }
                Ok(())
            }
            Destination::Replace(path) => write_atomically_with(path, write),
        }
    }

    /// What this output is compared by, to find two outputs that would write one file.
    ///
    /// # Errors
    /// When standard output or an existing file cannot be examined.
    pub(crate) fn identity(&self) -> io::Result<Identity> {
        let meta = match self {
            Destination::Stdout => {
                let stat = nix::sys::stat::fstat(io::stdout()).map_err(io::Error::from)?;
                return Ok(identity_of(
                    stat.st_dev,
                    stat.st_ino,
                    stat.st_mode & libc::S_IFMT == libc::S_IFCHR,
                    stat.st_rdev,
                ));
            }
            Destination::Through { path, .. } => fs::metadata(path)?,
            Destination::Replace(path) => match fs::metadata(path) {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Ok(Identity::New(path.clone()));
                }
                Err(err) => return Err(err),
            },
        };
        Ok(identity_of(
            meta.dev(),
            meta.ino(),
            meta.file_type().is_char_device(),
            meta.rdev(),
        ))
    }
}

fn identity_of(dev: u64, ino: u64, char_device: bool, rdev: u64) -> Identity {
    // Linux's null device is character device 1:3, wherever its node lives.
    if char_device && rdev == libc::makedev(1, 3) {
        Identity::Null
    } else {
        Identity::File(dev, ino)
    }
}

/// Follows the symlinks at the end of `path` to the file they name: the path of that file,
/// its metadata if it exists, and whether it is a process's open descriptor (a magic link
/// in `/proc/PID/fd`, which names a file by descriptor rather than by path: a pipe's has no
/// path at all). The links themselves are kept, so a write through them leaves them links.
fn follow(path: &Path) -> io::Result<(PathBuf, Option<fs::Metadata>, bool)> {
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((current, None, false)),
            Err(err) => return Err(err),
        };
        if !meta.file_type().is_symlink() {
            return Ok((current, Some(meta), false));
        }
        let (dir, _) = split(&current)?;
        if is_descriptor_dir(dir) {
            let meta = fs::metadata(&current)?;
            return Ok((current, Some(meta), true));
        }
        let link = fs::read_link(&current)?;
        current = if link.is_absolute() {
            link
        } else {
            dir.join(link)
        };
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links to follow"
    )))
}

/// Whether `dir` is a process's descriptor table: `/proc/PID/fd` or
/// `/proc/PID/task/TID/fd`.
fn is_descriptor_dir(dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    let parts: Vec<Component<'_>> = dir.components().collect();
    let named = |i: usize, name: &str| parts.get(i) == Some(&Component::Normal(OsStr::new(name)));
    parts.first() == Some(&Component::RootDir)
        && named(1, "proc")
        && match parts.len() {
            4 => named(3, "fd"),
            6 => named(3, "task") && named(5, "fd"),
            _ => false,
        }
}

/// Opens a device or FIFO to write. A FIFO's open waits for a reader, in the kernel, where
/// no stop signal reaches it: our handlers restart the call, and a run whose output nobody
/// read could then only be killed. So the open does not wait there: it is tried again
/// every [`READER_POLL`] (nothing announces a reader) until a reader has come. A first stop
/// signal lets it wait on, as the output is what the run is for (the run then says the
/// signal came after its last step); a second ends the wait, and is the error.
fn open_stream(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => {
                // Writes wait for the reader as usual.
                let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
                // SAFETY: `fd` is open for as long as `file` lives; F_GETFL and F_SETFL
                // only read and set its status flags.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                // SAFETY: as above.
                if flags < 0
                    || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
                {
                    return Err(io::Error::last_os_error());
                }
                return Ok(file);
            }
            // A FIFO without a reader.
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
                if let Some(signal) = ringleader::stop_signal()
                    && ringleader::stop_signal_count() > 1
                {
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        format!("a second {signal} came while it waited for a reader"),
                    ));
                }
                std::thread::sleep(READER_POLL);
            }
            Err(err) => return Err(err),
        }
    }
}

/// How often [`open_stream`] looks for a FIFO's reader.
const READER_POLL: Duration = Duration::from_millis(10);

/// Fails unless this process may write `path` (checked with its effective ids; a read-only
/// file system fails too).
fn writable(path: &Path) -> io::Result<()> {
    nix::unistd::eaccess(path, AccessFlags::W_OK).map_err(io::Error::from)
}

/// Fails unless a file can be created in `dir`.
fn writable_dir(dir: &Path) -> io::Result<()> {
    nix::unistd::eaccess(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|errno| {
        io::Error::new(
            io::Error::from(errno).kind(),
            format!("cannot create files in {}: {errno}", dir.display()),
        )
    })
}

/// The kernel's own file systems, whose files are its interfaces: no file can be created in
/// them, and a write to one of their files is an instruction to the kernel, not data kept.
const KERNEL_INTERFACES: &[(FsType, &str)] = &[
    (statfs::PROC_SUPER_MAGIC, "procfs"),
    (statfs::SYSFS_MAGIC, "sysfs"),
    (statfs::CGROUP_SUPER_MAGIC, "cgroupfs"),
    (statfs::CGROUP2_SUPER_MAGIC, "cgroup2"),
    (statfs::DEBUGFS_MAGIC, "debugfs"),
    (statfs::TRACEFS_MAGIC, "tracefs"),
    (statfs::SECURITYFS_MAGIC, "securityfs"),
    (statfs::SELINUX_MAGIC, "selinuxfs"),
    (statfs::BPF_FS_MAGIC, "bpffs"),
    (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
    (statfs::NSFS_MAGIC, "nsfs"),
];

/// Fails when `dir` is on one of the kernel's own file systems ([`KERNEL_INTERFACES`]).
/// Root passes every permission check there, so without this a run would do all its work
/// and only then fail to create its temporary, or write its output into a kernel setting.
/// The descriptors of `/proc/PID/fd`, the one place there an output may go, are written
/// through before this is asked. A directory whose file system will not say what it is
/// passes: the checks after this one, and the write itself, still name what goes wrong.
fn kernel_interface(dir: &Path) -> io::Result<()> {
    let Ok(found) = statfs::statfs(dir) else {
        return Ok(());
    };
    let kind = found.filesystem_type();
    match KERNEL_INTERFACES.iter().find(|(magic, _)| *magic == kind) {
        Some((_, name)) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} is on {name}, the kernel's interface, where no output can go",
                dir.display()
            ),
        )),
        None => Ok(()),
    }
}

/// `dir`, canonical, after checking that it is a directory.
fn canonical_dir(dir: &Path) -> io::Result<PathBuf> {
    let canonical = fs::canonicalize(dir)?;
    if !fs::metadata(&canonical)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    Ok(canonical)
}

/// Whether `path` can only name a directory: it ends in `/` or `/.`.
fn names_a_directory(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes == b"."
}

/// The directory a file goes in, and its name there.
pub(crate) fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// Writes `bytes` to `path` so that `path` holds either its old contents or all of the new
/// ones, whenever the process or the machine stops: see [`write_atomically_with`].
///
/// # Errors
/// When any step fails; the temporary file is then removed.
#[cfg(test)]
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(path, |out| out.write_all(bytes))
}

/// Writes the contents `write` makes to `path` so that `path` holds either its old contents
/// or all of the new ones, whenever the process or the machine stops: a temporary file in
/// the same directory, synced, renamed over `path`, then the directory synced so the rename
/// itself lasts. Stale temporaries of earlier writes to `path` go first.
///
/// # Errors
/// When `write` or any step fails; the temporary file is then removed.
pub(crate) fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut temporary = Staged::new(path)?;
    let mut buffered = BufWriter::new(temporary.file.as_file_mut());
    write(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    temporary.commit()
}

/// A temporary file next to a target, which [`commit`](Staged::commit) renames over it and
/// dropping removes.
#[derive(Debug)]
pub(crate) struct Staged {
    file: tempfile::NamedTempFile,
    target: PathBuf,
}

impl Staged {
    /// Removes stale temporaries of `target`, then creates a new one beside it.
    ///
    /// # Errors
    /// When the temporary cannot be created.
    pub(crate) fn new(target: &Path) -> io::Result<Staged> {
        let (dir, name) = split(target)?;
        remove_stale(dir, |candidate| candidate == name);
        let file = tempfile::Builder::new()
            .prefix(&temporary_prefix(name, std::process::id()))
            .suffix(SUFFIX)
            .rand_bytes(RANDOM)
            // An ordinary file: the umask decides, not tempfile's 0600.
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)?;
        // A file replaced keeps its mode (a private file stays private) and, where we may
        // give it, its owner.
        if let Ok(old) = fs::metadata(target)
            && old.is_file()
        {
            let file = file.as_file();
            file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))?;
            if (old.uid(), old.gid()) != (file.metadata()?.uid(), file.metadata()?.gid()) {
                let _ = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()));
            }
        }
        Ok(Staged {
            file,
            target: target.to_owned(),
        })
    }

    /// The temporary file's path, for a writer that opens files by name.
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// Syncs the temporary, renames it over the target and syncs the directory.
    ///
    /// # Errors
    /// When any of those fails; the temporary is then removed.
    pub(crate) fn commit(self) -> io::Result<()> {
        self.file.as_file().sync_all()?;
        self.file.persist(&self.target).map_err(|err| err.error)?;
        let (dir, _) = split(&self.target)?;
        File::open(dir)?.sync_all()
    }
}

/// The end of every temporary's name.
const SUFFIX: &str = ".tmp";

/// Random characters in a temporary's name (tempfile's alphanumerics).
const RANDOM: usize = 6;

/// How long a temporary goes unmodified before it counts as abandoned even when the
/// process its name gives may be alive (a reused pid).
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// `.NAME.PID.`: the start of the name of a temporary for target `name` made by `pid`.
fn temporary_prefix(name: &OsStr, pid: u32) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(format!(".{pid}."));
    prefix
}

/// The writer's pid, if `candidate` is a temporary of a target that `is_target` accepts:
/// `.NAME.PID.XXXXXX.tmp`, with `Some(pid)`, or, as earlier versions named them,
/// `.NAME.XXXXXX.tmp`, with `None`.
fn temporary_of(candidate: &OsStr, is_target: impl Fn(&OsStr) -> bool) -> Option<Option<u32>> {
    let text = candidate.to_str()?;
    let rest = text.strip_prefix('.')?.strip_suffix(SUFFIX)?;
    let (rest, random) = rest.rsplit_once('.')?;
    if random.len() != RANDOM || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if let Some((name, pid)) = rest.rsplit_once('.')
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && is_target(OsStr::new(name))
    {
        return pid.parse().ok().map(Some);
    }
    is_target(OsStr::new(rest)).then_some(None)
}

/// Removes the temporaries in `dir` that earlier writes to a target `is_target` accepts
/// left behind when they were killed. A temporary is removed only when all of these hold:
/// - its name is exactly one this module gives (`.NAME.PID.XXXXXX.tmp`, or
///   `.NAME.XXXXXX.tmp` from earlier versions) for such a target;
/// - it is a regular file (not a link) owned by our effective user, whose files these are;
/// - it is provably abandoned: no process has the pid in its name (its writer is dead, so
///   nothing will write or rename it), or, for a name with no
///   pid or a pid that is alive (perhaps reused, perhaps our own), nothing has modified
///   it for an hour.
///
/// A temporary that another run, or another thread of ours, is writing right now fails
/// the last test, so two writers of one target never remove each other's. Errors are ignored: the cleanup is a
/// courtesy, and the write itself reports what matters.
pub(crate) fn remove_stale(dir: &Path, is_target: impl Fn(&OsStr) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let Some(pid) = temporary_of(&entry.file_name(), &is_target) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.file_type().is_file() || meta.uid() != me {
            continue;
        }
        let writer_gone = pid.is_some_and(|pid| !alive(pid));
        let untouched = meta
            .modified()
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .is_some_and(|age| age >= ABANDONED_AFTER);
        if writer_gone || untouched {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether a process with this pid exists (one we may not signal exists too).
fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_replaces_the_old_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.ck");
        fs::write(&path, vec![7u8; 100_000]).expect("write");
        write_atomically(&path, b"new").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert_eq!(names(dir.path()), ["state.ck"]);
    }

    #[test]
    fn a_reader_sees_only_whole_files_while_writes_replace_them() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.ck");
        let old = vec![1u8; 64 * 1024];
        let new = vec![2u8; 48 * 1024];
        write_atomically(&path, &old).expect("first write");
        let done = AtomicBool::new(false);
        let reads = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut reads = 0;
                // At least a few reads, then until the writer has finished.
                while reads < 10 || !done.load(Ordering::Acquire) {
                    let seen = fs::read(&path).expect("the target always exists");
                    assert!(
                        seen == old || seen == new,
                        "a torn read of {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            });
            for i in 0..60 {
                let bytes = if i % 2 == 0 { &new } else { &old };
                write_atomically(&path, bytes).expect("write");
            }
            done.store(true, Ordering::Release);
            reader.join().expect("reader")
        });
        assert!(reads >= 10);
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The target is a non-empty directory, so the rename fails after the data is out.
        let path = dir.path().join("taken");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("inside"), b"old").expect("write");
        assert!(write_atomically(&path, b"new").is_err());
        assert!(Destination::resolve(&path).is_err());
        assert_eq!(fs::read(path.join("inside")).expect("read"), b"old");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
        assert!(Destination::resolve(&dir.path().join("missing/state.ck")).is_err());
        let fresh = dir.path().join("state.ck");
        assert_eq!(
            Destination::resolve(&fresh).expect("a new file"),
            Destination::Replace(fs::canonicalize(dir.path()).expect("dir").join("state.ck"))
        );
        // No probe file was made to find that out.
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_symlink_is_followed_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("real.csv");
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink("real.csv", &link).expect("symlink");
        // Dangling first: the target is created.
        let destination = Destination::resolve(&link).expect("resolve");
        destination
            .write_with(|out| out.write_all(b"one"))
            .expect("write");
        assert_eq!(fs::read(&target).expect("read"), b"one");
        // Then replaced.
        let destination = Destination::resolve(&link).expect("resolve");
        destination
            .write_with(|out| out.write_all(b"two"))
            .expect("write");
        assert!(fs::symlink_metadata(&link).expect("lstat").is_symlink());
        assert_eq!(fs::read(&link).expect("read"), b"two");
        assert_eq!(names(dir.path()), ["link.csv", "real.csv"]);
        assert_eq!(
            Destination::resolve(&link)
                .expect("resolve")
                .identity()
                .expect("id"),
            Destination::resolve(&target)
                .expect("resolve")
                .identity()
                .expect("id"),
        );
    }

    #[test]
    fn devices_fifos_and_descriptors_are_written_through() {
        let null = Destination::resolve(Path::new("/dev/null")).expect("resolve");
        assert_eq!(
            null,
            Destination::Through {
                path: PathBuf::from("/dev/null"),
                opening: Opening::Stream
            }
        );
        assert_eq!(null.identity().expect("id"), Identity::Null);
        null.write_with(|out| out.write_all(b"gone"))
            .expect("write");
        assert!(
            fs::metadata("/dev/null")
                .expect("stat")
                .file_type()
                .is_char_device()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let destination = Destination::resolve(&fifo).expect("resolve");
        assert!(matches!(
            destination,
            Destination::Through {
                opening: Opening::Stream,
                ..
            }
        ));
        // The reader opens first, without waiting for a writer, so the write never waits.
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the fifo to read");
        destination
            .write_with(|out| out.write_all(b"through"))
            .expect("write");
        let mut read = Vec::new();
        io::Read::read_to_end(&mut reader, &mut read).expect("read the fifo");
        assert_eq!(read, b"through");
        assert!(
            fs::symlink_metadata(&fifo)
                .expect("lstat")
                .file_type()
                .is_fifo()
        );
        let own = Destination::resolve(Path::new("/proc/self/fd/2")).expect("resolve");
        assert!(
            matches!(
                own,
                Destination::Through {
                    opening: Opening::Appended | Opening::Stream,
                    ..
                }
            ),
            "{own:?}"
        );
        assert!(Destination::resolve(Path::new("-")).expect("stdout") == Destination::Stdout);
    }

    #[test]
    fn temporaries_are_recognised_by_exactly_their_names() {
        let target = |name: &OsStr| name == "state.ck";
        let of = |name: &str| temporary_of(OsStr::new(name), target);
        assert_eq!(of(".state.ck.4242.aB3xY9.tmp"), Some(Some(4242)));
        assert_eq!(of(".state.ck.aB3xY9.tmp"), Some(None));
        assert_eq!(of(".state.ck.4242.aB3xY.tmp"), None);
        assert_eq!(of(".state.ck.4242.aB3x-9.tmp"), None);
        assert_eq!(of("state.ck.4242.aB3xY9.tmp"), None);
        assert_eq!(of(".other.ck.4242.aB3xY9.tmp"), None);
        assert_eq!(of(".state.ck.4242.aB3xY9.tmpx"), None);
        assert_eq!(of(".state.ck"), None);
        // A name made now is one the cleanup recognises, with our pid.
        let made = temporary_prefix(OsStr::new("state.ck"), 77);
        let made = format!("{}Zz09aA{SUFFIX}", made.to_str().expect("utf-8"));
        assert_eq!(of(&made), Some(Some(77)));
    }

    #[test]
    fn only_abandoned_temporaries_of_the_target_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // A pid no process has: a child that has been reaped.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("reap");
        let live = std::process::id();
        let parent = nix::unistd::getppid().as_raw();
        let old = SystemTime::now() - 2 * ABANDONED_AFTER;
        let files = [
            (format!(".state.ck.{dead}.aaaaaa.tmp"), None, false),
            (format!(".state.ck.{live}.bbbbbb.tmp"), None, true),
            (format!(".state.ck.{parent}.cccccc.tmp"), None, true),
            (format!(".state.ck.{parent}.dddddd.tmp"), Some(old), false),
            (".state.ck.eeeeee.tmp".to_owned(), None, true),
            (".state.ck.ffffff.tmp".to_owned(), Some(old), false),
            (format!(".other.ck.{dead}.gggggg.tmp"), None, true),
            ("state.ck".to_owned(), Some(old), true),
        ];
        for (name, modified, _) in &files {
            let file = File::create(d.join(name)).expect("create");
            if let Some(at) = modified {
                file.set_modified(*at).expect("set mtime");
            }
        }
        remove_stale(d, |name| name == "state.ck");
        let mut kept: Vec<String> = files
            .iter()
            .filter(|(.., kept)| *kept)
            .map(|(name, ..)| name.clone())
            .collect();
        kept.sort();
        assert_eq!(names(d), kept);
    }
}
