//! `kpo check`: loads and validates the agent configuration (if named) and the policy as `kpo run`
//! does, in the same order, and prints what the policy allows, so the files can be checked before
//! they are rolled out. A mistake is the error `kpo run` would stop with (file, line, key), and
//! exit status 2. What only the machine can tell (root, `--proc-root`) and `kpo run`'s flags are
//! not part of it, the environment's `OPENAI_*` only in the LLM advisor's line ([`llm`]); an
//! exact sysctl name this machine lacks is only warned of.
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

mod llm;

use crate::{
    actuate::param::{sysctl_rel_path, ParamAddress, ParamKind, Target},
    config::Config,
    policy::{Bound, MaxStep, Mode, NamespaceSel, Namespaces, ParamRule, Policy, PolicyOrigin},
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy to check (default /etc/kpo/policy.toml; missing, the built-in default).
    #[arg(long, value_name = "PATH")]
    pub policy: Option<PathBuf>,
    /// Also check this agent configuration file (`kpo run --config`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// As `kpo run --recommend-only` would apply it: mode auto shown as recommend.
    #[arg(long)]
    pub recommend_only: bool,
    /// As `kpo run --window` would run (over the configuration's `window`): the LLM advisor's
    /// consultation period, which the approvals' expiry is checked against, is counted in windows.
    #[arg(long, value_parser = crate::cli::duration_arg)]
    pub window: Option<std::time::Duration>,
    /// Also consult the LLM advisor once, as `kpo run` would at its first consultation (with
    /// this shell's `OPENAI_*` environment), and show what it answered; nothing is applied.
    /// Exit status 1 when the consultation fails.
    #[arg(long)]
    pub llm: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn check(args: CheckArgs) -> anyhow::Result<std::process::ExitCode> {
    // Each said on standard error as found, and listed in `--json`'s `warnings` (s60 story
    // BR-5: a CI gate on the JSON saw none of them).
    let mut warned: Vec<String> = Vec::new();
    let mut warn = |w: String| {
        crate::say!("kpo: warning: {w}");
        warned.push(w);
    };
    // Without a file, the defaults `kpo run` would run with (for the LLM's period below).
    let (config, agent) = match &args.config {
        Some(path) => {
            let name = path.display().to_string();
            let config = Config::from_file(path)?;
            config.validate(&name)?;
            roots_as_kpo_run_checks_them(&name, &config)?;
            for w in &config.warnings {
                warn(w.clone());
            }
            (Some(name), config)
        }
        None => (None, Config::default()),
    };
    let agent = match args.window {
        Some(window) => {
            let mut agent = agent;
            agent.window = window;
            let over = config
                .as_deref()
                .map_or(String::new(), |f| format!(" (over {f})"));
            agent.validate(&format!("command line{over}"))?;
            agent
        }
        None => agent,
    };
    let mut policy = Policy::load(args.policy.as_deref())?;
    if args.recommend_only {
        policy.force_recommend();
    }
    // A warning, not a mistake: the file may be checked on another machine than the one it is
    // for, a device's or a module's keys appear with it, and a namespace with its container.
    for w in warnings(&policy, std::path::Path::new("/proc/sys")) {
        warn(w);
    }
    if let Some(w) =
        approvals_expire_between_llm_consultations(&policy, &agent, |k| std::env::var(k).ok())
    {
        warn(w);
    }
    if let Some(w) = approvals_expire_between_rules_repeats(&policy, &agent) {
        warn(w);
    }
    if let Some(w) = approvals_cleared_too_soon(&policy, &agent) {
        warn(w);
    }
    if let Some(w) = (policy.approvals.webhook.as_deref()).and_then(|url| {
        crate::approvals::webhook::receiver_refused(
            url,
            policy.approvals.webhook_user.as_deref(),
            true,
        )
    }) {
        warn(format!(
            "{}: [approvals] {w} (as an agent running as root in this network namespace would \
             see it)",
            origin(&policy)
        ));
    }
    // Checked without the configuration `kpo run` is given (a policy checked before a reload,
    // say), the defaults may turn the optimizer off where the real file does not: said so, and
    // the limits are still looked at (s59 review1 R1-7).
    match (optimizer_off_by_the_configuration(&policy, &agent), &config) {
        (Some(w), Some(_)) => warn(w),
        (off, _) => {
            if let Some(w) = off {
                warn(format!(
                    "{w} (the built-in configuration: give kpo check the configuration kpo \
                     run is given, --config)"
                ));
            }
            for w in optimizer_held_back_by_the_limits(&policy, &agent) {
                warn(w);
            }
        }
    }
    for w in optimizer_entries_in_recommend(&policy) {
        warn(w);
    }
    if let Some(Err(why)) = (agent.llm.server_user.as_deref()).map(crate::endpoint_owner::uid_of) {
        warn(format!(
            "llm.server_user: {why}: a server on this host is sent nothing while that holds"
        ));
    }
    let advisor = llm::Advisor::of(&agent.llm, |k| std::env::var(k).ok());
    for w in advisor.warnings(&agent.llm, |k| std::env::var(k).ok()) {
        warn(w);
    }
    let probe = match (&advisor, args.llm) {
        (_, false) => None,
        (llm::Advisor::On(resolved), true) => {
            Some(llm::probe((**resolved).clone(), &policy, &agent)?)
        }
        (llm::Advisor::Off(why), true) => {
            anyhow::bail!("--llm: the LLM advisor is off ({why}): there is nothing to consult")
        }
        (llm::Advisor::Refused(why), true) => anyhow::bail!("--llm: {why}"),
    };
    if args.json {
        let mut out = to_json(&policy, config.as_deref());
        out["warnings"] = serde_json::json!(warned);
        out["llm"] = advisor.to_json();
        if let Some(p) = &probe {
            out["llm"]["probe"] = p.to_json();
        }
        crate::out!("{out}");
    } else {
        let mut out = to_text(&policy, config.as_deref());
        out += &advisor.to_text();
        if let Some(p) = &probe {
            out += &p.to_text();
        }
        crate::out!(no_newline; "{out}");
    }
    Ok(match probe {
        Some(p) if !p.passed() => std::process::ExitCode::from(1),
        _ => std::process::ExitCode::SUCCESS,
    })
}

/// The file's `proc_root` and `sysfs_root` as `kpo run` checks them at its start, which refuses
/// what fails (a mistyped root would read as a host without listeners, cpufreq or NICs), and its
/// `events` path as far as `kpo run` could not open it ([`events_cannot_open`]), named by the
/// file and key the value came from rather than by `kpo run`'s flag.
fn roots_as_kpo_run_checks_them(file: &str, config: &Config) -> anyhow::Result<()> {
    proc_root_from(Some(file), &config.proc_root)?;
    sysfs_root_from(Some(file), &config.sysfs_root)?;
    if let Some(why) = events_cannot_open(&config.events) {
        anyhow::bail!("{file}: `events` = {:?}: {why}", config.events);
    }
    Ok(())
}

/// `proc_root` = `root` checked as `kpo run` checks it: its error named by the configuration
/// file and key where `file` set it, else by `kpo run`'s flag (the default is no key of the
/// file's: s60 review2 R2-6).
pub(crate) fn proc_root_from(file: Option<&str>, root: &std::path::Path) -> anyhow::Result<()> {
    let Err(e) = crate::collect::check_proc_root(root) else {
        return Ok(());
    };
    let Some(file) = file.filter(|_| root != Config::default().proc_root) else {
        return Err(e.into());
    };
    let text = e.to_string();
    let flag = format!("--proc-root {}: ", root.display());
    let why = text.strip_prefix(&flag).unwrap_or(&text);
    anyhow::bail!("{file}: `proc_root` = {root:?}: {why}")
}

/// [`proc_root_from`] for `sysfs_root`.
pub(crate) fn sysfs_root_from(file: Option<&str>, root: &std::path::Path) -> anyhow::Result<()> {
    let Err(why) = crate::collect::check_sysfs_root(root) else {
        return Ok(());
    };
    match file.filter(|_| root != Config::default().sysfs_root) {
        Some(file) => anyhow::bail!("{file}: `sysfs_root` = {root:?}: {why}"),
        None => anyhow::bail!("--sysfs-root {}: {why}", root.display()),
    }
}

/// Why `kpo run` cannot open `path` for its event stream, as far as stat tells without opening
/// it (an open would create the file, or wait for a FIFO's reader): a directory, or a directory
/// for it that is missing or no directory (`kpo run` creates the file, not its directory), or a
/// way to it another user could point elsewhere (`output::sink`, `events_path_weakness`). Not in
/// `Config::validate`: `kpo run` says it at the open, and a file checked here may be for a
/// machine where the directory exists; `kpo check` says it as the file's mistake (s45 storyF).
pub(crate) fn events_cannot_open(path: &std::path::Path) -> Option<String> {
    if path.as_os_str() == "-" {
        return None;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Some(
                "it is a directory: kpo run could not open it; give a file in it, or - for \
                 standard output"
                    .into(),
            )
        }
        Ok(m) if !m.is_file() => return None,
        Ok(_) | Err(_) => {}
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            // Judged as the agent, root, judges it.
            let way = crate::trusted_path::file_way(path, 0).ok()?;
            way.weaknesses
                .iter()
                .find(|w| !crate::output::sink::tolerated(w))
                .map(crate::output::sink::events_path_weakness)
        }
        Ok(_) => Some(format!(
            "{} is not a directory: kpo run could not create the file there",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "its directory {} does not exist: kpo run creates the file, not its directory",
            dir.display()
        )),
        Err(_) => None,
    }
}

/// Each entry of the policy with its name as a warning says it: `[defaults]`, `params."NAME"`.
fn entries_named(policy: &Policy) -> impl Iterator<Item = (String, &ParamRule)> {
    std::iter::once(("[defaults]".to_string(), &policy.defaults)).chain(
        policy
            .params
            .iter()
            .map(|r| (format!("params.\"{}\"", r.name), r)),
    )
}

/// What in the policy names nothing on this machine now ([`missing_sysctls`], then
/// [`missing_namespaces`]), a namespace an entry names twice (likely a typo for another), then
/// what it asks for that KPO does not do ([`latency_signals_the_trials_skip`]), and an entry
/// whose bounds no step can reach from the value here ([`out_of_reach_sysctls`]). `kpo check`
/// prints them; `kpo run` logs them at start and at each reload.
pub(crate) fn warnings(policy: &Policy, proc_sys: &std::path::Path) -> Vec<String> {
    let mut all = missing_sysctls(policy, proc_sys);
    all.extend(missing_namespaces(policy));
    all.extend(policy.repeated_namespaces());
    all.extend(repeated_signals_and_sources(policy));
    all.extend(latency_signals_the_trials_skip(policy));
    all.extend(raises_judged_by_nothing(policy));
    all.extend(optimizer_entries_without_bounds(policy));
    all.extend(out_of_reach_sysctls(policy, proc_sys));
    all.extend(host_wide_keys_outside_the_host(policy));
    all.extend(entries_every_change_refuses(policy, proc_sys));
    all.extend(adaptive_off_outside_coalescing(policy));
    all.extend(every_namespace_from_outside_the_first(policy, proc_sys));
    all.extend(every_namespace_by_default(policy, proc_sys));
    all
}

/// `[guard] signals`, an entry's `sources` or its `guard_signals` naming one item twice: harmless
/// in itself, but as likely a typo for another item as a namespace named twice, which is warned
/// of (s54 story AO-2: accepted without a word, and shown twice by `kpo check`). A missing signal
/// means a change judged by fewer signals than the operator meant.
fn repeated_signals_and_sources(policy: &Policy) -> Vec<String> {
    fn repeats<T: PartialEq + std::fmt::Display>(list: &[T]) -> Vec<String> {
        list.iter()
            .enumerate()
            .filter(|(i, item)| !list[..*i].contains(item))
            .filter_map(
                |(_, item)| match list.iter().filter(|i| *i == item).count() {
                    1 => None,
                    2 => Some(format!("{item} twice")),
                    n => Some(format!("{item} {n} times")),
                },
            )
            .collect()
    }
    let file = origin(policy);
    let mut found: Vec<String> = repeats(&policy.guard.signals)
        .into_iter()
        .map(|r| {
            format!(
                "{file}: [guard] signals names {r}: a typo for another signal? Changes are judged \
                 by the signals named"
            )
        })
        .collect();
    for (entry, rule) in entries_named(policy) {
        let is_entry = !std::ptr::eq(rule, &policy.defaults);
        // An entry that inherits `[defaults]`' list was said there.
        if !(is_entry && rule.sources == policy.defaults.sources) {
            for r in repeats(&rule.sources) {
                found.push(format!(
                    "{file}:{}: {entry}: sources names {r}: a typo for another advisor? The \
                     entry takes advice only from the sources named",
                    rule.line
                ));
            }
        }
        let Some(signals) = &rule.guard_signals else {
            continue;
        };
        if is_entry && policy.defaults.guard_signals.as_ref() == Some(signals) {
            continue;
        }
        for r in repeats(signals) {
            found.push(format!(
                "{file}:{}: {entry}: guard_signals names {r}: a typo for another signal? \
                 Changes are judged by the signals named",
                rule.line
            ));
        }
    }
    found
}

