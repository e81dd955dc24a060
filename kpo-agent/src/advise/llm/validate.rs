//! Strict validation of the model's advice against the policy. Each item is accepted as a
//! [`Recommendation`] or dropped with a reason; nothing the model says is executed.
use serde::Serialize;
use serde_json::Value as Json;

use super::prompt::ParamContext;
use crate::{
    actuate::param::{ParamAddress, ParamKind, Value},
    advise::{
        limits::{AdvicePolicy, Mode, ValueRejection},
        recommendation::{Recommendation, Source, WindowRef},
    },
};

/// Items looked at per reply; the rest are dropped as `too_many`, together, in one entry.
pub const MAX_ITEMS: usize = 32;
const MAX_REASON_CHARS: usize = 500;
const MAX_ECHO_CHARS: usize = 120;
/// A detail can quote what the model sent (a parameter name that does not parse).
const MAX_DETAIL_CHARS: usize = 300;
const DEFAULT_CONFIDENCE: f64 = 0.5;

/// Why an item was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// Not an object, or no `parameter`.
    Malformed,
    /// Not an address, or not among the parameters offered to the model.
    UnknownParameter,
    /// On the deny-list no policy can lift.
    DenyListed,
    /// The policy no longer lets the LLM drive it.
    NotAllowed,
    WrongType,
    OutOfBounds,
    StepTooLarge,
    WordNotAllowed,
    /// No value, or the current value: nothing to do.
    NoChange,
    /// A second item for a parameter already advised in this reply, with the same value (the
    /// accepted one then stays automatic only if this one allows it too).
    Duplicate,
    /// One of two or more acceptable items that give one parameter different values: none of
    /// them is taken.
    Contradictory,
    TooMany,
    /// A suggestion of a parameter that is offered to the model: a change to it goes in
    /// `recommendations`, where it is checked against the policy.
    Offered,
    /// A suggestion of a parameter the policy lets some advisor change (rules, the optimizer,
    /// or the LLM where it was not offered this time): it is KPO's to change, and a person who
    /// changed it on the model's word would take it from KPO.
    Managed,
}

/// One dropped item, for the `llm` event. `parameter` and `value` are the model's, shortened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropped {
    pub parameter: Option<String>,
    pub value: Option<Json>,
    pub kind: DropKind,
    pub detail: String,
    /// The item's confidence, for a dropped value kept in the parameter's history (`kpo
    /// explain`); not in the event, whose items are the model's words. `None`: no item's.
    #[serde(skip)]
    pub confidence: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Validated {
    pub accepted: Vec<Recommendation>,
    pub dropped: Vec<Dropped>,
}

impl Validated {
    /// Accepted and allowed to be applied without a person (policy in auto, model agreeing).
    pub fn auto(&self) -> impl Iterator<Item = &Recommendation> {
        self.accepted.iter().filter(|r| r.can_auto_apply)
    }

    /// Accepted, waiting for approval (or recorded only, if the policy observes).
    pub fn pending(&self) -> impl Iterator<Item = &Recommendation> {
        self.accepted.iter().filter(|r| !r.can_auto_apply)
    }

    /// Makes every accepted recommendation wait for approval: the advice was found where the
    /// parser cannot be sure it is the model's answer ([`super::parse::Found::may_auto_apply`]).
    pub fn hold_for_approval(&mut self) {
        for r in &mut self.accepted {
            r.can_auto_apply = false;
        }
    }
}

