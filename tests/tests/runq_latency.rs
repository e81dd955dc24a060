//! Run-queue latency against waits the test causes and measures itself.
//!
//! A normal thread spins on one CPU, reading the clock; a SCHED_FIFO thread pinned to the same
//! CPU is woken and spins for a set time. The normal thread is preempted (on its return to user
//! space, the path that is a plain schedule() with the task still runnable) and waits on the run
//! queue for exactly as long as the gap it sees between two clock reads. Then a sleeping thread on
//! that CPU is woken during a hold and measures how long after its wake-up it ran. Each such wait
//! must appear in the sensor's histogram, in its bucket.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use kpo_common::{bucket_lower_ns, bucket_of};

use crate::common::sensors;

const CPU: usize = 1;
/// How long the real-time thread holds the CPU each time, in ms.
const HOLDS_MS: [u64; 4] = [3, 6, 12, 24];
/// Holds during which a sleeping thread is woken.
const WAKE_HOLDS_MS: [u64; 3] = [5, 10, 20];

fn pin(cpu: usize) {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % ncpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

pub fn preempted_and_woken_waits_land_in_their_buckets() {
    let mut collector =
        kpo_agent::collect::Collector::new(sensors(true), std::path::PathBuf::from("/proc"));
    let before = collector.sample().bpf.expect("eBPF loaded").runq_hist;

    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let spinner = {
        let (stop, gaps) = (stop.clone(), gaps.clone());
        std::thread::spawn(move || {
            pin(CPU);
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let gap = now - last;
                if gap > Duration::from_millis(1) {
                    gaps.lock().unwrap().push(gap);
                }
                last = now;
            }
        })
    };
    let (tx, rx) = mpsc::channel::<Duration>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let realtime = std::thread::spawn(move || {
        pin(CPU);
        let param = libc::sched_param { sched_priority: 10 };
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        assert_eq!(rc, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
        for hold in rx {
            spin_for(hold);
            done_tx.send(()).unwrap();
        }
    });
    // Let the spinner settle on its CPU before the first hold.
    std::thread::sleep(Duration::from_millis(50));
    for ms in HOLDS_MS {
        tx.send(Duration::from_millis(ms)).unwrap();
        done_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();

    // The wake-up path: a sleeping thread on the same CPU is woken while the real-time thread
    // holds it; from the wake-up to its first instruction it waits on the run queue.
    let (wake_tx, wake_rx) = mpsc::channel::<Instant>();
    let sleeper = std::thread::spawn(move || {
        pin(CPU);
        wake_rx
            .iter()
            .map(|sent| sent.elapsed())
            .collect::<Vec<Duration>>()
    });
    std::thread::sleep(Duration::from_millis(20));
    for ms in WAKE_HOLDS_MS {
        tx.send(Duration::from_millis(ms)).unwrap();
        // Wake the sleeper once the real-time thread is surely spinning.
        std::thread::sleep(Duration::from_millis(1));
        wake_tx.send(Instant::now()).unwrap();
        done_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(wake_tx);
    let wake_waits = sleeper.join().unwrap();
    drop(tx);
    realtime.join().unwrap();
    let after = collector.sample().bpf.expect("eBPF loaded").runq_hist;

    let hist: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a - b)
        .collect();
    let gaps = gaps.lock().unwrap().clone();
    // Every hold preempted the spinner once; other gaps (interrupts, other tasks) may add more.
    for ms in HOLDS_MS {
        let hold = Duration::from_millis(ms);
        let gap = gaps
            .iter()
            .copied()
            .filter(|g| *g >= hold && *g < hold + Duration::from_millis(2))
            .min()
            .unwrap_or_else(|| panic!("no gap of about {ms} ms seen by the spinner: {gaps:?}"));
        assert_in_histogram(&hist, gap, "preemption");
    }
    assert_eq!(wake_waits.len(), WAKE_HOLDS_MS.len());
    for (wait, ms) in wake_waits.into_iter().zip(WAKE_HOLDS_MS) {
        // Woken 1 ms into the hold, it waits about the rest of it.
        assert!(
            wait >= Duration::from_millis(ms - 2),
            "woken during a {ms} ms hold, it ran after only {wait:?}: not held back"
        );
        assert_in_histogram(&hist, wait, "wake-up");
    }
}

/// The wait's bucket, or the one below when the measured time sits near a bucket edge (the
/// user-space measurement spans the wait plus the switches around it), holds a sample.
fn assert_in_histogram(hist: &[u64], wait: Duration, path: &str) {
    let bucket = bucket_of(wait.as_nanos() as u64);
    let seen: u64 = hist[bucket.saturating_sub(1)..=bucket].iter().sum();
    assert!(
        seen >= 1,
        "a {wait:?} run-queue wait ({path}) is missing: buckets from {} ns to {} ns hold nothing; \
         histogram non-zero buckets: {:?}",
        bucket_lower_ns(bucket.saturating_sub(1)),
        bucket_lower_ns(bucket + 1),
        hist.iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, c)| (bucket_lower_ns(b), *c))
            .collect::<Vec<_>>()
    );
}
