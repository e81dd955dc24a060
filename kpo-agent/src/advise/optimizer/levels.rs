//! The values the live loop tries for each knob: `levels` of them within the policy's
//! `[min, max]`.
//!
//! A cpufreq limit whose policies have a frequency table (`scaling_available_frequencies`:
//! acpi-cpufreq and other table-based drivers) is tried at frequencies of that table only: the
//! driver resolves a limit to one of them, so any other value reads back as another one, the
//! trial fails its verification and costs two of the guard's hourly changes for nothing (on
//! such a machine, an even grid would leave only its two ends). Every other knob (intel_pstate
//! and amd-pstate limits take any value in range; coalescing) is tried at integers spread evenly
//! over the bounds; a coalescing delay (`rx-usecs`, `tx-usecs`, ...) at even ones: several
//! drivers keep the interrupt throttling interval in 2 µs units (Intel i40e, ice and iavf,
//! HiSilicon hns3) and round an odd value, which would fail its read-back the same way; drivers
//! that keep any value lose only the odd ones. The kernel gives no way to ask a driver its unit.

use std::path::Path;

use tracing::{info, warn};

use crate::actuate::{
    cpufreq::{frequency_table, policy_dir},
    param::{ParamAddress, Target},
};

/// The levels the loop tries for the knob over `members` (one parameter, or the group a policy
/// entry moves together), within `[min, max]`, reading cpufreq tables under the sysfs root
/// `sys` (the actuator's). For a cpufreq group, the frequencies of every member's table (a
/// member without a table takes any value). Without a table, a table that cannot be read, or
/// one with no frequency in range, [`even_grid`] (the last two said in a warning: the loop's
/// trials may then fail their read-back).
pub fn knob_levels(
    members: &[ParamAddress],
    min: i64,
    max: i64,
    levels: usize,
    sys: &Path,
) -> Result<Vec<f64>, String> {
    let (min, max) = within_the_hardware(members, min, max, sys)?;
    Ok(match common_table(members, sys) {
        Ok(None) if members.iter().all(is_coalescing_delay) => {
            even_values(&even_grid(min, max, levels), min, max)
        }
        Ok(None) => even_grid(min, max, levels),
        Ok(Some(table)) => {
            let in_range: Vec<i64> = table
                .into_iter()
                .filter(|khz| (min..=max).contains(khz))
                .collect();
            if in_range.is_empty() {
                warn!(
                    "optimizer: {}: no frequency of the cpufreq driver's table (common to every \
                     policy of the knob) lies within the policy's bounds {min}..={max} kHz; \
                     trying values spread over them, which the driver will round",
                    members_named(members)
                );
                return Ok(even_grid(min, max, levels));
            }
            spread_by_index(&in_range, levels)
                .into_iter()
                .map(|khz| khz as f64)
                .collect()
        }
        Err(e) => {
            warn!(
                "optimizer: {}: cannot read the cpufreq driver's frequency table ({e}); trying \
                 values spread over the policy's bounds",
                members_named(members)
            );
            even_grid(min, max, levels)
        }
    })
}

