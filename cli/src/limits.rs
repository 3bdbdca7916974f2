//! What a run needs of the machine, checked before it starts: memory and file descriptors.
//! A run that cannot fit is refused in one line, rather than growing until the kernel
//! kills it or an allocation aborts, or failing late on "Too many open files".

use std::path::Path;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use ringleader::Transport;

use super::{usage, usage_here};
use ringleader_particles::{Algorithm, Mode};

/// Bytes of one particle in a list: its id (u32) and x, y, vx, vy (f64).
const PARTICLE: u64 = 4 + 4 * 8;

/// What a run of the simulator holds at its peak per particle, all its processes together:
/// the start it is given, its working copy of the particles, accelerations, the hits of a
/// step, the per-mode buffers (a ring's blocks in flight and gathered reports; the cells'
/// sorted strips, one array each, and the workers' outputs read back), and the outputs as
/// they are encoded (the checkpoint's payload and its sealed copy). Measured as the peak
/// memory charged to a cgroup holding nothing but the run, with `--out` and `--checkpoint`,
/// at n = 4,000,000 (cells, 2 steps, 4 workers) and 200,000 (all pairs, 1 step), and half
/// as much again for what the measurement missed (the kernel's own memory, a busier step).
/// For cells, the outputs' part (122 MiB at 4,000,000, measured on one process) is added
/// to a run without them, since a cgroup is also charged for the files' page cache:
///
/// | bytes per particle | serial | threads | ring |
/// |--------------------|--------|---------|------|
/// | all pairs          | 115    | 189     | 168  |
/// | cells              | 110    | 115     | 144  |
const fn per_particle(algorithm: Algorithm, mode: Mode) -> u64 {
    match (algorithm, mode) {
        (Algorithm::AllPairs, Mode::Serial) => 176,
        (Algorithm::AllPairs, Mode::Threads(_)) => 288,
        (Algorithm::AllPairs, Mode::Ring(..)) => 256,
        (Algorithm::Cells, Mode::Serial) => 168,
        (Algorithm::Cells, Mode::Threads(_)) => 176,
        (Algorithm::Cells, Mode::Ring(..)) => 216,
    }
}

/// What any run holds whatever its size: the program's heap and the pages of the program
/// itself (a run of 20 particles is charged under 1 MiB, its RSS is about 5 MiB).
const BASE: u64 = 16 << 20;

/// What each forked worker holds whatever its share, and what it adds per other worker
/// (its share of the ring's channels and mailboxes). Measured at 300 KiB a worker on a
/// ring of 64, 500 KiB on 256 and 1 MiB on 1024: about 256 KiB and 750 bytes per other
/// worker; counted here three times over, for the kernel's page tables and socket buffers
/// that the measurement misses.
const PER_PROCESS: u64 = 1 << 20;
const PER_PROCESS_PEER: u64 = 2 << 10;

/// What each thread of a run holds: the pages of its stack it touches, and the kernel's
/// (measured at 35 KiB a thread for `-t 256`).
const PER_THREAD: u64 = 128 << 10;

/// The bytes of the particle list a run starts from.
pub(crate) fn start_bytes(n: usize) -> u64 {
    PARTICLE.saturating_mul(n as u64)
}

/// What a run of `n` particles needs at its peak, its start included, keeping `energies`
/// energies (`-e` or `--energy-log`: one per step).
pub(crate) fn run_bytes(n: usize, mode: Mode, algorithm: Algorithm, energies: u64) -> u64 {
    let (processes, threads) = match mode {
        Mode::Serial => (0, 0),
        Mode::Threads(threads) | Mode::Ring(threads, Transport::Threads) => (0, threads as u64),
        Mode::Ring(workers, _) => (workers as u64, 0),
    };
    let per_process = PER_PROCESS.saturating_add(PER_PROCESS_PEER.saturating_mul(processes));
    BASE.saturating_add(per_particle(algorithm, mode).saturating_mul(n as u64))
        .saturating_add(per_process.saturating_mul(processes))
        .saturating_add(PER_THREAD.saturating_mul(threads))
        .saturating_add(energies.saturating_mul(8))
}

