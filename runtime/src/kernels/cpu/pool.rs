//! A persistent thread pool with a low-overhead parallel-for, built for decode: the forward
//! pass calls [`ThreadPool::run`] a couple of hundred times per token, so workers must not be
//! spawned per call and must wake quickly. Idle workers spin briefly (the next call usually
//! comes within microseconds) and then park so an idle pool costs no CPU.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker waits for the next job before parking. Decode issues matmuls back
/// to back with only small element-wise ops between them, so a short wait catches nearly every
/// call.
const SPIN: Duration = Duration::from_micros(200);
/// The part of [`SPIN`] spent busy-spinning; the rest yields between checks, so that on a
/// loaded machine a waiting worker gives its core to a thread with work (often the caller).
const BUSY_SPIN: Duration = Duration::from_micros(20);
/// Spin iterations (each ~10-50 ns) the caller waits for workers before it starts yielding.
const CALLER_SPINS: u32 = 1 << 10;

/// The job being run: a lifetime-erased pointer to the caller's closure.
type Job = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Bumped (SeqCst) to publish a new job or a shutdown to the workers.
    generation: AtomicU64,
    /// The current job. Written only by the thread holding `run_lock` while every worker is
    /// idle (`active == 0`), read by workers after they observe the new generation.
    job: UnsafeCell<Option<Job>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// Workers that have not yet finished the current generation.
    active: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// One flag per worker: set while it is parked (or about to park).
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is only written while no worker reads it (see the field docs and `run`), and the
// closure it points to is `Sync`; every other field is atomic.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under the `run` protocol.
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread, executing parallel-for jobs.
///
/// `ThreadPool::new(n)` gives `n` threads of parallelism: `n - 1` workers and the caller,
/// which always takes part in [`run`](Self::run).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<(Thread, JoinHandle<()>)>,
    /// Serialises `run` calls from different threads; a nested `run` from inside a task finds
    /// it held and runs serially instead of deadlocking.
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool with `n_threads` threads of parallelism (values below 1 mean 1).
    ///
    /// # Panics
    /// If the operating system refuses to create a thread.
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_workers = n_threads.max(1) - 1;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
        });
        let workers = (0..n_workers)
            .map(|i| {
                let s = Arc::clone(&shared);
                let handle = thread::Builder::new()
                    .name(format!("edgeact-worker-{i}"))
                    .spawn(move || worker_loop(&s, i))
                    .expect("cannot spawn a thread-pool worker");
                (handle.thread().clone(), handle)
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads of parallelism (workers plus the caller).
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n_tasks`, spread over the pool's threads (tasks are
    /// claimed dynamically, so uneven tasks balance out), and returns when all are done.
    ///
    /// # Panics
    /// Re-raises (as a new panic) if any task panicked.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _guard = match self.run_lock.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // Nested call from inside a task, or another thread is using the pool.
            Err(TryLockError::WouldBlock) => {
                (0..n_tasks).for_each(f);
                return;
            }
        };
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: we do not return
        // until `active` is 0, i.e. until no worker can touch the pointer any more.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        // SAFETY: we hold `run_lock` and the previous run ended with `active == 0`, so no worker
        // reads `job` now.
        unsafe { *s.job.get() = Some(job) };
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.active.store(self.workers.len(), Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for (i, (t, _)) in self.workers.iter().enumerate() {
            if s.sleeping[i].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        let caller = catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f)));
        // Wait for the workers; they only need to finish tasks already claimed. Spin only
        // briefly: a worker still busy after that has usually been preempted (other processes
        // want the cores), and yielding lets the scheduler run it, perhaps on this core.
        let mut spins = 0u32;
        while s.active.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < CALLER_SPINS {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a thread-pool task panicked");
        }
    }
}

impl Default for ThreadPool {
    /// A pool with one thread per physical core.
    fn default() -> Self {
        ThreadPool::new(physical_cores())
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads())
            .finish()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for (t, _) in &self.workers {
            t.unpark();
        }
        for (_, h) in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn claim_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker_loop(s: &Shared, me: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin first, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let waited = start.elapsed();
            if waited < BUSY_SPIN {
                continue;
            }
            if waited < SPIN {
                thread::yield_now();
                continue;
            }
            // Announce we are going to sleep, then re-check: `run` bumps the generation before
            // reading the flag (both SeqCst), so either we see the bump or it sees the flag and
            // unparks us (an unpark before park makes park return at once).
            s.sleeping[me].store(true, Ordering::SeqCst);
            if s.generation.load(Ordering::SeqCst) == seen {
                thread::park();
            }
            s.sleeping[me].store(false, Ordering::SeqCst);
        }
        seen = s.generation.load(Ordering::Acquire);
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the generation bump (SeqCst, after the write) happens-before this read, and
        // `run` does not change or drop the job until we decrement `active` below.
        let job = unsafe { *s.job.get() };
        if let Some(job) = job {
            // SAFETY: the closure outlives this use (see above).
            let f: &(dyn Fn(usize) + Sync) = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Physical CPU cores (the default thread count: hyper-threads share one core's SIMD units,
/// so they do not speed up these kernels). Falls back to the logical count.
pub fn physical_cores() -> usize {
    let logical = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    #[cfg(target_os = "linux")]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let mut cores = std::collections::HashSet::new();
        let mut phys = String::new();
        for line in info.lines() {
            let mut kv = line.splitn(2, ':').map(str::trim);
            match (kv.next(), kv.next()) {
                (Some("physical id"), Some(v)) => phys = v.to_string(),
                (Some("core id"), Some(v)) => {
                    cores.insert((phys.clone(), v.to_string()));
                }
                _ => {}
            }
        }
        if !cores.is_empty() {
            // A container may be limited to fewer CPUs than the host has cores.
            return cores.len().min(logical);
        }
    }
    logical
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn runs_every_task_once() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 100, 1000] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "threads {threads} n {n}"
                );
            }
        }
    }

    #[test]
    fn many_small_calls_and_parking() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.run(4, &|i| {
                total.fetch_add(i + 1, Ordering::Relaxed);
            });
            if round == 1000 {
                // Long enough for the workers to park; the next call must still wake them.
                thread::sleep(SPIN * 5);
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 2000 * 10);
    }

    #[test]
    fn nested_run_does_not_deadlock() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|j| {
                total.fetch_add(j, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 3);
    }

    #[test]
    fn task_panic_is_reported_and_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(64, &|i| {
                if i == 40 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let total = AtomicUsize::new(0);
        pool.run(10, &|_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn physical_cores_is_positive() {
        assert!(physical_cores() >= 1);
    }
}
