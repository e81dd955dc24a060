//! The CLI's approval commands: `kpo pending`, `kpo approve ID`, `kpo reject ID [--reason]`,
//! `kpo explain PARAM`. Each goes to the running agent through its socket, or opens the state
//! directory itself when no agent answers.
use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use super::{
    control::{ApprovalControl, Offline},
    ApprovalItem, ApprovalState, Done, Explained,
};
use crate::{
    advise::recommendation::Source, change::ChangeStatus, cli::StateArgs, journal::format_ms,
    who::who,
};

#[derive(Debug, Args)]
pub struct PendingArgs {
    /// JSON (an array of approvals) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The approval's id (`ap-3`, or `3`), as `kpo pending` lists it.
    #[arg(value_parser = id_arg)]
    pub id: String,
    /// JSON (the approval and the change report) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The approval's id (`ap-3`, or `3`).
    #[arg(value_parser = id_arg)]
    pub id: String,
    /// Why, recorded with the rejection.
    #[arg(long, value_name = "TEXT", value_parser = crate::cli::ReasonArg)]
    pub reason: Option<String>,
    /// JSON (the approval) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A parameter name (every target: net.core.somaxconn) or address (one target:
    /// net.core.somaxconn@netns:4026532281).
    #[arg(value_parser = explained_param_arg)]
    pub param: String,
    /// How many of the latest recommendations to show (at least 1).
    #[arg(long, default_value_t = 10, value_parser = limit_arg)]
    pub limit: usize,
    /// JSON (an array, newest first) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `kpo explain`'s parameter; a journal or approval id, which an operator reaches for from `kpo
/// journal`, the events or `kpo pending`, is refused naming where its parameter is shown (s52
/// storyAC AC-4: `kpo explain 1` said "no recommendation recorded", exit status 0).
fn explained_param_arg(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    // A bare number is a journal id or, to `kpo approve`, an approval's.
    let digits = trimmed.trim_start_matches('#');
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{trimmed} is an id, not a parameter: kpo journal names each change's parameter and \
             kpo pending each pending approval's; kpo explain takes a parameter's name (such as \
             net.core.somaxconn)"
        ));
    }
    // In any case, as the approval commands take it (`AP-3`).
    if trimmed
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("ap-"))
    {
        return Err(format!(
            "{trimmed} is an approval id, not a parameter: kpo pending shows a pending one with \
             its parameter and reason, and kpo journal an approved one's change; kpo explain \
             takes a parameter's name (such as net.core.somaxconn)"
        ));
    }
    crate::cli::param_arg(text)
}

/// An approval id: not blank, which names none (the agent said `no approval  (kpo pending
/// lists them)`, an empty name between two spaces).
fn id_arg(text: &str) -> Result<String, String> {
    // Nothing else is ever an approval's id (the store sets any other aside): refused here,
    // not sent to the agent to answer "no approval foo" (s49 storyS S-4).
    let id = super::normalize_id(text);
    let is_id = id
        .strip_prefix("ap-")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if !is_id {
        return Err("an approval id is `ap-3` or `3`, as kpo pending lists it".into());
    }
    Ok(text.to_string())
}

/// `--limit N`: at least 1. Zero would list nothing, which reads as "no recommendation
/// recorded" for a parameter that has some.
pub(crate) fn limit_arg(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("it must be at least 1 (0 would show none)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The running agent through its socket, or the state directory under its lock (`reads`: a
/// command that only reads, which reads a read-only state directory as it is on disk).
pub(crate) fn open(state: &StateArgs, reads: bool) -> anyhow::Result<Box<dyn ApprovalControl>> {
    Ok(match open_either(state, reads)? {
        Ok(agent) => Box::new(agent),
        Err(offline) => Box::new(offline),
    })
}

/// [`open`]: the agent (`Ok`), or the state directory (`Err`).
fn open_either(
    state: &StateArgs,
    reads: bool,
) -> anyhow::Result<Result<crate::api::client::SocketControl, Offline>> {
    let socket = state
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::api::DEFAULT_SOCKET));
    if let Some(mut agent) = crate::api::client::SocketControl::connect(&socket)? {
        if state.policy.is_some() || state.state_dir.is_some() {
            let status = crate::control::Control::status(&mut agent)?;
            state.refuse_if_agent_differs(&socket, &status)?;
        }
        return Ok(Ok(agent));
    }
    state.refuse_default_state_dir_for_another_socket(&socket)?;
    let (policy, dir) = (state.policy.as_deref(), state.state_dir());
    let offline = || {
        if reads {
            Offline::open_to_read(policy, &dir)
        } else {
            Offline::open(policy, &dir)
        }
    };
    match crate::cli::offline_or_starting_agent(state, &socket, offline)? {
        Ok(agent) => Ok(Ok(agent)),
        Err(opened) => Ok(Err(
            opened.map_err(|e| crate::cli::nor_an_agent_on(&socket, e))?
        )),
    }
}

