//! Reading a policy file: TOML into the types of [`super`], with every error naming the file, the
//! line and the key (from `toml`'s spans).
use std::{collections::BTreeMap, ops::Range, path::PathBuf, time::Duration};

use globset::GlobBuilder;
use serde::Deserialize;
use toml::Spanned;

use super::{
    deny::DenyList, parse_kernel_int, ApprovalSettings, Bound, GuardSettings, HealthSignal,
    MaxStep, Mode, NamespaceSel, Namespaces, OnExit, ParamRule, Policy, PolicyError,
    PolicyErrorClass, PolicyOrigin, Source, KERNEL_INT_MAX, KERNEL_INT_MIN,
};
use crate::actuate::param::canonical_sysctl;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    guard: Option<GuardFile>,
    #[serde(default)]
    approvals: Option<ApprovalsFile>,
    #[serde(default)]
    defaults: Option<Spanned<ParamFile>>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, Spanned<ParamFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFile {
    windows: Option<Spanned<u32>>,
    signals: Option<Vec<HealthSignal>>,
    max_changes_per_hour: Option<Spanned<u32>>,
    quarantine: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsFile {
    expire_after: Option<Spanned<String>>,
    clear_after_windows: Option<Spanned<u32>>,
    webhook: Option<Spanned<String>>,
    webhook_user: Option<Spanned<crate::endpoint_owner::UserName>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamFile {
    mode: Option<Mode>,
    min: Option<Spanned<BoundFile>>,
    max: Option<Spanned<BoundFile>>,
    max_step: Option<Spanned<StepFile>>,
    cooldown: Option<Spanned<String>>,
    sources: Option<Spanned<Vec<Source>>>,
    on_exit: Option<OnExit>,
    namespaces: Option<Spanned<NsFile>>,
    allow_adaptive_off: Option<bool>,
    guard_signals: Option<Spanned<Vec<HealthSignal>>>,
    optimizer_levels: Option<Spanned<Vec<IntFile>>>,
}

/// An integer as TOML holds it (signed 64-bit), or as text for one beyond (a kernel's unsigned
/// 64-bit values: `max = "18446744073692774399"`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum IntFile {
    Int(i64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum BoundFile {
    One(IntFile),
    Each(Vec<IntFile>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StepFile {
    Abs(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NsFile {
    Word(String),
    List(Vec<NsEntry>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NsEntry {
    Inode(u64),
    Text(String),
}

/// Where each line of the text starts, to turn byte spans into 1-based line numbers.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }
    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
    fn line_text(&self, line: usize) -> &'a str {
        let start = self
            .starts
            .get(line - 1)
            .copied()
            .unwrap_or(self.text.len());
        let end = self.starts.get(line).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end()
    }
    /// The key of a list still open at `line` (an element on a line of its own, as in
    /// `signals = ["request_p99",` ... `"cpu"]`), if `line` is inside one: the nearest `key =`
    /// above it (bare keys only: an element may hold `=` in a string) whose brackets are not yet
    /// closed by the lines in between.
    fn array_key_above(&self, line: usize) -> Option<String> {
        if self.line_text(line).trim().starts_with('[') {
            return None;
        }
        self.open_list_above(line).map(|(_, key)| key)
    }

    /// The line and key of a list opened above `line` and not closed before it, if any.
    fn open_list_above(&self, line: usize) -> Option<(usize, String)> {
        for l in (1..line).rev() {
            let t = self.line_text(l).trim();
            if t.starts_with('[') {
                return None;
            }
            if t.starts_with('#') {
                continue;
            }
            let Some((key, value)) = t.split_once('=') else {
                continue;
            };
            // A key written in quotes that needs none (`"windows" = [`) is the same key.
            let key = crate::config::bare_key(key.trim());
            let key = key.as_str();
            // A list in an inline table (`guard = { windows = [1,`): the key inside.
            let inline = crate::config::inline_key_path(t).filter(|(_, in_list)| *in_list);
            let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if inline.is_none() && (key.is_empty() || !key.chars().all(bare)) {
                continue;
            }
            let depth = bracket_depth(value)
                + ((l + 1)..line)
                    .map(|m| bracket_depth(self.line_text(m)))
                    .sum::<i32>();
            let key = match inline {
                Some((path, _)) => path.join("."),
                None => key.to_string(),
            };
            return (depth > 0).then_some((l, key));
        }
        None
    }

    /// The table header in force at `line` (`params."net.core.somaxconn"`), if any; a comment
    /// after a header is not part of it. Read from the top: a line inside a list (an element
    /// `[1, 2]` on a line of its own) or a multi-line string is no header.
    fn table_at(&self, line: usize) -> Option<&'a str> {
        self.read_to(line).0
    }

    /// The first line that sets an entry's key as a dotted key (`"net.core.somaxconn".max = 5`
    /// under `[params]`, or `params."net.core.somaxconn".max = 5` at the top), with the entry's
    /// name and the key: TOML allows it, but the spans the policy reads (`Spanned`) do not
    /// come with such a table, and the parser's own words for it ("expected a borrowed string")
    /// name neither.
    fn dotted_entry_key(&self) -> Option<(usize, String, String)> {
        (1..=self.starts.len()).find_map(|l| {
            let (key, _) = without_comment(self.line_text(l)).split_once('=')?;
            let key = key.trim();
            let key = match self.table_at(l) {
                Some("params") => key,
                None => key.strip_prefix("params.")?.trim_start(),
                Some(_) => return None,
            };
            let quote = key.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let (name, rest) = key[1..].split_once(quote)?;
            let field = rest.trim_start().strip_prefix('.')?.trim();
            (!field.is_empty()).then(|| (l, name.to_string(), field.to_string()))
        })
    }

    /// The line a multi-line string that the file never closes opens on, if any.
    fn unclosed_string(&self) -> Option<usize> {
        self.read_to(self.starts.len()).1
    }

    /// Lines 1 to `line` read from the top: the table header in force at `line`, and the line a
    /// multi-line string still open there opened on.
    fn read_to(&self, line: usize) -> (Option<&'a str>, Option<usize>) {
        let mut table = None;
        let mut depth = 0;
        let mut open: Option<(&'static str, usize)> = None;
        for l in 1..=line {
            let text = self.line_text(l);
            if open.is_none() && depth <= 0 {
                let t = without_comment(text).trim();
                if t.starts_with('[') && t.ends_with(']') {
                    table = Some(t.trim_start_matches('[').trim_end_matches(']').trim());
                    continue;
                }
            }
            let scanned = scan_line(text, open.map(|(quotes, _)| quotes));
            depth += scanned.depth;
            open = match (scanned.open_at_end, scanned.opened_here) {
                (Some(quotes), true) => Some((quotes, l)),
                (Some(_), false) => open,
                (None, _) => None,
            };
        }
        (table, open.map(|(_, l)| l))
    }
}

/// What a line of TOML leaves open ([`scan_line`]).
struct Scanned {
    /// `[` minus `]` outside strings and comments.
    depth: i32,
    /// The delimiter (`"""` or `'''`) of a multi-line string still open at the line's end.
    open_at_end: Option<&'static str>,
    /// Whether that string opened on this line.
    opened_here: bool,
}

/// Reads one line of TOML from inside the multi-line string `open` (if any) to its end: strings
/// on one line (with their escapes, and any `"""` in them), multi-line ones (closed by their
/// delimiter and up to two more quotes), brackets and a comment. Why by hand: the TOML parser
/// does not say where a line it rejects sits in tables and strings, and the error message is all
/// this is for.
fn scan_line(line: &str, mut open: Option<&'static str>) -> Scanned {
    let b = line.as_bytes();
    let (mut i, mut depth, mut opened_here) = (0, 0, false);
    while i < b.len() {
        if let Some(quotes) = open {
            let q = quotes.as_bytes()[0];
            if q == b'"' && b[i] == b'\\' {
                i += 2;
            } else if b[i..].starts_with(quotes.as_bytes()) {
                i += 3;
                let mut more = 0;
                while more < 2 && i < b.len() && b[i] == q {
                    i += 1;
                    more += 1;
                }
                open = None;
                opened_here = false;
            } else {
                i += 1;
            }
            continue;
        }
        match b[i] {
            b'#' => break,
            b'[' => depth += 1,
            b']' => depth -= 1,
            q @ (b'"' | b'\'') => {
                let quotes = if q == b'"' { "\"\"\"" } else { "'''" };
                if b[i..].starts_with(quotes.as_bytes()) {
                    open = Some(quotes);
                    opened_here = true;
                    i += 3;
                    continue;
                }
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if q == b'"' && b[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    Scanned {
        depth,
        open_at_end: open,
        opened_here,
    }
}

struct Ctx<'a> {
    file: String,
    lines: Lines<'a>,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: String,
        class: PolicyErrorClass,
        message: String,
    ) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.clone(),
            line: self.lines.line(span.start),
            key,
            class,
            message,
        }
    }

    /// A `toml` deserialisation error as file, line, key and reason.
    fn toml_error(&self, e: toml::de::Error) -> PolicyError {
        let mut message = crate::config::toml_reason(&e, None);
        // serde's words for an untagged enum name our private types; say what is expected.
        for (ty, expected) in [
            ("BoundFile", "expected an integer or a list of integers"),
            ("IntFile", "expected a list of integers"),
            (
                "StepFile",
                "expected a positive integer or a percentage like \"50%\"",
            ),
            (
                "NsFile",
                "expected \"all\" or a list of inodes, paths and \"host\"",
            ),
            ("NsEntry", "expected an inode, an absolute path or \"host\""),
        ] {
            if message.contains(&format!("untagged enum {ty}")) {
                message = format!("invalid type: {expected}");
            }
        }
        // serde's words for a table under an entry (`[params."x".foo]`: `invalid type: string
        // "foo", expected a borrowed string`) and for an entry that is not a table name neither
        // the mistake nor our types in words an operator knows.
        if message.ends_with("expected a borrowed string") {
            if let Some(name) = message.split('"').nth(1) {
                message = format!("unknown field `{name}`: an entry has no tables under it");
            }
        } else if message.ends_with("expected struct ParamFile") {
            message = "invalid type: an entry is a table ([params.\"NAME\"] and its keys on the \
                       lines below)"
                .to_string();
        }
        let span = e.span().unwrap_or(0..0);
        let mut line = self.lines.line(span.start);
        // A multi-line string never closed is reported at the end of the file: its own line
        // and key say where.
        if message.starts_with("invalid multiline") {
            if let Some(at) = self.lines.unclosed_string().filter(|at| *at <= line) {
                line = at;
                message = format!("{message}: the string is not closed by the end of the file");
            }
        }
        // `Source` is read from the journal too, where the guard's reverts name it; in a policy's
        // `sources` it is refused (not a proposer), so it is not offered as a choice.
        if message.starts_with("unknown variant") {
            if let Some(listed) = message.strip_suffix(", `guard`") {
                message = listed.to_string();
            }
        }
        let mut class = if message.contains("unknown field") {
            PolicyErrorClass::UnknownKey
        } else if message.contains("invalid type")
            || message.contains("did not match any variant")
            || message.contains("unknown variant")
            || message.contains("invalid value")
        {
            PolicyErrorClass::BadType
        } else {
            PolicyErrorClass::Syntax
        };
        // Inside an inline table (`guard = { windows = -1 }`): the keys down to the error's.
        let inline = self
            .lines
            .text
            .get(..span.start)
            .and_then(|before| before.rsplit('\n').next())
            .filter(|_| self.lines.line(span.start) == line)
            .and_then(crate::config::inline_key_path);
        let named = message
            .split('`')
            .nth(1)
            .filter(|_| class == PolicyErrorClass::UnknownKey)
            .map(str::to_string);
        // The key: named in the message (`unknown field `x``), else the `key = ` on that line.
        let own = match &inline {
            Some((path, _)) => {
                let mut path = path.clone();
                path.extend(named);
                Some(path.join("."))
            }
            None => named,
        }
        .or_else(|| {
            let text = self.lines.line_text(line);
            let t = text.trim();
            // A header, or an element of a list opened above (`  { windows = -1 },`): the key
            // is the list's (below).
            if t.starts_with('[') || t.starts_with('{') {
                None
            } else {
                t.split_once('=')
                    .map(|(k, _)| crate::config::bare_key(k.trim()))
                    .filter(|k| !k.is_empty())
            }
        })
        .or_else(|| self.lines.array_key_above(line));
        let text = self.lines.line_text(line).trim();
        // A header where a list above is still open: the list is the mistake (a missing `]`),
        // not the header, nor the table the header opens.
        if class == PolicyErrorClass::Syntax && text.starts_with('[') {
            if let Some((at, k)) = self.lines.open_list_above(line) {
                return PolicyError::Invalid {
                    file: self.file.clone(),
                    line: at,
                    key: match self.lines.table_at(at) {
                        Some(t) => format!("{t}.{k}"),
                        None => k,
                    },
                    class,
                    message: format!("{message}: the list is not closed before line {line}"),
                };
            }
        }
        // A header that does not parse (`[params."x`) is no table: the one above it would be
        // named instead, an entry the line has nothing to do with. The line itself says where.
        if class == PolicyErrorClass::Syntax && text.starts_with('[') {
            return PolicyError::Invalid {
                file: self.file.clone(),
                line,
                key: without_comment(text).trim().to_string(),
                class,
                message,
            };
        }
        let table = self.lines.table_at(line);
        // An unknown name in the header itself (`[parms."x"]`, `[guard.extra]`): the key is the
        // header up to that name, which appending the name to the whole header would repeat.
        if class == PolicyErrorClass::UnknownKey && text.starts_with('[') {
            if let (Some(t), Some(k)) = (table, own.as_deref()) {
                let parts = header_components(t);
                if let Some(i) = parts.iter().position(|p| p.trim_matches(['"', '\'']) == k) {
                    return PolicyError::Invalid {
                        file: self.file.clone(),
                        line,
                        key: parts[..=i].join("."),
                        class,
                        message,
                    };
                }
            }
        }
        // TOML's integers are signed 64-bit; a kernel's may be unsigned (`kernel.shmmax`).
        if crate::config::beyond_64_bits(&message) {
            let wide = ["min", "max", "max_step", "optimizer_levels"];
            let last = match &inline {
                Some((path, _)) => path.last().cloned(),
                // The last key of a path an inline table's list over lines gave (`x.max`).
                None => own
                    .as_deref()
                    .and_then(|k| k.rsplit('.').next())
                    .map(str::to_string),
            };
            if let Some(k) = last.as_deref().filter(|k| wide.contains(k)) {
                // The hint asks for plain decimal digits, whatever base the number was written in.
                let value = crate::config::integer_at(self.lines.text, span.start)
                    .and_then(|(_, value)| value)
                    .filter(|v| (KERNEL_INT_MIN..=KERNEL_INT_MAX).contains(v));
                // An element of a list (`max = [...]`, or a line of one written over several).
                let in_list = k == "optimizer_levels"
                    || match &inline {
                        Some((_, in_list)) => *in_list,
                        None => text
                            .split_once('=')
                            .is_none_or(|(_, value)| value.trim_start().starts_with('[')),
                    };
                message = match value {
                    Some(number) if in_list => format!(
                        "{message}: TOML's integers are signed 64-bit; write a larger one in \
                         quotes: {k} = [..., \"{number}\"]"
                    ),
                    Some(number) => format!(
                        "{message}: TOML's integers are signed 64-bit; write a larger one in \
                         quotes: {k} = \"{number}\""
                    ),
                    None => format!(
                        "{message}: no kernel parameter holds it ({KERNEL_INT_MIN} to \
                         {KERNEL_INT_MAX})"
                    ),
                };
            }
        }
        let key = match (table, own) {
            (Some(t), Some(k)) => format!("{t}.{k}"),
            (Some(t), None) => t.to_string(),
            (None, Some(k)) => k,
            (None, None) => "(document)".to_string(),
        };
        // A type error's range is the key's own; any other message (an unclosed string) stays.
        if let Some(least) = least(&key) {
            let range = (least.into(), u32::MAX.into());
            let text = self.lines.text;
            if let Some(beyond) = crate::config::beyond_toml(&message, text, span.start, range) {
                message = beyond;
                class = PolicyErrorClass::BadType;
            } else {
                let ranged = crate::config::toml_reason(&e, Some(range));
                message = message.replacen(&crate::config::toml_reason(&e, None), &ranged, 1);
            }
        }
        if let Some(range) = duration_range(&key) {
            let text = self.lines.text;
            if let Some(wanted) = crate::config::duration_wanted(&message, text, span.start, range)
            {
                message = wanted;
                class = PolicyErrorClass::BadType;
            }
        }
        PolicyError::Invalid {
            file: self.file.clone(),
            line,
            key,
            class,
            message,
        }
    }
}

const LEAST_GUARD_WINDOWS: u32 = 1;
const LEAST_MAX_CHANGES_PER_HOUR: u32 = 1;

/// The least value of each whole-number key (a `u32`), as its check takes it, for a type
/// error's words (`toml_error`).
fn least(key: &str) -> Option<u32> {
    match key {
        "guard.windows" => Some(LEAST_GUARD_WINDOWS),
        "guard.max_changes_per_hour" => Some(LEAST_MAX_CHANGES_PER_HOUR),
        "approvals.clear_after_windows" => u32::try_from(crate::advise::rules::REPEAT_WINDOWS).ok(),
        _ => None,
    }
}

/// The least and the greatest value of each duration key, as its check (`parse`, `duration`)
/// takes it, for a type error's words (`toml_error`).
pub(super) fn duration_range(key: &str) -> Option<(Duration, Duration)> {
    let least = match key {
        // The journal counts a quarantine in milliseconds.
        "guard.quarantine" => Duration::from_millis(1),
        "approvals.expire_after" => Duration::from_nanos(1),
        "defaults.cooldown" => Duration::ZERO,
        k if k.starts_with("params.") && k.ends_with(".cooldown") => Duration::ZERO,
        _ => return None,
    };
    Some((least, MAX_DURATION))
}

/// The dotted components of a table header's key, each as written (quotes kept; a dot inside
/// quotes is part of its component).
fn header_components(header: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in header.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '.' => {
                parts.push(header[start..i].trim());
                start = i + 1;
            }
            None => {}
        }
    }
    parts.push(header[start..].trim());
    parts
}

/// A line of TOML up to its comment (a `#` outside strings).
pub(super) fn without_comment(line: &str) -> &str {
    match crate::config::outside_strings(line)
        .into_iter()
        .find(|&(_, c)| c == '#')
    {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// `[` minus `]` on a line of TOML, outside strings and comments.
pub(super) fn bracket_depth(line: &str) -> i32 {
    scan_line(line, None).depth
}

pub(super) fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let ctx = Ctx {
        file: file.to_string(),
        lines: Lines::new(text),
    };
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        if e.message().contains("expected a borrowed string") {
            if let Some((line, name, key)) = ctx.lines.dotted_entry_key() {
                return PolicyError::Invalid {
                    file: ctx.file.clone(),
                    line,
                    key: format!("params.\"{name}\".{key}"),
                    class: PolicyErrorClass::BadValue,
                    message: format!(
                        "an entry's keys are not read as dotted keys (the parser keeps no line \
                         for them, which every error here names): write [params.\"{name}\"] \
                         with {key} = ... on the lines below, or \"{name}\" = {{ {key} = ... }}"
                    ),
                };
            }
        }
        unquoted_entry(text)
            .map(|(line, name)| PolicyError::Invalid {
                file: ctx.file.clone(),
                line,
                key: format!("params.{name}"),
                class: PolicyErrorClass::BadValue,
                message: format!(
                    "a parameter's name has dots, so it is quoted: [params.\"{name}\"] (TOML \
                         reads [params.{name}] as nested tables)"
                ),
            })
            .unwrap_or_else(|| ctx.toml_error(e))
    })?;
    let mut guard = GuardSettings::default();
    if let Some(g) = doc.guard {
        if let Some(w) = g.windows {
            if *w.get_ref() < LEAST_GUARD_WINDOWS {
                return Err(ctx.err(
                    w.span(),
                    "guard.windows".into(),
                    PolicyErrorClass::BadValue,
                    format!("must be at least {LEAST_GUARD_WINDOWS}"),
                ));
            }
            guard.windows = w.into_inner();
        }
        if let Some(s) = g.signals {
            guard.signals = s;
        }
        if let Some(k) = g.max_changes_per_hour {
            if *k.get_ref() < LEAST_MAX_CHANGES_PER_HOUR {
                // Every advisor's change would be refused rate_limited, for good.
                return Err(ctx.err(
                    k.span(),
                    "guard.max_changes_per_hour".into(),
                    PolicyErrorClass::BadValue,
                    format!(
                        "must be at least {LEAST_MAX_CHANGES_PER_HOUR}: 0 would refuse every \
                         advisor's change (mode \"observe\" or \"recommend\" is how to keep \
                         advisors from changing a parameter)"
                    ),
                ));
            }
            guard.max_changes_per_hour = k.into_inner();
        }
        if let Some(q) = g.quarantine {
            guard.quarantine = duration(&ctx, &q, "guard.quarantine")?;
            // The journal keeps quarantines in milliseconds, so less is none at all.
            if guard.quarantine.as_millis() == 0 {
                return Err(ctx.err(
                    q.span(),
                    "guard.quarantine".into(),
                    PolicyErrorClass::BadValue,
                    format!(
                        "{:?} is no quarantine: an advisor could apply the value the guard just \
                         reverted again at once, and the guard revert it again, over and over; \
                         give at least 1ms (e.g. \"5m\")",
                        q.get_ref()
                    ),
                ));
            }
        }
    }
    let approvals = match doc.approvals {
        Some(a) => approval_settings(&ctx, a)?,
        None => ApprovalSettings::default(),
    };
    let deny = DenyList::new();
    let builtin = ParamRule::builtin_default();
    let defaults = match doc.defaults {
        Some(d) => {
            let span = d.span();
            rule(&ctx, &builtin, "*", "defaults", span, d.into_inner(), None)?
        }
        None => builtin,
    };
    let mut params = Vec::new();
    // Each entry's key as written, by the name it comes to: for the message of a second one.
    let mut written_as: std::collections::HashMap<String, String> = Default::default();
    for (name, body) in doc.params {
        let span = name.span();
        let raw = name.into_inner();
        let key = format!("params.{raw:?}");
        let line = ctx.lines.line(span.start);
        if raw.contains('@') {
            // A rule is matched against the parameter's name, which never holds a target: such
            // an entry would load and never apply.
            return Err(ctx.err(
                span,
                key,
                PolicyErrorClass::BadValue,
                format!(
                    "an entry names a parameter, not an address: write {:?} and list the \
                     namespaces it covers in `namespaces`",
                    raw.split('@').next().unwrap_or_default()
                ),
            ));
        }
        let pattern = entry_pattern(&raw)
            .map_err(|why| ctx.err(span.clone(), key.clone(), PolicyErrorClass::BadValue, why))?;
        let glob = GlobBuilder::new(&pattern).build().map_err(|e| {
            ctx.err(
                span.clone(),
                key.clone(),
                PolicyErrorClass::BadGlob,
                format!("not a valid glob: {}", e.kind()),
            )
        })?;
        let matcher = glob.compile_matcher();
        if let Some((name, denied)) = deny.reached_by(&matcher, &pattern) {
            return Err(ctx.err(
                span,
                key,
                PolicyErrorClass::DenyListed,
                format!(
                    "{name} is on the built-in deny-list ({}: {}); no policy can allow it{}",
                    denied.pattern,
                    denied.why,
                    if name == pattern {
                        String::new()
                    } else {
                        "; name the keys you mean instead of a glob that reaches it".into()
                    }
                ),
            ));
        }
        let mut r = rule(
            &ctx,
            &defaults,
            &pattern,
            &key,
            body.span(),
            body.into_inner(),
            Some(matcher),
        )?;
        r.line = line;
        // `net/core/somaxconn` and `net.core.somaxconn` are one parameter: two entries for it
        // would leave one silently unused.
        if let Some(first) = params.iter().find(|p: &&ParamRule| p.name == r.name) {
            // The key as written may be an alias (`net.nf_conntrack_max`): say which name both
            // entries come to.
            use crate::actuate::param::sysctl_alias;
            let named = match sysctl_alias(&raw) {
                Some(alias) => format!("{alias} is an alias of {}, which", r.name),
                None => r.name.clone(),
            };
            let first_as = match written_as.get(&r.name).and_then(|w| sysctl_alias(w)) {
                Some(alias) => format!(", as its alias {alias}"),
                None => String::new(),
            };
            return Err(ctx.err(
                span,
                key,
                PolicyErrorClass::BadValue,
                format!(
                    "{named} already has an entry (line {}{first_as}); one entry per parameter",
                    first.line
                ),
            ));
        }
        written_as.insert(r.name.clone(), raw.clone());
        params.push(r);
    }
    params.sort_by_key(|r| r.line);
    Ok(Policy {
        origin: PolicyOrigin::File(PathBuf::from(file)),
        guard,
        approvals,
        defaults,
        params,
        deny,
        loaded_text: None,
        missing_file: None,
        forced_recommend: false,
    })
}

fn approval_settings(ctx: &Ctx<'_>, a: ApprovalsFile) -> Result<ApprovalSettings, PolicyError> {
    let mut s = ApprovalSettings::default();
    if let Some(e) = &a.expire_after {
        s.expire_after = duration(ctx, e, "approvals.expire_after")?;
        if s.expire_after.is_zero() {
            return Err(ctx.err(
                e.span(),
                "approvals.expire_after".into(),
                PolicyErrorClass::BadValue,
                "must be longer than 0 and at most 365 days".into(),
            ));
        }
    }
    if let Some(n) = a.clear_after_windows {
        let repeat = crate::advise::rules::REPEAT_WINDOWS;
        if u64::from(*n.get_ref()) < repeat {
            // An approval is kept pending by its advice being made again; cleared in between,
            // it would be created anew with another id (and another webhook) at each repeat.
            // A repeat every `repeat` windows leaves `repeat - 1` windows without it.
            return Err(ctx.err(
                n.span(),
                "approvals.clear_after_windows".into(),
                PolicyErrorClass::BadValue,
                format!(
                    "must be at least {repeat}: the rules repeat advice that still holds every \
                     {repeat} windows, and fewer would clear its approval in between"
                ),
            ));
        }
        s.clear_after_windows = n.into_inner();
    }
    if let Some(w) = a.webhook {
        let url = reqwest::Url::parse(w.get_ref()).map_err(|e| {
            ctx.err(
                w.span(),
                "approvals.webhook".into(),
                PolicyErrorClass::BadValue,
                // Not the value: a webhook URL is often the credential itself.
                format!("not a URL: {e}"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ctx.err(
                w.span(),
                "approvals.webhook".into(),
                PolicyErrorClass::BadValue,
                format!(
                    "{}: only http:// and https:// URLs are posted to",
                    crate::approvals::webhook::shown_url(w.get_ref())
                ),
            ));
        }
        s.webhook = Some(w.into_inner());
    }
    if let Some(u) = a.webhook_user {
        let span = u.span();
        let name = u.into_inner().0;
        if name.trim().is_empty() {
            return Err(ctx.err(
                span,
                "approvals.webhook_user".into(),
                PolicyErrorClass::BadValue,
                "must name a user, by name or uid".into(),
            ));
        }
        s.webhook_user = Some(name);
    }
    Ok(s)
}

/// Every duration in a policy is at most this long: the policy's times are added to the clock
/// (a cooldown's end, a quarantine's), and a value like "300000000000y" parses but would
/// overflow it. Nothing a policy times is meant to outlast a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn duration(ctx: &Ctx<'_>, s: &Spanned<String>, key: &str) -> Result<Duration, PolicyError> {
    let bad = |why: String| ctx.err(s.span(), key.into(), PolicyErrorClass::BadValue, why);
    let d = humantime::parse_duration(s.get_ref()).map_err(|e| {
        // With the key's range where it has one, as the agent's configuration says it
        // (`quarantine = "30"`: a number without its unit).
        let wanted = duration_range(key).and_then(|range| {
            crate::config::duration_wanted(&format!("not a duration: {e}"), "", 0, range)
        });
        bad(match wanted {
            Some(wanted) => format!("{:?} is {wanted}", s.get_ref()),
            None => format!(
                "{:?} is not a duration ({e}); e.g. \"30s\", \"5m\"",
                s.get_ref()
            ),
        })
    })?;
    if d > MAX_DURATION {
        return Err(bad(format!("{:?} is longer than 365 days", s.get_ref())));
    }
    Ok(d)
}

fn rule(
    ctx: &Ctx<'_>,
    base: &ParamRule,
    pattern: &str,
    key: &str,
    span: Range<usize>,
    f: ParamFile,
    matcher: Option<globset::GlobMatcher>,
) -> Result<ParamRule, PolicyError> {
    let mut r = base.clone();
    r.name = pattern.to_string();
    r.line = ctx.lines.line(span.start);
    if let Some(m) = matcher {
        r.literal = !pattern.contains(['*', '?', '[', '{']);
        r.matcher = m;
    }
    if let Some(m) = f.mode {
        r.mode = m;
    }
    let bound = |b: &Spanned<BoundFile>, which: &str| {
        let k = format!("{key}.{which}");
        Ok(match b.get_ref() {
            BoundFile::One(v) => Bound::All(int(ctx, b.span(), &k, v)?),
            BoundFile::Each(v) => Bound::Each(
                v.iter()
                    .map(|e| int(ctx, b.span(), &k, e))
                    .collect::<Result<_, _>>()?,
            ),
        })
    };
    if let Some(b) = &f.min {
        r.min = Some(bound(b, "min")?);
    }
    if let Some(b) = &f.max {
        r.max = Some(bound(b, "max")?);
    }
    for (b, which) in [(&f.min, "min"), (&f.max, "max")] {
        if let Some(b) = b {
            if matches!(b.get_ref(), BoundFile::Each(v) if v.is_empty()) {
                return Err(ctx.err(
                    b.span(),
                    format!("{key}.{which}"),
                    PolicyErrorClass::BadValue,
                    "an empty list bounds nothing".into(),
                ));
            }
        }
    }
    if let (Some(min), Some(max)) = (&r.min, &r.max) {
        if let Some(why) = min.impossible_with(max) {
            let at = f
                .max
                .as_ref()
                .or(f.min.as_ref())
                .map(|s| s.span())
                .unwrap_or(span.clone());
            return Err(ctx.err(
                at,
                format!("{key}.min/max"),
                PolicyErrorClass::ImpossibleBounds,
                why,
            ));
        }
    }
    if let Some(s) = &f.max_step {
        let k = format!("{key}.max_step");
        r.max_step = Some(match s.get_ref() {
            StepFile::Abs(v) if *v > 0 => MaxStep::Absolute((*v).into()),
            StepFile::Abs(v) => {
                return Err(ctx.err(
                    s.span(),
                    k,
                    PolicyErrorClass::BadValue,
                    format!("{v}: a step is a positive integer"),
                ))
            }
            StepFile::Text(t) => MaxStep::parse(t)
                .map_err(|why| ctx.err(s.span(), k, PolicyErrorClass::BadValue, why))?,
        });
    }
    if let Some(c) = &f.cooldown {
        r.cooldown = duration(ctx, c, &format!("{key}.cooldown"))?;
    }
    if let Some(s) = &f.sources {
        if s.get_ref().contains(&Source::Guard) {
            return Err(ctx.err(
                s.span(),
                format!("{key}.sources"),
                PolicyErrorClass::BadValue,
                "`guard` is not a proposer: the guard only reverts changes that regressed health, \
                 and a revert is always allowed"
                    .to_string(),
            ));
        }
        r.sources = s.get_ref().clone();
    }
    if let Some(o) = f.on_exit {
        r.on_exit = o;
    }
    if let Some(a) = f.allow_adaptive_off {
        r.allow_adaptive_off = a;
    }
    if let Some(g) = &f.guard_signals {
        if g.get_ref().is_empty() {
            return Err(ctx.err(
                g.span(),
                format!("{key}.guard_signals"),
                PolicyErrorClass::BadValue,
                "an empty list would keep every change unjudged: name at least one signal \
                 (leave the key out for [guard] signals)"
                    .into(),
            ));
        }
        r.guard_signals = Some(g.get_ref().clone());
    }
    if let Some(ns) = &f.namespaces {
        r.namespaces_written = true;
        let k = format!("{key}.namespaces");
        r.namespaces = match ns.get_ref() {
            NsFile::Word(w) if w == "all" => Namespaces::All,
            NsFile::Word(w) => {
                return Err(ctx.err(
                    ns.span(),
                    k,
                    PolicyErrorClass::BadValue,
                    format!("{w:?}: expected \"all\" or a list of inodes, paths and \"host\""),
                ))
            }
            // Covers nothing, the host included, as an empty `guard_signals` judges nothing:
            // more likely a mistake than a way to keep advisors off (mode "observe" is that).
            NsFile::List(list) if list.is_empty() => {
                return Err(ctx.err(
                    ns.span(),
                    k,
                    PolicyErrorClass::BadValue,
                    "an empty list covers no network namespace, the host's included: every \
                     sysctl change under it would be refused; list \"host\", inodes or paths, \
                     or give \"all\" (mode \"observe\" keeps advisors from changing it)"
                        .into(),
                ))
            }
            NsFile::List(list) => {
                let mut out = Vec::new();
                for e in list {
                    out.push(match e {
                        // The kernel numbers namespaces from its proc inode range, never 0: such
                        // an entry would cover nothing.
                        NsEntry::Inode(0) => {
                            return Err(ctx.err(
                                ns.span(),
                                k,
                                PolicyErrorClass::BadValue,
                                "0: no network namespace has inode 0 (an inode is the number \
                                 after net: in `readlink /proc/PID/ns/net`)"
                                    .into(),
                            ))
                        }
                        NsEntry::Inode(i) => NamespaceSel::Inode(*i),
                        NsEntry::Text(t) if t == "host" => NamespaceSel::Host,
                        // Taken as a path, it named no file, and the warning asked "a typo?"
                        // (s61 story BY-2: a glob over pods, as entry names take them).
                        NsEntry::Text(t)
                            if t.starts_with('/') && t.contains(['*', '?', '[', '{']) =>
                        {
                            return Err(ctx.err(
                                ns.span(),
                                k,
                                PolicyErrorClass::BadValue,
                                format!(
                                    "{t:?}: `namespaces` takes exact paths, inodes and \"host\", \
                                     not a pattern (none is expanded here, unlike an entry's \
                                     name): list each namespace, or leave `namespaces` out to \
                                     cover every one"
                                ),
                            ))
                        }
                        NsEntry::Text(t) if t.starts_with('/') => {
                            NamespaceSel::Path(PathBuf::from(t))
                        }
                        NsEntry::Text(t) => {
                            return Err(ctx.err(
                                ns.span(),
                                k,
                                PolicyErrorClass::BadValue,
                                format!(
                                    "{t:?}: a namespace is an inode, an absolute path or \"host\""
                                ),
                            ))
                        }
                    });
                }
                Namespaces::List(out)
            }
        };
    }
    if let Some(levels) = &f.optimizer_levels {
        r.optimizer_levels = Some(optimizer_levels(ctx, &r, pattern, key, levels)?);
    }
    Ok(r)
}

/// An entry's `optimizer_levels`, checked against the rest of the entry (`r`, complete).
fn optimizer_levels(
    ctx: &Ctx<'_>,
    r: &ParamRule,
    pattern: &str,
    key: &str,
    levels: &Spanned<Vec<IntFile>>,
) -> Result<Vec<i128>, PolicyError> {
    let bad = |why: &str| {
        ctx.err(
            levels.span(),
            format!("{key}.optimizer_levels"),
            PolicyErrorClass::BadValue,
            why.to_string(),
        )
    };
    if key == "defaults" {
        return Err(bad(
            "the values belong to the entry of the parameters they are for, not to [defaults]",
        ));
    }
    if !(pattern.starts_with("cpufreq:") || pattern.starts_with("ethtool:")) {
        return Err(bad(
            "the optimizer searches cpufreq and coalescing parameters (`cpufreq:...`, \
             `ethtool:...`) only",
        ));
    }
    if !r.sources.contains(&Source::Optimizer) {
        return Err(bad(
            "only the optimizer reads them: add \"optimizer\" to sources, or leave the key out",
        ));
    }
    let k = format!("{key}.optimizer_levels");
    let v = levels
        .get_ref()
        .iter()
        .map(|e| int(ctx, levels.span(), &k, e))
        .collect::<Result<Vec<i128>, _>>()?;
    if v.len() < 2 {
        return Err(bad(
            "give at least two values: the optimizer searches among them",
        ));
    }
    // As `[optimizer] levels`: the search's candidates are every combination of the knobs'
    // levels, and too many make each step slow without helping a search of some 20 trials.
    let most = crate::advise::optimizer::agent::MAX_LEVELS;
    if v.len() > most {
        return Err(bad(&format!(
            "{} values: at most {most}, as `[optimizer] levels`",
            v.len()
        )));
    }
    if let Some(pair) = v.windows(2).find(|pair| pair[0] >= pair[1]) {
        return Err(bad(&format!(
            "{} then {}: list the values in increasing order, each once",
            pair[0], pair[1]
        )));
    }
    let (Some(Bound::All(lo)), Some(Bound::All(hi))) = (&r.min, &r.max) else {
        return Err(bad(
            "the entry needs an integer min and max too: the optimizer searches only within \
             the bounds the operator set",
        ));
    };
    match v.iter().find(|x| !(lo..=hi).contains(x)) {
        Some(out) => Err(bad(&format!(
            "{out} is outside the entry's min {lo} and max {hi}: the optimizer searches only \
             within the bounds the operator set"
        ))),
        None => Ok(v),
    }
}

/// An integer of the file, written as a number or as text (beyond TOML's signed 64 bits).
fn int(ctx: &Ctx<'_>, span: Range<usize>, key: &str, v: &IntFile) -> Result<i128, PolicyError> {
    match v {
        IntFile::Int(i) => Ok((*i).into()),
        IntFile::Text(t) => parse_kernel_int(t).map_err(|why| {
            let class = if super::is_plain_decimal(t) {
                PolicyErrorClass::BadValue
            } else {
                PolicyErrorClass::BadType
            };
            ctx.err(span, key.to_string(), class, why)
        }),
    }
}

/// The pattern an entry's name stands for, or why it names nothing. A sysctl may be given
/// slashed (a glob too); its canonical form is dotted. An exact name that can never match a
/// parameter (empty, with spaces, an empty component, `..` as a cpufreq policy) is an error
/// rather than an entry that silently applies to nothing. A glob's syntax is globset's; only
/// spaces and empty components are refused here.
fn entry_pattern(raw: &str) -> Result<String, String> {
    const GLOB: &str = "*?[]{}!^\\";
    let is_glob = raw.contains(|c| GLOB.contains(c));
    if raw.trim().is_empty() || raw.trim().chars().any(char::is_whitespace) {
        return Err("a name is not empty and has no spaces".into());
    }
    let raw = raw.trim();
    if let Some(rest) = raw
        .strip_prefix("ethtool:")
        .or_else(|| raw.strip_prefix("cpufreq:"))
    {
        let family = &raw[..raw.len() - rest.len() - 1];
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [target, attr] if !target.is_empty() && !attr.is_empty() => {
                if !is_glob && (target.contains('/') || *target == "." || *target == "..") {
                    return Err(format!(
                        "{target:?} is not a {} name",
                        if family == "ethtool" {
                            "network interface"
                        } else {
                            "cpufreq policy"
                        }
                    ));
                }
            }
            // `ethtool:*` covers every NIC's attributes.
            _ if is_glob && !rest.is_empty() => {}
            _ => {
                return Err(format!(
                    "an {family} entry is {family}:TARGET:ATTRIBUTE, neither empty"
                ))
            }
        }
        return Ok(raw.to_string());
    }
    if !is_glob {
        return canonical_sysctl(raw).map_err(|e| e.to_string());
    }
    if raw.contains(':') {
        // `*:*:rx-usecs` and the like: a pattern over every family's names.
        return Ok(raw.to_string());
    }
    // A sysctl glob: the same slashed-or-dotted rule, the same components.
    let dotted = crate::actuate::param::slashed_to_dotted(raw.trim_start_matches("/proc/sys/"));
    if dotted.split('.').any(str::is_empty) {
        return Err("a sysctl pattern has no empty component (`..`, or a dot at an end)".into());
    }
    Ok(dotted)
}

/// The name of a `[params.a.b.c]` entry header written without quotes, and its line, if the file
/// has one: TOML reads it as tables nested in tables, and its own error ("expected a borrowed
/// string") does not say why.
fn unquoted_entry(text: &str) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let inner = line
            .trim()
            .strip_prefix("[params.")?
            .strip_suffix(']')?
            .trim();
        let unquoted = !inner.starts_with(['"', '\'']) && inner.contains('.');
        unquoted.then(|| (i + 1, inner.to_string()))
    })
}
