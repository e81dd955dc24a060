//! A measured energy counter is trusted only once it has been seen to advance.
//!
//! Machines of one kind differ underneath: one exposes a perf `power` PMU whose only event,
//! `energy-psys`, the hypervisor never advances (it reads 0 J forever); some VMs expose a powercap
//! tree that reads 0. Reporting those as measurements would feed the optimizer zeros labelled as
//! truth. So, before a measured source is chosen, the CPU does known work ([`busy_work`]) and the
//! counter must show energy over it; later readings are checked the same way, counter by counter
//! ([`super::CheckedMeter`]).
//!
//! A counter's reading is refused when:
//! - it is zero over an interval of at least [`MIN_JUDGED`]: the counter did not advance, though a
//!   running package always draws power ([`check_moved`]); or it stood still, read after read,
//!   for [`MAX_STILL`] inside the interval: it stopped partway (checked by the meter);
//! - it implies more than [`MAX_WATTS_PER_PACKAGE`]: the counter jumped, or went backwards outside
//!   a wrap (a decrease is taken for a wrap, so a reset shows up as a step of up to one range:
//!   powercap's reader does that, and so does the kernel for the perf PMU's 64-bit count, which
//!   it keeps from the same 32-bit counters) ([`check_possible`]);
//! - it is negative or not a number.
use std::time::{Duration, Instant};

/// The most power one CPU package (or, for `psys`, one platform) can draw. The largest server
/// packages are rated around 500 W TDP and briefly exceed it; a figure above 1 kW per package is
/// a broken counter, not a hot CPU.
pub const MAX_WATTS_PER_PACKAGE: f64 = 1000.0;

/// The shortest interval over which a counter that did not move is judged frozen. RAPL counters
/// update about every millisecond; a read right after another (the last window at shutdown) may
/// see none of those updates.
pub const MIN_JUDGED: Duration = Duration::from_millis(5);

/// The longest a counter may stand still between two reads inside a window that moved. RAPL
/// counters update about every millisecond, and a perf power PMU reads them at each read: one still
/// for half a second has stopped, and the energy of the window it stopped in is short by that
/// stretch, though the window's total moved. Half the default tick, not a whole one: the agent's
/// ticks come a little early or late, and a counter still over one tick of 0.999 s was taken
/// for a live one (story AI, session 53).
pub const MAX_STILL: Duration = Duration::from_millis(500);

/// How long the CPU works while a counter is checked at start-up. RAPL counters update about
/// every millisecond, so 100 ms of work moves a live one by thousands of its units.
pub const PROBE_WORK: Duration = Duration::from_millis(100);

/// Why a reading is not a measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "the counter did not advance over {seconds:.3} s, though a running package always draws \
         power (some hypervisors expose energy counters that they never update)"
    )]
    Frozen { seconds: f64 },
    #[error(
        "the counter reports {watts:.0} W over {seconds:.3} s, above the ceiling of \
         {ceiling:.0} W one package can draw: it jumped, or went backwards outside a wrap"
    )]
    Impossible {
        watts: f64,
        seconds: f64,
        ceiling: f64,
    },
    #[error("the counter reports a negative or non-finite energy ({joules} J)")]
    Invalid { joules: f64 },
}

/// Checks one counter's `joules` over `seconds`: possible, and moved.
pub fn check(joules: f64, seconds: f64) -> Result<(), Untrusted> {
    check_possible(joules, seconds)?;
    check_moved(joules, seconds)
}

/// Refuses a negative or non-finite reading, or more than one package can draw over `seconds`.
pub fn check_possible(joules: f64, seconds: f64) -> Result<(), Untrusted> {
    if !joules.is_finite() || joules < 0.0 {
        return Err(Untrusted::Invalid { joules });
    }
    let ceiling = MAX_WATTS_PER_PACKAGE;
    // A very short interval cannot be judged by power: allow one millisecond's worth at least.
    let watts = joules / seconds.max(1e-3);
    if watts > ceiling {
        return Err(Untrusted::Impossible {
            watts,
            seconds,
            ceiling,
        });
    }
    Ok(())
}

/// Refuses a counter that did not move over `seconds` (when that is long enough to judge).
pub fn check_moved(joules: f64, seconds: f64) -> Result<(), Untrusted> {
    if joules == 0.0 && seconds >= MIN_JUDGED.as_secs_f64() {
        return Err(Untrusted::Frozen { seconds });
    }
    Ok(())
}

/// Keeps one CPU busy for `duration`: the known work during which a live counter must advance.
pub fn busy_work(duration: Duration) {
    let started = Instant::now();
    let mut x = 0u64;
    while started.elapsed() < duration {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    std::hint::black_box(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_huge_and_negative_readings_are_refused() {
        assert_eq!(check(0.0, 0.1), Err(Untrusted::Frozen { seconds: 0.1 }));
        assert!(matches!(
            check(1e6, 0.1),
            Err(Untrusted::Impossible { ceiling, .. }) if ceiling == 1000.0
        ));
        assert!(matches!(check(-1.0, 0.1), Err(Untrusted::Invalid { .. })));
        assert!(matches!(
            check(f64::NAN, 0.1),
            Err(Untrusted::Invalid { .. })
        ));
        // 2 J over 0.1 s is 20 W: a live package.
        assert_eq!(check(2.0, 0.1), Ok(()));
        // Right at the ceiling is still possible; above it is not.
        assert_eq!(check(100.0, 0.1), Ok(()));
        assert!(check(100.1, 0.1).is_err());
        let text = check(0.0, 0.1).unwrap_err().to_string();
        assert!(text.contains("did not advance"), "{text}");
        // Too short to judge a counter that did not move: one read right after another.
        assert_eq!(check(0.0, 0.004), Ok(()));
        assert_eq!(check(0.0, 0.005), Err(Untrusted::Frozen { seconds: 0.005 }));
        // A short interval is judged as one millisecond: 1 kW allows 1 J at once, not more.
        assert!(check_possible(1.01, 1e-6).is_err());
        assert_eq!(check_possible(1.0, 1e-6), Ok(()));
    }

    #[test]
    fn busy_work_lasts_at_least_its_duration() {
        let started = Instant::now();
        busy_work(Duration::from_millis(5));
        assert!(started.elapsed() >= Duration::from_millis(5));
    }
}