/// Validates `items` (from [`super::parse::extract_items`]; the caller holds them for approval
/// when they were not found where they may be applied) against the parameters offered to the
/// model and the policy as it is now. The first [`MAX_ITEMS`] items are looked at, each accepted
/// or dropped with its own entry; the rest, however many, make one `too_many` entry, so the `llm`
/// event stays small whatever the reply holds.
pub fn validate(
    items: Vec<Json>,
    offered: &[ParamContext],
    policy: &dyn AdvicePolicy,
    window: &WindowRef,
) -> Validated {
    let mut out = Validated::default();
    let ignored = items.len().saturating_sub(MAX_ITEMS);
    let checked: Vec<(Json, Checked)> = items
        .into_iter()
        .take(MAX_ITEMS)
        .map(|item| {
            let checked = check_item(&item, offered, policy, window);
            (item, checked)
        })
        .collect();
    let contradicted = contradicted(&checked);
    for (item, checked) in checked {
        let checked = checked.and_then(|r| {
            if let Some((_, values)) = contradicted.iter().find(|(a, _)| *a == r.parameter) {
                let values: Vec<String> = values.iter().map(ToString::to_string).collect();
                return Err((
                    DropKind::Contradictory,
                    format!(
                        "the reply gives {} different values ({}): none of them is taken",
                        r.parameter,
                        values.join(", ")
                    ),
                ));
            }
            if let Some(first) = out.accepted.iter_mut().find(|a| a.parameter == r.parameter) {
                // The same change said twice, once as not automatic: the model keeps it for
                // approval, whichever of the two came first.
                let held = first.can_auto_apply && !r.can_auto_apply;
                first.can_auto_apply &= r.can_auto_apply;
                return Err((
                    DropKind::Duplicate,
                    format!(
                        "{} was already advised in this reply{}",
                        r.parameter,
                        if held {
                            "; this one is not to be applied automatically, so neither is it"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            Ok(r)
        });
        match checked {
            Ok(r) => out.accepted.push(r),
            Err((kind, detail)) => out.dropped.push(Dropped {
                parameter: field_str(&item, &["parameter", "Parameter"]).map(|s| shorten(&s)),
                value: field(&item, VALUE_KEYS).map(shorten_json),
                kind,
                detail: shorten_to(&plain(&detail), MAX_DETAIL_CHARS),
                confidence: Some(confidence(&item)),
            }),
        }
    }
    if ignored > 0 {
        // An item not looked at may hold the model's "not automatically" or another value for a
        // parameter accepted above: a reply not read whole makes nothing automatic.
        out.hold_for_approval();
        out.dropped.push(Dropped {
            parameter: None,
            value: None,
            kind: DropKind::TooMany,
            detail: format!(
                "{ignored} more item(s) not considered: only the first {MAX_ITEMS} of a reply \
                 are, and what was accepted waits for approval"
            ),
            confidence: None,
        });
    }
    out
}

const VALUE_KEYS: &[&str] = &[
    "value",
    "recommended_value",
    "new_value",
    "RecommendedValue",
];

/// The spellings of each field an item may use: an item that gives two of one field is dropped.
const SPELLINGS: &[&[&str]] = &[
    &["parameter", "Parameter"],
    VALUE_KEYS,
    &["can_auto_apply", "CanAutoApply"],
    &["reason", "Reason"],
];

/// An item as a recommendation, or why it was dropped.
type Checked = Result<Recommendation, (DropKind, String)>;

/// The parameters that acceptable items give different values, each with those values in the
/// order given. The model contradicted itself: whichever item came first would count (and might
/// be applied), so none does. An item dropped for its own reason (out of bounds, say) could never
/// be taken, and leaves no doubt about the others.
fn contradicted(checked: &[(Json, Checked)]) -> Vec<(ParamAddress, Vec<Value>)> {
    let mut given: Vec<(ParamAddress, Vec<Value>)> = Vec::new();
    for r in checked.iter().filter_map(|(_, c)| c.as_ref().ok()) {
        let Some(value) = &r.recommended_value else {
            continue;
        };
        match given.iter_mut().find(|(a, _)| *a == r.parameter) {
            Some((_, values)) if !values.contains(value) => values.push(value.clone()),
            Some(_) => {}
            None => given.push((r.parameter.clone(), vec![value.clone()])),
        }
    }
    given.retain(|(_, values)| values.len() > 1);
    given
}

/// An object with no repeated key and each of `fields` in at most one spelling, or why not
/// (`what` names it in the reason). Read last-wins, a repeated key would decide silently which of
/// the model's words count (`"can_auto_apply": false, ..., "can_auto_apply": true`; the parser
/// marks such objects), and two spellings of one field (`"value": 8192, "new_value": 65535`)
/// would leave it to whichever was looked up first.
fn well_formed(item: &Json, fields: &[&[&str]], what: &str) -> Result<(), (DropKind, String)> {
    if !item.is_object() {
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Err((
            DropKind::Malformed,
            format!("{article} {what} is not an object"),
        ));
    }
    if let Some(key) = super::parse::repeated_key(item) {
        return Err((
            DropKind::Malformed,
            format!("the {what} repeats the key {key:?}; which one counts is unclear"),
        ));
    }
    for spellings in fields {
        let given: Vec<&str> = spellings
            .iter()
            .copied()
            .filter(|k| item.get(*k).is_some())
            .collect();
        if given.len() > 1 {
            return Err((
                DropKind::Malformed,
                format!("the {what} gives both {given:?}; which one counts is unclear"),
            ));
        }
    }
    Ok(())
}

/// Nothing on the built-in deny-list is recommended or suggested, whatever the policy says.
fn not_denied(policy: &dyn AdvicePolicy, address: &ParamAddress) -> Result<(), (DropKind, String)> {
    if policy.is_denied(&address.policy_name()) {
        return Err((
            DropKind::DenyListed,
            format!(
                "{} is on the built-in deny-list and is never changed",
                address.policy_name()
            ),
        ));
    }
    Ok(())
}

fn field<'a>(item: &'a Json, keys: &[&str]) -> Option<&'a Json> {
    keys.iter().find_map(|k| item.get(*k))
}

fn field_str(item: &Json, keys: &[&str]) -> Option<String> {
    field(item, keys).and_then(Json::as_str).map(str::to_string)
}

fn check_item(
    item: &Json,
    offered: &[ParamContext],
    policy: &dyn AdvicePolicy,
    window: &WindowRef,
) -> Checked {
    well_formed(item, SPELLINGS, "item")?;
    let Some(name) = field_str(item, &["parameter", "Parameter"]) else {
        return Err((DropKind::Malformed, "no \"parameter\" string".into()));
    };
    let name = name.trim();
    let address: ParamAddress = name
        .parse()
        .map_err(|e| (DropKind::UnknownParameter, format!("{e}")))?;
    not_denied(policy, &address)?;
    let Some(ctx) = offered.iter().find(|p| p.address == address) else {
        return Err((
            DropKind::UnknownParameter,
            format!("{address} is not among the parameters offered to the model"),
        ));
    };
    let Some(limits) = policy.allowed(&address, Source::Llm) else {
        return Err((
            DropKind::NotAllowed,
            format!("the policy does not let the llm drive {address}"),
        ));
    };
    let value = match field(item, VALUE_KEYS) {
        None | Some(Json::Null) => {
            return Err((DropKind::NoChange, "no value given".into()));
        }
        Some(v) => to_value(v).ok_or_else(|| {
            if beyond_64_bits(v) {
                (
                    DropKind::OutOfBounds,
                    format!(
                        "{} (as read) is beyond any kernel integer (more than 64 bits)",
                        shorten_json(v)
                    ),
                )
            } else {
                (
                    DropKind::WrongType,
                    format!(
                        "{} is not a parameter value (an integer, a list of integers, or a word)",
                        shorten_json(v)
                    ),
                )
            }
        })?,
    };
    if value == ctx.current {
        return Err((DropKind::NoChange, format!("{value} is the current value")));
    }
    limits.check(&address, &ctx.current, &value).map_err(|e| {
        let kind = match e {
            ValueRejection::WrongType { .. } => DropKind::WrongType,
            // Outside what the parameter can sensibly be, like a bound: the detail says which.
            ValueRejection::OutOfBounds { .. }
            | ValueRejection::OutOfOrder { .. }
            | ValueRejection::WordAgainstBounds(_) => DropKind::OutOfBounds,
            ValueRejection::StepTooLarge { .. } => DropKind::StepTooLarge,
            ValueRejection::WordNotAllowed(_) => DropKind::WordNotAllowed,
        };
        (kind, e.to_string())
    })?;
    // The model can only make a change more cautious than the policy: auto needs both.
    let model_auto = match field(item, &["can_auto_apply", "CanAutoApply"]) {
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    };
    let can_auto_apply = model_auto && limits.mode == Mode::Auto;
    let confidence = confidence(item);
    let reason = clean_reason(field_str(item, &["reason", "Reason"]).as_deref());
    Ok(Recommendation {
        id: Recommendation::make_id(Source::Llm, window.index, &address, Some(&value)),
        parameter: address,
        current_value: Some(ctx.current.clone()),
        recommended_value: Some(value),
        can_auto_apply,
        reason,
        confidence,
        source: Source::Llm,
        window: window.clone(),
        application: None,
        netns_cookie: ctx.netns_cookie,
    })
}

/// The item's `confidence` as 0 to 1 (a percentage above 1 divided by 100; missing: 0.5).
fn confidence(item: &Json) -> f64 {
    match field(item, &["confidence"]).and_then(Json::as_f64) {
        Some(c) if c.is_finite() && c > 1.0 && c <= 100.0 => c / 100.0,
        Some(c) if c.is_finite() => c.clamp(0.0, 1.0),
        _ => DEFAULT_CONFIDENCE,
    }
}

/// Suggestions looked at per reply; the rest are dropped as `too_many`, together, in one entry.
/// A few: each reaches a person (an event, the history, the webhook), whom a long list of things
/// to look at would not help.
pub const MAX_SUGGESTIONS: usize = 5;
/// The longest sysctl name a suggestion may give: the kernel's longest are some 60 characters.
const MAX_SUGGESTED_NAME: usize = 128;

/// A suggested sysctl as this host has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    /// No such sysctl here: no file by that name (a model's invented name), or a directory of
    /// them (`net.ipv4`).
    Missing,
    /// The sysctl exists; its value, when it may be read and shown (see [`read_sysctl`]).
    Exists(Option<Value>),
}

/// What became of a reply's `suggestions`: the kept ones as recommendations without a value,
/// and the dropped ones with why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Suggested {
    pub kept: Vec<Recommendation>,
    pub dropped: Vec<Dropped>,
}

/// The model's `suggestions` (the answer object's, [`super::parse::Advice::suggestions`]):
/// sysctls outside the parameters offered that it thinks the operator should look at. Each kept
/// one is a [`Recommendation`] with no `recommended_value` and `can_auto_apply` false, so that
/// it is reported, kept in the history and posted like advice for an application, and never
/// proposed to the change path. `current` looks a kept name up: one this host does not have is
/// dropped as `unknown_parameter`.
///
/// A suggestion carries no value, and a `value` the model gives anyway is not read: nothing
/// bounds it (the policy does not let the LLM drive the parameter, or it would have been
/// offered), and a number shown beside KPO's advice reads as checked advice a person may copy
/// into `sysctl -w`. What to set is the operator's call; the reason may say which way.
pub fn suggestions(
    raw: Option<Json>,
    offered: &[ParamContext],
    policy: &dyn AdvicePolicy,
    window: &WindowRef,
    current: &dyn Fn(&ParamAddress) -> Current,
) -> Suggested {
    let mut out = Suggested::default();
    let items = match raw {
        // A strict schema's "none" may come as null.
        None | Some(Json::Null) => return out,
        Some(Json::Array(items)) => items,
        Some(other) => {
            out.dropped.push(Dropped {
                parameter: None,
                value: Some(shorten_json(&other)),
                kind: DropKind::Malformed,
                detail: "`suggestions` is not a list".into(),
                confidence: None,
            });
            return out;
        }
    };
    let ignored = items.len().saturating_sub(MAX_SUGGESTIONS);
    for item in items.into_iter().take(MAX_SUGGESTIONS) {
        let checked = check_suggestion(&item, offered, policy).and_then(|address| {
            if out.kept.iter().any(|k| k.parameter == address) {
                return Err((
                    DropKind::Duplicate,
                    format!("{address} was already suggested in this reply"),
                ));
            }
            match current(&address) {
                Current::Missing => Err((
                    DropKind::UnknownParameter,
                    format!("no such sysctl here: {address}"),
                )),
                Current::Exists(value) => Ok((address, value)),
            }
        });
        match checked {
            Ok((address, current_value)) => out.kept.push(Recommendation {
                id: Recommendation::make_id(Source::Llm, window.index, &address, None),
                current_value,
                parameter: address,
                recommended_value: None,
                can_auto_apply: false,
                reason: clean_reason(field_str(&item, &["reason", "Reason"]).as_deref()),
                confidence: confidence(&item),
                source: Source::Llm,
                window: window.clone(),
                application: None,
                netns_cookie: None,
            }),
            Err((kind, detail)) => out.dropped.push(Dropped {
                parameter: field_str(&item, &["parameter", "Parameter"]).map(|s| shorten(&s)),
                value: None,
                kind,
                detail: shorten_to(&plain(&detail), MAX_DETAIL_CHARS),
                confidence: None,
            }),
        }
    }
    if ignored > 0 {
        out.dropped.push(Dropped {
            parameter: None,
            value: None,
            kind: DropKind::TooMany,
            detail: format!(
                "{ignored} more suggestion(s) not considered: only the first {MAX_SUGGESTIONS} of \
                 a reply are"
            ),
            confidence: None,
        });
    }
    out
}

/// A suggestion's parameter, as a sysctl at the host, or why it was dropped.
fn check_suggestion(
    item: &Json,
    offered: &[ParamContext],
    policy: &dyn AdvicePolicy,
) -> Result<ParamAddress, (DropKind, String)> {
    well_formed(
        item,
        &[&["parameter", "Parameter"], &["reason", "Reason"]],
        "suggestion",
    )?;
    let Some(name) = field_str(item, &["parameter", "Parameter"]) else {
        return Err((DropKind::Malformed, "no \"parameter\" string".into()));
    };
    let name = name.trim();
    if name.chars().count() > MAX_SUGGESTED_NAME {
        return Err((
            DropKind::UnknownParameter,
            format!("a sysctl name is at most {MAX_SUGGESTED_NAME} characters"),
        ));
    }
    // Its value is read from /proc/sys: a path, even one that names a sysctl, is not taken.
    if name.starts_with('/') || crate::actuate::param::slashed_to_dotted(name) != name {
        return Err((
            DropKind::UnknownParameter,
            format!("{name} is not a sysctl's dotted name (such as net.ipv4.tcp_fin_timeout)"),
        ));
    }
    let address: ParamAddress = name
        .parse()
        .map_err(|e| (DropKind::UnknownParameter, format!("{e}")))?;
    if address.target != crate::actuate::param::Target::Host {
        return Err((
            DropKind::UnknownParameter,
            format!("{name} is not a sysctl's name alone: a suggestion names no namespace, NIC or cpufreq policy"),
        ));
    }
    not_denied(policy, &address)?;
    if offered
        .iter()
        .any(|p| p.address.kind() == ParamKind::Sysctl && p.address.name == address.name)
    {
        return Err((
            DropKind::Offered,
            format!(
                "{} is offered to the model: a change to it belongs in `recommendations`",
                address.name
            ),
        ));
    }
    if let Some(detail) = managed_by(policy, &address) {
        return Err((DropKind::Managed, detail));
    }
    Ok(address)
}

/// The `managed` detail when `policy` lets an advisor change `address` (a sysctl at the host),
/// else `None`.
fn managed_by(policy: &dyn AdvicePolicy, address: &ParamAddress) -> Option<String> {
    let managing: Vec<&str> = [Source::Rules, Source::Optimizer, Source::Llm]
        .into_iter()
        // Observed only, it is no advisor's to change: its advice is recorded, nothing more.
        .filter(|s| {
            policy
                .allowed(address, *s)
                .is_some_and(|l| l.mode != Mode::Observe)
        })
        .map(Source::as_str)
        .collect();
    (!managing.is_empty()).then(|| {
        format!(
            "KPO's policy lets {} change {}: it is not one to change by hand",
            managing.join(", "),
            address.name
        )
    })
}

/// The kept `suggestions` that `policy` says are KPO's to change, taken out as `managed`
/// entries, which are returned. For `kpo run`, whose consultation validates against the answers
/// for what it offered alone: by those, nothing else is managed.
pub fn drop_managed(
    suggestions: &mut Vec<Recommendation>,
    policy: &dyn AdvicePolicy,
) -> Vec<Dropped> {
    let mut dropped = Vec::new();
    suggestions.retain(|s| match managed_by(policy, &s.parameter) {
        None => true,
        Some(detail) => {
            dropped.push(Dropped {
                parameter: Some(shorten(&s.parameter.to_string())),
                value: None,
                kind: DropKind::Managed,
                detail: shorten_to(&detail, MAX_DETAIL_CHARS),
                confidence: None,
            });
            false
        }
    });
    dropped
}

/// Sysctls whose read does work rather than show a value, never read for a suggestion whatever
/// their mode says: `vm.stat_refresh` refreshes the counters on every CPU and waits for them
/// (without bound on a CPU that a real-time task keeps busy); the others are write-only triggers
/// (dropping caches, compacting memory, flushing routes) with no value to show.
const READ_TRIGGERS: [&str; 5] = [
    "vm.stat_refresh",
    "vm.drop_caches",
    "vm.compact_memory",
    "net.ipv4.route.flush",
    "net.ipv6.route.flush",
];

/// `address`, a sysctl at the host, under `proc_sys` (`/proc/sys`: the agent's own network
/// namespace): whether it exists, and its value if it can be shown as one: a suggestion's
/// `current_value`. Only a name [`suggestions`] kept comes here (no `..`, no path), and the
/// read is bounded as every read of a kernel attribute is.
///
/// The value is read only from a file everyone may read (mode `o+r`), and never from one of
/// [`READ_TRIGGERS`]: the agent runs as root, which reads 0600 files too, and those hold secrets
/// (`net.ipv4.tcp_fastopen_key`, `net.ipv6.conf.*.stable_secret`) that would otherwise go into
/// events, the history and the webhook, off the host; a model may name them by chance or on an
/// attacker's prompt. A file that holds more than a value (`dev.cdrom.info`'s table) shows
/// nothing rather than a page of text.
pub fn read_sysctl(proc_sys: &std::path::Path, address: &ParamAddress) -> Current {
    use std::os::unix::fs::PermissionsExt;
    /// Longer text is no parameter value a person reads beside advice.
    const MAX_SHOWN: usize = 256;
    if address.kind() != ParamKind::Sysctl || address.target != crate::actuate::param::Target::Host
    {
        return Current::Missing;
    }
    let path = proc_sys.join(crate::actuate::param::sysctl_rel_path(&address.name));
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Current::Missing
        }
        // There, but not to be looked at (a directory on the way that root may not enter).
        Err(_) => return Current::Exists(None),
    };
    if !meta.is_file() {
        return Current::Missing;
    }
    if meta.permissions().mode() & 0o004 == 0 || READ_TRIGGERS.contains(&address.name.as_str()) {
        return Current::Exists(None);
    }
    Current::Exists(shown(&path, MAX_SHOWN))
}