/// What `bench hop` needs for blocks of `bytes` on `workers` workers: each holds about five
/// blocks at once (its own, the one in flight, the one it receives, and their regions; 3.3
/// measured at 16 MB on four processes), plus a worker's fixed cost.
pub(crate) fn hop_bytes(bytes: usize, workers: usize) -> u64 {
    let per_worker = (bytes as u64)
        .saturating_mul(5)
        .saturating_add(PER_PROCESS)
        .saturating_add(PER_PROCESS_PEER.saturating_mul(workers as u64));
    BASE.saturating_add(per_worker.saturating_mul(workers as u64))
}

/// What `bench kernel -n N` needs: the particles, their bodies and the hits of a pass (84
/// bytes a particle measured at n = 200,000).
pub(crate) fn kernel_bytes(n: usize) -> u64 {
    BASE.saturating_add(128u64.saturating_mul(n as u64))
}

/// Refuses a `particles` run that cannot fit: more particles than ids, more memory than is
/// available, or more file descriptors than this process may open.
///
/// # Errors
/// A usage error naming what the run needs and what there is.
pub(crate) fn check_particles(
    n: usize,
    mode: Mode,
    algorithm: Algorithm,
    energies: u64,
) -> anyhow::Result<()> {
    // Ids are u32.
    if u32::try_from(n).is_err() {
        return usage(format!(
            "-n {n} is more particles than a run can number (at most {})",
            u32::MAX
        ));
    }
    if let Mode::Ring(workers, Transport::Processes) = mode {
        ensure_descriptors(workers, &format!("-p {workers}"))?;
    }
    ensure_memory(run_bytes(n, mode, algorithm, energies), || {
        let on = match mode {
            Mode::Serial => String::new(),
            Mode::Threads(threads) => format!(" -t {threads}"),
            Mode::Ring(workers, _) => format!(" -p {workers}"),
        };
        if energies > 0 {
            format!("-n {n}{on} with an energy kept for each of {energies} steps")
        } else {
            format!("-n {n}{on}")
        }
    })
}

/// Refuses a run that needs `need` bytes when less memory is available. `what` names the
/// run in the message.
///
/// # Errors
/// A usage error naming the estimate and the memory available.
pub(crate) fn ensure_memory(need: u64, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    match available_memory() {
        Some(available) if need > available => usage_here(format!(
            "{} needs about {} of memory, but {} is available",
            what(),
            bytes(need),
            bytes(available)
        )),
        // Where the machine does not say, let the run try.
        _ => Ok(()),
    }
}

/// The file descriptors a ring of `workers` processes needs in the coordinator, which
/// keeps a channel up and one down per rank, and makes each rank's links just before it
/// forks it; and in each worker just after its fork, which inherits the coordinator's.
/// Then standard streams, the board, the mailboxes, and the outputs and temporaries a run
/// may hold open. Measured as the lowest `ulimit -n` a run works with: 2 per worker plus
/// 12 (12 for one worker, 16 for two, 28 for eight, 140 for 64, 525 for 256).
pub(crate) fn descriptors(workers: usize) -> u64 {
    2u64.saturating_mul(workers as u64).saturating_add(16)
}

/// Makes sure a ring of `workers` processes can open the descriptors it needs: raises the
/// soft limit (`ulimit -n`) up to the hard one if it must, as the soft limit is only a
/// default, and refuses the run if even the hard limit is too low.
///
/// # Errors
/// A usage error naming the descriptors needed and the limit.
pub(crate) fn ensure_descriptors(workers: usize, what: &str) -> anyhow::Result<()> {
    let need = descriptors(workers);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    if need <= soft {
        return Ok(());
    }
    if need <= hard && setrlimit(Resource::RLIMIT_NOFILE, need, hard).is_ok() {
        return Ok(());
    }
    usage_here(format!(
        "{what} needs about {need} open files, but this process may open {} (ulimit -n)",
        soft.max(hard.min(need))
    ))
}