/// Entries in `auto` that cover every network namespace only because no `namespaces` is written
/// (in the entry or its `[defaults]`): the default, "all", takes in every container's and pod's
/// namespace on the machine, which an operator writing `mode = "auto"` for the host may not mean
/// (s54 story AO-1: accepted without a word). Said once for `[defaults]` when it is such an entry
/// (those inheriting it are the same case), else for each such entry. Not outside the first
/// namespace, where [`every_namespace_from_outside_the_first`] says more.
fn every_namespace_by_default(policy: &Policy, proc_sys: &std::path::Path) -> Vec<String> {
    if crate::actuate::sysctl::outside_the_first_netns("net.core.netdev_budget", proc_sys).is_some()
    {
        return Vec::new();
    }
    let file = origin(policy);
    let unwritten_auto = |entry: &str, rule: &ParamRule| {
        // An exact host-wide key (`net.core.netdev_budget`) has one value, the first
        // namespace's: `namespaces` changes nothing for it (s54 review L2).
        let net = entry == "[defaults]"
            || (rule.name.starts_with("net")
                && (!rule.is_exact() || crate::actuate::sysctl::is_per_netns(&rule.name)))
            || rule.name.starts_with(['*', '?', '[', '{']);
        net && rule.mode == crate::policy::Mode::Auto
            && matches!(rule.namespaces, Namespaces::All)
            && !rule.namespaces_written
    };
    let defaults_warned = unwritten_auto("[defaults]", &policy.defaults);
    entries_named(policy)
        .filter(|(entry, rule)| unwritten_auto(entry, rule))
        .filter(|(entry, _)| !defaults_warned || entry == "[defaults]")
        .map(|(entry, rule)| {
            format!(
                "{file}:{}: {entry}: mode auto with no namespaces written: it covers every \
                 network namespace on this machine (the default, \"all\"), every container's \
                 and pod's included; write namespaces = \"all\" to mean that, or [\"host\"] to \
                 keep it to the agent's own namespace",
                rule.line
            )
        })
        .collect()
}

/// Entries in `auto` that cover every network namespace (`namespaces = "all"`, the default) in an
/// agent outside the machine's first namespace (a pod without host networking, an `ip netns
/// exec`): such an agent finds every namespace through /proc and /run/netns, the first one and
/// other pods' included, and changes their keys, which the node's agent changes too; each takes
/// the other's change for a person's (s46 storyK K1: two agents in two namespaces yielded to each
/// other, and one cleared the other's pending approval). The one-agent claim is per namespace and
/// cannot see it. Keyed on the agent's own `/proc/sys`, as [`missing_sysctls`] is.
fn every_namespace_from_outside_the_first(
    policy: &Policy,
    proc_sys: &std::path::Path,
) -> Vec<String> {
    if crate::actuate::sysctl::outside_the_first_netns("net.core.netdev_budget", proc_sys).is_none()
    {
        return Vec::new();
    }
    let file = origin(policy);
    let entries = entries_named(policy);
    entries
        // `[defaults]`, and an entry whose name may cover a net key: a vm.*, NIC or cpufreq
        // entry is in no namespace, and `namespaces` changes nothing for it.
        .filter(|(entry, rule)| {
            let net = entry == "[defaults]"
                || rule.name.starts_with("net")
                || rule.name.starts_with(['*', '?', '[', '{']);
            net && rule.mode == crate::policy::Mode::Auto
                && matches!(rule.namespaces, Namespaces::All)
        })
        .map(|(entry, rule)| {
            format!(
                "{file}:{}: {entry}: mode auto in every network namespace (namespaces = \"all\"), \
                 and this agent runs outside the machine's first one: it changes the keys of \
                 every namespace it finds, the first one's and other pods' included, which the \
                 node's agent changes too, and each would take the other's change for a \
                 person's; namespaces = [\"host\"] keeps the entry to this agent's own namespace",
                rule.line
            )
        })
        .collect()
}

/// Entries naming one sysctl exactly, covering the host's and not in mode observe, whose value in
/// `proc_sys` (an element of it) is outside their bounds and farther from them than one
/// `max_step`: every value an advisor could propose is refused, so it never moves. Without this
/// an operator learned it only from the rules' advice once the signal came (docs/rules.md).
fn out_of_reach_sysctls(policy: &Policy, proc_sys: &std::path::Path) -> Vec<String> {
    let file = origin(policy);
    let at = |b: &Option<Bound>, i: usize| match b {
        Some(Bound::All(v)) => Some(*v),
        Some(Bound::Each(v)) => v.get(i).copied(),
        None => None,
    };
    policy
        .params
        .iter()
        .filter(|r| r.is_exact() && r.mode != Mode::Observe)
        .filter(|r| r.namespaces.covers(&Target::Host))
        .filter(|r| {
            r.name
                .parse::<ParamAddress>()
                .is_ok_and(|a| a.kind() == ParamKind::Sysctl)
        })
        .filter_map(|r| {
            let step = r.max_step?;
            let text = std::fs::read_to_string(proc_sys.join(sysctl_rel_path(&r.name))).ok()?;
            let values: Vec<i128> = text
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            let why = values.iter().enumerate().find_map(|(i, &now)| {
                let what = if values.len() > 1 {
                    format!("{}'s element {i}", r.name)
                } else {
                    r.name.clone()
                };
                let allowed = step.limit(now);
                if let Some(min) = at(&r.min, i).filter(|&min| now.saturating_add(allowed) < min) {
                    return Some(format!(
                        "{what} is {now} here, below min {min}, and max_step {step} allows at \
                         most {} from {now}: no advisor can change it; widen max_step or lower \
                         min",
                        now.saturating_add(allowed)
                    ));
                }
                let max = at(&r.max, i).filter(|&max| now.saturating_sub(allowed) > max)?;
                Some(format!(
                    "{what} is {now} here, above max {max}, and max_step {step} allows no lower \
                     than {} from {now}: no advisor can change it; widen max_step or raise max",
                    now.saturating_sub(allowed)
                ))
            })?;
            Some(format!("{file}:{}: params.\"{}\": {why}", r.line, r.name))
        })
        .collect()
}

/// Entries naming one sysctl exactly, covering the host's, that refuse every change: the key is
/// read-only in `proc_sys` (and the entry not `observe`), its value is a word and the entry
/// has `min` or `max`, or its `min` or `max` is a list of another length than the value: every
/// change is refused (s54 story AO-3: `min = [128, 256]` on somaxconn was `valid`, and each
/// change refused at run time). A list bound is checked element by element, so its length is
/// the value's.
fn entries_every_change_refuses(policy: &Policy, proc_sys: &std::path::Path) -> Vec<String> {
    let file = origin(policy);
    let mut found = Vec::new();
    let exact_sysctls = policy.params.iter().filter(|r| {
        r.is_exact()
            && r.namespaces.covers(&Target::Host)
            && r.name
                .parse::<ParamAddress>()
                .is_ok_and(|a| a.kind() == ParamKind::Sysctl)
    });
    for r in exact_sysctls {
        let path = proc_sys.join(sysctl_rel_path(&r.name));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // A read-only key refuses every change (s62 story CD-3: `tcp_available_congestion_control`
        // in auto was valid).
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        if let (Ok(mode), false) = (mode, r.mode == Mode::Observe) {
            if mode & 0o222 == 0 {
                found.push(format!(
                    "{file}:{}: params.\"{}\": {} is read-only in the network namespace kpo \
                     check runs in (mode {mode:o}): every change of it there is refused; leave it \
                     to mode \"observe\", or remove the entry",
                    r.line, r.name, r.name
                ));
                continue;
            }
        }
        let here = text.split_whitespace().count();
        // A word value (a congestion control's name) against integer bounds is out of bounds
        // whatever it is (s62 story CD-3: `min = 0` on tcp_congestion_control was valid).
        let word = text.split_whitespace().any(|v| v.parse::<i128>().is_err());
        // Watched only, nothing is refused (s62 review1 R1-6).
        if let (true, false, Some(key)) = (
            word,
            r.mode == Mode::Observe,
            [("min", &r.min), ("max", &r.max)]
                .into_iter()
                .find_map(|(key, bound)| bound.as_ref().map(|_| key)),
        ) {
            found.push(format!(
                "{file}:{}: params.\"{}\": {key} (the entry's own or [defaults]') bounds an \
                 integer and {} is a word here ({}): every change of it is refused as out of \
                 bounds; remove min and max (from [defaults] too, when they come from there)",
                r.line,
                r.name,
                r.name,
                text.trim()
            ));
            continue;
        }
        for (key, bound) in [("min", &r.min), ("max", &r.max)] {
            let Some(Bound::Each(list)) = bound else {
                continue;
            };
            if list.len() != here {
                found.push(format!(
                    "{file}:{}: params.\"{}\": {key} has {} elements and {} has {here} here: \
                     every change of it is refused as out of bounds; give {here} (or one \
                     integer for every element)",
                    r.line,
                    r.name,
                    list.len(),
                    r.name
                ));
            }
        }
    }
    found
}

/// Entries naming a host-wide sysctl exactly (`vm.dirty_ratio`, `net.core.netdev_max_backlog`)
/// whose `namespaces` (its own or `[defaults]`') leave out the agent's own: the key has one value for the whole host, which
/// KPO does not change on behalf of another namespace, so every change the entry allows fails
/// (s57 story BD-3: accepted without a word).
fn host_wide_keys_outside_the_host(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    (policy.params.iter())
        .filter(|r| !r.name.contains(['*', '?', '[', '{', ':']))
        .filter(|r| r.mode != Mode::Observe)
        .filter(|r| !crate::actuate::sysctl::is_per_netns(&r.name))
        .filter(|r| !r.namespaces.covers(&Target::Host))
        .map(|r| {
            format!(
                "{file}:{}: params.\"{}\": {} is host-wide, not one per network namespace, and \
                 the entry covers only other namespaces: KPO does not change the whole host on \
                 behalf of one, so every change of it fails; add \"host\" to namespaces, or \
                 remove the entry",
                r.line, r.name, r.name
            )
        })
        .collect()
}

/// Entries with `allow_adaptive_off = true` that cover no coalescing parameter (`ethtool:...`):
/// it changes nothing there, and the entry it was meant for may still refuse such a NIC (s54
/// story AO-4: accepted without a word). An entry covers one when the literal start of its name
/// (up to a glob's first wildcard) and `ethtool:` agree.
fn adaptive_off_outside_coalescing(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    entries_named(policy)
        // Set in the entry: [defaults]' own is for the coalescing entries among its heirs.
        .filter(|(entry, rule)| {
            entry != "[defaults]" && rule.allow_adaptive_off && !policy.defaults.allow_adaptive_off
        })
        .filter(|(_, rule)| {
            let literal = rule
                .name
                .split(['*', '?', '[', '{'])
                .next()
                .unwrap_or_default();
            !(literal.starts_with("ethtool:") || "ethtool:".starts_with(literal))
        })
        .map(|(entry, rule)| {
            format!(
                "{file}:{}: {entry}: allow_adaptive_off is for NIC coalescing (`ethtool:...`) \
                 only, and this entry covers none: it changes nothing here",
                rule.line
            )
        })
        .collect()
}

/// `[approvals] expire_after` no longer than the LLM advisor's consultation period, when it is
/// on (`env`: the environment `kpo run` resolves it in). The LLM repeats its advice only when
/// consulted, so an approval it asked for expires before the next consultation can refresh it,
/// and the same advice comes back under a new id, posted again, at every consultation. The
/// period is `llm.every_windows` windows, or the windows `llm.min_interval` needs if more (a
/// consultation due sooner waits for the first window after it). `kpo check` prints it; `kpo
/// run` logs it at start and at each reload.
pub(crate) fn approvals_expire_between_llm_consultations(
    policy: &Policy,
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let llm = &config.llm;
    if !matches!(llm.resolve_with(env), Ok(Ok(_))) || config.window.is_zero() {
        return None;
    }
    let window = config.window.as_nanos();
    // As the schedule counts the floor: met a little short of it (`floor_slack`).
    let floor = llm
        .min_interval
        .saturating_sub(crate::advise::llm::floor_slack(llm.min_interval));
    let windows = (llm.every_windows as u128).max(floor.as_nanos().div_ceil(window));
    let period = config
        .window
        .saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
    let expire_after = policy.approvals.expire_after;
    (expire_after <= period).then(|| {
        format!(
            "{}: [approvals] expire_after ({}) is not longer than the LLM advisor's consultation \
             period ({}: every {windows} windows of {}, llm.every_windows {} and \
             llm.min_interval {}): an approval the LLM asks for expires before its next \
             consultation can refresh it, and the same advice comes back as a new approval, with \
             a new id and another webhook post, at every consultation; make expire_after longer \
             than the period",
            origin(policy),
            shown_duration(expire_after),
            shown_duration(period),
            shown_duration(config.window),
            llm.every_windows,
            shown_duration(llm.min_interval),
        )
    })
}

/// `[approvals] expire_after` no longer than the period at which the rules repeat advice not
/// acted on (`REPEAT_WINDOWS` windows), where an entry (or `[defaults]`) leaves the rules' advice
/// to an operator (mode recommend): an approval they asked for expires before they ask again, so
/// for the rest of the period nothing waits to be approved, and the same advice then comes back
/// as a new approval, with a new id and another webhook post (s43). As for the LLM's period,
/// `kpo check` prints it and `kpo run` logs it at start and at each reload.
pub(crate) fn approvals_expire_between_rules_repeats(
    policy: &Policy,
    config: &Config,
) -> Option<String> {
    use crate::policy::{Mode, Source};
    let recommends = std::iter::once(&policy.defaults)
        .chain(&policy.params)
        .any(|r| {
            r.sources.contains(&Source::Rules) && r.mode_for(Source::Rules) == Mode::Recommend
        });
    let windows = crate::advise::rules::REPEAT_WINDOWS;
    let period = config
        .window
        .saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
    let expire_after = policy.approvals.expire_after;
    (recommends && !period.is_zero() && expire_after <= period).then(|| {
        format!(
            "{}: [approvals] expire_after ({}) is not longer than the period at which the rules \
             repeat advice not acted on ({}: every {windows} windows of {}): an approval the \
             rules ask for expires before they ask again, nothing waits to be approved until \
             then, and the same advice comes back as a new approval, with a new id and another \
             webhook post; make expire_after longer than the period",
            origin(policy),
            shown_duration(expire_after),
            shown_duration(period),
            shown_duration(config.window),
        )
    })
}

