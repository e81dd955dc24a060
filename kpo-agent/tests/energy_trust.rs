//! A measured energy source is trusted only once it has been seen to advance: powercap RAPL trees
//! that advance, stay frozen, jump backwards, or wrap, and what `choose_meter` does with each.
//! (The perf PMU's kinds are checked with real kernel counters in the root tests' `energy_trust`.)

use std::path::Path;
use std::time::Duration;

use kpo_agent::energy::estimate::PowerModel;
use kpo_agent::energy::{choose_meter_with, trust, EnergyError, EnergySource, MeterChoice};

/// How often the agent reads the meter by default (its tick).
const TICK: Duration = Duration::from_secs(1);

/// `choose_meter_with` for a machine under `sys` and `proc_dir`, the CPU's work being `work`.
fn choose(sys: &Path, proc_dir: &Path, tick: Duration, work: &mut dyn FnMut()) -> MeterChoice {
    choose_meter_with(sys, proc_dir, PowerModel::default(), tick, work).unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A sysfs-like tree with one RAPL package zone at `start` µJ, and a /proc with a `stat`.
fn machine(start: u64, max_range: u64) -> (tempfile::TempDir, tempfile::TempDir) {
    let sys = tempfile::tempdir().unwrap();
    let z = sys.path().join("class/powercap/intel-rapl:0");
    write(&z.join("name"), "package-0\n");
    write(&z.join("energy_uj"), &format!("{start}\n"));
    write(&z.join("max_energy_range_uj"), &format!("{max_range}\n"));
    let proc_dir = tempfile::tempdir().unwrap();
    write(
        &proc_dir.path().join("stat"),
        "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 10 0 10 100 0 0 0 0 0 0\n",
    );
    (sys, proc_dir)
}

fn energy_file(sys: &Path) -> std::path::PathBuf {
    sys.join("class/powercap/intel-rapl:0/energy_uj")
}

// Readings here come within microseconds of each other; the trust check judges intervals under
// 1 ms as 1 ms, so these steps (at most 0.3 J) stay below the 1 kW ceiling whatever the timing.

/// A machine whose RAPL counter starts at 0 and moves 0.3 J while the CPU works, and RAPL
/// chosen on it: its trees (kept alive), the counter's file, the choice.
fn rapl_chosen_at_0_3_joules() -> (
    (tempfile::TempDir, tempfile::TempDir),
    std::path::PathBuf,
    MeterChoice,
) {
    let (sys, proc_dir) = machine(0, 1 << 40);
    let file = energy_file(sys.path());
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "300000\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    ((sys, proc_dir), file, choice)
}

/// The skipped reasons by source, in order.
fn skipped(choice: &MeterChoice) -> Vec<(EnergySource, String)> {
    choice.skipped.clone()
}

#[test]
fn an_advancing_counter_is_chosen_and_read() {
    let (sys, proc_dir) = machine(1_000, 1 << 40);
    let file = energy_file(sys.path());
    let mut choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "51000\n") // 0.05 J while the CPU worked
    });
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    assert!(skipped(&choice).is_empty());
    assert_eq!(choice.meter.domains(), vec!["package-0".to_string()]);
    // Later readings are the counter's progress since the check.
    write(&file, "251000\n");
    let reading = choice.meter.read().unwrap();
    assert_eq!(reading.joules, 0.2);
    assert_eq!(reading.source, EnergySource::Rapl);
}

#[test]
fn a_frozen_counter_is_set_aside_with_the_reason() {
    let (sys, proc_dir) = machine(123_456, 1 << 40);
    // The CPU works, but the counter never moves (a VM's powercap tree that reads a constant).
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {});
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let skipped = skipped(&choice);
    assert_eq!(skipped[0].0, EnergySource::Rapl);
    assert!(
        skipped[0].1.contains("set aside") && skipped[0].1.contains("did not advance"),
        "{skipped:?}"
    );
    // The next source in the order was tried, and says why it is not used either.
    assert_eq!(skipped[1].0, EnergySource::PerfPower);
    assert!(skipped[1].1.contains("no perf power PMU"), "{skipped:?}");
    assert_eq!(skipped.len(), 2);
}