/// The pending approvals, and, with the agent down, those this listing expired: their time ran
/// out while it was down, and reading them records that (a running agent's expiry is in its
/// events, `approval_resolved`). The offline desk's own `approval_resolved` events say which, as
/// recorded.
fn pending_and_expired(
    state: &StateArgs,
) -> anyhow::Result<(Vec<ApprovalItem>, Vec<ApprovalItem>)> {
    let mut offline = match open_either(state, true)? {
        Ok(mut agent) => return Ok((agent.pending()?, Vec::new())),
        Err(offline) => offline,
    };
    let items = offline.pending()?;
    Ok((items, expired_by(&mut offline, None)))
}

/// What an offline command expired (their time ran out while the agent was down), but `except`:
/// the one it acted on, whose own error says so. The offline desk's own `approval_resolved`
/// events say which, as recorded.
fn expired_by(offline: &mut Offline, except: Option<&str>) -> Vec<ApprovalItem> {
    let except = except.map(super::normalize_id);
    offline
        .desk
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            crate::output::events::Event::ApprovalResolved(a)
                if a.approval.state == ApprovalState::Expired
                    && Some(&a.approval.id) != except.as_ref() =>
            {
                Some(a.approval)
            }
            _ => None,
        })
        .collect()
}

/// The line that names an approval an offline command expired, on standard error (`--json`'s
/// output stays the command's own).
fn expired_line(e: &ApprovalItem) -> String {
    format!(
        "kpo: expired now, while the agent is down: {}  {}  (advised by {}, expired {}); the \
         agent's next start reports it (approval_resolved)",
        e.id,
        change(e),
        e.source,
        e.resolved_ms.map(format_ms).unwrap_or_default()
    )
}

/// `kpo approve ID` / `kpo reject ID`: through the agent, or with it down on the state directory,
/// naming the other approvals that expired on the way (as `kpo pending` does), even if the
/// command fails.
fn act_on<T>(
    state: &StateArgs,
    id: &str,
    act: impl FnOnce(&mut dyn ApprovalControl) -> Result<T, crate::control::ControlError>,
) -> anyhow::Result<T> {
    Ok(act_on_either(state, id, act)?.0)
}

/// [`act_on`], and whether it was done with the agent down (nothing then watches a change).
fn act_on_either<T>(
    state: &StateArgs,
    id: &str,
    act: impl FnOnce(&mut dyn ApprovalControl) -> Result<T, crate::control::ControlError>,
) -> anyhow::Result<(T, bool)> {
    match open_either(state, false)? {
        Ok(mut agent) => Ok((act(&mut agent)?, false)),
        Err(mut offline) => {
            let (done, expired) = act_offline(&mut offline, id, act);
            for line in expired {
                crate::say!("{line}");
            }
            Ok((done?, true))
        }
    }
}

/// [`act_on`] with the agent down: what `act` did, and a line for each other approval expired.
fn act_offline<T>(
    offline: &mut Offline,
    id: &str,
    act: impl FnOnce(&mut dyn ApprovalControl) -> Result<T, crate::control::ControlError>,
) -> (Result<T, crate::control::ControlError>, Vec<String>) {
    let done = act(offline);
    let expired = expired_by(offline, Some(id));
    (done, expired.iter().map(expired_line).collect())
}

fn change(item: &ApprovalItem) -> String {
    let before = item
        .current_value
        .as_ref()
        .map(|v| format!("{v} -> "))
        .unwrap_or_default();
    format!("{} {before}{}", item.parameter, item.value)
}