/// The rules' approvals cleared less than [`APPROVAL_CLEAR_FLOOR`] after their advice stops,
/// where an entry leaves the rules' advice to an operator: at short windows they come and go
/// before anyone sees them in `kpo pending` or acts on the webhook's post, and advice that comes
/// back makes a new approval, with a new id and another post (s59 story BM-2: windows of 10 ms
/// cleared them 300 ms after their advice, and each came back under a new id). The LLM's are
/// counted in its consultations, not windows (docs/approvals.md), and not looked at here.
pub(crate) fn approvals_cleared_too_soon(policy: &Policy, config: &Config) -> Option<String> {
    use crate::policy::{Mode, Source};
    let approvable = std::iter::once(&policy.defaults)
        .chain(&policy.params)
        .any(|r| {
            r.sources.contains(&Source::Rules) && r.mode_for(Source::Rules) == Mode::Recommend
        });
    let windows = policy.approvals.clear_after_windows;
    let after = config.window.saturating_mul(windows);
    let enough = APPROVAL_CLEAR_FLOOR
        .as_nanos()
        .div_ceil(config.window.as_nanos().max(1));
    (approvable && after < APPROVAL_CLEAR_FLOOR).then(|| {
        format!(
            "{}: [approvals] clear_after_windows {windows} with windows of {} clears an approval \
             of the rules' {} after its advice stops: too soon for anyone to see it in kpo pending or act on \
             the webhook's post, and advice that comes back makes a new approval, with a new id \
             and another post; make clear_after_windows at least {enough} (a minute)",
            origin(policy),
            shown_duration(config.window),
            shown_duration(after),
        )
    })
}

/// Less than this between an approval's last advice and its clearing is warned of
/// ([`approvals_cleared_too_soon`]): a person needs about that long to look.
pub const APPROVAL_CLEAR_FLOOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Why `kpo run` would turn the optimizer off at its start for want of what the configuration
/// gives it, when the policy gives it a knob to search: `kpo run` logs it and says so in an
/// `optimizer` `off` event, and a check that passed silently let the operator believe it would
/// run (s59 story BM-1). The reasons that depend on the hardware (a knob unreadable here) are
/// `kpo run`'s alone.
pub(crate) fn optimizer_off_by_the_configuration(
    policy: &Policy,
    config: &Config,
) -> Option<String> {
    let searched = policy.params.iter().find(|r| {
        r.sources.contains(&crate::policy::Source::Optimizer)
            && r.mode == Mode::Auto
            && names_an_optimizer_knob(&r.name)
    })?;
    let why = match (config.optimizer.slo_port, config.optimizer.slo_max_us) {
        (Some(_), Some(_)) => crate::run::slo_unmeasured(config)?,
        _ => "the configuration has no SLO: set [optimizer] slo_port and slo_max_us".to_string(),
    };
    Some(format!(
        "{}:{}: params.\"{}\" gives the optimizer a knob, but kpo run will turn the optimizer \
         off with this configuration: {why}",
        origin(policy),
        searched.line,
        searched.name
    ))
}

/// Limits that hold the optimizer's search back, given the agent's configuration: an entry's
/// `max_step` too small to go from one bound to the other in one step (a proposal farther from
/// the value in place is refused for good, and the search ends sooner), and a `[guard]
/// max_changes_per_hour` below the search's budget (one change of each knob per trial, each
/// revert counted too: the search waits on it, `rate_limited`, for the rest of the hour).
/// docs/policy.md says both; nothing said so at load (s51 story AA F6: a search waited on the
/// hourly limit window after window).
pub(crate) fn optimizer_held_back_by_the_limits(policy: &Policy, config: &Config) -> Vec<String> {
    use crate::policy::Source;
    let file = origin(policy);
    let searched: Vec<&ParamRule> = policy
        .params
        .iter()
        .filter(|r| r.sources.contains(&Source::Optimizer) && r.mode == Mode::Auto)
        .filter(|r| names_an_optimizer_knob(&r.name))
        .collect();
    let mut out: Vec<String> = searched
        .iter()
        .filter_map(|r| {
            let (Some(Bound::All(lo)), Some(Bound::All(hi))) = (&r.min, &r.max) else {
                return None;
            };
            let range = hi.checked_sub(*lo).filter(|r| *r > 0)?;
            // The step the policy allows from anywhere in the range: for a percent, of the
            // value before it, so from the smaller bound (from 0, none).
            let (reach, step) = match r.max_step? {
                MaxStep::Absolute(n) => (n.saturating_abs(), n.to_string()),
                MaxStep::Relative(p) => (p.of(lo.abs().min(hi.abs())), format!("{p}")),
            };
            (reach < range).then(|| {
                format!(
                    "{file}:{}: params.\"{}\": max_step {step} allows at most {reach} in one \
                     step, less than the range {lo} to {hi} the optimizer searches: its proposals \
                     farther than that from the value in place are refused for good, and its \
                     search ends sooner; leave max_step out of an optimizer entry, or make it at \
                     least {range}",
                    r.line, r.name
                )
            })
        })
        .collect();
    let limit = policy.guard.max_changes_per_hour;
    // The changes of each knob an hour: one per trial, as many trials as the budget and an hour
    // hold.
    let trial = config.window.as_secs_f64() * f64::from(config.optimizer.windows_per_trial.max(1));
    let budget = config.optimizer.budget;
    let per_hour = budget.min((3600.0 / trial.max(1.0)).floor() as usize);
    // Only entries the optimizer searches count: one it leaves out for want of bounds is said
    // by `optimizer_entries_without_bounds` (s54 story AO-15: this one was said too).
    let knobs_searched = searched.iter().any(|r| has_search_bounds(r));
    if knobs_searched && (limit as usize) < per_hour {
        out.push(format!(
            "{file}: [guard] max_changes_per_hour {limit} is below the {per_hour} changes an \
             hour the optimizer's search makes of each knob (one a trial, budget {budget}, a \
             trial every {}; and a revert each time a window breaks the SLO): the search waits \
             on the limit (`rate_limited`) for the rest of each hour; make it at least \
             {per_hour}",
            shown_duration(std::time::Duration::from_secs_f64(trial))
        ));
    }
    out
}

/// Entries of a knob the optimizer searches whose own `guard_signals` name a latency: the guard
/// judges the optimizer's trials without them (`Policy::guard_signals_for`), so an operator who
/// wrote them for those trials would otherwise believe them guarded by it. Not a mistake: the
/// same list still judges an operator's or another advisor's change of the knob.
fn latency_signals_the_trials_skip(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    policy
        .params
        .iter()
        .filter(|r| r.sources.contains(&crate::policy::Source::Optimizer))
        .filter(|r| r.name.starts_with("cpufreq:") || r.name.starts_with("ethtool:"))
        .filter_map(|r| {
            let latencies: Vec<String> = r
                .guard_signals
                .as_deref()?
                .iter()
                .filter(|s| s.is_latency())
                .map(ToString::to_string)
                .collect();
            (!latencies.is_empty()).then(|| {
                format!(
                    "{file}:{}: params.\"{}\": guard_signals names {}, which the guard does \
                     not judge the optimizer's trials by: a trial trades latency for energy \
                     within the SLO, which the optimizer checks itself (`slo_max_us`). It still \
                     judges an operator's or another advisor's change of this parameter",
                    r.line,
                    r.name,
                    latencies.join(" and ")
                )
            })
        })
        .collect()
}

/// The queue lengths whose raise the guard would judge by nothing: every signal of their entry's
/// `guard_signals` (or `[guard] signals`) is one a longer queue is not judged by, its own drops
/// ([`crate::guard::queue_symptoms`]), so every raise is `kept` unjudged (s52 storyAC AC-9:
/// `guard_signals = ["listen_overflows"]` for somaxconn, and `kpo check` said nothing).
fn raises_judged_by_nothing(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    crate::guard::QUEUE_LENGTHS
        .into_iter()
        .filter_map(|name| {
            let rule = policy.rule_for(&name.parse().ok()?);
            if rule.mode == Mode::Observe {
                return None;
            }
            // An entry without a list of its own takes `[defaults]`'s (at parse): said there.
            let from_defaults = std::ptr::eq(rule, &policy.defaults)
                || rule.guard_signals == policy.defaults.guard_signals;
            let (signals, from) = match &rule.guard_signals {
                Some(own) if from_defaults => (own, format!("{file}: [defaults]: guard_signals")),
                Some(own) => (
                    own,
                    format!(
                        "{file}:{}: params.\"{}\": guard_signals",
                        rule.line, rule.name
                    ),
                ),
                None => (&policy.guard.signals, format!("{file}: [guard] signals")),
            };
            let symptoms = crate::guard::queue_symptoms(name);
            // `signals = []` judges nothing by choice, and is not this mistake.
            let unjudged = !signals.is_empty() && signals.iter().all(|s| symptoms.contains(s));
            unjudged.then(|| {
                let listed: Vec<String> = signals
                    .iter()
                    .map(|s| json!(s).as_str().unwrap_or_default().to_string())
                    .collect();
                format!(
                    "{from} ({}) leaves a raise of {name} judged by nothing: a longer queue is \
                     not judged by its own drops, so the guard keeps every raise unjudged; add a \
                     signal such as request_p99",
                    listed.join(", ")
                )
            })
        })
        .collect()
}

/// Entries of a knob the optimizer may search in mode auto without an integer `min` and `max`
/// (`min` < `max`): the optimizer leaves them out (`kpo run`'s `optimizer` event says so), as it
/// searches only within bounds the operator set. Without this `kpo check` said nothing of it.
fn optimizer_entries_without_bounds(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    policy
        .params
        .iter()
        .filter(|r| r.sources.contains(&crate::policy::Source::Optimizer) && r.mode == Mode::Auto)
        .filter(|r| names_an_optimizer_knob(&r.name))
        .filter(|r| !has_search_bounds(r))
        .map(|r| {
            format!(
                "{file}:{}: params.\"{}\": the optimizer leaves this entry out: it needs an \
                 integer min and max (min < max), and searches only within bounds the operator set",
                r.line, r.name
            )
        })
        .collect()
}

/// Entries of a knob the optimizer would search but for their mode recommend (in the file, or
/// made so by `--recommend-only`): the optimizer leaves them out, as `kpo run`'s `optimizer`
/// event `off` says; `kpo check` said nothing (s58 story BG-6). Not logged by `kpo run`, whose
/// event says it.
fn optimizer_entries_in_recommend(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    let by = match policy.forced_recommend() {
        true => "mode recommend (made so by --recommend-only)",
        false => "mode recommend",
    };
    (policy.params.iter())
        .filter(|r| r.sources.contains(&crate::policy::Source::Optimizer))
        .filter(|r| r.mode == Mode::Recommend && names_an_optimizer_knob(&r.name))
        .map(|r| {
            format!(
                "{file}:{}: params.\"{}\": the optimizer leaves this entry out in {by}: its \
                 trials do not wait for approvals; give the entry mode auto, within its min and \
                 max, for the optimizer to search it",
                r.line, r.name
            )
        })
        .collect()
}

/// Whether an entry has the bounds the optimizer searches between: an integer min below an
/// integer max. Without them it leaves the entry out.
fn has_search_bounds(r: &ParamRule) -> bool {
    matches!((&r.min, &r.max), (Some(Bound::All(lo)), Some(Bound::All(hi))) if lo < hi)
}

/// Whether an entry can cover a knob the optimizer searches: its attribute (after the NIC or the
/// cpufreq policy) is one, or a glob matching one. Another attribute of the family (a governor, a
/// preference) is no knob: the optimizer does not look at its entry, bounds or not.
fn names_an_optimizer_knob(name: &str) -> bool {
    let Some((family, rest)) = name.split_once(':') else {
        return false;
    };
    let knobs: &[&str] = match family {
        "cpufreq" => &crate::advise::optimizer::agent::CPUFREQ_KNOBS,
        "ethtool" => &crate::advise::optimizer::agent::COALESCE_KNOBS,
        _ => return false,
    };
    let attribute = rest.rsplit_once(':').map_or(rest, |(_, a)| a);
    globset::Glob::new(attribute).is_ok_and(|g| {
        let matcher = g.compile_matcher();
        knobs.iter().any(|k| matcher.is_match(k))
    })
}

/// How many absent paths one warning names: an entry may name hundreds of pods' namespaces, and
/// the warning is one line of the log at every start and reload.
const PATHS_NAMED: usize = 8;

/// The first `most` of `items`, and how many more.
fn named_up_to(items: &[String], most: usize) -> String {
    match items.len().checked_sub(most) {
        Some(more) if more > 0 => format!("{} and {more} more", items[..most].join(", ")),
        _ => items.join(", "),
    }
}

/// Entries whose `namespaces` name a path that does not exist, cannot be read, or is no network
/// namespace: a misspelt path covers no namespace, so every change there is refused as outside
/// the policy, which an operator finds only at the first refusal. A namespace made later (a
/// container starting) is covered from then on, so this is a warning.
fn missing_namespaces(policy: &Policy) -> Vec<String> {
    let file = origin(policy);
    let entries = entries_named(policy);
    let mut found = Vec::new();
    for (entry, rule) in entries {
        let Namespaces::List(list) = &rule.namespaces else {
            continue;
        };
        // An entry that inherits `[defaults]`' list (or names the same) was said there (s49
        // review3: each such entry repeated the defaults' paths, at its own line).
        if !std::ptr::eq(rule, &policy.defaults) && rule.namespaces == policy.defaults.namespaces {
            continue;
        }
        // One line for the paths of an entry that do not exist: pods come and go, and an entry
        // naming forty of them said so in forty lines at every start and reload (s49 storyU U4).
        let mut absent = Vec::new();
        for sel in list {
            let NamespaceSel::Path(path) = sel else {
                continue;
            };
            let missing =
                std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
            if missing {
                absent.push(path.display().to_string());
            } else if let Err(why) = crate::policy::netns_path_inode(path) {
                found.push(format!(
                    "{file}:{}: {entry}: namespaces names {}, {why}: it covers no namespace, \
                     and KPO refuses every change the entry would cover there",
                    rule.line,
                    path.display()
                ));
            }
        }
        match absent.as_slice() {
            [] => {}
            [path] => found.push(format!(
                "{file}:{}: {entry}: namespaces names {path}, which does not exist now: a \
                 typo? Until it exists the entry covers no namespace there, and KPO refuses \
                 every change it would cover",
                rule.line
            )),
            paths => found.push(format!(
                "{file}:{}: {entry}: namespaces names {} paths that do not exist now ({}): \
                 typos? Until each exists the entry covers no namespace there, and KPO refuses \
                 every change it would cover",
                rule.line,
                paths.len(),
                named_up_to(paths, PATHS_NAMED)
            )),
        }
    }
    found
}