#[test]
fn a_counter_reading_zero_is_set_aside() {
    // Some VMs expose a powercap tree whose counter is 0 and stays 0.
    let (sys, proc_dir) = machine(0, 1 << 40);
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {});
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    assert!(choice.skipped[0].1.contains("did not advance"));
}

/// When the estimate cannot open either, the error keeps the reasons the measured sources were
/// skipped: those are what an operator can fix.
#[test]
fn no_source_at_all_keeps_why_the_measured_ones_were_skipped() {
    let (sys, proc_dir) = machine(123_456, 1 << 40);
    std::fs::remove_file(proc_dir.path().join("stat")).unwrap();
    let no = match choose_meter_with(
        sys.path(),
        proc_dir.path(),
        PowerModel::default(),
        TICK,
        &mut || {},
    ) {
        Ok(c) => panic!("chose {}", c.meter.source()),
        Err(no) => no,
    };
    assert!(no.error.to_string().contains("stat"), "{}", no.error);
    assert_eq!(no.skipped[0].0, EnergySource::Rapl);
    assert!(
        no.skipped[0].1.contains("did not advance"),
        "{:?}",
        no.skipped
    );
    assert_eq!(no.skipped[1].0, EnergySource::PerfPower);
    assert_eq!(no.skipped.len(), 2);
}

/// A zone whose `max_energy_range_uj` is 0 has no known wrap point: every reading could be a
/// reset taken for a wrap.
#[test]
fn a_zone_without_a_wrap_range_is_set_aside() {
    let (sys, proc_dir) = machine(1_000, 0);
    let file = energy_file(sys.path());
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "51000\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    assert_eq!(choice.skipped[0].0, EnergySource::Rapl);
    assert!(
        choice.skipped[0].1.contains("max_energy_range_uj")
            && choice.skipped[0].1.contains("wrap point is unknown"),
        "{:?}",
        choice.skipped
    );
}

#[test]
fn a_backward_jump_that_is_no_wrap_is_set_aside() {
    // From 5 kJ down to 1 kJ with a range of 1.1 TJ: RAPL would take it for a wrap of about 1 TJ
    // in a moment, far above any package's power.
    let (sys, proc_dir) = machine(5_000_000_000, 1 << 40);
    let file = energy_file(sys.path());
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "1000000000\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = &choice.skipped[0].1;
    assert!(reason.contains("went backwards outside a wrap"), "{reason}");
    assert!(
        reason.contains("package-0: ") && reason.contains("ceiling of 1000 W one package can draw"),
        "{reason}"
    );
}

#[test]
fn a_real_wrap_is_energy_not_a_jump() {
    let max = 262_143_328_850u64; // a real package zone's max_energy_range_uj
    let (sys, proc_dir) = machine(max - 100_000, max);
    let file = energy_file(sys.path());
    let mut choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "200000\n") // wrapped: 0.1 J to the top, then 0.2 J
    });
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    write(&file, "400000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.2);
}

