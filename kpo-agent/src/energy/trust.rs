//! A measured energy counter is trusted only once it has been seen to advance.
//!
//! Machines of one kind differ underneath: one exposes a perf `power` PMU whose only event,
//! `energy-psys`, the hypervisor never advances (it reads 0 J forever); some VMs expose a powercap
//! tree that reads 0. Reporting those as measurements would feed the optimizer zeros labelled as
//! truth. So, before a measured source is chosen, the CPU does known work ([`busy_work`]) and the
//! counter must show energy over it; every later reading is checked the same way.
//!
//! A reading is refused when:
//! - it is zero: the counter did not advance, though a running package always draws power;
//! - it implies more than [`MAX_WATTS_PER_PACKAGE`] per package: the counter jumped, or went
//!   backwards outside a wrap (RAPL takes a decrease for a wrap, so a reset shows up as an
//!   enormous delta; the perf PMU's 64-bit count turns one into a huge wrapping difference);
//! - it is negative or not a number.
use std::time::{Duration, Instant};

/// The most power one CPU package (or, for `psys`, one platform) can draw. The largest server
/// packages are rated around 500 W TDP and briefly exceed it; a figure above 1 kW per package is
/// a broken counter, not a hot CPU.
pub const MAX_WATTS_PER_PACKAGE: f64 = 1000.0;

/// How long the CPU works while a counter is checked at start-up. RAPL counters update about
/// every millisecond, so 100 ms of work moves a live one by thousands of its units.
pub const PROBE_WORK: Duration = Duration::from_millis(100);

/// Why a reading is not a measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "the counter did not advance over {seconds:.3} s while the CPU worked (some hypervisors \
         expose energy counters that they never update)"
    )]
    Frozen { seconds: f64 },
    #[error(
        "the counter reports {watts:.0} W over {seconds:.3} s, above the ceiling of {ceiling:.0} W \
         ({packages} package(s) at most {MAX_WATTS_PER_PACKAGE} W each): it jumped, or went \
         backwards outside a wrap"
    )]
    Impossible {
        watts: f64,
        seconds: f64,
        ceiling: f64,
        packages: usize,
    },
    #[error("the counter reports a negative or non-finite energy ({joules} J)")]
    Invalid { joules: f64 },
}

/// Checks `joules` measured over `seconds` on a meter covering `packages` packages.
pub fn check(joules: f64, seconds: f64, packages: usize) -> Result<(), Untrusted> {
    if !joules.is_finite() || joules < 0.0 {
        return Err(Untrusted::Invalid { joules });
    }
    if joules == 0.0 {
        return Err(Untrusted::Frozen { seconds });
    }
    let packages = packages.max(1);
    let ceiling = MAX_WATTS_PER_PACKAGE * packages as f64;
    // A very short interval cannot be judged by power: allow one millisecond's worth at least.
    let watts = joules / seconds.max(1e-3);
    if watts > ceiling {
        return Err(Untrusted::Impossible {
            watts,
            seconds,
            ceiling,
            packages,
        });
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
        assert_eq!(check(0.0, 0.1, 1), Err(Untrusted::Frozen { seconds: 0.1 }));
        assert!(matches!(
            check(1e6, 0.1, 2),
            Err(Untrusted::Impossible { packages: 2, .. })
        ));
        assert!(matches!(
            check(-1.0, 0.1, 1),
            Err(Untrusted::Invalid { .. })
        ));
        assert!(matches!(
            check(f64::NAN, 0.1, 1),
            Err(Untrusted::Invalid { .. })
        ));
        // 2 J over 0.1 s is 20 W: a live package.
        assert_eq!(check(2.0, 0.1, 1), Ok(()));
        // Right at the ceiling is still possible; above it is not.
        assert_eq!(check(100.0, 0.1, 1), Ok(()));
        assert!(check(100.1, 0.1, 1).is_err());
        assert_eq!(check(150.0, 0.1, 2), Ok(()));
        let text = check(0.0, 0.1, 1).unwrap_err().to_string();
        assert!(text.contains("did not advance"), "{text}");
    }

    #[test]
    fn busy_work_lasts_at_least_its_duration() {
        let started = Instant::now();
        busy_work(Duration::from_millis(5));
        assert!(started.elapsed() >= Duration::from_millis(5));
    }
}