/// Entries naming one sysctl exactly that `proc_sys` does not have: a misspelt name
/// (`net.core.somaxcon`) covers nothing, and the parameter meant falls to `[defaults]` unsaid.
/// And a glob of host-wide net keys that covers none here because this is not the machine's
/// first network namespace (`net.core.netdev_*` in a pod without host networking): said as for
/// an exact name. Another glob that covers nothing here is not warned of: a device's or a
/// module's keys appear with it.
fn missing_sysctls(policy: &Policy, proc_sys: &std::path::Path) -> Vec<String> {
    let mut found = exact_sysctls_missing(policy, proc_sys, &origin(policy));
    found.extend(host_wide_globs_covering_nothing(policy, proc_sys));
    found
}

fn host_wide_globs_covering_nothing(policy: &Policy, proc_sys: &std::path::Path) -> Vec<String> {
    let file = origin(policy);
    policy
        .params
        .iter()
        .filter(|r| !r.is_exact() && r.name.starts_with("net."))
        .filter_map(|r| {
            let why = crate::actuate::sysctl::outside_the_first_netns(&r.name, proc_sys)?;
            // The directory of the glob's literal start: `net.core.netdev_*` is under net/core.
            let literal = r.name.split(['*', '?', '[', '{']).next().unwrap_or("");
            let (table, _) = literal.rsplit_once('.')?;
            let dir = proc_sys.join(sysctl_rel_path(table));
            let covers_one = std::fs::read_dir(&dir).ok().is_some_and(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .any(|leaf| r.covers(&format!("{table}.{leaf}")))
            });
            (!covers_one).then(|| {
                format!(
                    "{file}:{}: params.\"{}\": covers no key under {}, {why}",
                    r.line,
                    r.name,
                    dir.display()
                )
            })
        })
        .collect()
}

fn exact_sysctls_missing(policy: &Policy, proc_sys: &std::path::Path, file: &str) -> Vec<String> {
    policy
        .params
        .iter()
        .filter(|r| r.is_exact())
        .filter(|r| {
            r.name
                .parse::<ParamAddress>()
                .is_ok_and(|a| a.kind() == ParamKind::Sysctl)
        })
        .filter_map(|r| {
            let path = proc_sys.join(sysctl_rel_path(&r.name));
            if std::fs::symlink_metadata(&path).is_ok() {
                return None;
            }
            let near = nearest_sysctl(&r.name, proc_sys);
            // A host-wide net key, missing because this is not the first namespace, unless a
            // key here is a letter or two from it (`net.core.somaxcon`: s45 storyF was told to
            // run the agent with host networking).
            if let (None, Some(why)) = (
                &near,
                crate::actuate::sysctl::outside_the_first_netns(&r.name, proc_sys),
            ) {
                return Some(format!(
                    "{file}:{}: params.\"{}\": {} is missing {why} (or the name is mistyped: \
                     the host-wide keys cannot be seen from here)",
                    r.line,
                    r.name,
                    path.display()
                ));
            }
            Some(format!(
                "{file}:{}: params.\"{}\": this machine has no such sysctl ({}): a typo{}? The \
                 entry covers nothing here, and the parameter meant takes [defaults] (a key of a \
                 device or a module appears once the device exists or the module is loaded)",
                r.line,
                r.name,
                path.display(),
                near.map_or(String::new(), |n| format!(" of {n}"))
            ))
        })
        .collect()
}

/// The key beside `name` under `proc_sys` (in the same directory) that is at most two letters
/// from it, the nearest, if one is: what a typo most likely meant.
pub(crate) fn nearest_sysctl(name: &str, proc_sys: &std::path::Path) -> Option<String> {
    if crate::actuate::sysctl::is_known_host_wide(name) {
        return None;
    }
    let (table, leaf) = name.rsplit_once('.')?;
    let dir = proc_sys.join(sysctl_rel_path(table));
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|other| (strsim::levenshtein(leaf, &other), other))
        .filter(|(distance, _)| (1..=2).contains(distance))
        .min()
        .map(|(_, other)| format!("{table}.{other}"))
}

fn origin(policy: &Policy) -> String {
    match &policy.origin {
        PolicyOrigin::File(p) => p.display().to_string(),
        PolicyOrigin::BuiltIn => "built-in".to_string(),
    }
}

fn bound(b: &Option<Bound>) -> Value {
    b.as_ref().map_or(Value::Null, |b| json!(b))
}

fn namespaces(n: &Namespaces) -> Value {
    match n {
        Namespaces::All => json!("all"),
        Namespaces::List(list) => list
            .iter()
            .map(|s| match s {
                NamespaceSel::Host => json!("host"),
                NamespaceSel::Inode(i) => json!(i),
                NamespaceSel::Path(p) => json!(p.display().to_string()),
            })
            .collect(),
    }
}

/// A duration as humantime text in days and smaller units: humantime's own output counts months
/// of 30.44 days and years of 365.25, so the policy's `cooldown = "365d"` showed as "11months
/// 30days 3h 50m 24s".
fn shown_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1000 % 1000, "us"),
        (nanos % 1000, "ns"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if shown.is_empty() {
        "0s".to_string()
    } else {
        shown.join(" ")
    }
}

fn rule_json(r: &ParamRule) -> Value {
    json!({
        "name": r.name,
        "line": r.line,
        "mode": r.mode,
        "min": bound(&r.min),
        "max": bound(&r.max),
        "max_step": match r.max_step {
            Some(MaxStep::Absolute(v)) => json!(v),
            Some(step) => json!(step.to_string()),
            None => Value::Null,
        },
        "cooldown": shown_duration(r.cooldown),
        "sources": r.sources,
        "on_exit": r.on_exit,
        "namespaces": namespaces(&r.namespaces),
        "allow_adaptive_off": r.allow_adaptive_off,
        "guard_signals": r.guard_signals,
        "optimizer_levels": r.optimizer_levels,
        // The LLM's advice is automatic only within bounds: shown so that an `auto` entry without
        // them does not surprise anyone by holding the model's advice for approval.
        "llm_mode": r
            .sources
            .contains(&crate::policy::Source::Llm)
            .then(|| r.mode_for(crate::policy::Source::Llm)),
    })
}

fn to_json(policy: &Policy, config: Option<&str>) -> Value {
    let g = &policy.guard;
    let a = &policy.approvals;
    json!({
        "policy": {
            "origin": origin(policy),
            "guard": {
                "windows": g.windows,
                "signals": g.signals,
                "max_changes_per_hour": g.max_changes_per_hour,
                "quarantine": shown_duration(g.quarantine),
            },
            "approvals": {
                "expire_after": shown_duration(a.expire_after),
                "clear_after_windows": a.clear_after_windows,
                "webhook": a.webhook.as_deref().map(crate::approvals::webhook::shown_url),
                "webhook_user": a.webhook_user,
            },
            "defaults": rule_json(&policy.defaults),
            "params": policy.params.iter().map(rule_json).collect::<Vec<_>>(),
        },
        "config": config,
    })
}