#[test]
fn a_counter_that_stops_later_is_not_reported_as_energy() {
    let (_trees, file, mut choice) = rapl_chosen_at_0_3_joules();
    // The counter stops moving after the check: over an interval long enough to judge, the
    // reading is refused, not 0 J.
    std::thread::sleep(trust::MIN_JUDGED);
    let err = choice.meter.read().unwrap_err();
    assert!(
        matches!(
            err,
            EnergyError::Untrusted {
                meter: EnergySource::Rapl,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("did not advance"), "{err}");
    // And once it moves again, readings resume.
    write(&file, "500000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.2);
}

/// A counter that stops partway through a window leaves it short of that stretch's energy
/// though its total moved: half a second still, read after read, refuses the window.
#[test]
fn a_counter_that_stops_partway_through_a_window_refuses_it() {
    let (_trees, file, mut choice) = rapl_chosen_at_0_3_joules();
    write(&file, "400000\n");
    choice.meter.sample();
    // Still for half a second, read at its end (a tick): then it moves again before the window
    // ends.
    std::thread::sleep(trust::MAX_STILL);
    choice.meter.sample();
    write(&file, "500000\n");
    let err = choice.meter.read().unwrap_err();
    assert!(
        err.to_string().contains("did not advance over 0.5"),
        "{err}"
    );
    // A window in which it moved at every read is a measurement again.
    write(&file, "600000\n");
    choice.meter.sample();
    write(&file, "700000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.2);
}

/// A counter still over one whole tick is caught however the tick's length falls: the agent's
/// ticks come a little early or late, and one of 0.999 s read still was taken for a live counter.
/// Three quarters of the 1 s tick: short of a second by more than a sleep overshoots.
#[test]
fn a_counter_still_over_a_tick_a_little_short_of_a_second_refuses_its_window() {
    let (_trees, file, mut choice) = rapl_chosen_at_0_3_joules();
    write(&file, "400000\n");
    choice.meter.sample();
    std::thread::sleep(TICK * 3 / 4);
    choice.meter.sample();
    write(&file, "500000\n");
    let err = choice.meter.read().unwrap_err();
    assert!(err.to_string().contains("did not advance over 0."), "{err}");
}

/// A stall that ends at a window's last read belongs to that window: the next window, in which
/// the counter moved at every read, is a measurement.
#[test]
fn a_stall_up_to_a_windows_end_does_not_refuse_the_next_window() {
    let (_trees, file, mut choice) = rapl_chosen_at_0_3_joules();
    write(&file, "400000\n");
    choice.meter.sample();
    std::thread::sleep(trust::MAX_STILL);
    let err = choice.meter.read().unwrap_err();
    assert!(
        err.to_string().contains("did not advance over 0.5"),
        "{err}"
    );
    write(&file, "500000\n");
    choice.meter.sample();
    write(&file, "600000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.2);
}

/// A stall that goes on across a window's end counts whole in the window where it goes on:
/// a quarter of a second still before the end and a quarter after make half a second.
#[test]
fn a_stall_across_a_windows_end_counts_whole_in_the_next_window() {
    let (_trees, file, mut choice) = rapl_chosen_at_0_3_joules();
    write(&file, "400000\n");
    choice.meter.sample();
    std::thread::sleep(trust::MAX_STILL / 2);
    assert_eq!(choice.meter.read().unwrap().joules, 0.1);
    std::thread::sleep(trust::MAX_STILL / 2);
    choice.meter.sample();
    write(&file, "500000\n");
    let err = choice.meter.read().unwrap_err();
    assert!(
        err.to_string().contains("did not advance over 0.5"),
        "{err}"
    );
}

/// A tree with package zones `ids` (`intel-rapl:<id>`, named `package-<id>`), each at `start` µJ
/// with range `max_range`.
fn packages(ids: &[u32], start: u64, max_range: u64) -> (tempfile::TempDir, tempfile::TempDir) {
    let (sys, proc_dir) = machine(start, max_range);
    for id in ids.iter().filter(|&&id| id != 0) {
        let z = sys.path().join(format!("class/powercap/intel-rapl:{id}"));
        write(&z.join("name"), &format!("package-{id}\n"));
        write(&z.join("energy_uj"), &format!("{start}\n"));
        write(&z.join("max_energy_range_uj"), &format!("{max_range}\n"));
    }
    (sys, proc_dir)
}

fn zone_file(sys: &Path, id: u32) -> std::path::PathBuf {
    sys.join(format!("class/powercap/intel-rapl:{id}/energy_uj"))
}

#[test]
fn one_frozen_package_is_not_hidden_by_another_that_moves() {
    // Two sockets; the second one's counter never moves (a virtual RAPL that emulates socket 0
    // only). The sum moves, but the source is set aside, naming the frozen zone.
    let (sys, proc_dir) = packages(&[0, 1], 1_000, 1 << 40);
    let first = zone_file(sys.path(), 0);
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&first, "301000\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = &choice.skipped[0].1;
    assert!(
        reason.starts_with("set aside: package-1: the counter did not advance"),
        "{reason}"
    );

    // Both move at the check, then the second stops: the window is refused, naming it.
    let (sys, proc_dir) = packages(&[0, 1], 1_000, 1 << 40);
    let (first, second) = (zone_file(sys.path(), 0), zone_file(sys.path(), 1));
    let mut choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&first, "101000\n");
        write(&second, "101000\n");
    });
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    write(&first, "301000\n");
    std::thread::sleep(trust::MIN_JUDGED);
    let err = choice.meter.read().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rapl: package-1: the counter did not advance"),
        "{err}"
    );
    // Both moving again: the reading is the sum of the two.
    write(&first, "401000\n");
    write(&second, "151000\n");
    let reading = choice.meter.read().unwrap();
    assert_eq!(reading.parts, vec![0.1, 0.05]);
    assert_eq!(reading.joules, 0.1 + 0.05);
}

#[test]
fn a_window_spanning_several_wraps_counts_every_one() {
    // A range of 2.2 kJ, and 0.9 J per tick: over 5,000 ticks the counter wraps twice, which a
    // single read at the window's end would take for one small step. Reading every tick counts
    // all of it. (2.2 kJ at 1 kW is 2.2 s, over twice the 1 s tick, so the source is chosen; a
    // reading is refused as too long to rule out a second wrap only if two ticks here were that
    // far apart.)
    let range = 2_200_000_000u64;
    let (sys, proc_dir) = machine(0, range);
    let file = energy_file(sys.path());
    let mut at = 0u64;
    let mut step = |file: &Path| {
        at = (at + 900_000) % range;
        write(file, &format!("{at}\n"));
    };
    let mut choice = choose(sys.path(), proc_dir.path(), TICK, &mut || step(&file));
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    let ticks = 5_000;
    for _ in 0..ticks - 1 {
        step(&file);
        choice.meter.sample();
    }
    step(&file);
    let reading = choice.meter.read().unwrap();
    // 5,000 steps of 0.9 J: 4,500 J, more than two whole ranges.
    assert!((reading.joules - 4_500.0).abs() < 1e-6, "{reading:?}");
}

#[test]
fn a_counter_reset_mid_window_is_caught_at_its_tick() {
    // AMD's range; the counter falls from 40 kJ to 1 kJ (a reset, e.g. after a VM migration).
    // Read as a wrap that is 26.5 kJ, which over a 60 s window would pass for 442 W; over the
    // tick it happened in, it is far above what a package can draw.
    let range = 65_532_610_987u64;
    let (sys, proc_dir) = machine(40_000_000_000, range);
    let file = energy_file(sys.path());
    let mut choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "40000100000\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    write(&file, "40000200000\n");
    choice.meter.sample();
    write(&file, "1000000000\n");
    choice.meter.sample();
    write(&file, "1000100000\n");
    let err = choice.meter.read().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rapl: package-0: the counter reports")
            && err.to_string().contains("went backwards outside a wrap"),
        "{err}"
    );
    // The window after it is whole again.
    write(&file, "1000300000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.2);
}

#[test]
fn a_tick_long_enough_for_two_wraps_sets_powercap_aside_at_start() {
    // AMD's 65.5 kJ range wraps in 65.5 s at 1 kW: with a 2-minute tick the agent could not
    // tell one wrap from two, so RAPL through powercap is not used.
    let (sys, proc_dir) = machine(1_000, 65_532_610_987);
    let file = energy_file(sys.path());
    let choice = choose(
        sys.path(),
        proc_dir.path(),
        Duration::from_secs(120),
        &mut || write(&file, "101000\n"),
    );
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = &choice.skipped[0].1;
    assert!(
        reason.starts_with(
            "rapl: reads 120 s apart, or twice that when one comes late, are long enough for \
             the counter to wrap"
        ),
        "{reason}"
    );
    // A tick that could wrap twice only when a read comes late (40 s: 40 kJ < 65.5 kJ < 80 kJ)
    // would lose a window each time one does: refused too. Half a minute is short enough.
    for (tick, source) in [(40, EnergySource::Estimated), (30, EnergySource::Rapl)] {
        let (sys, proc_dir) = machine(1_000, 65_532_610_987);
        let file = energy_file(sys.path());
        let choice = choose(
            sys.path(),
            proc_dir.path(),
            Duration::from_secs(tick),
            &mut || write(&file, "101000\n"),
        );
        assert_eq!(choice.meter.source(), source, "a {tick} s tick");
    }
}

#[test]
fn a_reading_long_enough_to_hide_a_second_wrap_is_refused() {
    // A range of 100 µJ wraps in 0.1 µs at 1 kW: no interval between two reads is short enough
    // to rule out a second wrap, so the source is set aside rather than trusted.
    let (sys, proc_dir) = machine(10, 100);
    let file = energy_file(sys.path());
    let choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "60\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = &choice.skipped[0].1;
    assert!(
        reason.contains("long enough for the counter to wrap more than once"),
        "{reason}"
    );
}

#[test]
fn reads_too_far_apart_to_rule_out_a_second_wrap_give_no_figure() {
    // A 10 J range wraps in 10 ms at 1 kW. Chosen for 1 ms ticks, the meter is trusted; two
    // reads 20 ms apart could hide a second wrap, so that window has no figure.
    let (sys, proc_dir) = machine(1_000, 10_000_000);
    let file = energy_file(sys.path());
    let mut choice = choose(
        sys.path(),
        proc_dir.path(),
        Duration::from_millis(1),
        &mut || write(&file, "101000\n"),
    );
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&file, "201000\n");
    choice.meter.sample();
    write(&file, "301000\n");
    let err = choice.meter.read().unwrap_err();
    // The tick was checked at the start: what was long is the gap, and the error says so
    // rather than asking for a shorter tick.
    assert!(
        matches!(err, EnergyError::StalledBetweenReads { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("passed between two reads (the agent or the machine was held up)")
            && !text.contains("shorter tick"),
        "{text}"
    );
}

#[test]
fn a_failed_read_costs_its_window_and_the_one_it_reaches_into() {
    let (sys, proc_dir) = machine(1_000, 1 << 40);
    let file = energy_file(sys.path());
    let mut choice = choose(sys.path(), proc_dir.path(), TICK, &mut || {
        write(&file, "101000\n")
    });
    assert_eq!(choice.meter.source(), EnergySource::Rapl);

    // A read fails mid-window: that window has no figure, whatever the later reads say.
    write(&file, "garbage\n");
    choice.meter.sample();
    write(&file, "201000\n");
    let err = choice.meter.read().unwrap_err();
    assert!(err.to_string().contains("cannot parse 'garbage'"), "{err}");
    // The next window starts from the last good read: its energy is its own.
    write(&file, "301000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.1);

    // The read that closes a window fails: the next window's first reading reaches back into it,
    // so the next window has no figure either, and the one after is whole again.
    write(&file, "garbage\n");
    assert!(choice.meter.read().is_err());
    write(&file, "501000\n");
    let err = choice.meter.read().unwrap_err();
    assert!(matches!(err, EnergyError::AfterFailedRead { .. }), "{err}");
    write(&file, "551000\n");
    assert_eq!(choice.meter.read().unwrap().joules, 0.05);
}