/// The value in the sysctl file at `path`, if it is one line of at most `max` bytes without
/// control characters (a tab separates a vector's elements).
fn shown(path: &std::path::Path, max: usize) -> Option<Value> {
    let text = crate::kernel_file::read_text(path, crate::kernel_file::limit::ATTRIBUTE).ok()?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    if line.len() > max || line.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    Some(Value::parse(line))
}

/// A JSON value as a parameter value: an integer (or an integral float such as `8192.0`), a list
/// of integers, or a string as `/proc/sys` prints values (`"4096 131072 6291456"`, `"schedutil"`).
fn to_value(v: &Json) -> Option<Value> {
    match v {
        Json::Number(n) => json_int(n).map(Value::Int),
        Json::String(s) => Some(Value::parse(s)),
        Json::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Json::Number(n) => json_int(n),
                _ => None,
            })
            .collect::<Option<Vec<i128>>>()
            .map(Value::Ints),
        _ => None,
    }
}

/// A number (or a list holding one) of 2^64 or more in magnitude: serde_json reads an integer
/// written with more digits than 64 bits hold as the nearest float, which is no type error of the
/// model's but a value no kernel parameter takes (s38 chaos F3: `99999999999999999999999999` was
/// dropped as `wrong_type`, "1e+26 is not ... an integer").
fn beyond_64_bits(v: &Json) -> bool {
    // Above u64's range, or below i64's (s46 storyI F7: -2^63-1 fell between the two and was
    // told a wrong type): JSON readers hold either only as a float, and -2^63-1 rounds to -2^63,
    // so a negative one is told by not fitting an i64.
    let huge = |n: &serde_json::Number| {
        n.as_f64().is_some_and(|f| {
            f >= 18_446_744_073_709_551_616.0
                || (f <= -9_223_372_036_854_775_808.0 && n.as_i64().is_none())
        })
    };
    match v {
        Json::Number(n) => huge(n),
        Json::Array(items) => {
            items.iter().all(|i| i.is_number())
                && items
                    .iter()
                    .any(|i| matches!(i, Json::Number(n) if huge(n)))
        }
        _ => false,
    }
}

