//! The demos that share memory between threads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;

/// Hello from two threads: the main thread and one it starts. The order of the two lines
/// is up to the scheduler.
pub fn threads() -> std::io::Result<()> {
    let other = thread::Builder::new()
        .name("Thread-1".to_owned())
        .spawn(say_hello)?;
    say!("hello from MainThread");
    join(other);
    Ok(())
}

fn say_hello() {
    let me = thread::current();
    say!("hello from {}", me.name().unwrap_or("an unnamed thread"));
}

/// How a batch of two-thread increments of a shared counter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceCount {
    /// How many times the pair of threads ran.
    pub tries: u32,
    /// In how many of those the counter ended below 2: an update was lost.
    pub lost: u32,
    /// The counter after the first try.
    pub first: u64,
}

/// The textbook's lost update, `tries` times: two threads each add one to a shared counter
/// by reading it, yielding, and writing back what they read plus one. Each read and write
/// is atomic on its own, so this is no undefined behaviour, just the race the textbook
/// shows: the read and the write are not one step.
pub fn race_lost_updates(tries: u32) -> std::io::Result<RaceCount> {
    race(tries, |counter: &Counter| {
        let count = counter.value.load(Ordering::SeqCst);
        // Invite the other thread to run between the read and the write.
        thread::yield_now();
        counter.value.store(count + 1, Ordering::SeqCst);
    })
}

/// The fixed counter: the read and the write happen under one lock.
pub fn race_by_lock(tries: u32) -> std::io::Result<RaceCount> {
    race(tries, |counter: &Counter| {
        let _held = counter
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counter.value.load(Ordering::SeqCst);
        thread::yield_now();
        counter.value.store(count + 1, Ordering::SeqCst);
    })
}

#[derive(Default)]
struct Counter {
    value: AtomicU64,
    lock: Mutex<()>,
}

fn race(tries: u32, increment: fn(&Counter)) -> std::io::Result<RaceCount> {
    let mut result = RaceCount {
        tries,
        lost: 0,
        first: 0,
    };
    for attempt in 0..tries {
        let counter = Arc::new(Counter::default());
        // Both threads wait here so they start their increments at the same moment.
        let start = Arc::new(Barrier::new(2));
        let other = {
            let counter = Arc::clone(&counter);
            let start = Arc::clone(&start);
            thread::Builder::new().spawn(move || {
                start.wait();
                increment(&counter);
            })?
        };
        start.wait();
        increment(&counter);
        join(other);
        let count = counter.value.load(Ordering::SeqCst);
        if attempt == 0 {
            result.first = count;
        }
        if count < 2 {
            result.lost += 1;
        }
    }
    Ok(result)
}

/// Producer and consumer over a synchronized queue: the consumer prints each item.
pub fn queue() -> std::io::Result<()> {
    let (put, get) = mpsc::sync_channel::<u32>(4);
    let consumer = thread::Builder::new().spawn(move || {
        // The loop ends when the producer drops its end: the queue's end-of-stream.
        for item in get {
            say!("got an item: {item}");
        }
    })?;
    for item in 0..10 {
        if put.send(item).is_err() {
            break;
        }
    }
    drop(put);
    join(consumer);
    Ok(())
}

/// `already_seen` on a set behind a lock: two threads check the same items, and each item
/// is new to exactly one of them.
pub fn lock() -> std::io::Result<()> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let items: u32 = 10;
    let spawn = |name: &str| {
        let seen = Arc::clone(&seen);
        thread::Builder::new().name(name.to_owned()).spawn(move || {
            (0..items)
                .filter(|&item| !already_seen(&seen, item))
                .collect::<Vec<_>>()
        })
    };
    let first = spawn("Thread-1")?;
    let second = spawn("Thread-2")?;
    let first_new = first.join().unwrap_or_default();
    let second_new = second.join().unwrap_or_default();
    say!("Thread-1 saw first: {first_new:?}");
    say!("Thread-2 saw first: {second_new:?}");
    let mut all: Vec<u32> = first_new.iter().chain(&second_new).copied().collect();
    all.sort_unstable();
    let checks = 2 * items;
    say!(
        "already_seen: {checks} checks of {items} items, {} new, {} already seen",
        all.len(),
        checks as usize - all.len()
    );
    Ok(())
}

/// The textbook's `already_seen`: is `item` in the set? Adds it if not. The lock makes the
/// test and the insert one step.
fn already_seen(seen: &Mutex<HashSet<u32>>, item: u32) -> bool {
    let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    !seen.insert(item)
}

/// The two counters in phases: each thread reads the other's counter, waits at a barrier
/// until both have read, writes its own, and waits until both have written.
pub fn barrier() -> std::io::Result<()> {
    let steps = 10;
    let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let barrier = Arc::new(Barrier::new(2));
    let other = {
        let counters = Arc::clone(&counters);
        let barrier = Arc::clone(&barrier);
        thread::Builder::new().spawn(move || count(&counters, &barrier, 1, steps))?
    };
    count(&counters, &barrier, 0, steps);
    join(other);
    let values = counters.each_ref().map(|c| c.load(Ordering::SeqCst));
    say!("counters: {values:?}");
    Ok(())
}

fn count(counters: &[AtomicU64; 2], barrier: &Barrier, me: usize, steps: u32) {
    for _ in 0..steps {
        let other = counters[1 - me].load(Ordering::SeqCst);
        barrier.wait(); // every read is done
        counters[me].store(other + 1, Ordering::SeqCst);
        barrier.wait(); // every write is done
    }
}

/// Joins a demo thread. A demo thread only prints, so a panic there has already said why
/// on stderr; the demo goes on.
fn join<T>(handle: thread::JoinHandle<T>) {
    let _ = handle.join();
}
