//! Which knobs the policy gives the loop, and the levels each is searched over.
use super::*;

/// The levels the loop tries for `knob`: the entry's `optimizer_levels`, less those its driver
/// would not read back or that lie outside the hardware range (`levels::given_levels`; `Err`:
/// fewer than two left); else, within `[min, max]` (narrowed to the hardware range; `Err` when it
/// lies wholly outside), frequencies of the cpufreq driver's table under the sysfs root `sys`
/// where its policies have one, or `levels` integers spread evenly (`levels::knob_levels`).
pub(super) fn grid(
    knob: &Knob,
    group: &Group,
    levels: usize,
    sys: &Path,
) -> Result<Vec<f64>, String> {
    match &group.levels {
        Some(given) => super::super::levels::given_levels(&knob.members, given, sys),
        None => super::super::levels::knob_levels(&knob.members, group.min, group.max, levels, sys),
    }
}

/// The parameters one policy entry gives the optimizer for one attribute, within its bounds.
pub(super) struct Group {
    /// The entry's name and line in the policy.
    pub(super) entry: String,
    pub(super) line: usize,
    pub(super) members: Vec<ParamAddress>,
    pub(super) min: i64,
    pub(super) max: i64,
    /// The entry's `optimizer_levels`.
    pub(super) levels: Option<Vec<i64>>,
}

/// Every group of parameters the policy gives the optimizer (one per entry and attribute), and
/// the problems found on the way (a parameter the machine does not have, bounds missing).
pub(super) fn given_knobs(path: &ChangePath, sys_root: &Path) -> (Vec<Group>, Vec<String>) {
    let policy = &path.policy;
    let mut out: Vec<(ParamAddress, i64, i64)> = Vec::new();
    // (entry line, attribute, entry name, its optimizer_levels) of each address in `out`.
    let mut group_of: Vec<(usize, String, String, Option<Vec<i64>>)> = Vec::new();
    let mut problems = Vec::new();
    for rule in &policy.params {
        let family = if rule.name.starts_with("cpufreq:") {
            ParamKind::Cpufreq
        } else if rule.name.starts_with("ethtool:") {
            ParamKind::Ethtool
        } else {
            continue;
        };
        if !rule.sources.contains(&Source::Optimizer) || rule.mode == Mode::Observe {
            continue;
        }
        // A search is a series of trials, each held for a window and learned from at once; one
        // that waited for a person's approval per trial would hold its first refusal forever.
        if rule.mode == Mode::Recommend {
            problems.push(format!(
                "{}: mode recommend (in the policy, or made so by kpo run --recommend-only): the \
                 optimizer's trials do not wait for approvals; give the entry mode auto, within \
                 its min and max, for the optimizer to search it",
                rule.name
            ));
            continue;
        }
        let mut names: Vec<String> = Vec::new();
        match family {
            ParamKind::Cpufreq => {
                let base = sys_root.join("devices/system/cpu/cpufreq");
                if !base.is_dir() {
                    problems.push(format!(
                        "{}: unsupported on this machine: {} does not exist (no cpufreq driver, \
                         common in VMs)",
                        rule.name,
                        base.display()
                    ));
                    continue;
                }
                let policies: Vec<String> = list_dir(&base)
                    .into_iter()
                    .filter(|d| d.starts_with("policy"))
                    .collect();
                // The directory without a policy is what a VM without a frequency driver shows:
                // the same "unsupported" as no directory, not "no such parameter".
                if policies.is_empty() {
                    problems.push(format!(
                        "{}: unsupported on this machine: {} holds no policyN directory (no \
                         cpufreq driver, common in VMs)",
                        rule.name,
                        base.display()
                    ));
                    continue;
                }
                for dir in policies {
                    for attr in CPUFREQ_KNOBS {
                        names.push(format!("cpufreq:{dir}:{attr}"));
                    }
                }
            }
            _ => {
                for iface in list_dir(&sys_root.join("class/net")) {
                    for attr in COALESCE_KNOBS {
                        names.push(format!("ethtool:{iface}:{attr}"));
                    }
                }
                // A literal name need not be listed under the sysfs root (a NIC the agent
                // reaches by netlink only).
                if !rule.name.contains(['*', '?', '[', '{']) {
                    names.push(rule.name.clone());
                }
            }
        }
        let mut matched = false;
        // Said once for the entry, not once per parameter its glob matches.
        let mut unbounded: Vec<ParamAddress> = Vec::new();
        for name in names {
            let Ok(address) = name.parse::<ParamAddress>() else {
                continue;
            };
            // The entry that applies to it must be this one: it matches, and no more specific
            // entry wins.
            let applies = policy.rule_for(&address);
            if applies.name != rule.name || applies.line != rule.line {
                continue;
            }
            matched = true;
            if out.iter().any(|(a, _, _)| a == &address) || unbounded.contains(&address) {
                continue;
            }
            match (&rule.min, &rule.max) {
                (Some(Bound::All(lo)), Some(Bound::All(hi))) if lo < hi => {
                    // The policy's integers are i128; cpufreq and coalescing values are u32.
                    let narrow = |v: i128| {
                        i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
                    };
                    let attr = name.rsplit(':').next().unwrap_or_default().to_string();
                    group_of.push((
                        rule.line,
                        attr,
                        rule.name.clone(),
                        rule.optimizer_levels
                            .as_ref()
                            .map(|l| l.iter().map(|&v| narrow(v)).collect()),
                    ));
                    out.push((address, narrow(*lo), narrow(*hi)))
                }
                _ => unbounded.push(address),
            }
        }
        if !unbounded.is_empty() {
            problems.push(format!(
                "{}: the policy entry (line {}) needs an integer min and max (min < max){}: the \
                 optimizer searches only within bounds the operator set",
                rule.name,
                rule.line,
                match unbounded.len() {
                    1 => String::new(),
                    n => format!(" for the {n} parameters it matches here"),
                }
            ));
        }
        if !matched {
            problems.push(format!("{}: no such parameter on this machine", rule.name));
        }
    }
    let mut groups: Vec<((usize, String), Group)> = Vec::new();
    for ((address, min, max), (line, attr, entry, levels)) in out.into_iter().zip(group_of) {
        let key = (line, attr);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.members.push(address),
            None => groups.push((
                key,
                Group {
                    entry,
                    line,
                    members: vec![address],
                    min,
                    max,
                    levels,
                },
            )),
        }
    }
    (groups.into_iter().map(|(_, g)| g).collect(), problems)
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect (s44 storyB): on a VM whose cpufreq directory exists but holds no policy (no
    /// driver bound), the loop was off with "no such parameter on this machine", where the docs
    /// promise "unsupported on this machine", as for no directory at all.
    #[test]
    fn a_cpufreq_directory_without_a_policy_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let base = sys.join("devices/system/cpu/cpufreq");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let (path, _) = crate::change::tests::path(
            &state,
            "[params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1200000\n\
             max = 3000000\nsources = [\"optimizer\"]\n",
            &crate::change::tests::kernel(&[]),
        );
        let problems = |path: &ChangePath| given_knobs(path, &sys).1;
        std::fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
        assert_eq!(
            problems(&path),
            [format!(
                "cpufreq:*:scaling_max_freq: unsupported on this machine: {} does not exist (no \
                 cpufreq driver, common in VMs)",
                base.display()
            )]
        );
        std::fs::create_dir_all(&base).unwrap();
        assert_eq!(
            problems(&path),
            [format!(
                "cpufreq:*:scaling_max_freq: unsupported on this machine: {} holds no policyN \
                 directory (no cpufreq driver, common in VMs)",
                base.display()
            )]
        );
    }
}