pub fn pending(a: PendingArgs) -> anyhow::Result<ExitCode> {
    let (items, expired) = pending_and_expired(&a.state)?;
    // On standard error, as the offline open's other notes: `--json`'s output stays the array.
    for e in &expired {
        crate::say!("{}", expired_line(e));
    }
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if items.is_empty() {
        crate::out!("no approval pending");
    }
    for i in &items {
        crate::out!(
            "{}  {}  (advised by {}, held by {}, since {}, expires {})\n    {}",
            i.id,
            change(i),
            i.source,
            i.held_by,
            format_ms(i.created_ms),
            format_ms(i.expires_ms),
            i.reason
        );
        if let Some(why) = &i.approving_now {
            crate::out!("    approving it now: {why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn approve(a: ApproveArgs) -> anyhow::Result<ExitCode> {
    let (outcome, offline) = act_on_either(&a.state, &a.id, |c| c.approve(&a.id, &who()))?;
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        crate::out!("{}", outcome.report.describe());
        crate::out!(
            "{}: {}",
            outcome.approval.id,
            outcome.approval.state.describe()
        );
    }
    // As `kpo apply` says it (s53 story AN-9: an approved change is as unwatched).
    if let (ChangeStatus::Applied, true) = (outcome.report.status, offline) {
        crate::cli::say_unguarded(outcome.report.journal_id, a.json);
    }
    Ok(match outcome.report.status {
        ChangeStatus::Applied | ChangeStatus::Unchanged => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

pub fn reject(a: RejectArgs) -> anyhow::Result<ExitCode> {
    let item = act_on(&a.state, &a.id, |c| {
        c.reject(&a.id, &who(), a.reason.as_deref())
    })?;
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&item)?);
    } else {
        crate::out!("{}: {} ({})", item.id, item.state.describe(), change(&item));
    }
    Ok(ExitCode::SUCCESS)
}

/// What was done, in words: `applied (journal #7)`, `pending ap-3: rejected by ...`.
pub(crate) fn done(e: &Explained) -> String {
    let h = &e.entry;
    let mut s = h.done.as_str().to_string();
    if let Some(id) = h.journal_id {
        s.push_str(&format!(" (journal #{id})"));
    }
    if let Some(a) = &e.approval {
        s = match &a.state {
            ApprovalState::Pending => format!("pending approval {}", a.id),
            other => format!("approval {}: {}", a.id, other.describe()),
        };
    }
    if let Some(revert) = e.reverted_by {
        s.push_str(&format!(", reverted since (journal #{revert})"));
    }
    if let Some(d) = &h.detail {
        // A recommendation held by a rejection says which one and when it may ask again: the
        // approval is shown already, so only the rest (`; not asked again before ...`).
        let restated = e
            .approval
            .as_ref()
            .filter(|_| h.done == Done::Rejected)
            .and_then(|a| d.strip_prefix(&format!("{} {}", a.id, a.state.describe())));
        // A pending approval another advisor's advice is kept under (the merging order) is for
        // another value: said, or approving it would read as applying this one (s45 storyD).
        let anothers = e.approval.as_ref().is_some_and(|a| {
            Some(&a.value) != h.recommendation.recommended_value.as_ref()
                || a.source != h.recommendation.source
        });
        match restated {
            Some(rest) => s.push_str(rest),
            None if h.done != Done::Pending || anothers => s.push_str(&format!(": {d}")),
            None => {}
        }
    }
    s
}

/// Words for a sysctl name that this machine has no file for (a typo, `net.core.somaxcon`, reads
/// the same as a parameter nothing advised on), or nothing. Read at the host's `/proc/sys`: a
/// network namespace's keys are the host's too.
fn no_such_sysctl(param: &str, proc_sys: &std::path::Path) -> String {
    use crate::actuate::{
        param::{sysctl_rel_path, ParamAddress, ParamKind},
        sysctl::outside_the_first_netns,
    };
    let Ok(address) = param.parse::<ParamAddress>() else {
        return String::new();
    };
    if address.kind() != ParamKind::Sysctl || address.name.contains(['*', '?', '[', '{']) {
        return String::new();
    }
    let path = proc_sys.join(sysctl_rel_path(&address.name));
    if !matches!(path.try_exists(), Ok(false)) {
        return String::new();
    }
    // A host-wide net key, missing because this is not the first namespace, unless a key here
    // is a letter or two from it (`kpo check` says it alike).
    let near = crate::check::nearest_sysctl(&address.name, proc_sys);
    match (near, outside_the_first_netns(&address.name, proc_sys)) {
        (None, Some(why)) => format!(" ({} is missing {why})", path.display()),
        (near, _) => format!(
            " (and this machine has no such sysctl: no {}; is the name right?{})",
            path.display(),
            near.map_or(String::new(), |n| format!(" {n} is"))
        ),
    }
}

/// What a recommendation asks, as `kpo explain` lines show it.
fn shown_value(r: &crate::advise::recommendation::Recommendation) -> String {
    match (&r.current_value, &r.recommended_value) {
        (Some(c), Some(v)) => format!("{c} -> {v}"),
        (None, Some(v)) => v.to_string(),
        (_, None) if r.application.is_some() => "application advice".into(),
        // The rules' word that the policy leaves them no step: KPO would change it if it could,
        // unlike the LLM's suggestion of a parameter it may not drive.
        (Some(c), None) if r.source == Source::Rules => {
            format!("now {c}, no step the policy allows")
        }
        (Some(c), None) => format!("now {c}, to look at"),
        (None, None) => "to look at".into(),
    }
}

pub fn explain(a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let entries = open(&a.state, true)?.explain(&a.param, a.limit)?;
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&entries)?);
        // A script sees `[]` for a typo too: the hint goes where warnings go (s60 story BR-5).
        let hint = no_such_sysctl(&a.param, std::path::Path::new("/proc/sys"));
        if entries.is_empty() && !hint.is_empty() {
            crate::say!(
                "kpo: warning: {}: no recommendation recorded{hint}",
                a.param
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        crate::out!(
            "{}: no recommendation recorded{}",
            a.param,
            no_such_sysctl(&a.param, std::path::Path::new("/proc/sys"))
        );
    }
    for e in &entries {
        let r = &e.entry.recommendation;
        let value = shown_value(r);
        crate::out!(
            "{}  {}  {}  {value}  (by {}, confidence {:.2}): {}\n    {}",
            format_ms(e.entry.ts_ms),
            r.id,
            r.parameter,
            r.source,
            r.confidence,
            done(e),
            r.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    /// A journal or approval id given to `kpo explain` is refused, saying where its parameter is
    /// shown (s52 storyAC AC-4).
    #[test]
    fn explain_refuses_an_id_naming_where_its_parameter_is() {
        for (arg, said) in [
            ("1", "1 is an id, not a parameter: kpo journal"),
            ("#12", "#12 is an id, not a parameter: kpo journal"),
            (" 12", "12 is an id, not a parameter: kpo journal"),
            (
                "ap-3",
                "ap-3 is an approval id, not a parameter: kpo pending",
            ),
            (
                "AP-3",
                "AP-3 is an approval id, not a parameter: kpo pending",
            ),
        ] {
            let err = Cli::try_parse_from(["kpo", "explain", arg]).unwrap_err();
            assert!(err.to_string().contains(said), "{arg}: {err}");
        }
        assert!(Cli::try_parse_from(["kpo", "explain", "net.core.somaxconn"]).is_ok());
    }

    /// s43 (found by hand): `kpo explain net.core.somaxcon` (a typo) said "no recommendation
    /// recorded", as of a parameter nothing advised on. Against a temporary /proc/sys tree.
    #[test]
    fn explain_of_a_sysctl_this_machine_lacks_asks_whether_the_name_is_right() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/core")).unwrap();
        std::fs::write(dir.path().join("net/core/somaxconn"), "4096\n").unwrap();
        std::fs::write(dir.path().join("net/core/netdev_budget"), "300\n").unwrap();
        let hint = |p: &str| super::no_such_sysctl(p, dir.path());
        assert_eq!(hint("net.core.somaxconn"), "");
        assert_eq!(hint("net.core.somaxconn@netns:4026532281"), "");
        assert_eq!(
            hint("net.core.somaxcon"),
            format!(
                " (and this machine has no such sysctl: no {}/net/core/somaxcon; is the name \
                 right? net.core.somaxconn is)",
                dir.path().display()
            )
        );
        assert_eq!(
            hint("net.core.kpo_none"),
            format!(
                " (and this machine has no such sysctl: no {}/net/core/kpo_none; is the name \
                 right?)",
                dir.path().display()
            )
        );
        // Not sysctls, or patterns: nothing to look for.
        assert_eq!(hint("ethtool:eth0:rx-usecs"), "");
        assert_eq!(hint("net.core.*"), "");

        // s44 storyC: outside the machine's first network namespace the host-wide net keys are
        // missing though the machine has them: said so, not asked whether the name is right.
        std::fs::remove_file(dir.path().join("net/core/netdev_budget")).unwrap();
        assert_eq!(
            hint("net.core.netdev_max_backlog"),
            format!(
                " ({p}/net/core/netdev_max_backlog is missing in the agent's network namespace, \
                 which is not the machine's first one ({p}/net/core/netdev_budget is missing \
                 too): the kernel shows host-wide net keys in the first namespace only, so the \
                 agent must run there (a pod with host networking) to change them)",
                p = dir.path().display()
            )
        );
        // There too, a letter short of a key that is there is a typo (s45 storyF).
        assert!(
            hint("net.core.somaxcon").ends_with("is the name right? net.core.somaxconn is)"),
            "{}",
            hint("net.core.somaxcon")
        );
    }

    fn explain_limit(limit: &str) -> Result<usize, String> {
        let cli = Cli::try_parse_from(["kpo", "explain", "net.core.somaxconn", "--limit", limit])
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Explain(a) => Ok(a.limit),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Defect (s35 apr, by hand): a recommendation held by an operator's rejection read
    /// `approval ap-9: rejected by op: not now: ap-9 rejected by op: not now; not asked again
    /// before ...`, the rejection twice. It is said once, then when it may ask again.
    #[test]
    fn a_recommendation_held_by_a_rejection_names_it_once() {
        use crate::{
            advise::recommendation::{Recommendation, Source, WindowRef},
            approvals::{store::tests::item, ApprovalState, Done, Explained, HistoryEntry},
        };
        let mut rejected = item("ap-9", 32);
        rejected.state = ApprovalState::Rejected {
            by: "operator (uid 0, pid 7)".into(),
            why: Some("not now".into()),
        };
        let parameter = rejected.parameter.clone();
        let entry = |done, detail: &str| Explained {
            entry: HistoryEntry {
                ts_ms: 1,
                recommendation: Recommendation {
                    id: "rules-2-00000000".into(),
                    parameter: parameter.clone(),
                    current_value: Some(crate::actuate::param::Value::Int(16)),
                    recommended_value: Some(crate::actuate::param::Value::Int(32)),
                    can_auto_apply: false,
                    reason: "listener dropped 24".into(),
                    confidence: 0.9,
                    source: Source::Rules,
                    window: WindowRef {
                        index: 2,
                        end: "2026-01-01T00:00:00Z".into(),
                    },
                    application: None,
                    netns_cookie: None,
                },
                done,
                journal_id: None,
                approval_id: Some("ap-9".into()),
                detail: (!detail.is_empty()).then(|| detail.to_string()),
            },
            approval: Some(rejected.clone()),
            reverted_by: None,
        };
        let held = entry(
            Done::Rejected,
            "ap-9 rejected by operator (uid 0, pid 7): not now; not asked again before \
             2026-01-01T01:00:00.000Z",
        );
        assert_eq!(
            super::done(&held),
            "approval ap-9: rejected by operator (uid 0, pid 7): not now; not asked again \
             before 2026-01-01T01:00:00.000Z"
        );
        // The recommendation that asked for it: where its approval stands now.
        assert_eq!(
            super::done(&entry(Done::Pending, "")),
            "approval ap-9: rejected by operator (uid 0, pid 7): not now"
        );
        // Kept under another advisor's pending approval for another value: which, and why.
        let mut kept = entry(
            Done::Pending,
            "ap-9 is pending for 150, advised by llm, which the merging order keeps over 32",
        );
        let mut theirs = item("ap-9", 150);
        theirs.source = Source::Llm;
        kept.approval = Some(theirs);
        assert_eq!(
            super::done(&kept),
            "pending approval ap-9: ap-9 is pending for 150, advised by llm, which the merging \
             order keeps over 32"
        );
        // Its own pending approval says nothing more.
        let mut own = entry(
            Done::Pending,
            "mode recommend: waits for an operator's approval",
        );
        let mut mine = item("ap-9", 32);
        mine.source = Source::Rules;
        own.approval = Some(mine);
        assert_eq!(super::done(&own), "pending approval ap-9");
    }

    /// Seen by hand (s37 docs): `kpo explain` showed the rules' word that the policy leaves them
    /// no step as `now 16, to look at`, the LLM's suggestion's words for a parameter KPO never
    /// changes; KPO changes it once the policy allows a step.
    #[test]
    fn the_rules_no_step_word_is_not_shown_as_a_suggestion() {
        use crate::{
            actuate::param::Value,
            advise::recommendation::{Recommendation, Source, WindowRef},
        };
        let advice = |source| Recommendation {
            id: "rules-2-00000000".into(),
            parameter: "net.core.somaxconn".parse().unwrap(),
            current_value: Some(Value::Int(16)),
            recommended_value: None,
            can_auto_apply: false,
            reason: "the policy allows no step".into(),
            confidence: 1.0,
            source,
            window: WindowRef {
                index: 2,
                end: "2026-01-01T00:00:00Z".into(),
            },
            application: None,
            netns_cookie: None,
        };
        assert_eq!(
            super::shown_value(&advice(Source::Rules)),
            "now 16, no step the policy allows"
        );
        assert_eq!(
            super::shown_value(&advice(Source::Llm)),
            "now 16, to look at"
        );
    }

    /// Defect (s39 fix #3): with the agent down, `kpo approve ID` / `kpo reject ID` expired
    /// other approvals whose time had run out without naming them (`kpo pending` names them).
    /// Each is named as `kpo pending` names it; the one acted on is not (its error says so).
    #[test]
    fn an_offline_reject_names_the_other_approvals_it_expired() {
        use std::time::Duration;

        use crate::{
            actuate::param::Value,
            approvals::{control::Offline, store::tests::item, store::ApprovalStore, Desk},
            change::{tests::kernel, ChangePath},
            journal::{format_ms, now_ms, Holder, Journal},
            policy::Policy,
        };
        let dir = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(dir.path());
        let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        let hour = Duration::from_secs(3600);
        let now = now_ms();
        {
            // ap-1 advised two hours ago (expired an hour ago), ap-2 and ap-3 just now.
            let mut store = ApprovalStore::open(&journal, hour).unwrap();
            for (n, value, at) in [(1, 32, now - 7_200_000), (2, 64, now), (3, 128, now)] {
                let mut i = item(&format!("ap-{n}"), value);
                assert_eq!(store.new_id(), i.id);
                (i.created_ms, i.updated_ms) = (at, at);
                store.put(i).unwrap();
            }
        }
        let policy = Policy::parse("[approvals]\nexpire_after = \"1h\"\n", "t.toml").unwrap();
        let desk = Desk::open_offline(&journal, policy.approvals.clone()).unwrap();
        let k = kernel(&[("net.core.somaxconn@netns:4026531999", Value::Int(16))]);
        let mut offline = Offline {
            path: ChangePath::new(policy, journal, Box::new(k)),
            desk,
        };
        let (done, expired) = super::act_offline(&mut offline, "2", |c| c.reject("2", "op", None));
        assert_eq!(done.unwrap().state.name(), "rejected");
        assert_eq!(
            expired,
            [format!(
                "kpo: expired now, while the agent is down: ap-1  \
                 net.core.somaxconn@netns:4026531999 16 -> 32  (advised by rules, expired {}); \
                 the agent's next start reports it (approval_resolved)",
                format_ms(now - 3_600_000)
            )]
        );
        let pending: Vec<String> = offline
            .desk
            .pending()
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(pending, ["ap-3"]);
    }

    /// Defect (s35 apr, by hand): `kpo approve ""` was sent and answered `no approval  (kpo
    /// pending lists them)`. A blank id is refused by the CLI, saying what an id is.
    #[test]
    fn a_blank_approval_id_is_refused() {
        for command in ["approve", "reject"] {
            for id in ["", " "] {
                let err = Cli::try_parse_from(["kpo", command, id])
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains("an approval id is `ap-3` or `3`, as kpo pending lists it"),
                    "{command} {id:?}: {err}"
                );
            }
            let ok = Cli::try_parse_from(["kpo", command, "ap-3"]).unwrap();
            assert!(
                matches!(ok.command, Command::Approve(ref a) if a.id == "ap-3")
                    || matches!(ok.command, Command::Reject(ref a) if a.id == "ap-3"),
                "{command}"
            );
        }
    }

    /// `--limit 0` listed nothing and said "no recommendation recorded" of a parameter that had
    /// some: it is refused, saying why; 1 and the default still parse.
    #[test]
    fn explain_limit_is_at_least_one() {
        let err = explain_limit("0").unwrap_err();
        assert!(
            err.contains(
                "invalid value '0' for '--limit <LIMIT>': it must be at least 1 (0 would show none)"
            ),
            "{err}"
        );
        assert_eq!(explain_limit("1"), Ok(1));
        assert_eq!(explain_limit("25"), Ok(25));
        assert!(explain_limit("x").is_err());
        let default = Cli::try_parse_from(["kpo", "explain", "net.core.somaxconn"]).unwrap();
        assert!(matches!(default.command, Command::Explain(a) if a.limit == 10));
    }
}