/// The levels the loop tries for a knob whose policy entry gives them (`optimizer_levels`): those
/// values, less any its driver would not read back as written, each left out with a warning
/// (the same values [`knob_levels`] keeps out of its grid): on a cpufreq limit whose policies
/// have a frequency table, a value not in it; on a coalescing delay, an odd one. An `Err` says
/// why fewer than two are left: the knob is then left out.
pub fn given_levels(
    members: &[ParamAddress],
    given: &[i64],
    sys: &Path,
) -> Result<Vec<f64>, String> {
    let mut kept: Vec<i64> = given.to_vec();
    // Outside the hardware range, a value is refused at every search (s58 review1 R1-5).
    if let Some((lo, hi)) = hardware_range(members, sys) {
        let (within, outside): (Vec<i64>, Vec<i64>) =
            kept.iter().partition(|v| (lo..=hi).contains(*v));
        if !outside.is_empty() {
            warn!(
                "optimizer: {}: optimizer_levels {outside:?} left out: outside the hardware \
                 range {lo}..={hi} (cpuinfo_min_freq..cpuinfo_max_freq{}), where every trial of \
                 them would be refused",
                members_named(members),
                if members.len() > 1 {
                    " of every policy of the knob"
                } else {
                    ""
                }
            );
        }
        kept = within;
    }
    match common_table(members, sys) {
        Ok(Some(table)) => {
            let (on, off): (Vec<i64>, Vec<i64>) = kept.iter().partition(|v| table.contains(v));
            if !off.is_empty() {
                warn!(
                    "optimizer: {}: optimizer_levels {off:?} left out: not among the cpufreq \
                     driver's frequencies (scaling_available_frequencies{}), so a write of them \
                     would read back as another and fail",
                    members_named(members),
                    if members.len() > 1 {
                        format!(
                            " of every policy of the knob: {}",
                            lacking(members, &off, sys)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            kept = on;
        }
        Ok(None) if members.iter().all(is_coalescing_delay) => {
            let (even, odd): (Vec<i64>, Vec<i64>) = kept.iter().partition(|v| *v % 2 == 0);
            if !odd.is_empty() {
                warn!(
                    "optimizer: {}: optimizer_levels {odd:?} left out: several drivers keep the \
                     delay in 2 µs units and round an odd one, which then fails its read-back",
                    members_named(members)
                );
            }
            kept = even;
        }
        Ok(None) => {}
        Err(e) => warn!(
            "optimizer: {}: cannot read the cpufreq driver's frequency table ({e}); trying the \
             entry's optimizer_levels as written",
            members_named(members)
        ),
    }
    if kept.len() < 2 {
        return Err(format!(
            "{}: fewer than two of the policy entry's optimizer_levels {given:?} can be written \
             as they are here (see the warnings before this one)",
            members_named(members)
        ));
    }
    Ok(kept.into_iter().map(|v| v as f64).collect())
}

/// `levels` integers spread evenly over `[min, max]`.
pub fn even_grid(min: i64, max: i64, levels: usize) -> Vec<f64> {
    let n = levels.max(2) as i64 - 1;
    let mut v: Vec<f64> = (0..=n)
        .map(|i| (min as f64 + (max - min) as f64 * i as f64 / n as f64).round())
        .collect();
    v.dedup();
    v
}

/// An interrupt coalescing delay in microseconds (`rx-usecs`, `tx-usecs-irq`, ...), which some
/// drivers keep in 2 µs units.
fn is_coalescing_delay(address: &ParamAddress) -> bool {
    matches!(address.target, Target::Nic { .. }) && address.name.contains("-usecs")
}

/// Each of `grid` (ascending integers) moved down to an even one, kept within `[min, max]`
/// (`grid` as it is where the bounds hold no even integer), duplicates dropped.
fn even_values(grid: &[f64], min: i64, max: i64) -> Vec<f64> {
    let lowest_even = min + min.rem_euclid(2);
    if lowest_even > max {
        return grid.to_vec();
    }
    let highest_even = max - max.rem_euclid(2);
    let mut v: Vec<f64> = grid
        .iter()
        .map(|&x| {
            let x = x as i64;
            let down = x - x.rem_euclid(2);
            down.clamp(lowest_even, highest_even) as f64
        })
        .collect();
    v.dedup();
    v
}

/// `levels` of `sorted` (ascending, distinct) spread evenly by index, its first and last
/// included; all of them when there are no more than `levels`.
fn spread_by_index(sorted: &[i64], levels: usize) -> Vec<i64> {
    let levels = levels.max(2);
    if sorted.len() <= levels {
        return sorted.to_vec();
    }
    let last = sorted.len() - 1;
    // More values than levels: the rounded indices are distinct and increasing.
    (0..levels)
        .map(|i| sorted[((i * last) as f64 / (levels - 1) as f64).round() as usize])
        .collect()
}

/// The hardware range every cpufreq member has (`cpuinfo_min_freq` to `cpuinfo_max_freq`, the
/// highest minimum and the lowest maximum; a member whose range cannot be read narrows nothing):
/// `None` when no member's can be read.
fn hardware_range(members: &[ParamAddress], sys: &Path) -> Option<(i64, i64)> {
    let read = |dir: &Path, file: &str| -> Option<i64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (mut lo, mut hi) = (None::<i64>, None::<i64>);
    for address in members {
        let Target::Cpufreq { policy } = &address.target else {
            continue;
        };
        let dir = policy_dir(sys, policy);
        if let Some(v) = read(&dir, "cpuinfo_min_freq") {
            lo = Some(lo.map_or(v, |lo| lo.max(v)));
        }
        if let Some(v) = read(&dir, "cpuinfo_max_freq") {
            hi = Some(hi.map_or(v, |hi| hi.min(v)));
        }
    }
    (lo.is_some() || hi.is_some()).then(|| (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX)))
}

/// `[min, max]` narrowed to the [`hardware_range`], said when it is: a level outside it is
/// refused at every search (s58 story BG-4: bounds of 400000..4000000 over a range of
/// 800000..3000000 spent 3 of 8 levels so). An `Err` when the bounds lie wholly outside it: every
/// trial would be refused, and the knob is left out (s58 review1 R1-5).
fn within_the_hardware(
    members: &[ParamAddress],
    min: i64,
    max: i64,
    sys: &Path,
) -> Result<(i64, i64), String> {
    let Some((lo, hi)) = hardware_range(members, sys) else {
        return Ok((min, max));
    };
    let (narrow_lo, narrow_hi) = (min.max(lo), max.min(hi));
    if narrow_lo > narrow_hi {
        return Err(format!(
            "{}: the policy's bounds {min}..={max} kHz lie wholly outside the hardware range \
             {lo}..={hi} (cpuinfo_min_freq..cpuinfo_max_freq): every trial would be refused",
            members_named(members)
        ));
    }
    if (narrow_lo, narrow_hi) != (min, max) {
        info!(
            "optimizer: {}: the policy's bounds {min}..={max} kHz reach beyond the hardware \
             range (cpuinfo_min_freq..cpuinfo_max_freq); its levels lie within \
             {narrow_lo}..={narrow_hi}",
            members_named(members)
        );
    }
    Ok((narrow_lo, narrow_hi))
}

/// The frequencies every cpufreq member's table has: `None` when no member is a cpufreq policy
/// with a table (a member without one takes any value, so it narrows nothing).
fn common_table(members: &[ParamAddress], sys: &Path) -> Result<Option<Vec<i64>>, String> {
    let mut common: Option<Vec<i64>> = None;
    let mut unreadable = Vec::new();
    for address in members {
        let Target::Cpufreq { policy } = &address.target else {
            continue;
        };
        let table = match frequency_table(&policy_dir(sys, policy)) {
            Ok(Some(table)) => table,
            Ok(None) => continue,
            Err(e) => {
                unreadable.push(e.to_string());
                continue;
            }
        };
        common = Some(match common {
            None => table,
            Some(c) => c.into_iter().filter(|khz| table.contains(khz)).collect(),
        });
    }
    if unreadable.is_empty() {
        return Ok(common);
    }
    // A member whose table cannot be read narrows nothing, as one without the file: the others'
    // tables still say what their drivers take (s48 storyP P-5: one unreadable table threw the
    // group's readable ones away, and their members were tried at values off them).
    let unreadable = unreadable.join("; ");
    if common.is_none() {
        return Err(unreadable);
    }
    warn!(
        "optimizer: {}: cannot read the cpufreq driver's frequency table of every policy \
         ({unreadable}); the levels are the frequencies of the tables that can be read, which \
         those policies may round",
        members_named(members)
    );
    Ok(common)
}

/// For each of `values`, the policies among `members` whose table lacks it ("1500000 not in
/// policy0's or policy1's; ..."): a group's levels are those every member has, so the warning
/// says which member keeps a value out.
fn lacking(members: &[ParamAddress], values: &[i64], sys: &Path) -> String {
    let tables: Vec<(&str, Vec<i64>)> = members
        .iter()
        .filter_map(|address| match &address.target {
            Target::Cpufreq { policy } => frequency_table(&policy_dir(sys, policy))
                .ok()
                .flatten()
                .map(|table| (policy.as_str(), table)),
            _ => None,
        })
        .collect();
    let each: Vec<String> = values
        .iter()
        .map(|v| {
            let without: Vec<&str> = tables
                .iter()
                .filter(|(_, table)| !table.contains(v))
                .map(|(policy, _)| *policy)
                .collect();
            format!("{v} not in {}'s", without.join("'s or "))
        })
        .collect();
    each.join("; ")
}

fn members_named(members: &[ParamAddress]) -> String {
    let names: Vec<String> = members.iter().map(ToString::to_string).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary sysfs tree with the given policies, each with `table` as its
    /// `scaling_available_frequencies` (`None`: no such file).
    fn tree(policies: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (policy, table) in policies {
            let dir = policy_dir(tmp.path(), policy);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("scaling_max_freq"), "3000000\n").unwrap();
            if let Some(table) = table {
                std::fs::write(dir.join("scaling_available_frequencies"), table).unwrap();
            }
        }
        tmp
    }

    fn max_freq(policies: &[&str]) -> Vec<ParamAddress> {
        policies
            .iter()
            .map(|p| format!("cpufreq:{p}:scaling_max_freq").parse().unwrap())
            .collect()
    }

    /// acpi-cpufreq's table of a 2.2 GHz part, as its sysfs file shows it (descending).
    const TABLE: &str = "2200000 2100000 2000000 1900000 1800000 1700000 1600000 1500000 \
                         1400000 1300000 1200000 1100000 1000000 900000 800000 \n";

    #[test]
    fn a_policy_with_a_table_is_tried_at_its_frequencies_within_the_bounds() {
        let tmp = tree(&[("policy0", Some(TABLE))]);
        let members = max_freq(&["policy0"]);
        // 11 frequencies in 1000000..=2050000 (2100000 is above the max); 4 of them, at the
        // indices 0, 3.33, 6.67 and 10 rounded.
        assert_eq!(
            knob_levels(&members, 1_000_000, 2_050_000, 4, tmp.path()).unwrap(),
            [1_000_000.0, 1_300_000.0, 1_700_000.0, 2_000_000.0]
        );
        // No more in range than levels: all of them.
        assert_eq!(
            knob_levels(&members, 950_000, 1_250_000, 8, tmp.path()).unwrap(),
            [1_000_000.0, 1_100_000.0, 1_200_000.0]
        );
        // The whole table at 8 levels: indices 0, 2, 4, 6, 8, 10, 12, 14.
        assert_eq!(
            knob_levels(&members, 800_000, 2_200_000, 8, tmp.path()).unwrap(),
            [
                800_000.0,
                1_000_000.0,
                1_200_000.0,
                1_400_000.0,
                1_600_000.0,
                1_800_000.0,
                2_000_000.0,
                2_200_000.0
            ]
        );
    }

    #[test]
    fn a_group_is_tried_at_the_frequencies_every_member_has() {
        let tmp = tree(&[
            ("policy0", Some("2400000 2000000 1600000 1200000 800000\n")),
            (
                "policy1",
                Some("2400000 2200000 1600000 1400000 1200000 800000\n"),
            ),
            ("policy2", Some("2400000 1600000 1200000 1000000 800000\n")),
        ]);
        let members = max_freq(&["policy0", "policy1", "policy2"]);
        assert_eq!(
            knob_levels(&members, 800_000, 2_400_000, 8, tmp.path()).unwrap(),
            [800_000.0, 1_200_000.0, 1_600_000.0, 2_400_000.0]
        );
        // A member without a table takes any value: the others' common frequencies stand.
        let tmp = tree(&[
            ("policy0", Some("2400000 2000000 1600000 1200000 800000\n")),
            ("policy1", None),
        ]);
        assert_eq!(
            knob_levels(
                &max_freq(&["policy0", "policy1"]),
                1_000_000,
                2_400_000,
                8,
                tmp.path()
            )
            .unwrap(),
            [1_200_000.0, 1_600_000.0, 2_000_000.0, 2_400_000.0]
        );
    }

    /// s48 storyP P-5: one member's unreadable table made the whole group use the even grid,
    /// so the members with a table were tried at values off it.
    #[test]
    fn a_member_whose_table_cannot_be_read_narrows_nothing() {
        let tmp = tree(&[
            ("policy0", Some("800000 abc 3000000 -5\n")),
            ("policy1", Some("3000000 2400000 1800000 1200000 800000\n")),
        ]);
        assert_eq!(
            knob_levels(
                &max_freq(&["policy0", "policy1"]),
                800_000,
                3_000_000,
                8,
                tmp.path()
            )
            .unwrap(),
            [
                800_000.0,
                1_200_000.0,
                1_800_000.0,
                2_400_000.0,
                3_000_000.0
            ]
        );
        // None readable: the even grid, as before.
        let tmp = tree(&[("policy0", Some("abc\n")), ("policy1", None)]);
        assert_eq!(
            knob_levels(
                &max_freq(&["policy0", "policy1"]),
                800_000,
                3_000_000,
                3,
                tmp.path()
            )
            .unwrap(),
            [800_000.0, 1_900_000.0, 3_000_000.0]
        );
    }

    #[test]
    fn without_a_usable_table_the_levels_are_spread_evenly_over_the_bounds() {
        let even = [
            1_200_000.0,
            1_457_143.0,
            1_714_286.0,
            1_971_429.0,
            2_228_571.0,
            2_485_714.0,
            2_742_857.0,
            3_000_000.0,
        ];
        // intel_pstate, amd-pstate: no table, any value in range is taken.
        let tmp = tree(&[("policy0", None), ("policy1", None)]);
        let members = max_freq(&["policy0", "policy1"]);
        assert_eq!(
            knob_levels(&members, 1_200_000, 3_000_000, 8, tmp.path()).unwrap(),
            even
        );
        // A table that is not one, or with nothing within the bounds: the same, with a warning.
        for table in ["fast slow\n", "800000 1000000\n"] {
            let tmp = tree(&[("policy0", Some(table))]);
            assert_eq!(
                knob_levels(&max_freq(&["policy0"]), 1_200_000, 3_000_000, 8, tmp.path()).unwrap(),
                even,
                "{table}"
            );
        }
        // Coalescing has no table.
        let rx: ParamAddress = "ethtool:eth0:rx-usecs".parse().unwrap();
        assert_eq!(
            knob_levels(&[rx], 0, 100, 6, tmp.path()).unwrap(),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
    }

    /// s58 story BG-4: bounds wider than the hardware range are narrowed to it, the range every
    /// member has; a member whose range cannot be read narrows nothing. Bounds wholly outside
    /// it, and an entry's own levels outside it, are no levels.
    #[test]
    fn the_levels_lie_within_the_hardware_range_of_every_member() {
        let tmp = tree(&[("policy0", None), ("policy1", None)]);
        let cpuinfo = |policy: &str, lo: &str, hi: &str| {
            let dir = policy_dir(tmp.path(), policy);
            std::fs::write(dir.join("cpuinfo_min_freq"), lo).unwrap();
            std::fs::write(dir.join("cpuinfo_max_freq"), hi).unwrap();
        };
        cpuinfo("policy0", "800000\n", "3000000\n");
        cpuinfo("policy1", "1000000\n", "fast\n");
        let members = max_freq(&["policy0", "policy1"]);
        assert_eq!(
            knob_levels(&members, 400_000, 4_000_000, 3, tmp.path()).unwrap(),
            [1_000_000.0, 2_000_000.0, 3_000_000.0]
        );
        // Wholly outside: every trial would be refused, the knob is left out (review1 R1-5).
        let e = knob_levels(&members, 3_500_000, 4_000_000, 2, tmp.path()).unwrap_err();
        assert_eq!(
            e,
            "cpufreq:policy0:scaling_max_freq, cpufreq:policy1:scaling_max_freq: the policy's \
             bounds 3500000..=4000000 kHz lie wholly outside the hardware range \
             1000000..=3000000 (cpuinfo_min_freq..cpuinfo_max_freq): every trial would be \
             refused"
        );
        // An entry's own levels outside the range are left out (review1 R1-5).
        assert_eq!(
            given_levels(
                &members,
                &[800_000, 1_500_000, 2_500_000, 3_500_000],
                tmp.path()
            ),
            Ok(vec![1_500_000.0, 2_500_000.0])
        );
    }

    /// A group's optimizer_levels missing from one member's table are left out, and the warning
    /// names that member: 2400000 is in policy0's table, not in policy1's.
    #[test]
    fn a_given_level_left_out_of_a_group_names_the_members_without_it() {
        let tmp = tree(&[
            ("policy0", Some("3000000 2400000 1800000 1200000\n")),
            ("policy1", Some("3000000 2600000 1800000 1200000\n")),
        ]);
        let members = max_freq(&["policy0", "policy1"]);
        let given = [1_200_000, 1_500_000, 2_400_000, 3_000_000];
        let (kept, log) = crate::logging::logged(|| given_levels(&members, &given, tmp.path()));
        assert_eq!(kept, Ok(vec![1_200_000.0, 3_000_000.0]));
        assert!(
            log.contains(
                "optimizer: cpufreq:policy0:scaling_max_freq, cpufreq:policy1:scaling_max_freq: \
                 optimizer_levels [1500000, 2400000] left out: not among the cpufreq driver's \
                 frequencies (scaling_available_frequencies of every policy of the knob: 1500000 \
                 not in policy0's or policy1's; 2400000 not in policy1's), so a write of them \
                 would read back as another and fail"
            ),
            "{log}"
        );
    }

    /// The reason a knob is left out reaches `started.left_out` as one sentence: no run of
    /// spaces from a line break inside the message.
    #[test]
    fn too_few_given_levels_say_why_in_one_sentence() {
        let tmp = tempfile::tempdir().unwrap();
        let rx: ParamAddress = "ethtool:eth0:rx-usecs".parse().unwrap();
        assert_eq!(
            given_levels(&[rx], &[1, 4, 33], tmp.path()),
            Err(
                "ethtool:eth0:rx-usecs: fewer than two of the policy entry's optimizer_levels \
                 [1, 4, 33] can be written as they are here (see the warnings before this one)"
                    .to_string()
            )
        );
    }

    /// A coalescing delay is tried at even microseconds: 0..100 in 8 levels would be 0, 14, 29,
    /// 43, 57, 71, 86, 100, and i40e, ice or hns3 would read 29 back as 28, failing the trial.
    #[test]
    fn a_coalescing_delay_is_tried_at_even_microseconds() {
        let tmp = tempfile::tempdir().unwrap();
        let rx: ParamAddress = "ethtool:eth0:rx-usecs".parse().unwrap();
        let tx: ParamAddress = "ethtool:eth1:tx-usecs".parse().unwrap();
        assert_eq!(
            even_grid(0, 100, 8),
            [0.0, 14.0, 29.0, 43.0, 57.0, 71.0, 86.0, 100.0]
        );
        assert_eq!(
            knob_levels(&[rx.clone(), tx], 0, 100, 8, tmp.path()).unwrap(),
            [0.0, 14.0, 28.0, 42.0, 56.0, 70.0, 86.0, 100.0]
        );
        // Odd bounds: the even values inside them, duplicates dropped.
        assert_eq!(
            knob_levels(std::slice::from_ref(&rx), 1, 9, 8, tmp.path()).unwrap(),
            [2.0, 4.0, 6.0, 8.0]
        );
        // Bounds that hold no even value: the one value there is.
        assert_eq!(
            knob_levels(std::slice::from_ref(&rx), 3, 3, 4, tmp.path()).unwrap(),
            [3.0]
        );
        // A frame count is not a delay: every integer.
        let frames: ParamAddress = "ethtool:eth0:rx-frames".parse().unwrap();
        assert_eq!(
            knob_levels(&[frames], 0, 100, 8, tmp.path()).unwrap(),
            even_grid(0, 100, 8)
        );
    }
}