fn json_int(n: &serde_json::Number) -> Option<i128> {
    // u64 too: kernel.shmmax's default is above i64::MAX.
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i128)
        })
}

/// The model's reason as plain text: control characters made spaces, format characters removed,
/// white space collapsed, bounded. The reason reaches terminals, approval webhooks and chat
/// messages, where a bidi override (`U+202E`) can make `8192` read as `2918` and zero-width
/// characters can hide words from whoever reads or greps it.
fn clean_reason(reason: Option<&str>) -> String {
    let text = crate::shown::one_line(reason.unwrap_or(""));
    if text.is_empty() {
        return "the model gave no reason".into();
    }
    shorten_to(&text, MAX_REASON_CHARS)
}

/// For the reason, every echo of the model's text, and the server's words in an error.
pub(crate) use crate::shown::plain;

pub(crate) use crate::shown::is_format;

/// An echo of the model's text in a `dropped` entry: [`plain`], then cut.
fn shorten(s: &str) -> String {
    shorten_to(&plain(s), MAX_ECHO_CHARS)
}

fn shorten_to(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn shorten_json(v: &Json) -> Json {
    match v {
        Json::String(s) => Json::String(shorten(s)),
        Json::Number(_) | Json::Bool(_) | Json::Null => v.clone(),
        other => {
            // serde_json escapes control characters inside strings but not format ones.
            let text = other.to_string();
            if text.chars().count() <= MAX_ECHO_CHARS && plain(&text) == text {
                other.clone()
            } else {
                Json::String(shorten(&text))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::limits::{ParamLimits, Percent, StaticPolicy, Step};

    fn setup() -> (Vec<ParamContext>, StaticPolicy, WindowRef) {
        let ns: ParamAddress = "net.core.somaxconn@netns:7".parse().unwrap();
        let rmem: ParamAddress = "net.ipv4.tcp_rmem".parse().unwrap();
        let policy = StaticPolicy::new()
            .with(
                "net.core.somaxconn@netns:7",
                &[Source::Llm],
                ParamLimits::new(Mode::Auto)
                    .bounds(128, 65535)
                    .step(Step::Percent(Percent::whole(100))),
            )
            .with(
                "net.ipv4.tcp_rmem",
                &[Source::Llm],
                ParamLimits::new(Mode::Recommend).bounds(4096, 1 << 26),
            )
            // Managed, not offered: by other advisors, and by the LLM through a glob.
            .with(
                "vm.swappiness",
                &[Source::Rules, Source::Optimizer],
                ParamLimits::new(Mode::Auto).bounds(0, 100),
            )
            .with(
                "net.ipv4.udp_*",
                &[Source::Llm],
                ParamLimits::new(Mode::Recommend),
            )
            // Observed only: advice is recorded, never applied nor queued for approval.
            .with(
                "vm.dirty_ratio",
                &[Source::Rules, Source::Llm],
                ParamLimits::new(Mode::Observe),
            );
        let offered = vec![
            ParamContext {
                address: ns.clone(),
                current: Value::Int(4096),
                limits: policy.allowed(&ns, Source::Llm).unwrap(),
                netns_cookie: Some(7),
                netns: None,
                held: vec![],
            },
            ParamContext {
                address: rmem.clone(),
                current: Value::Ints(vec![4096, 131072, 6291456]),
                limits: policy.allowed(&rmem, Source::Llm).unwrap(),
                netns_cookie: None,
                netns: None,
                held: vec![],
            },
        ];
        let w = WindowRef {
            index: 3,
            end: "t".into(),
        };
        (offered, policy, w)
    }

    fn run(items: Json) -> Validated {
        let (offered, policy, w) = setup();
        validate(items.as_array().unwrap().clone(), &offered, &policy, &w)
    }

    fn kinds(v: &Validated) -> Vec<DropKind> {
        v.dropped.iter().map(|d| d.kind).collect()
    }

    #[test]
    fn accepts_valid_values_in_every_spelling() {
        let v = run(serde_json::json!([
            {"parameter": "net.core.somaxconn@netns:7", "value": 8192.0, "reason": "drops\n1200", "can_auto_apply": true, "confidence": 80},
            {"parameter": "net.ipv4.tcp_rmem", "recommended_value": "4096 262144 8388608", "can_auto_apply": true},
        ]));
        assert_eq!(kinds(&v), []);
        let auto: Vec<_> = v.auto().map(|r| r.parameter.to_string()).collect();
        assert_eq!(auto, ["net.core.somaxconn@netns:7"]);
        let pending: Vec<_> = v.pending().map(|r| r.parameter.to_string()).collect();
        assert_eq!(
            pending,
            ["net.ipv4.tcp_rmem"],
            "policy keeps it in recommend"
        );
        assert_eq!(v.accepted[0].recommended_value, Some(Value::Int(8192)));
        assert_eq!(v.accepted[0].reason, "drops 1200");
        assert_eq!(v.accepted[0].confidence, 0.8);
        assert_eq!(
            v.accepted[1].recommended_value,
            Some(Value::Ints(vec![4096, 262144, 8388608]))
        );
        assert_eq!(v.accepted[1].confidence, DEFAULT_CONFIDENCE);
    }

    /// Each alone in its reply: two acceptable values for one parameter are `contradictory`
    /// (below).
    #[test]
    fn drops_with_reasons() {
        let cases = serde_json::json!([
            ["net.core.somaxconn", "malformed"],
            [{"value": 1}, "malformed"],
            [{"parameter": "../../etc/passwd", "value": 1}, "unknown_parameter"],
            [{"parameter": "kernel.core_pattern", "value": "|/tmp/x"}, "deny_listed"],
            [{"parameter": "net.core.somaxconn", "value": 8192}, "unknown_parameter"],
            [{"parameter": "net.core.somaxconn@netns:7", "value": "big"}, "wrong_type"],
            [{"parameter": "net.core.somaxconn@netns:7", "value": 1000000}, "out_of_bounds"],
            [{"parameter": "net.core.somaxconn@netns:7", "value": 9000}, "step_too_large"],
            [{"parameter": "net.core.somaxconn@netns:7", "value": 4096}, "no_change"],
            [{"parameter": "net.core.somaxconn@netns:7", "value": null}, "no_change"],
            [{"parameter": "net.ipv4.tcp_rmem", "value": [4096, 262144]}, "wrong_type"],
            [{"parameter": "net.ipv4.tcp_rmem", "value": 8388608}, "wrong_type"],
            [{"parameter": "net.ipv4.tcp_rmem", "value": [67108864, 4096, 4096]}, "out_of_bounds"],
        ]);
        for case in cases.as_array().unwrap() {
            let v = run(serde_json::json!([case[0]]));
            assert_eq!(
                serde_json::to_value(kinds(&v)).unwrap(),
                serde_json::json!([case[1]]),
                "{case}"
            );
            assert!(v.accepted.is_empty(), "{case}");
        }
        let v = run(serde_json::json!([{"parameter": "kernel.core_pattern", "value": "|/tmp/x"}]));
        assert_eq!(
            v.dropped[0].parameter.as_deref(),
            Some("kernel.core_pattern")
        );
        let v = run(
            serde_json::json!([{"parameter": "net.ipv4.tcp_rmem", "value": [67108864, 4096, 4096]}]),
        );
        assert!(
            v.dropped[0].detail.contains("is out of order")
                && v.dropped[0].detail.contains("min <= default <= max"),
            "{}",
            v.dropped[0].detail
        );
        // The same value twice: the first item stands, the second is a duplicate.
        let v = run(serde_json::json!([
            {"parameter": "net.core.somaxconn@netns:7", "value": 8192, "can_auto_apply": false},
            {"parameter": "net.core.somaxconn@netns:7", "value": "8192", "can_auto_apply": true},
        ]));
        assert_eq!(kinds(&v), [DropKind::Duplicate]);
        assert_eq!(v.accepted.len(), 1);
        assert!(
            !v.accepted[0].can_auto_apply,
            "the model said no: more cautious wins"
        );
    }

    /// Two acceptable values for one parameter in one reply: the model contradicted itself,
    /// and neither is taken, whichever came first (it was accepted, and could be applied,
    /// before). A value dropped for its own reason is no contradiction: it could never be taken.
    #[test]
    fn different_values_for_one_parameter_are_all_dropped() {
        let v = run(serde_json::json!([
            {"parameter": "net.core.somaxconn@netns:7", "value": 6000, "can_auto_apply": true},
            {"parameter": "net.ipv4.tcp_rmem", "value": "4096 262144 8388608"},
            {"parameter": " net.core.somaxconn@netns:7", "new_value": 8192},
            {"parameter": "net.ipv4.tcp_rmem", "value": [4096, 262144, 8388608]},
            {"parameter": "net.core.somaxconn@netns:7", "value": 1000000},
            {"parameter": "net.core.somaxconn@netns:7", "value": null},
            {"parameter": "net.core.somaxconn@netns:7", "value": 6000},
        ]));
        assert_eq!(
            kinds(&v),
            [
                DropKind::Contradictory,
                DropKind::Contradictory,
                DropKind::Duplicate,
                DropKind::OutOfBounds,
                DropKind::NoChange,
                DropKind::Contradictory,
            ]
        );
        assert_eq!(
            v.dropped[0].detail,
            "the reply gives net.core.somaxconn@netns:7 different values (6000, 8192): none of \
             them is taken"
        );
        let accepted: Vec<_> = v.accepted.iter().map(|r| r.parameter.to_string()).collect();
        assert_eq!(
            accepted,
            ["net.ipv4.tcp_rmem"],
            "same value twice is no contradiction"
        );
        // One acceptable value beside one out of bounds: taken.
        let v = run(serde_json::json!([
            {"parameter": "net.core.somaxconn@netns:7", "value": 1000000},
            {"parameter": "net.core.somaxconn@netns:7", "value": 6000},
        ]));
        assert_eq!(kinds(&v), [DropKind::OutOfBounds]);
        assert_eq!(v.accepted.len(), 1);
    }

    /// Defect (s38 chaos F3): an integer beyond 64 bits, which serde_json reads as a float, was
    /// dropped as `wrong_type` ("1e+26 is not a parameter value (an integer, ...)"): the model
    /// wrote an integer, no kernel parameter's bound reaches it. A fraction stays a type error.
    #[test]
    fn an_integer_beyond_64_bits_is_out_of_bounds_not_a_wrong_type() {
        let reply: Json = serde_json::from_str(
            r#"[
                {"parameter": "net.core.somaxconn@netns:7", "value": 99999999999999999999999999},
                {"parameter": "net.ipv4.tcp_rmem", "value": [4096, 262144, -1e30]},
                {"parameter": "net.core.somaxconn@netns:7", "value": 6000.5}
            ]"#,
        )
        .unwrap();
        let v = run(reply);
        assert_eq!(
            kinds(&v),
            [
                DropKind::OutOfBounds,
                DropKind::OutOfBounds,
                DropKind::WrongType
            ]
        );
        // -2^63-1, below any kernel integer, which a float rounds to -2^63 (s46 storyI F7: it
        // was a wrong type); -2^63 itself is an integer, out of the policy's bounds.
        for (value, detail) in [
            (
                "-9223372036854775809",
                "-9.223372036854776e+18 (as read) is beyond any kernel integer (more than 64 bits)",
            ),
            (
                "-9223372036854775808",
                "-9223372036854775808 is outside the policy's bounds",
            ),
        ] {
            let reply =
                format!(r#"[{{"parameter": "net.core.somaxconn@netns:7", "value": {value}}}]"#);
            let v = run(serde_json::from_str(&reply).unwrap());
            assert_eq!(kinds(&v), [DropKind::OutOfBounds], "{value}");
            assert!(
                v.dropped[0].detail.starts_with(detail),
                "{}",
                v.dropped[0].detail
            );
        }
        assert_eq!(
            v.dropped[0].detail,
            "1e+26 (as read) is beyond any kernel integer (more than 64 bits)"
        );
    }

    #[test]
    fn too_many_items_are_cut() {
        let items: Vec<Json> = (0..40)
            .map(|_| serde_json::json!({"parameter": "x.y", "value": 1}))
            .collect();
        let v = run(Json::Array(items));
        assert_eq!(v.dropped.len(), MAX_ITEMS + 1);
        let last = v.dropped.last().unwrap();
        assert_eq!(last.kind, DropKind::TooMany);
        assert!(last.detail.starts_with("8 more item(s)"), "{}", last.detail);
        assert!(v.dropped[..MAX_ITEMS]
            .iter()
            .all(|d| d.kind == DropKind::UnknownParameter));
    }

    #[test]
    fn a_reply_cut_at_the_item_limit_makes_nothing_automatic() {
        let first = serde_json::json!(
            {"parameter": "net.core.somaxconn@netns:7", "value": 8192, "can_auto_apply": true}
        );
        let mut items = vec![first.clone()];
        items.extend((1..MAX_ITEMS).map(|_| serde_json::json!({"parameter": "x.y", "value": 1})));
        // The same change kept for approval, past the items looked at.
        items.push(serde_json::json!(
            {"parameter": "net.core.somaxconn@netns:7", "value": 8192, "can_auto_apply": false}
        ));
        let v = run(Json::Array(items));
        assert_eq!(v.accepted.len(), 1);
        assert_eq!(v.auto().count(), 0, "it waits for approval");
        let last = v.dropped.last().unwrap();
        assert_eq!(last.kind, DropKind::TooMany);
        assert!(
            last.detail.contains("waits for approval"),
            "{}",
            last.detail
        );
        // Within the limit, the same first item is automatic.
        assert_eq!(run(serde_json::json!([first])).auto().count(), 1);
    }

    #[test]
    fn echoes_of_the_models_text_carry_no_invisible_characters() {
        let v = run(serde_json::json!([
            {"parameter": "net.core.somax\u{202E}conn\u{200B}", "value": 1},
            {"parameter": "net.core.somaxconn@netns:7", "value": ["a\u{202E}b"]},
        ]));
        assert_eq!(v.dropped.len(), 2);
        for d in &v.dropped {
            let text = format!(
                "{:?} {} {}",
                d.parameter,
                d.value.as_ref().unwrap(),
                d.detail
            );
            assert!(!text.chars().any(is_format), "{text}");
        }
        assert_eq!(
            v.dropped[0].parameter.as_deref(),
            Some("net.core.somaxconn")
        );
    }

    #[test]
    fn a_million_items_leave_a_bounded_dropped_list() {
        // `[{},1,1,...]`: one malformed object, then a million more items.
        let mut items = vec![serde_json::json!({})];
        items.extend(std::iter::repeat_n(Json::from(1), 1_000_000));
        let (offered, policy, w) = setup();
        let v = validate(items, &offered, &policy, &w);
        assert!(v.accepted.is_empty());
        assert_eq!(v.dropped.len(), MAX_ITEMS + 1);
        assert_eq!(
            v.dropped
                .iter()
                .filter(|d| d.kind == DropKind::TooMany)
                .count(),
            1
        );
        let summary = v.dropped.last().unwrap();
        assert_eq!(summary.kind, DropKind::TooMany);
        assert_eq!(summary.parameter, None);
        assert!(
            summary
                .detail
                .starts_with(&format!("{} more item(s)", 1_000_001 - MAX_ITEMS)),
            "{}",
            summary.detail
        );
        let json = serde_json::to_string(&v.dropped).unwrap();
        assert!(json.len() < 8 << 10, "{} bytes", json.len());
    }

    #[test]
    fn format_characters_are_removed_from_the_reason() {
        // A bidi override that shows "somaxconn = 0" backwards, isolates, zero-width characters
        // inside a number, a BOM, a word joiner and a tag character (ASCII smuggling).
        let reason = "raise \u{202E}0 = nnocxamos\u{202C} to 8\u{200B}1\u{200D}9\u{FEFF}2 \
                      \u{2066}now\u{2069}\u{2060} \u{200E}\u{200F}\u{202A}\u{202D}\u{2064}\u{E0041}ok";
        let v = run(serde_json::json!([
            {"parameter": "net.core.somaxconn@netns:7", "value": 8192, "reason": reason},
        ]));
        let cleaned = &v.accepted[0].reason;
        assert_eq!(cleaned, "raise 0 = nnocxamos to 8192 now ok");
        assert!(cleaned.chars().all(|c| !is_format(c) && !c.is_control()));
        // Only format characters: no reason left.
        let v = run(serde_json::json!([
            {"parameter": "net.core.somaxconn@netns:7", "value": 8192, "reason": "\u{200B}\u{202E}"},
        ]));
        assert_eq!(v.accepted[0].reason, "the model gave no reason");
        // Visible characters near the ranges stay: an en dash, the ellipsis, the replacement
        // character, and text in right-to-left scripts.
        for kept in ['\u{2013}', '\u{2026}', '\u{FFFD}', '\u{05D0}', '\u{0627}'] {
            assert!(!is_format(kept), "{kept:?}");
        }
    }

    /// [`suggestions`] of `raw` against [`setup`], with the names whose value was read (the
    /// reader gives 60 for each, and has no `net.ipv4.tcp_fin_wait2_timeout`).
    fn suggest(raw: Json) -> (Suggested, Vec<String>) {
        let (offered, policy, w) = setup();
        let read = std::cell::RefCell::new(Vec::new());
        let s = suggestions(Some(raw), &offered, &policy, &w, &|a| {
            read.borrow_mut().push(a.to_string());
            match a.name.as_str() {
                "net.ipv4.tcp_fin_wait2_timeout" => Current::Missing,
                _ => Current::Exists(Some(Value::Int(60))),
            }
        });
        (s, read.into_inner())
    }

    /// A parameter the policy only observes is no advisor's to change (its advice is recorded,
    /// never applied nor queued for approval): suggested, it is kept, not `managed`, whose detail
    /// would say the policy "lets rules, llm change" it: under `[defaults] mode = "observe"` (the
    /// example policy's) every sysctl would be.
    #[test]
    fn a_suggestion_of_an_observed_parameter_is_kept() {
        let (s, read) =
            suggest(serde_json::json!([{"parameter": "vm.dirty_ratio", "reason": "r"}]));
        assert_eq!(s.dropped, []);
        assert_eq!(s.kept.len(), 1);
        assert_eq!(read, ["vm.dirty_ratio"]);
    }

    /// A kept suggestion is a recommendation without a value, never automatic, with the model's
    /// reason cleaned as an accepted one's and the value read for it; a `value` the model gave
    /// is not taken. Mutations that fail it: `recommended_value` set from the item; the reason
    /// not passed through `clean_reason`; `current` not called.
    #[test]
    fn a_suggestion_is_kept_as_advice_without_a_value() {
        let (s, read) = suggest(serde_json::json!([
            {"parameter": " net.ipv4.tcp_fin_timeout", "value": 5, "can_auto_apply": true,
             "reason": "1200 sockets\nin FIN_WAIT2\u{202E}", "confidence": 70},
        ]));
        assert_eq!(s.dropped, []);
        let address: ParamAddress = "net.ipv4.tcp_fin_timeout".parse().unwrap();
        assert_eq!(
            s.kept,
            [Recommendation {
                id: Recommendation::make_id(Source::Llm, 3, &address, None),
                parameter: address,
                current_value: Some(Value::Int(60)),
                recommended_value: None,
                can_auto_apply: false,
                reason: "1200 sockets in FIN_WAIT2".into(),
                confidence: 0.7,
                source: Source::Llm,
                window: WindowRef {
                    index: 3,
                    end: "t".into(),
                },
                application: None,
                netns_cookie: None,
            }]
        );
        assert_eq!(read, ["net.ipv4.tcp_fin_timeout"]);
        // None, or null: nothing to do.
        let (offered, policy, w) = setup();
        for raw in [None, Some(Json::Null)] {
            let s = suggestions(raw, &offered, &policy, &w, &|_| panic!("nothing to read"));
            assert_eq!(s, Suggested::default());
        }
    }

    /// Every way a suggestion is dropped, each alone, and nothing read for any of them: only a
    /// kept name is ever mapped to a file. Mutations that fail it: each check of
    /// `check_suggestion` removed in turn (the deny-list, the offered names, the policy's other
    /// parameters, the host target, the path check, the length bound).
    #[test]
    fn suggestions_drop_with_reasons() {
        let cases = serde_json::json!([
            ["net.ipv4.tcp_fin_timeout", "malformed"],
            [{"reason": "r"}, "malformed"],
            [{"parameter": 7}, "malformed"],
            [{"parameter": "net.ipv4.tcp_fin_timeout", "Parameter": "vm.dirty_ratio"}, "malformed"],
            [{"parameter": "net.ipv4.tcp_fin_timeout", "reason": "a", "Reason": "b"}, "malformed"],
            [{"parameter": "net.ipv4.tcp_fin_timeout", (super::super::parse::REPEATED_KEY): "reason"}, "malformed"],
            [{"parameter": "/proc/sys/net/ipv4/tcp_fin_timeout"}, "unknown_parameter"],
            [{"parameter": "net/ipv4/tcp_fin_timeout"}, "unknown_parameter"],
            [{"parameter": "../../etc/shadow"}, "unknown_parameter"],
            [{"parameter": "net.ipv4..tcp_fin_timeout"}, "unknown_parameter"],
            [{"parameter": "net.ipv4./..tcp_fin_timeout"}, "unknown_parameter"],
            [{"parameter": format!("net.{}", "a".repeat(MAX_SUGGESTED_NAME))}, "unknown_parameter"],
            [{"parameter": "net.ipv4.tcp_fin_timeout@netns:7"}, "unknown_parameter"],
            [{"parameter": "ethtool:eth0:rx-usecs"}, "unknown_parameter"],
            [{"parameter": "cpufreq:policy0:scaling_governor"}, "unknown_parameter"],
            [{"parameter": "kernel.core_pattern", "reason": "r"}, "deny_listed"],
            [{"parameter": "kernel.modprobe"}, "deny_listed"],
            [{"parameter": "net.core.somaxconn"}, "offered"],
            [{"parameter": "net.ipv4.tcp_rmem"}, "offered"],
            [{"parameter": "vm.swappiness"}, "managed"],
            [{"parameter": "net.ipv4.udp_mem"}, "managed"],
        ]);
        for case in cases.as_array().unwrap() {
            let (s, read) = suggest(serde_json::json!([case[0]]));
            assert!(s.kept.is_empty(), "{case}");
            assert_eq!(s.dropped.len(), 1, "{case}");
            assert_eq!(
                serde_json::to_value(s.dropped[0].kind).unwrap(),
                case[1],
                "{case}: {}",
                s.dropped[0].detail
            );
            assert_eq!(s.dropped[0].value, None, "{case}");
            assert_eq!(read, Vec::<String>::new(), "{case}");
        }
        // A name just at the bound is a name.
        let (s, _) = suggest(
            serde_json::json!([{"parameter": format!("net.{}", "a".repeat(MAX_SUGGESTED_NAME - 4))}]),
        );
        assert_eq!((s.kept.len(), s.dropped.len()), (1, 0));
        let (s, _) = suggest(serde_json::json!([{"parameter": "kernel.core_pattern"}]));
        assert_eq!(
            s.dropped[0],
            Dropped {
                parameter: Some("kernel.core_pattern".into()),
                value: None,
                kind: DropKind::DenyListed,
                detail: "kernel.core_pattern is on the built-in deny-list and is never changed"
                    .into(),
                confidence: None,
            }
        );
        let (s, _) = suggest(serde_json::json!([{"parameter": "net.core.somaxconn"}]));
        assert_eq!(
            s.dropped[0].detail,
            "net.core.somaxconn is offered to the model: a change to it belongs in \
             `recommendations`"
        );
        let (s, _) = suggest(serde_json::json!([{"parameter": "vm.swappiness"}]));
        assert_eq!(
            s.dropped[0].detail,
            "KPO's policy lets rules, optimizer change vm.swappiness: it is not one to change by \
             hand"
        );
        // Not a list: one entry, and the list's other answers are not the suggestions' business.
        let (s, _) = suggest(serde_json::json!({"parameter": "net.ipv4.tcp_fin_timeout"}));
        assert_eq!(
            s.dropped,
            [Dropped {
                parameter: None,
                value: Some(serde_json::json!({"parameter": "net.ipv4.tcp_fin_timeout"})),
                kind: DropKind::Malformed,
                detail: "`suggestions` is not a list".into(),
                confidence: None,
            }]
        );
        // The same name twice: the second is a duplicate, and read once.
        let (s, read) = suggest(serde_json::json!([
            {"parameter": "vm.dirty_ratio"},
            {"parameter": "vm.dirty_ratio", "reason": "again"},
        ]));
        assert_eq!(s.kept.len(), 1);
        assert_eq!(s.dropped[0].kind, DropKind::Duplicate);
        assert_eq!(
            s.dropped[0].detail,
            "vm.dirty_ratio was already suggested in this reply"
        );
        assert_eq!(read, ["vm.dirty_ratio"]);
    }

    /// A name this host has no sysctl by (a model's invention) is looked up and dropped: it is
    /// nothing for a person to look at. Mutation that fails it: `Current::Missing` kept (with
    /// no value).
    #[test]
    fn a_suggested_sysctl_that_is_not_here_is_dropped() {
        let (s, read) = suggest(serde_json::json!([
            {"parameter": "net.ipv4.tcp_fin_wait2_timeout", "reason": "FIN_WAIT2"},
            {"parameter": "net.ipv4.tcp_fin_timeout", "reason": "FIN_WAIT2"},
        ]));
        assert_eq!(
            s.dropped,
            [Dropped {
                parameter: Some("net.ipv4.tcp_fin_wait2_timeout".into()),
                value: None,
                kind: DropKind::UnknownParameter,
                detail: "no such sysctl here: net.ipv4.tcp_fin_wait2_timeout".into(),
                confidence: None,
            }]
        );
        assert_eq!(s.kept.len(), 1);
        assert_eq!(s.kept[0].parameter.name, "net.ipv4.tcp_fin_timeout");
        assert_eq!(
            read,
            ["net.ipv4.tcp_fin_wait2_timeout", "net.ipv4.tcp_fin_timeout"]
        );
    }

    /// Past [`MAX_SUGGESTIONS`], the rest make one `too_many` entry, however many there are.
    /// Mutations that fail it: no `take(MAX_SUGGESTIONS)`; no `too_many` entry.
    #[test]
    fn too_many_suggestions_are_cut() {
        let items: Vec<Json> = (0..MAX_SUGGESTIONS + 1000)
            .map(|i| serde_json::json!({"parameter": format!("vm.x{i}"), "reason": "r"}))
            .collect();
        let (s, read) = suggest(Json::Array(items));
        assert_eq!(s.kept.len(), MAX_SUGGESTIONS);
        assert_eq!(read.len(), MAX_SUGGESTIONS);
        assert_eq!(
            s.dropped,
            [Dropped {
                parameter: None,
                value: None,
                kind: DropKind::TooMany,
                detail: "1000 more suggestion(s) not considered: only the first 5 of a reply are"
                    .into(),
                confidence: None,
            }]
        );
    }

    /// A kept name's value, read from a tree laid out as /proc/sys: one value or a vector;
    /// none for a table, or for a file not everyone may read or whose read does work (whatever
    /// it holds); missing for no file, a directory, a path through a file, or an address that is
    /// not a sysctl at the host. Mutations that fail it: the `target` check removed; `MAX_SHOWN`
    /// not applied; the mode check removed (the key and the secret are shown); `READ_TRIGGERS`
    /// not looked at (stat_refresh's 0 is shown); a directory taken as a sysctl.
    #[test]
    fn a_suggestions_current_value_is_read_under_proc_sys_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, text: &str, mode: u32| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("net/ipv4/tcp_fin_timeout", "60\n", 0o644);
        write("net/ipv4/tcp_rmem", "4096\t131072\t6291456\n", 0o644);
        write("net/ipv4/conf/eth0.100/rp_filter", "2\n", 0o644);
        write(
            "dev/cdrom/info",
            "CD-ROM information, Id: cdrom.c 3.20 2003/12/17\n\ndrive name:\n",
            0o444,
        );
        write("dev/cdrom/long", &"w ".repeat(200), 0o644);
        // As the kernel has them: root's alone (this test may run as root, who could read them).
        write(
            "net/ipv4/tcp_fastopen_key",
            "1a2b3c4d-1a2b3c4d-1a2b3c4d-1a2b3c4d\n",
            0o600,
        );
        write("net/ipv6/conf/all/stable_secret", "fe80::1\n", 0o600);
        // A read trigger, even where its mode would let anyone read it.
        write("vm/stat_refresh", "0\n", 0o644);
        let read = |name: &str| read_sysctl(root, &name.parse().unwrap());
        let shown = |v: Value| Current::Exists(Some(v));
        assert_eq!(read("net.ipv4.tcp_fin_timeout"), shown(Value::Int(60)));
        assert_eq!(
            read("net.ipv4.tcp_rmem"),
            shown(Value::Ints(vec![4096, 131072, 6291456]))
        );
        assert_eq!(
            read("net.ipv4.conf.eth0/100.rp_filter"),
            shown(Value::Int(2))
        );
        for hidden in [
            "dev.cdrom.info",
            "dev.cdrom.long",
            "net.ipv4.tcp_fastopen_key",
            "net.ipv6.conf.all.stable_secret",
            "vm.stat_refresh",
        ] {
            assert_eq!(read(hidden), Current::Exists(None), "{hidden}");
        }
        for missing in [
            "net.ipv4.tcp_nope",
            "net.ipv4",
            "net.ipv4.tcp_fin_timeout.x",
            "net.ipv4.tcp_fin_timeout@netns:7",
            "ethtool:eth0:rx-usecs",
        ] {
            assert_eq!(read(missing), Current::Missing, "{missing}");
        }
    }

    #[test]
    fn details_quoting_the_model_are_shortened() {
        let long = format!("net.{}", "a".repeat(10_000));
        let v = run(serde_json::json!([{"parameter": long, "value": 1}]));
        let d = &v.dropped[0];
        assert_eq!(d.kind, DropKind::UnknownParameter);
        assert!(
            d.detail.chars().count() <= MAX_DETAIL_CHARS + 1,
            "{}",
            d.detail
        );
        assert!(d.parameter.as_ref().unwrap().chars().count() <= MAX_ECHO_CHARS + 1);
    }
}
