//! Run-queue latency against waits the test causes and measures itself.
//!
//! A normal thread spins on one CPU, reading the clock; a SCHED_FIFO thread pinned to the same
//! CPU is woken and spins for a set time. The normal thread is preempted (on its return to user
//! space, the path that is a plain schedule() with the task still runnable) and waits on the run
//! queue for exactly as long as the gap it sees between two clock reads. Then a sleeping thread on
//! that CPU is woken during a hold and measures how long after its wake-up it ran. Each such wait
//! must appear in the sensor's histogram, in its bucket.
//!
//! Other load on the machine may lengthen a wait (once the hold ends, the spinner can still queue
//! behind other tasks). That does not make the test fail: a wait is matched to its hold by time,
//! whatever its length. The wake-up is sent by the real-time thread itself, 1 ms into its hold, so
//! no other thread's scheduling decides whether it falls inside the hold.
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
/// How far into such a hold the real-time thread wakes it.
const WAKE_AFTER: Duration = Duration::from_millis(1);

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

/// A thread that cannot pin itself or take SCHED_FIFO panics (its message is printed); this ends
/// the test instead of waiting for it forever.
fn wait_ready(ready: &mpsc::Receiver<()>) {
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("a test thread did not start on its CPU (see its panic above)");
}

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

pub fn preempted_and_woken_waits_land_in_their_buckets() {
    let mut collector = kpo_agent::collect::Collector::new(
        sensors(true),
        std::path::PathBuf::from("/proc"),
        kpo_agent::config::MAX_WINDOW,
    );
    let before = collector.sample().bpf.expect("eBPF loaded").runq_hist;

    // Each thread says when it is on its CPU (and the real-time one in its class).
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    // (start, end) of every stretch longer than 1 ms in which the spinner did not run.
    let gaps = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
    let spinner = {
        let (stop, gaps, ready) = (stop.clone(), gaps.clone(), ready_tx.clone());
        std::thread::spawn(move || {
            pin(CPU);
            ready.send(()).unwrap();
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now - last > Duration::from_millis(1) {
                    gaps.lock().unwrap().push((last, now));
                }
                last = now;
            }
        })
    };
    // A hold, and the channel on which to send a wake-up 1 ms into it, if any.
    let (tx, rx) = mpsc::channel::<(Duration, Option<mpsc::Sender<Instant>>)>();
    // (start, end) of each hold, as the real-time thread saw it.
    let (done_tx, done_rx) = mpsc::channel::<(Instant, Instant)>();
    let realtime_ready = ready_tx.clone();
    let realtime = std::thread::spawn(move || {
        pin(CPU);
        let param = libc::sched_param { sched_priority: 10 };
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        assert_eq!(rc, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
        realtime_ready.send(()).unwrap();
        for (hold, wake) in rx {
            let start = Instant::now();
            if let Some(wake) = wake {
                spin_for(WAKE_AFTER);
                wake.send(Instant::now()).unwrap();
            }
            spin_for(hold.saturating_sub(start.elapsed()));
            done_tx.send((start, Instant::now())).unwrap();
        }
    });
    for _ in 0..2 {
        wait_ready(&ready_rx);
    }
    // Let the spinner settle on its CPU before the first hold.
    std::thread::sleep(Duration::from_millis(50));
    let mut holds = Vec::new();
    for ms in HOLDS_MS {
        tx.send((Duration::from_millis(ms), None)).unwrap();
        holds.push((ms, done_rx.recv().unwrap()));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();

    // The wake-up path: a sleeping thread on the same CPU is woken while the real-time thread
    // holds it; from the wake-up to its first instruction it waits on the run queue.
    let (wake_tx, wake_rx) = mpsc::channel::<Instant>();
    let (waited_tx, waited_rx) = mpsc::channel::<(Instant, Duration)>();
    let sleeper = std::thread::spawn(move || {
        pin(CPU);
        ready_tx.send(()).unwrap();
        for sent in wake_rx {
            waited_tx.send((sent, sent.elapsed())).unwrap();
        }
    });
    wait_ready(&ready_rx);
    // Time for the sleeper to block on its channel.
    std::thread::sleep(Duration::from_millis(20));
    // Per wake hold: the wait, and how long the hold still ran after the wake-up was sent.
    let mut wake_waits = Vec::new();
    for ms in WAKE_HOLDS_MS {
        tx.send((Duration::from_millis(ms), Some(wake_tx.clone())))
            .unwrap();
        let (_, end) = done_rx.recv().unwrap();
        let (sent, wait) = waited_rx.recv().unwrap();
        wake_waits.push((ms, wait, end - sent));
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(wake_tx);
    sleeper.join().unwrap();
    drop(tx);
    realtime.join().unwrap();
    let after = collector.sample().bpf.expect("eBPF loaded").runq_hist;

    let hist: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a - b)
        .collect();
    let gaps = gaps.lock().unwrap().clone();
    // Every hold preempted the spinner: the gap that spans the hold is that run-queue wait, however
    // long other tasks kept the spinner waiting after it. Other gaps (interrupts, other tasks) are
    // not checked.
    for (ms, (start, end)) in holds {
        let (from, to) = gaps
            .iter()
            .copied()
            .find(|(from, to)| *from <= start && *to >= end)
            .unwrap_or_else(|| {
                let lengths: Vec<Duration> = gaps.iter().map(|(f, t)| *t - *f).collect();
                panic!("the spinner ran during the {ms} ms hold: its gaps were {lengths:?}")
            });
        assert_in_histogram(&hist, to - from, "preemption");
    }
    for (ms, wait, held_for) in wake_waits {
        assert!(
            wait >= held_for,
            "woken {held_for:?} before the end of a {ms} ms hold, it ran after only {wait:?}: \
             not held back"
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
