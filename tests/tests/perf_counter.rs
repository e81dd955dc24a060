//! The perf_event_open path of the power-PMU meter, checked with a software event: this machine
//! has no power PMU, but the attribute layout, the open and the 64-bit count read are the same.
use std::{
    fs::File,
    io::Read,
    time::{Duration, Instant},
};

use kpo_agent::energy::perf_power::perf_event_open;

const PERF_TYPE_SOFTWARE: u32 = 1;
/// Counts nanoseconds of wall time on the CPU while the event is enabled.
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;

fn count(file: &mut File) -> u64 {
    let mut buf = [0u8; 8];
    file.read_exact(&mut buf).expect("read the 64-bit count");
    u64::from_ne_bytes(buf)
}

pub fn software_counter_opens_and_counts() {
    let fd = perf_event_open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, 0)
        .expect("perf_event_open of cpu-clock on CPU 0");
    let mut file = File::from(fd);
    let started = Instant::now();
    let before = count(&mut file);
    std::thread::sleep(Duration::from_millis(100));
    let after = count(&mut file);
    let elapsed = started.elapsed().as_nanos() as u64;
    let counted = after - before;
    // The counter runs the whole time between the reads: it counts the elapsed time, within 10%.
    assert!(
        counted.abs_diff(elapsed) * 10 <= elapsed,
        "cpu-clock counted {counted} ns over {elapsed} ns"
    );
}