/// One line per rule: every key, with `-` for one not set.
fn rule_text(r: &ParamRule) -> String {
    let v = rule_json(r);
    let keys = [
        "mode",
        "min",
        "max",
        "max_step",
        "cooldown",
        "sources",
        "on_exit",
        "namespaces",
        "allow_adaptive_off",
        "guard_signals",
        "optimizer_levels",
    ];
    keys.iter()
        // Shown where set: most entries are not the optimizer's.
        .filter(|k| **k != "optimizer_levels" || !v[**k].is_null())
        .map(|k| {
            let shown = match &v[k] {
                Value::Null => match *k {
                    "guard_signals" => "[guard] signals".to_string(),
                    _ => "-".to_string(),
                },
                Value::String(s) => s.clone(),
                // `sources = []`: nobody may change it, `kpo apply` included.
                Value::Array(items) if items.is_empty() => "none".to_string(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            format!("{k} {shown}")
        })
        .chain(
            (!v["llm_mode"].is_null() && v["llm_mode"] != v["mode"]).then(|| {
                format!(
                    "llm advice {} (auto needs min and max)",
                    v["llm_mode"].as_str().unwrap_or_default()
                )
            }),
        )
        .collect::<Vec<_>>()
        .join("; ")
}

fn to_text(policy: &Policy, config: Option<&str>) -> String {
    let g = &policy.guard;
    let a = &policy.approvals;
    let list = |v: &[crate::policy::HealthSignal]| {
        if v.is_empty() {
            // `signals = []`: the guard judges only entries with their own `guard_signals`.
            return "none".to_string();
        }
        v.iter()
            .map(|s| json!(s).as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("policy {}: valid\n", policy.origin);
    out += &format!(
        "  [guard] windows {}; signals {}; max_changes_per_hour {}; quarantine {}\n",
        g.windows,
        list(&g.signals),
        g.max_changes_per_hour,
        shown_duration(g.quarantine)
    );
    out += &format!(
        "  [approvals] expire_after {}; clear_after_windows {}; webhook {}{}\n",
        shown_duration(a.expire_after),
        a.clear_after_windows,
        // Its path is often the credential (Slack's); the policy file holds it whole.
        a.webhook
            .as_deref()
            .map_or("-".into(), crate::approvals::webhook::shown_url),
        a.webhook_user
            .as_deref()
            .map_or(String::new(), |u| format!("; webhook_user {u}"))
    );
    out += &format!("  [defaults] {}\n", rule_text(&policy.defaults));
    for r in &policy.params {
        out += &format!(
            "  [params.\"{}\"] (line {}) {}\n",
            r.name,
            r.line,
            rule_text(r)
        );
    }
    out += "  parameters no entry names take [defaults]; an exact name beats a glob, a longer glob a shorter one\n";
    if let Some(c) = config {
        out += &format!("config {c}: valid\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[guard]
windows = 4
signals = ["request_p99", "listen_overflows"]

[approvals]
webhook = "http://127.0.0.1:9000/kpo"

[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
max_step = "100%"
cooldown = "5m"
sources = ["rules", "operator"]
namespaces = ["host", 4026532281]
guard_signals = ["listen_overflows"]

[params."net.ipv4.tcp_rmem"]
mode = "recommend"
min = [4096, 16384, 1048576]
max_step = 1048576

[params."vm.swappiness"]
max_step = "7%"

[params."net.ipv4.tcp_wmem"]
mode = "auto"

[params."net.core.netdev_max_backlog"]
mode = "auto"
min = 1000
max = 8000
"#;

    /// Defect (s36 story F6): with `expire_after` no longer than the LLM's consultation period,
    /// its approvals expired before a consultation could refresh them and came back under new
    /// ids, and nothing said so. Warned of, with both durations, only while the LLM is on.
    #[test]
    fn an_expire_after_within_the_llms_consultation_period_is_warned_of() {
        let policy = |expire_after: &str| {
            Policy::parse(
                &format!("[approvals]\nexpire_after = \"{expire_after}\"\n"),
                "p.toml",
            )
            .unwrap()
        };
        let config = |llm: &str| {
            Config::from_toml(
                &format!("tick = \"1s\"\nwindow = \"10s\"\n[llm]\n{llm}"),
                "kpo.toml",
            )
            .unwrap()
        };
        let on = "base_url = \"http://127.0.0.1:8080/v1\"\nevery_windows = 2\n";
        let no_env = |_: &str| None;
        let warning =
            |p: &Policy, c: &Config| approvals_expire_between_llm_consultations(p, c, no_env);
        assert_eq!(
            warning(
                &policy("20s"),
                &config(&format!("{on}min_interval = \"0s\""))
            )
            .as_deref(),
            Some(
                "p.toml: [approvals] expire_after (20s) is not longer than the LLM advisor's \
                 consultation period (20s: every 2 windows of 10s, llm.every_windows 2 and \
                 llm.min_interval 0s): an approval the LLM asks for expires before its next \
                 consultation can refresh it, and the same advice comes back as a new approval, \
                 with a new id and another webhook post, at every consultation; make \
                 expire_after longer than the period"
            )
        );
        assert_eq!(
            warning(
                &policy("21s"),
                &config(&format!("{on}min_interval = \"0s\""))
            ),
            None
        );
        // llm.min_interval 45s: a consultation waits for the fifth window.
        let slow = config(&format!("{on}min_interval = \"45s\""));
        assert!(warning(&policy("50s"), &slow)
            .unwrap()
            .contains("expire_after (50s) is not longer than the LLM advisor's consultation period (50s: every 5 windows of 10s, llm.every_windows 2 and llm.min_interval 45s)"));
        assert_eq!(warning(&policy("51s"), &slow), None);
        // llm.min_interval 40.5s: met at the fourth window, as the schedule counts it (a tenth
        // of it short, at most a second: floor_slack), not the fifth.
        let near = config(&format!("{on}min_interval = \"40500ms\""));
        assert!(warning(&policy("40s"), &near)
            .unwrap()
            .contains("consultation period (40s: every 4 windows of 10s"));
        assert_eq!(warning(&policy("41s"), &near), None);
        // Off: turned off, or nothing to reach (no endpoint or key, here or in the environment).
        let off = config(&format!("{on}min_interval = \"0s\"\nenabled = false"));
        assert_eq!(warning(&policy("20s"), &off), None);
        assert_eq!(warning(&policy("20s"), &config("every_windows = 2")), None);
        let env_key = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-1".to_string());
        assert!(approvals_expire_between_llm_consultations(
            &policy("20s"),
            &config("every_windows = 2\nmin_interval = \"0s\""),
            env_key
        )
        .is_some());
    }

    /// s43 (found by hand): `expire_after = "45s"` with windows of 5 s let the rules' approvals
    /// expire before the rules repeated their advice (every 10 windows), without a word.
    #[test]
    fn approvals_expiring_between_the_rules_repeats_are_warned_of() {
        let policy = |text: &str| Policy::parse(text, "p.toml").unwrap();
        let config = |window: &str| {
            Config::from_toml(
                &format!("tick = \"1s\"\nwindow = \"{window}\"\n"),
                "kpo.toml",
            )
            .unwrap()
        };
        let recommend = "[approvals]\nexpire_after = \"45s\"\n\n[params.\"net.core.somaxconn\"]\n\
                         mode = \"recommend\"\n";
        assert_eq!(
            approvals_expire_between_rules_repeats(&policy(recommend), &config("5s")).as_deref(),
            Some(
                "p.toml: [approvals] expire_after (45s) is not longer than the period at which \
                 the rules repeat advice not acted on (50s: every 10 windows of 5s): an approval \
                 the rules ask for expires before they ask again, nothing waits to be approved \
                 until then, and the same advice comes back as a new approval, with a new id and \
                 another webhook post; make expire_after longer than the period"
            )
        );
        assert_eq!(
            approvals_expire_between_rules_repeats(&policy(recommend), &config("4s")),
            None
        );
        // No entry leaves the rules' advice to an operator: observe everywhere, or the rules
        // not among an entry's sources.
        let observe = "[approvals]\nexpire_after = \"45s\"\n[defaults]\nmode = \"observe\"\n";
        assert_eq!(
            approvals_expire_between_rules_repeats(&policy(observe), &config("5s")),
            None
        );
        let llm_only = format!(
            "{observe}[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nsources = [\"llm\"]\n"
        );
        assert_eq!(
            approvals_expire_between_rules_repeats(&policy(&llm_only), &config("5s")),
            None
        );
        // The built-in default (recommend, every source) with a long window.
        assert!(approvals_expire_between_rules_repeats(&policy(""), &config("10m")).is_some());
    }

    /// s59 story BM-2: at windows of 10 ms, approvals were cleared 300 ms after their advice
    /// stopped, and came back under new ids, without a word.
    #[test]
    fn approvals_cleared_within_a_minute_are_warned_of() {
        let policy = |text: &str| Policy::parse(text, "p.toml").unwrap();
        let config = |window: &str| {
            Config::from_toml(
                &format!("tick = \"10ms\"\nwindow = \"{window}\"\n"),
                "kpo.toml",
            )
            .unwrap()
        };
        // The built-in defaults: mode recommend, every source; clear_after_windows 30.
        assert_eq!(
            approvals_cleared_too_soon(&policy(""), &config("10ms")).as_deref(),
            Some(
                "p.toml: [approvals] clear_after_windows 30 with windows of 10ms clears an \
                 approval of the rules' 300ms after its advice stops: too soon for anyone to see it in kpo \
                 pending or act on the webhook's post, and advice that comes back makes a new \
                 approval, with a new id and another post; make clear_after_windows at least \
                 6000 (a minute)"
            )
        );
        assert!(approvals_cleared_too_soon(&policy(""), &config("1990ms")).is_some());
        assert_eq!(approvals_cleared_too_soon(&policy(""), &config("2s")), None);
        let longer = "[approvals]\nclear_after_windows = 6000\n";
        assert_eq!(
            approvals_cleared_too_soon(&policy(longer), &config("10ms")),
            None
        );
        // No advice waits for an operator: nothing is approved, nothing cleared.
        let observe = "[defaults]\nmode = \"observe\"\n";
        assert_eq!(
            approvals_cleared_too_soon(&policy(observe), &config("10ms")),
            None
        );
        let operator_only = format!(
            "{observe}[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nsources = [\"operator\"]\n"
        );
        assert_eq!(
            approvals_cleared_too_soon(&policy(&operator_only), &config("10ms")),
            None
        );
        // The LLM's approvals clear by its consultations, not by windows (s59 review1 R1-6).
        let llm = operator_only.replace("\"operator\"", "\"llm\"");
        assert_eq!(
            approvals_cleared_too_soon(&policy(&llm), &config("10ms")),
            None
        );
        let rules = operator_only.replace("\"operator\"", "\"rules\"");
        assert!(approvals_cleared_too_soon(&policy(&rules), &config("10ms")).is_some());
    }

    /// Defect: `kpo check` called valid a configuration with a password in `llm.base_url` and
    /// an `llm.api_key`, which `kpo run` refuses.
    #[test]
    fn a_configuration_kpo_run_refuses_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cred.toml");
        std::fs::write(
            &config,
            "[llm]\nbase_url = \"https://bob:pw@127.0.0.1:9/v1\"\napi_key = \"sk-1\"\n",
        )
        .unwrap();
        let policy = dir.path().join("obs.toml");
        std::fs::write(&policy, "[defaults]\n").unwrap();
        let e = check(CheckArgs {
            policy: Some(policy),
            config: Some(config.clone()),
            recommend_only: false,
            window: None,
            llm: false,
            json: false,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!(
                "{}: `llm.base_url` carries a user name and password, and an API key is set too",
                config.display()
            )),
            "{e}"
        );
    }

    /// Defect (s44 storyB): `kpo check` called valid a `sysfs_root` that names nothing or a
    /// file, and a `proc_root` with no process in it, which `kpo run` refuses at its start.
    #[test]
    fn roots_kpo_run_refuses_are_refused_by_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("obs.toml");
        std::fs::write(&policy, "[defaults]\n").unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let checked = |body: String| {
            let config = dir.path().join("kpo.toml");
            std::fs::write(&config, body).unwrap();
            let out = check(CheckArgs {
                policy: Some(policy.clone()),
                config: Some(config.clone()),
                recommend_only: false,
                window: None,
                llm: false,
                json: false,
            });
            (config.display().to_string(), out.map_err(|e| e.to_string()))
        };
        let (c, out) = checked(format!(
            "sysfs_root = {:?}
",
            dir.path().join("nowhere")
        ));
        assert_eq!(
            out.unwrap_err(),
            format!(
                "{c}: `sysfs_root` = {:?}: No such file or directory (os error 2)",
                dir.path().join("nowhere")
            )
        );
        let (c, out) = checked(format!(
            "sysfs_root = {file:?}
"
        ));
        assert_eq!(
            out.unwrap_err(),
            format!("{c}: `sysfs_root` = {file:?}: not a directory")
        );
        let (c, out) = checked(format!(
            "proc_root = {empty:?}
"
        ));
        assert_eq!(
            out.unwrap_err(),
            format!(
                "{c}: `proc_root` = {empty:?}: no process directory (<pid>/) in it, so no \
                 network namespace or listener can be found; is procfs mounted there (e.g. the \
                 host's /proc at /host/proc)?"
            )
        );
        let (_, out) = checked(format!(
            "sysfs_root = {empty:?}
proc_root = \"/proc\"
"
        ));
        assert!(out.is_ok(), "{out:?}");
        // An event stream kpo run cannot open (s45 storyF: `valid`, then kpo run refused it).
        let (c, out) = checked(format!("events = {empty:?}\n"));
        assert_eq!(
            out.unwrap_err(),
            format!(
                "{c}: `events` = {empty:?}: it is a directory: kpo run could not open it; give a \
                 file in it, or - for standard output"
            )
        );
        let lost = dir.path().join("nowhere/events.ndjson");
        let (c, out) = checked(format!("events = {lost:?}\n"));
        assert_eq!(
            out.unwrap_err(),
            format!(
                "{c}: `events` = {lost:?}: its directory {} does not exist: kpo run creates the \
                 file, not its directory",
                dir.path().join("nowhere").display()
            )
        );
        let under_a_file = file.join("events.ndjson");
        let (c, out) = checked(format!("events = {under_a_file:?}\n"));
        assert_eq!(
            out.unwrap_err(),
            format!(
                "{c}: `events` = {under_a_file:?}: {} is not a directory: kpo run could not \
                 create the file there",
                file.display()
            )
        );
        for fine in [empty.join("events.ndjson"), file.clone()] {
            let (_, out) = checked(format!("events = {fine:?}\n"));
            assert!(out.is_ok(), "{fine:?}: {out:?}");
        }
    }

    /// Defect: `namespaces = ["/run/netns/wbe"]` (a typo) was `valid`, and every change the
    /// entry covers was refused as `namespace_not_covered` from the first one on. A path that
    /// names no file is warned of, in `[defaults]` as in an entry; "host", an inode and a path
    /// that exists are not.
    #[test]
    fn a_namespace_path_that_does_not_exist_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let (there, missing) = (dir.path().join("web"), dir.path().join("wbe"));
        std::fs::write(&there, "").unwrap();
        crate::policy::stand_in_netns(&there);
        // The sysctls exist in this /proc/sys, the first namespace's: only the namespaces are
        // warned of.
        std::fs::create_dir_all(dir.path().join("net/core")).unwrap();
        std::fs::write(dir.path().join("net/core/somaxconn"), "4096\n").unwrap();
        std::fs::write(dir.path().join("net/core/netdev_budget"), "300\n").unwrap();
        let p = Policy::parse(
            &format!(
                "[defaults]\nnamespaces = [\"{m}\"]\n\
                 [params.\"net.core.somaxconn\"]\nmode = \"auto\"\n\
                 namespaces = [\"host\", 4026532281, \"{t}\", \"{m}\"]\n\
                 [params.\"net.core.netdev_*\"]\nnamespaces = [\"{t}\"]\n\
                 [params.\"net.core.netdev_budget\"]\nmode = \"auto\"\n",
                t = there.display(),
                m = missing.display()
            ),
            "p.toml",
        )
        .unwrap();
        let said = |line: usize, entry: &str| {
            format!(
                "p.toml:{line}: {entry}: namespaces names {}, which does not exist now: a typo? \
                 Until it exists the entry covers no namespace there, and KPO refuses every \
                 change it would cover",
                missing.display()
            )
        };
        assert_eq!(
            warnings(&p, dir.path()),
            vec![
                said(1, "[defaults]"),
                said(3, "params.\"net.core.somaxconn\""),
                // [defaults]' list, which leaves out the host, for a host-wide key (review1
                // R1-4: not said when inherited).
                "p.toml:8: params.\"net.core.netdev_budget\": net.core.netdev_budget is \
                 host-wide, not one per network namespace, and the entry covers only other \
                 namespaces: KPO does not change the whole host on behalf of one, so every \
                 change of it fails; add \"host\" to namespaces, or remove the entry"
                    .to_string(),
            ]
        );
        // Several of an entry's paths: one line (pods come and go; s49 storyU U4).
        let p = Policy::parse(
            &format!(
                "[params.\"net.core.somaxconn\"]\nnamespaces = [\"{m}\", \"{t}\", \"{m}2\"]\n",
                t = there.display(),
                m = missing.display()
            ),
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            warnings(&p, dir.path()),
            vec![format!(
                "p.toml:1: params.\"net.core.somaxconn\": namespaces names 2 paths that do not \
                 exist now ({m}, {m}2): typos? Until each exists the entry covers no namespace \
                 there, and KPO refuses every change it would cover",
                m = missing.display()
            )]
        );
        // Many: the first eight named, then how many more (the log line stays a line).
        let many: Vec<String> = (1..=11)
            .map(|i| format!("{}{i}", missing.display()))
            .collect();
        let p = Policy::parse(
            &format!(
                "[params.\"net.core.somaxconn\"]\nnamespaces = [{}]\n",
                many.iter()
                    .map(|m| format!("\"{m}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            warnings(&p, dir.path()),
            vec![format!(
                "p.toml:1: params.\"net.core.somaxconn\": namespaces names 11 paths that do not \
                 exist now ({} and 3 more): typos? Until each exists the entry covers no \
                 namespace there, and KPO refuses every change it would cover",
                many[..8].join(", ")
            )]
        );
    }

    /// Defect: `namespaces = ["/etc/hostname"]` (a file, no namespace) was `valid` while the
    /// policy covered no namespace there (s41). Such a file is warned of with what it is; a
    /// namespace's own file (/proc/self/ns/net) is not.
    #[test]
    fn a_namespace_path_that_names_no_namespace_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web");
        std::fs::write(&file, "").unwrap();
        std::fs::create_dir_all(dir.path().join("net/core")).unwrap();
        std::fs::write(dir.path().join("net/core/somaxconn"), "4096\n").unwrap();
        let p = Policy::parse(
            &format!(
                "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n\
                 namespaces = [\"{f}\", \"/proc/self/ns/net\", \"{d}\", \"{f}/x\"]\n",
                f = file.display(),
                d = dir.path().display()
            ),
            "p.toml",
        )
        .unwrap();
        let said = |path: &std::path::Path, what: &str| {
            format!(
                "p.toml:1: params.\"net.core.somaxconn\": namespaces names {}, not a network \
                 namespace: {what}, where a namespace is a file on nsfs (/run/netns/NAME, \
                 /proc/PID/ns/net): it covers no namespace, and KPO refuses every change the \
                 entry would cover there",
                path.display()
            )
        };
        assert_eq!(
            warnings(&p, dir.path()),
            vec![
                said(&file, "a regular file"),
                said(dir.path(), "a directory"),
                // Not missing, as a path that cannot be read (/proc/1/ns/net in some containers)
                // was called.
                format!(
                    "p.toml:1: params.\"net.core.somaxconn\": namespaces names {}/x, cannot be \
                     read now: Not a directory (os error 20): it covers no namespace, and KPO \
                     refuses every change the entry would cover there",
                    file.display()
                )
            ]
        );
    }

    /// Defect: `[params."net.core.somaxcon"]` (a letter short) was `valid`, and somaxconn took
    /// `[defaults]` without a word. An exact sysctl this machine lacks is warned of; a glob, a
    /// NIC's or cpufreq's name, and a key that exists are not.
    #[test]
    fn an_exact_sysctl_this_machine_lacks_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/core")).unwrap();
        std::fs::write(sys.join("net/core/somaxconn"), "4096\n").unwrap();
        // The machine's first network namespace: its host-wide net keys are shown.
        std::fs::write(sys.join("net/core/netdev_budget"), "300\n").unwrap();
        std::fs::create_dir_all(sys.join("net/ipv4/conf/eth0.100")).unwrap();
        std::fs::write(sys.join("net/ipv4/conf/eth0.100/rp_filter"), "1\n").unwrap();
        let p = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n\
             [params.\"net.core.somaxcon\"]\nmode = \"auto\"\n\
             [params.\"net.ipv4.conf.eth0/100.rp_filter\"]\nmode = \"observe\"\n\
             [params.\"net.core.netdev_*\"]\nmode = \"observe\"\n\
             [params.\"ethtool:eth9:rx-usecs\"]\nmode = \"observe\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            missing_sysctls(&p, sys),
            vec![format!(
                "p.toml:3: params.\"net.core.somaxcon\": this machine has no such sysctl \
                 ({}/net/core/somaxcon): a typo of net.core.somaxconn? The entry covers nothing \
                 here, and the \
                 parameter meant takes [defaults] (a key of a device or a module appears once \
                 the device exists or the module is loaded)",
                sys.display()
            )]
        );
    }

    /// Gap: somaxconn 16 under min 128 and max_step 100% was `valid` without a word, and no
    /// advisor could ever move it (32 at most from 16, refused below 128). Warned of, from the
    /// value in the proc/sys tree; not within a step's reach, nor without a max_step, nor in
    /// mode observe, nor for an entry that does not cover the host's namespace.
    #[test]
    fn bounds_no_step_can_reach_from_the_value_here_are_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/core")).unwrap();
        std::fs::create_dir_all(sys.join("net/ipv4")).unwrap();
        std::fs::create_dir_all(sys.join("vm")).unwrap();
        std::fs::write(sys.join("net/core/somaxconn"), "16\n").unwrap();
        std::fs::write(sys.join("net/core/netdev_budget"), "300\n").unwrap();
        std::fs::write(sys.join("net/ipv4/tcp_rmem"), "4096\t131072\t6291456\n").unwrap();
        std::fs::write(sys.join("vm/swappiness"), "60\n").unwrap();
        let p = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n\
             max_step = \"100%\"\nnamespaces = [\"host\"]\n\
             [params.\"net.ipv4.tcp_rmem\"]\nmode = \"recommend\"\n\
             max = [8192, 65536, 6291456]\nmax_step = 4096\n\
             [params.\"vm.swappiness\"]\nmode = \"observe\"\nmin = 100\nmax_step = 1\n\
             [params.\"net.core.netdev_budget\"]\nmode = \"auto\"\nmin = 600\nmax = 900\n\
             max_step = \"100%\"\nnamespaces = [\"host\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            out_of_reach_sysctls(&p, sys),
            vec![
                "p.toml:1: params.\"net.core.somaxconn\": net.core.somaxconn is 16 here, below \
                 min 128, and max_step 100% allows at most 32 from 16: no advisor can change \
                 it; widen max_step or lower min"
                    .to_string(),
                "p.toml:7: params.\"net.ipv4.tcp_rmem\": net.ipv4.tcp_rmem's element 1 is \
                 131072 here, above max 65536, and max_step 4096 allows no lower than 126976 \
                 from 131072: no advisor can change it; widen max_step or raise max"
                    .to_string(),
            ]
        );
        assert_eq!(warnings(&p, sys), out_of_reach_sysctls(&p, sys));
        let elsewhere = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax_step = 1\n\
             namespaces = [4026532281]\n",
            "p.toml",
        )
        .unwrap();
        assert!(out_of_reach_sysctls(&elsewhere, sys).is_empty());
    }

    /// Gap (s54 story AO-11): the example docs/policy.md gives under "Format", the one an
    /// operator copies key by key, drew two warnings of `kpo check`, and let advisors change
    /// every `net.ipv4.tcp_*` key in auto without bounds. It loads, and draws only the warning it
    /// says it draws: its example path does not exist.
    #[test]
    fn the_docs_format_example_loads_with_only_its_own_warning() {
        const DOC: &str = include_str!("../../docs/policy.md");
        let format = DOC.split("\n## Format\n").nth(1).expect("a Format section");
        let example = format
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block under Format");
        let policy = Policy::parse(example, "policy.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        for key in [
            "net/core/somaxconn",
            "net/core/netdev_budget",
            "net/ipv4/tcp_rmem",
        ] {
            std::fs::create_dir_all(sys.join(key).parent().unwrap()).unwrap();
        }
        std::fs::write(sys.join("net/core/somaxconn"), "4096\n").unwrap();
        std::fs::write(sys.join("net/core/netdev_budget"), "300\n").unwrap();
        std::fs::write(sys.join("net/ipv4/tcp_rmem"), "4096\t131072\t6291456\n").unwrap();
        let mut said = warnings(&policy, sys);
        said.extend(optimizer_held_back_by_the_limits(
            &policy,
            &Config::default(),
        ));
        assert!(
            !std::path::Path::new("/run/netns/web").exists(),
            "the test needs /run/netns/web absent"
        );
        assert_eq!(said.len(), 1, "{said:#?}");
        assert!(said[0].contains("namespaces names /run/netns/web, which does not exist now"));
        let tcp_mem = crate::actuate::param::ParamAddress::sysctl(
            "net.ipv4.tcp_mem",
            crate::actuate::param::Target::Host,
        )
        .unwrap();
        let tcp = policy.rule_for(&tcp_mem);
        assert_ne!(
            tcp.mode,
            Mode::Auto,
            "a glob in auto without bounds is no template"
        );
    }

    /// Gap (s54 story AO-2): a signal or a source named twice was accepted without a word,
    /// while a namespace named twice is warned of. Said once per item, at the entry that wrote
    /// it, not at the entries that inherit `[defaults]`' list.
    #[test]
    fn a_signal_or_source_named_twice_is_warned_of() {
        let policy = Policy::parse(
            "[guard]\nsignals = [\"request_p99\", \"runq_p99\", \"request_p99\", \"request_p99\"]\n\n\
             [defaults]\nsources = [\"rules\", \"rules\"]\n\n\
             [params.\"net.core.somaxconn\"]\nguard_signals = [\"listen_overflows\", \
             \"listen_overflows\"]\n\n\
             [params.\"net.ipv4.tcp_fin_timeout\"]\nsources = [\"llm\", \"rules\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            repeated_signals_and_sources(&policy),
            vec![
                "p.toml: [guard] signals names request_p99 3 times: a typo for another signal? \
                 Changes are judged by the signals named"
                    .to_string(),
                "p.toml:4: [defaults]: sources names rules twice: a typo for another advisor? \
                 The entry takes advice only from the sources named"
                    .to_string(),
                "p.toml:7: params.\"net.core.somaxconn\": guard_signals names listen_overflows \
                 twice: a typo for another signal? Changes are judged by the signals named"
                    .to_string(),
            ]
        );
        let clean = Policy::parse("[guard]\nsignals = [\"request_p99\"]\n", "p.toml").unwrap();
        assert!(repeated_signals_and_sources(&clean).is_empty());
    }

    /// Gap (s46 storyK K1): an agent in a network namespace of its own, with the default
    /// `namespaces = "all"`, changed the keys of every namespace it found (another agent's
    /// namespace's, and it could the first one's) without a word. Warned of, for each `auto`
    /// entry covering every namespace; not in the first namespace, and not for an entry kept
    /// to its own.
    #[test]
    fn auto_in_every_namespace_outside_the_first_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/core")).unwrap();
        std::fs::write(sys.join("net/core/somaxconn"), "4096\n").unwrap();
        let policy = Policy::parse(
            "[defaults]\nmode = \"auto\"\n\n\
             [params.\"net.core.somaxconn\"]\nmode = \"auto\"\nnamespaces = [\"host\"]\n\n\
             [params.\"net.ipv4.tcp_fin_timeout\"]\nmode = \"recommend\"\n\n\
             [params.\"vm.swappiness\"]\nmode = \"auto\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            every_namespace_from_outside_the_first(&policy, sys),
            ["p.toml:1: [defaults]: mode auto in every network namespace (namespaces = \"all\"), \
              and this agent runs outside the machine's first one: it changes the keys of every \
              namespace it finds, the first one's and other pods' included, which the node's \
              agent changes too, and each would take the other's change for a person's; \
              namespaces = [\"host\"] keeps the entry to this agent's own namespace"]
        );
        std::fs::write(sys.join("net/core/netdev_budget"), "300\n").unwrap();
        assert!(every_namespace_from_outside_the_first(&policy, sys).is_empty());
    }

    /// s54 story AO-3: a list bound of another length than the value here refuses every change
    /// at run time; `kpo check` says so. One integer, or a list of the right length, is fine.
    #[test]
    fn a_bound_on_a_word_and_a_read_only_key_are_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/ipv4")).unwrap();
        std::fs::write(sys.join("net/ipv4/tcp_congestion_control"), "bbr\n").unwrap();
        let available = sys.join("net/ipv4/tcp_available_congestion_control");
        std::fs::write(&available, "reno cubic bbr\n").unwrap();
        std::fs::set_permissions(&available, std::fs::Permissions::from_mode(0o444)).unwrap();
        let p = Policy::parse(
            "[params.\"net.ipv4.tcp_congestion_control\"]\nmode = \"auto\"\nmin = 0\nmax = 10\n\
             [params.\"net.ipv4.tcp_available_congestion_control\"]\nmode = \"auto\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            entries_every_change_refuses(&p, sys),
            [
                "p.toml:1: params.\"net.ipv4.tcp_congestion_control\": min (the entry's own or \
                 [defaults]') bounds an integer and net.ipv4.tcp_congestion_control is a word \
                 here (bbr): every change of it is refused as out of bounds; remove min and max \
                 (from [defaults] too, when they come from there)",
                "p.toml:5: params.\"net.ipv4.tcp_available_congestion_control\": \
                 net.ipv4.tcp_available_congestion_control is read-only in the network namespace \
                 kpo check runs in (mode 444): every change of it there is refused; leave it to \
                 mode \"observe\", or remove the entry"
            ]
        );
        // Watched only, they are no trouble (s62 review1 R1-6).
        let observed = Policy::parse(
            "[params.\"net.ipv4.tcp_available_congestion_control\"]\nmode = \"observe\"\n\
             [params.\"net.ipv4.tcp_congestion_control\"]\nmode = \"observe\"\nmin = 0\n",
            "p.toml",
        )
        .unwrap();
        assert!(entries_every_change_refuses(&observed, sys).is_empty());
    }

    #[test]
    fn a_list_bound_of_another_length_than_the_value_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/core")).unwrap();
        std::fs::create_dir_all(sys.join("net/ipv4")).unwrap();
        std::fs::write(sys.join("net/core/somaxconn"), "4096\n").unwrap();
        std::fs::write(sys.join("net/ipv4/tcp_rmem"), "4096\t131072\t6291456\n").unwrap();
        let p = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmin = [128, 256]\nmax = 8192\n\
             [params.\"net.ipv4.tcp_rmem\"]\nmin = 4096\nmax = [8192, 262144, 8388608]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            entries_every_change_refuses(&p, sys),
            [
                "p.toml:1: params.\"net.core.somaxconn\": min has 2 elements and \
              net.core.somaxconn has 1 here: every change of it is refused as out of bounds; \
              give 1 (or one integer for every element)"
            ]
        );
    }

    /// s54 story AO-4: `allow_adaptive_off` on an entry that covers no coalescing parameter
    /// changes nothing; warned of. Not for `ethtool:` entries, globs that may cover them, or
    /// `[defaults]`, whose heirs may be coalescing entries.
    #[test]
    fn allow_adaptive_off_outside_coalescing_is_warned_of() {
        let p = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nallow_adaptive_off = true\n\
             [params.\"ethtool:eth0:rx-usecs\"]\nallow_adaptive_off = true\n\
             [params.\"ethtool:*:tx-usecs\"]\nallow_adaptive_off = true\n\
             [params.\"e*\"]\nallow_adaptive_off = true\n\
             [params.\"cpufreq:*:scaling_max_freq\"]\nallow_adaptive_off = false\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            adaptive_off_outside_coalescing(&p),
            [
                "p.toml:1: params.\"net.core.somaxconn\": allow_adaptive_off is for NIC \
              coalescing (`ethtool:...`) only, and this entry covers none: it changes nothing \
              here"
            ]
        );
        // From [defaults]: for whichever heirs are coalescing entries; not said for the others.
        let p = Policy::parse(
            "[defaults]\nallow_adaptive_off = true\n\
             [params.\"net.core.somaxconn\"]\nmax = 8192\n",
            "p.toml",
        )
        .unwrap();
        assert!(adaptive_off_outside_coalescing(&p).is_empty());
    }

    /// s58 story BG-6: an optimizer entry in mode recommend, or made so by --recommend-only, is
    /// left out by the optimizer; `kpo check` says so. Not an entry without the optimizer among
    /// its sources, nor one in mode auto.
    #[test]
    fn an_optimizer_entry_in_mode_recommend_is_warned_of() {
        let text = "[params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"recommend\"\n\
                    sources = [\"optimizer\"]\nmin = 1200000\nmax = 3000000\n\
                    [params.\"ethtool:eth0:rx-usecs\"]\nmode = \"auto\"\n\
                    sources = [\"optimizer\"]\nmin = 0\nmax = 100\n\
                    [params.\"ethtool:eth0:tx-usecs\"]\nmode = \"recommend\"\n\
                    sources = [\"operator\"]\nmin = 0\nmax = 100\n";
        let why = |line: usize, name: &str, by: &str| {
            format!(
                "p.toml:{line}: params.\"{name}\": the optimizer leaves this entry out in {by}: \
                 its trials do not wait for approvals; give the entry mode auto, within its min \
                 and max, for the optimizer to search it"
            )
        };
        let mut p = Policy::parse(text, "p.toml").unwrap();
        assert_eq!(
            optimizer_entries_in_recommend(&p),
            [why(1, "cpufreq:*:scaling_max_freq", "mode recommend")]
        );
        p.force_recommend();
        let forced = "mode recommend (made so by --recommend-only)";
        assert_eq!(
            optimizer_entries_in_recommend(&p),
            [
                why(1, "cpufreq:*:scaling_max_freq", forced),
                why(6, "ethtool:eth0:rx-usecs", forced)
            ]
        );
    }

    /// s57 story BD-3: an exact host-wide sysctl in an entry that covers only other namespaces
    /// can never be changed; warned of. Not a per-namespace key, nor an entry that covers the
    /// host too, nor a glob (whose keys may be per namespace), nor one that observes (it changes
    /// nothing anyway: s57 review2 R2-9).
    #[test]
    fn a_host_wide_key_only_in_other_namespaces_is_warned_of() {
        let p = Policy::parse(
            "[params.\"vm.dirty_ratio\"]\nnamespaces = [4026532999]\n\
             [params.\"net.core.netdev_max_backlog\"]\nnamespaces = [\"/run/netns/web\"]\n\
             [params.\"net.core.somaxconn\"]\nnamespaces = [4026532999]\n\
             [params.\"vm.swappiness\"]\nnamespaces = [\"host\", 4026532999]\n\
             [params.\"vm.dirty_*\"]\nnamespaces = [4026532999]\n\
             [params.\"vm.dirty_bytes\"]\nnamespaces = [4026532999]\nmode = \"observe\"\n",
            "p.toml",
        )
        .unwrap();
        let why = |line: usize, name: &str| {
            format!(
                "p.toml:{line}: params.\"{name}\": {name} is host-wide, not one per network \
                 namespace, and the entry covers only other namespaces: KPO does not change the \
                 whole host on behalf of one, so every change of it fails; add \"host\" to \
                 namespaces, or remove the entry"
            )
        };
        assert_eq!(
            host_wide_keys_outside_the_host(&p),
            [
                why(1, "vm.dirty_ratio"),
                why(3, "net.core.netdev_max_backlog")
            ]
        );
    }

    /// s54 story AO-1: `mode = "auto"` with no `namespaces` covers every namespace on the machine
    /// by the default alone, without a word. Warned of once for `[defaults]` (its heirs are the
    /// same case), else per entry; not where `namespaces` is written, even as "all", nor for an
    /// entry in no namespace, nor outside the first namespace (the warning there says more).
    #[test]
    fn auto_in_every_namespace_by_default_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/core")).unwrap();
        for f in ["somaxconn", "netdev_budget"] {
            std::fs::write(sys.join("net/core").join(f), "300\n").unwrap();
        }
        let policy = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n\n\
             [params.\"net.ipv4.tcp_fin_timeout\"]\nmode = \"auto\"\nnamespaces = \"all\"\n\n\
             [params.\"net.ipv4.tcp_*\"]\nmode = \"auto\"\nnamespaces = [\"host\"]\n\n\
             [params.\"net.core.netdev_budget\"]\nmode = \"auto\"\n\n\
             [params.\"vm.swappiness\"]\nmode = \"auto\"\n",
            "p.toml",
        )
        .unwrap();
        let warned = every_namespace_by_default(&policy, sys);
        assert_eq!(
            warned,
            ["p.toml:1: params.\"net.core.somaxconn\": mode auto with no namespaces written: it \
              covers every network namespace on this machine (the default, \"all\"), every \
              container's and pod's included; write namespaces = \"all\" to mean that, or \
              [\"host\"] to keep it to the agent's own namespace"]
        );
        // In [defaults]: said once, for it, and its heirs that write their own are not the case.
        let policy = Policy::parse(
            "[defaults]\nmode = \"auto\"\n\n\
             [params.\"net.core.somaxconn\"]\nmax = 8192\n\n\
             [params.\"net.ipv4.tcp_fin_timeout\"]\nnamespaces = [\"host\"]\n",
            "p.toml",
        )
        .unwrap();
        let warned = every_namespace_by_default(&policy, sys);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].starts_with("p.toml:1: [defaults]: "),
            "{warned:?}"
        );
        // Written in [defaults]: every heir has it written.
        let policy = Policy::parse(
            "[defaults]\nmode = \"auto\"\nnamespaces = \"all\"\n\n\
             [params.\"net.core.somaxconn\"]\nmax = 8192\n",
            "p.toml",
        )
        .unwrap();
        assert!(every_namespace_by_default(&policy, sys).is_empty());
        // A glob that starts with an alternation may cover net keys too (s54 review1 N1).
        let policy = Policy::parse(
            "[params.\"{net,vm}.ipv4.tcp_*\"]\nmode = \"auto\"\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(every_namespace_by_default(&policy, sys).len(), 1);
        // Outside the first namespace the other warning says it.
        std::fs::remove_file(sys.join("net/core/netdev_budget")).unwrap();
        let policy = Policy::parse("[defaults]\nmode = \"auto\"\n", "p.toml").unwrap();
        assert!(every_namespace_by_default(&policy, sys).is_empty());
        assert_eq!(
            every_namespace_from_outside_the_first(&policy, sys).len(),
            1
        );
    }

    /// Outside the machine's first network namespace (a pod without host networking) the kernel
    /// hides the host-wide net keys: `net.core.netdev_max_backlog` was warned of as "no such
    /// sysctl: a typo?" (seen by hand, qa-act). It says why it is missing instead.
    #[test]
    fn a_host_wide_net_key_outside_the_first_namespace_is_no_typo() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("net/core")).unwrap();
        std::fs::write(sys.join("net/core/somaxconn"), "4096\n").unwrap();
        // The one warning a policy gets here.
        let warned = |policy: &str| {
            let w = missing_sysctls(&Policy::parse(policy, "p.toml").unwrap(), sys);
            assert_eq!(w.len(), 1, "{w:?}");
            w[0].clone()
        };
        let w = warned("[params.\"net.core.netdev_max_backlog\"]\nmode = \"auto\"\n");
        assert!(
            w.starts_with(&format!(
                "p.toml:1: params.\"net.core.netdev_max_backlog\": \
                 {}/net/core/netdev_max_backlog is missing in the agent's network namespace, \
                 which is not the machine's first one",
                sys.display()
            )),
            "{w}"
        );
        assert!(
            w.ends_with("(or the name is mistyped: the host-wide keys cannot be seen from here)"),
            "{w}"
        );
        // A host-wide key the kernel is known to have, a letter from one that is there
        // (tcp_mem, tcp_rmem): still the host-wide words (the s45 review).
        std::fs::create_dir_all(sys.join("net/ipv4")).unwrap();
        std::fs::write(sys.join("net/ipv4/tcp_rmem"), "4096 131072 6291456\n").unwrap();
        let w = warned("[params.\"net.ipv4.tcp_mem\"]\nmode = \"auto\"\n");
        assert!(
            w.contains("is missing in the agent's network namespace") && !w.contains("a typo of"),
            "{w}"
        );
        // A glob of host-wide keys covers none here: said, as for an exact name (s44 storyC);
        // one that covers a key here (somaxconn) is not.
        let w = warned(
            "[params.\"net.core.netdev_*\"]\nmode = \"auto\"\n\
             [params.\"net.core.somax*\"]\nmode = \"observe\"\n",
        );
        assert!(
            w.starts_with(&format!(
                "p.toml:1: params.\"net.core.netdev_*\": covers no key under {}/net/core, in the \
                 agent's network namespace, which is not the machine's first one",
                sys.display()
            )),
            "{w}"
        );
        // A letter short of a key that is there: a typo, not a host-wide key (s45 storyF was
        // told to run the agent with host networking).
        let w = warned("[params.\"net.core.somaxcon\"]\nmode = \"auto\"\n");
        assert!(
            w.contains(&format!(
                "this machine has no such sysctl ({}/net/core/somaxcon): a typo of \
                 net.core.somaxconn?",
                sys.display()
            )),
            "{w}"
        );
    }

    /// Gap: an optimizer knob's own `guard_signals = ["runq_p99"]` passed `kpo check` without a
    /// word, though the guard never judges the optimizer's trials by a latency. Warned of for a
    /// cpufreq or coalescing entry the optimizer may change; not for one it may not, not for a
    /// sysctl's, and not for a list without a latency.
    #[test]
    fn a_latency_the_guard_skips_for_the_optimizers_trials_is_warned_of() {
        let p = Policy::parse(
            "[params.\"cpufreq:*:scaling_max_freq\"]\nsources = [\"optimizer\", \"operator\"]\n\
             guard_signals = [\"runq_p99\", \"listen_overflows\", \"request_p99\"]\n\
             [params.\"ethtool:eth0:rx-usecs\"]\nsources = [\"operator\"]\n\
             guard_signals = [\"runq_p99\"]\n\
             [params.\"ethtool:eth0:tx-usecs\"]\nsources = [\"optimizer\"]\n\
             guard_signals = [\"listen_overflows\"]\n\
             [params.\"net.core.somaxconn\"]\nguard_signals = [\"request_p99\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            latency_signals_the_trials_skip(&p),
            vec![
                "p.toml:1: params.\"cpufreq:*:scaling_max_freq\": guard_signals names runq_p99 \
                 and request_p99, which the guard does not judge the optimizer's trials by: a \
                 trial trades latency for energy within the SLO, which the optimizer checks \
                 itself (`slo_max_us`). It still judges an operator's or another advisor's \
                 change of this parameter"
                    .to_string()
            ]
        );
    }

    /// s52 story AC-9: somaxconn's `guard_signals = ["listen_overflows"]` left every raise
    /// judged by nothing without a word. Warned of for an entry's own list and for `[guard]
    /// signals` a queue takes; not for a list with another signal, an entry in mode observe, or
    /// `signals = []` (judging nothing by choice).
    #[test]
    fn a_queue_whose_raise_no_signal_judges_is_warned_of() {
        let p = Policy::parse(
            "[guard]\nsignals = [\"softnet_drops\"]\n\
             [params.\"net.core.somaxconn\"]\nguard_signals = [\"listen_overflows\", \
             \"tcp_retransmits\"]\n\
             [params.\"net.ipv4.tcp_max_syn_backlog\"]\nguard_signals = [\"listen_overflows\", \
             \"request_p99\"]\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            raises_judged_by_nothing(&p),
            vec![
                "p.toml:3: params.\"net.core.somaxconn\": guard_signals (listen_overflows, \
                 tcp_retransmits) leaves a raise of net.core.somaxconn judged by nothing: a \
                 longer queue is not judged by its own drops, so the guard keeps every raise \
                 unjudged; add a signal such as request_p99"
                    .to_string(),
                "p.toml: [guard] signals (softnet_drops) leaves a raise of \
                 net.core.netdev_max_backlog judged by nothing: a longer queue is not judged by \
                 its own drops, so the guard keeps every raise unjudged; add a signal such as \
                 request_p99"
                    .to_string(),
            ]
        );
        let quiet = |text: &str| raises_judged_by_nothing(&Policy::parse(text, "p.toml").unwrap());
        assert_eq!(
            quiet("[params.\"net.core.somaxconn\"]\nmode = \"observe\"\nguard_signals = [\"listen_overflows\"]\n"),
            Vec::<String>::new()
        );
        assert_eq!(quiet("[guard]\nsignals = []\n"), Vec::<String>::new());
        assert_eq!(quiet(""), Vec::<String>::new());
    }

    /// s51 story AA F6: an optimizer entry whose max_step cannot cross its range in one step,
    /// and an hourly limit below the search's budget, held the search back without a word at
    /// load. Warned of; not for a step that crosses the range, an entry the optimizer may not
    /// change or may only recommend, nor a limit at the budget.
    #[test]
    fn limits_that_hold_the_optimizer_back_are_warned_of() {
        let text = "[guard]\nmax_changes_per_hour = 6\n\
                    [params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1200000\n\
                    max = 3000000\nmax_step = 500000\nsources = [\"optimizer\"]\n\
                    [params.\"ethtool:eth0:rx-usecs\"]\nmode = \"auto\"\nmin = 0\nmax = 100\n\
                    max_step = \"50%\"\nsources = [\"optimizer\"]\n\
                    [params.\"ethtool:eth1:rx-usecs\"]\nmode = \"auto\"\nmin = 10\nmax = 100\n\
                    max_step = 90\nsources = [\"optimizer\"]\n\
                    [params.\"ethtool:eth2:rx-usecs\"]\nmode = \"auto\"\nmin = 0\nmax = 100\n\
                    max_step = 1\nsources = [\"operator\"]\n\
                    [params.\"ethtool:eth3:rx-usecs\"]\nmode = \"recommend\"\nmin = 0\n\
                    max = 100\nmax_step = 1\nsources = [\"optimizer\"]\n";
        let p = Policy::parse(text, "p.toml").unwrap();
        let config = Config::default();
        assert_eq!(config.optimizer.budget, 20, "the default the warning names");
        assert_eq!(
            optimizer_held_back_by_the_limits(&p, &config),
            vec![
                "p.toml:3: params.\"cpufreq:*:scaling_max_freq\": max_step 500000 allows at \
                 most 500000 in one step, less than the range 1200000 to 3000000 the optimizer \
                 searches: its proposals farther than that from the value in place are refused \
                 for good, and its search ends sooner; leave max_step out of an optimizer \
                 entry, or make it at least 1800000"
                    .to_string(),
                "p.toml:9: params.\"ethtool:eth0:rx-usecs\": max_step 50% allows at most 0 \
                 in one step, less than the range 0 to 100 the optimizer searches: its \
                 proposals farther than that from the value in place are refused for good, and \
                 its search ends sooner; leave max_step out of an optimizer entry, or make it \
                 at least 100"
                    .to_string(),
                "p.toml: [guard] max_changes_per_hour 6 is below the 20 changes an hour the \
                 optimizer's search makes of each knob (one a trial, budget 20, a trial every \
                 1m; and a revert each time a window breaks the SLO): the search waits on the \
                 limit (`rate_limited`) for the rest of each hour; make it at least 20"
                    .to_string(),
            ]
        );
        let at_the_budget = text.replace("max_changes_per_hour = 6", "max_changes_per_hour = 20");
        let p = Policy::parse(&at_the_budget, "p.toml").unwrap();
        assert_eq!(optimizer_held_back_by_the_limits(&p, &config).len(), 2);
        // Trials of 10 minutes make 6 changes an hour: a limit of 6 holds nothing back.
        let p = Policy::parse(text, "p.toml").unwrap();
        let slow = Config {
            window: std::time::Duration::from_secs(600),
            ..Config::default()
        };
        assert_eq!(optimizer_held_back_by_the_limits(&p, &slow).len(), 2);
        // An entry the optimizer leaves out for want of bounds searches nothing: no limit holds
        // it back (s54 story AO-15: both were said).
        let unbounded = "[guard]\nmax_changes_per_hour = 6\n\
                         [params.\"ethtool:eth0:rx-usecs\"]\nmode = \"auto\"\n\
                         sources = [\"optimizer\"]\n";
        let p = Policy::parse(unbounded, "p.toml").unwrap();
        assert_eq!(
            optimizer_held_back_by_the_limits(&p, &config),
            Vec::<String>::new()
        );
        assert_eq!(optimizer_entries_without_bounds(&p).len(), 1);
    }

    /// s59 story BM-1: a policy that gives the optimizer a knob, with a configuration that
    /// turns the optimizer off at `kpo run`'s start (no SLO; the request_latency sensor off),
    /// passed `kpo check` without a word, and was warned of the search's pace instead.
    #[test]
    fn an_optimizer_the_configuration_turns_off_is_warned_of() {
        let text = "[guard]\nmax_changes_per_hour = 6\n\
                    [params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1200000\n\
                    max = 3000000\nsources = [\"optimizer\"]\n";
        let p = Policy::parse(text, "p.toml").unwrap();
        let said = "p.toml:3: params.\"cpufreq:*:scaling_max_freq\" gives the optimizer a knob, \
                    but kpo run will turn the optimizer off with this configuration: ";
        let no_slo = Config::default();
        assert_eq!(
            optimizer_off_by_the_configuration(&p, &no_slo),
            Some(format!(
                "{said}the configuration has no SLO: set [optimizer] slo_port and slo_max_us"
            ))
        );
        let mut with_slo = Config::default();
        with_slo.optimizer.slo_port = Some(8080);
        with_slo.optimizer.slo_max_us = Some(1000.0);
        assert_eq!(optimizer_off_by_the_configuration(&p, &with_slo), None);
        let unsampled = Config {
            duty_fraction: 0.0,
            ..with_slo.clone()
        };
        let blind = Config {
            disabled_sensors: vec!["request_latency".into()],
            ..with_slo.clone()
        };
        for (config, why) in [
            (unsampled, "duty_fraction is 0"),
            (blind, "the request_latency sensor is disabled"),
        ] {
            let w = optimizer_off_by_the_configuration(&p, &config).unwrap();
            assert!(w.starts_with(&format!("{said}{why}")), "{w}");
        }
        // Nothing it would search: an entry in recommend (warned of apart), or not its.
        for other in [
            text.replace("\"auto\"", "\"recommend\""),
            text.replace("\"optimizer\"", "\"operator\""),
        ] {
            let p = Policy::parse(&other, "p.toml").unwrap();
            assert_eq!(
                optimizer_off_by_the_configuration(&p, &no_slo),
                None,
                "{other}"
            );
        }
    }

    /// Gap: an optimizer knob in mode auto without an integer min and max passed `kpo check`
    /// without a word (only "llm advice recommend (auto needs min and max)" with the `llm` among
    /// its sources), though the optimizer leaves it out; only `kpo run` said so. Not for an
    /// entry the optimizer may not change, one in mode recommend, a sysctl, or one bounded.
    #[test]
    fn an_optimizer_knob_without_integer_bounds_is_warned_of() {
        let p = Policy::parse(
            "[params.\"ethtool:eth0:rx-usecs\"]\nmode = \"auto\"\n\
             sources = [\"optimizer\", \"llm\"]\n\
             [params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1000000\n\
             sources = [\"optimizer\"]\n\
             [params.\"ethtool:eth0:tx-usecs\"]\nmode = \"auto\"\nmin = [0]\nmax = [200]\n\
             sources = [\"optimizer\"]\n\
             [params.\"ethtool:eth1:rx-usecs\"]\nmode = \"auto\"\nmin = 0\nmax = 200\n\
             sources = [\"optimizer\"]\n\
             [params.\"ethtool:eth2:rx-usecs\"]\nmode = \"auto\"\nsources = [\"operator\"]\n\
             [params.\"ethtool:eth3:rx-usecs\"]\nmode = \"recommend\"\n\
             sources = [\"optimizer\"]\n\
             [params.\"vm.swappiness\"]\nmode = \"auto\"\nsources = [\"optimizer\"]\n\
             [params.\"cpufreq:*:scaling_governor\"]\nmode = \"auto\"\n\
             sources = [\"optimizer\"]\n\
             [params.\"ethtool:eth4:*-usecs\"]\nmode = \"auto\"\nsources = [\"optimizer\"]\n",
            "p.toml",
        )
        .unwrap();
        let w = |line: usize, name: &str| {
            format!(
                "p.toml:{line}: params.\"{name}\": the optimizer leaves this entry out: it needs \
                 an integer min and max (min < max), and searches only within bounds the \
                 operator set"
            )
        };
        assert_eq!(
            optimizer_entries_without_bounds(&p),
            vec![
                w(1, "ethtool:eth0:rx-usecs"),
                w(4, "cpufreq:*:scaling_max_freq"),
                w(8, "ethtool:eth0:tx-usecs"),
                w(30, "ethtool:eth4:*-usecs"),
            ]
        );
        assert!(warnings(&p, std::path::Path::new("/nonexistent"))
            .contains(&w(1, "ethtool:eth0:rx-usecs")));
    }

    #[test]
    fn json_gives_every_key_of_every_entry() {
        let p = Policy::parse(POLICY, "p.toml").unwrap();
        let v = to_json(&p, Some("kpo.toml"));
        assert_eq!(v["policy"]["guard"]["windows"], 4);
        assert_eq!(
            v["policy"]["guard"]["signals"],
            json!(["request_p99", "listen_overflows"])
        );
        assert_eq!(v["policy"]["guard"]["quarantine"], "1h");
        assert_eq!(
            v["policy"]["approvals"]["webhook"], "http://127.0.0.1:9000",
            "the path may be the credential"
        );
        let s = &v["policy"]["params"][0];
        assert_eq!(s["name"], "net.core.somaxconn");
        assert_eq!(s["line"], 9);
        assert_eq!(s["mode"], "auto");
        assert_eq!(
            (s["min"].clone(), s["max"].clone()),
            (json!(128), json!(65535))
        );
        assert_eq!(s["max_step"], "100%");
        assert_eq!(s["cooldown"], "5m");
        assert_eq!(s["sources"], json!(["rules", "operator"]));
        assert_eq!(s["namespaces"], json!(["host", 4026532281u64]));
        assert_eq!(s["guard_signals"], json!(["listen_overflows"]));
        let r = &v["policy"]["params"][1];
        assert_eq!(r["min"], json!([4096, 16384, 1048576]));
        assert_eq!(r["max"], Value::Null);
        assert_eq!(r["guard_signals"], Value::Null);
        assert_eq!(r["max_step"], json!(1048576));
        assert_eq!(v["policy"]["params"][2]["max_step"], "7%");
        assert_eq!(v["policy"]["defaults"]["mode"], "recommend");
        assert_eq!(
            s["llm_mode"],
            Value::Null,
            "the llm is not among its sources"
        );
        assert_eq!(v["policy"]["params"][3]["mode"], "auto");
        assert_eq!(
            v["policy"]["params"][3]["llm_mode"], "recommend",
            "no bounds"
        );
        assert_eq!(v["policy"]["params"][4]["llm_mode"], "auto", "bounded");
        assert_eq!(v["config"], "kpo.toml");
    }

    /// An entry's `optimizer_levels` are shown where set, in the text and the JSON; the JSON
    /// has the key on every entry (`null`: the `[optimizer] levels` spread over the bounds).
    #[test]
    fn optimizer_levels_are_shown_where_set() {
        let p = Policy::parse(
            "[params.\"ethtool:eth0:rx-usecs\"]\nmode = \"auto\"\nmin = 0\nmax = 200\n\
             sources = [\"optimizer\"]\noptimizer_levels = [0, 2, 10, 200]\n\n\
             [params.\"vm.swappiness\"]\nmode = \"auto\"\n",
            "p.toml",
        )
        .unwrap();
        let text = to_text(&p, None);
        let entry = |name: &str| {
            text.lines()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_string()
        };
        assert!(
            entry("rx-usecs").ends_with("; optimizer_levels 0, 2, 10, 200"),
            "{text}"
        );
        assert!(
            !entry("vm.swappiness").contains("optimizer_levels"),
            "{text}"
        );
        let v = to_json(&p, None);
        assert_eq!(
            v["policy"]["params"][0]["optimizer_levels"],
            json!([0, 2, 10, 200])
        );
        assert_eq!(v["policy"]["params"][1]["optimizer_levels"], Value::Null);
    }

    #[test]
    fn text_has_a_line_per_entry() {
        let p = Policy::parse(POLICY, "p.toml").unwrap();
        let text = to_text(&p, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "policy p.toml: valid");
        assert!(lines[1].starts_with("  [guard] windows 4; signals request_p99, listen_overflows;"));
        assert_eq!(
            lines[4],
            "  [params.\"net.core.somaxconn\"] (line 9) mode auto; min 128; max 65535; \
             max_step 100%; cooldown 5m; sources rules, operator; on_exit keep; \
             namespaces host, 4026532281; allow_adaptive_off false; guard_signals listen_overflows"
        );
        assert!(
            lines[5].contains("guard_signals [guard] signals"),
            "{}",
            lines[5]
        );
        assert!(!text.contains("config "));
        assert!(
            lines[7].ends_with("; llm advice recommend (auto needs min and max)"),
            "{}",
            lines[7]
        );
        for bounded_or_not_auto in [lines[3], lines[8]] {
            assert!(
                !bounded_or_not_auto.contains("llm advice"),
                "{bounded_or_not_auto}"
            );
        }
    }

    /// Defect: an empty list was printed as nothing (`sources ;`, `signals ;`), which reads as
    /// a key the text forgot rather than one that allows no source or judges by no signal.
    #[test]
    fn an_empty_list_is_shown_as_none() {
        let p = Policy::parse(
            "[guard]\nsignals = []\n[params.\"net.core.somaxconn\"]\nsources = []\n",
            "p.toml",
        )
        .unwrap();
        let text = to_text(&p, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("  [guard] windows 3; signals none;"),
            "{}",
            lines[1]
        );
        assert!(lines[4].contains("; sources none;"), "{}", lines[4]);
    }

    /// Defect: `cooldown = "365d"` showed as "11months 30days 3h 50m 24s" (humantime's months
    /// and years are not whole days).
    #[test]
    fn durations_are_shown_in_days_not_months() {
        let p = Policy::parse(
            "[guard]\nquarantine = \"31d\"\n[approvals]\nexpire_after = \"90m\"\n\
             [params.\"net.core.somaxconn\"]\ncooldown = \"365d\"\n",
            "p.toml",
        )
        .unwrap();
        let v = to_json(&p, None);
        assert_eq!(v["policy"]["guard"]["quarantine"], json!("31d"));
        assert_eq!(v["policy"]["approvals"]["expire_after"], json!("1h 30m"));
        assert_eq!(v["policy"]["params"][0]["cooldown"], json!("365d"));
        assert_eq!(v["policy"]["defaults"]["cooldown"], json!("0s"));
        let text = to_text(&p, None);
        assert!(text.contains("quarantine 31d\n"), "{text}");
        assert!(text.contains("expire_after 1h 30m;"), "{text}");
        assert!(text.contains("cooldown 365d;"), "{text}");
        assert_eq!(
            shown_duration(std::time::Duration::from_micros(1_500)),
            "1ms 500us"
        );
        // Read back by the policy's own parser as the same duration.
        assert_eq!(
            humantime::parse_duration("1d 2h 3m 4s 5ms 6us 7ns").unwrap(),
            std::time::Duration::new(93_784, 5_006_007)
        );
        assert_eq!(
            shown_duration(std::time::Duration::new(93_784, 5_006_007)),
            "1d 2h 3m 4s 5ms 6us 7ns"
        );
    }
}