/// The memory a new run can have: what the kernel says is available without swapping
/// (MemAvailable), or less, when the cgroup this process runs in has a limit.
fn available_memory() -> Option<u64> {
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text));
    let cgroup = cgroup_room();
    match (system, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// MemAvailable from `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Room left under the tightest memory limit of this process's cgroup and its ancestors:
/// `memory.max` less `memory.current` (cgroup v2), or `memory.limit_in_bytes` less
/// `memory.usage_in_bytes` (v1). `None` where no limit applies or none can be read.
fn cgroup_room() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut rooms = Vec::new();
    for line in membership.lines() {
        // hierarchy-ID:controllers:path
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (root, limit, usage) = if id == "0" && controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        // Inside a cgroup namespace, or where the hierarchy is mounted elsewhere, the path
        // may not exist under the root: then every ancestor that does is still a limit.
        let mut dir = Path::new(root).join(path.trim_start_matches('/'));
        loop {
            if let Some(room) = room_in(&dir, limit, usage) {
                rooms.push(room);
            }
            if dir == Path::new(root) || !dir.pop() {
                break;
            }
        }
    }
    rooms.into_iter().min()
}

/// `limit` less `usage` in the cgroup directory `dir`, if it has a limit.
fn room_in(dir: &Path, limit: &str, usage: &str) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    // "max" (v2) or a huge number (v1) means no limit.
    let limit: u64 = read(limit)?.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = read(usage)
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    Some(limit.saturating_sub(usage))
}

/// Bytes for a person: `512.0 MiB`, `3.2 GiB`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683656 kB\nMemFree:        18910652 kB\nMemAvailable:   23124740 kB\n";
        assert_eq!(mem_available(meminfo), Some(23_124_740 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn sizes_read_as_a_person_would() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(36_000_000_000_000), "32.7 TiB");
    }

    /// The estimates stay above what was measured (see [`per_particle`]).
    #[test]
    fn the_estimates_cover_the_measured_peaks() {
        const MIB: u64 = 1 << 20;
        let ring = |p| Mode::Ring(p, Transport::Processes);
        let cases = [
            (4_000_000, Mode::Serial, Algorithm::Cells, 423 * MIB),
            (4_000_000, Mode::Threads(4), Algorithm::Cells, 437 * MIB),
            (4_000_000, ring(4), Algorithm::Cells, 550 * MIB),
            (200_000, Mode::Serial, Algorithm::AllPairs, 22 * MIB),
            (200_000, Mode::Threads(4), Algorithm::AllPairs, 36 * MIB),
            (200_000, ring(4), Algorithm::AllPairs, 32 * MIB),
            (1024, ring(1024), Algorithm::AllPairs, 990 * MIB),
            (256, Mode::Threads(256), Algorithm::AllPairs, 9 * MIB),
        ];
        for (n, mode, algorithm, measured) in cases {
            let estimate = run_bytes(n, mode, algorithm, 0);
            assert!(
                estimate > measured,
                "{n} {mode:?} {algorithm:?}: {estimate}"
            );
            // Conservative, not absurd.
            assert!(
                estimate < 4 * measured.max(BASE),
                "{n} {mode:?} {algorithm:?}: {estimate}"
            );
        }
        assert!(hop_bytes(16_000_000, 4) > 201 * MIB);
        assert!(kernel_bytes(200_000) > 16 * MIB);
    }

    #[test]
    fn a_huge_run_saturates_instead_of_overflowing() {
        let mode = Mode::Ring(usize::MAX, Transport::Processes);
        assert_eq!(
            run_bytes(usize::MAX, mode, Algorithm::Cells, u64::MAX),
            u64::MAX
        );
        assert_eq!(descriptors(usize::MAX), u64::MAX);
    }
}
