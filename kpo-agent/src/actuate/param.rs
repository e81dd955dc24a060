//! What a parameter is, where it lives, and what values it takes: the vocabulary shared by the
//! actuators, the policy, the journal, the advisors and the CLI.
//!
//! A parameter address is written as text (docs/policy.md):
//!
//! | address | parameter |
//! | --- | --- |
//! | `net.core.somaxconn` | a sysctl of the host (the agent's own network namespace) |
//! | `net.core.somaxconn@netns:4026532281` | that sysctl in the network namespace with this inode |
//! | `net.core.somaxconn@netns:/run/netns/web` | that sysctl in the namespace behind this path (`/run/netns/NAME`, `/proc/PID/ns/net`) |
//! | `ethtool:eth0:rx-usecs` | a NIC's interrupt coalescing setting |
//! | `cpufreq:policy0:scaling_max_freq` | a cpufreq policy's attribute |
//!
//! sysctl names may be given dotted (`net.core.somaxconn`) or slashed (`net/core/somaxconn`); the
//! dotted form is canonical. As in procps' `sysctl`, a dot inside a path component (a VLAN
//! interface `eth0.100`) is written as `/` in the dotted form, so the two forms convert by swapping
//! `.` and `/`.
use std::{fmt, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};

/// A parameter's value. Typed, because parameters are not all numbers: `net.ipv4.tcp_rmem` is
/// three integers and `scaling_governor` is a word.
///
/// What is not integers is text ([`Value::Word`]): one word (`cubic`), several separated by
/// single spaces (`net.ipv4.tcp_allowed_congestion_control = "reno cubic"`), or none at all (the
/// empty value: `net.ipv4.ip_local_reserved_ports` before any port is reserved). An empty value
/// is a value like any other, so that a change away from it can be journaled and undone.
///
/// Integers are `i128` so that every value `/proc/sys` prints fits: signed ones and unsigned ones
/// above `i64::MAX` (`kernel.shmmax` and `kernel.shmall` default to 18446744073692774399). In
/// JSON they are exact numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged, from = "WireValue")]
pub enum Value {
    Int(i128),
    Ints(Vec<i128>),
    /// Words separated by single spaces, or `""`.
    Word(String),
}

/// [`Value`] as JSON gives it: serde's untagged enums cannot read an `i128`, but an `i64` or a
/// `u64`, which together hold every integer a kernel value has.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireInt {
    Signed(i64),
    Unsigned(u64),
}

/// Reads an `i128` field inside an internally tagged or untagged enum (a refusal's `from`, `to`,
/// `limit`), which serde cannot read as such: an `i64`, a `u64`, or, beyond those (a step limit
/// of 1000% of a value near `u64::MAX`, only ever shown), the float JSON makes of it.
pub fn wide_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wide {
        Int(WireInt),
        Float(f64),
    }
    Ok(match Wide::deserialize(d)? {
        Wide::Int(v) => v.into(),
        Wide::Float(f) => f as i128,
    })
}

impl From<WireInt> for i128 {
    fn from(w: WireInt) -> i128 {
        match w {
            WireInt::Signed(v) => v.into(),
            WireInt::Unsigned(v) => v.into(),
        }
    }
}

// Said in the value's own terms: serde's default for an untagged enum, "data did not match any
// variant of untagged enum WireValue", named neither the field nor what it takes (s55 story
// AU-2).
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a parameter value: an integer from -9223372036854775808 to \
                 18446744073709551615, an array of such integers, or a string"
)]
enum WireValue {
    Int(WireInt),
    Ints(Vec<WireInt>),
    Word(String),
}

impl From<WireValue> for Value {
    fn from(w: WireValue) -> Value {
        match w {
            WireValue::Int(v) => Value::Int(v.into()),
            WireValue::Ints(v) => Value::Ints(v.into_iter().map(i128::from).collect()),
            WireValue::Word(w) => Value::Word(w),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{0:?} is not a parameter address: {1}")]
    BadAddress(String, std::borrow::Cow<'static, str>),
}

impl Value {
    /// Parses a value as `/proc/sys` and sysfs print it: integers separated by white space (tabs in
    /// `tcp_rmem`), or else text, its words separated by single spaces (none: the empty value).
    /// Any text is a value; whether it fits a parameter is the shape check's and the kernel's to say.
    pub fn parse(text: &str) -> Value {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            [one] => parse_int(one)
                .map(Value::Int)
                .unwrap_or_else(|| Value::Word((*one).to_string())),
            many => many
                .iter()
                .map(|w| parse_int(w))
                .collect::<Option<Vec<_>>>()
                .filter(|ints| !ints.is_empty())
                .map(Value::Ints)
                .unwrap_or_else(|| Value::Word(many.join(" "))),
        }
    }

    /// Whether this is the empty value (`""`).
    pub fn is_empty(&self) -> bool {
        matches!(self, Value::Word(w) if w.is_empty())
    }

    /// The value as the kernel reads it: integers or words separated by single spaces, nothing
    /// for the empty value. (`Display` shows the empty value as `""` instead.)
    pub fn kernel_text(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Ints(v) => {
                let words: Vec<String> = v.iter().map(i128::to_string).collect();
                words.join(" ")
            }
            Value::Word(w) => w.clone(),
        }
    }

    /// The integers of the value (one for `Int`), or `None` for a word.
    pub fn ints(&self) -> Option<Vec<i128>> {
        match self {
            Value::Int(v) => Some(vec![*v]),
            Value::Ints(v) => Some(v.clone()),
            Value::Word(_) => None,
        }
    }

    /// The one integer, when it fits an `i64` (what the rules and the optimizer compute in).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// A word of integers separated by commas (`4096,131072,6291456`, as `kpo apply` passes a
    /// value with commas) as integers, when the kernel's `current` value is several integers: the
    /// kernel decides, since a comma list is a value of its own for some keys
    /// (`ip_local_reserved_ports = 8080,9000-9100`, or `8080,8443`), which the kernel prints as
    /// one integer while one port is reserved. `None`: nothing to convert.
    pub fn commas_as_integers(&self, current: &Value) -> Option<Value> {
        let Value::Word(w) = self else {
            return None;
        };
        if !w.contains(',') || !matches!(current, Value::Ints(_)) {
            return None;
        }
        let ints = w
            .split(',')
            .map(|part| parse_int(part.trim()))
            .collect::<Option<Vec<_>>>()?;
        Some(Value::Ints(ints))
    }

    /// What kind of value this is, for people: "an integer", "3 integers", "text" (the kinds
    /// [`Self::same_shape`] tells apart).
    pub fn kind_text(&self) -> String {
        match self {
            Value::Int(_) => "an integer".into(),
            Value::Ints(v) => format!("{} integers", v.len()),
            Value::Word(_) => "text".into(),
        }
    }

    /// The value with its kind, for people: `the integer 5`, `2 integers (1 2)`,
    /// `the word "abc"`, `the words "a b"`, `the empty value ""`.
    pub fn described(&self) -> String {
        match self {
            Value::Int(v) => format!("the integer {v}"),
            Value::Ints(v) => format!("{} integers ({self})", v.len()),
            Value::Word(w) if w.is_empty() => "the empty value \"\"".into(),
            Value::Word(w) if w.contains(' ') => format!("the words {w:?}"),
            // Digits within range are a word only when sent as text (a JSON string through the
            // API): "a number beyond ..." was said of "40" (s55 story AU-1).
            Value::Word(w) if parse_int(w).is_some() => {
                format!("the text {w:?} (an integer is sent as a JSON number, not a string)")
            }
            // Digits past what a kernel value holds ([`parse_int`]) stay a word; "the word
            // \"99999999999999999999\"" would read as a typo, not as a number too large.
            Value::Word(w) if is_numeral(w) => {
                format!(
                    "{w}, a number beyond the integers a kernel value holds (-{} to {})",
                    1u128 << 63,
                    u64::MAX
                )
            }
            Value::Word(w) => format!("the word {w:?}"),
        }
    }

    /// The value as a sentence quotes it: text in quotes, integers as they are.
    pub fn quoted(&self) -> String {
        match self {
            Value::Word(w) => format!("{w:?}"),
            other => other.to_string(),
        }
    }

    /// The same kind of value (an integer, a vector of that many integers, or text: a list of
    /// words is text whatever its length, as the kernel prints a list of one as one word).
    pub fn same_shape(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(_), Value::Int(_)) | (Value::Word(_), Value::Word(_)) => true,
            (Value::Ints(a), Value::Ints(b)) => a.len() == b.len(),
            _ => false,
        }
    }
}

/// An integer as the kernel prints one: an `i64` or a `u64`. Nothing wider, so that every `Value`
/// reads back from the JSON it is written to (the journal).
/// An optional `-` and one or more digits.
fn is_numeral(word: &str) -> bool {
    let digits = word.strip_prefix('-').unwrap_or(word);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parse_int(word: &str) -> Option<i128> {
    word.parse::<i64>()
        .map(i128::from)
        .or_else(|_| word.parse::<u64>().map(i128::from))
        .ok()
}

/// For people: as the kernel prints it ([`Value::kernel_text`]), except the empty value, shown as
/// `""`, which would otherwise vanish from a line (`net.ipv4.ip_local_reserved_ports: "" -> 8080`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("\"\"");
        }
        f.write_str(&self.kernel_text())
    }
}

impl FromStr for Value {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Value::parse(s))
    }
}

/// A network namespace, by the file that holds it open or by its inode number (as the event
/// stream reports it in `netns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetnsRef {
    Inode(u64),
    Path(PathBuf),
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsRef::Inode(i) => write!(f, "{i}"),
            NetnsRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl FromStr for NetnsRef {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParamError::BadAddress(
                s.into(),
                "empty network namespace".into(),
            ));
        }
        Ok(match s.parse::<u64>() {
            Ok(inode) => NetnsRef::Inode(inode),
            Err(_) if s.starts_with('/') => NetnsRef::Path(PathBuf::from(s)),
            Err(_) => {
                return Err(ParamError::BadAddress(
                    s.into(),
                    "a network namespace is an inode number or an absolute path".into(),
                ))
            }
        })
    }
}

/// Where a parameter lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// The host: the agent's own network namespace, and every global key.
    Host,
    /// A network namespace other than the agent's.
    Netns { netns: NetnsRef },
    /// A network interface.
    Nic { iface: String },
    /// A cpufreq policy directory name, e.g. `policy0`.
    Cpufreq { policy: String },
}

/// One parameter at one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamAddress {
    /// For sysctls the canonical dotted name; for ethtool and cpufreq the attribute
    /// (`rx-usecs`, `scaling_max_freq`).
    pub name: String,
    pub target: Target,
}

/// The family of a parameter, which decides its actuator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Sysctl,
    Ethtool,
    Cpufreq,
}

impl ParamAddress {
    pub fn sysctl(name: &str, target: Target) -> Result<Self, ParamError> {
        Ok(Self {
            name: canonical_sysctl(name)?,
            target,
        })
    }

    pub fn kind(&self) -> ParamKind {
        match self.target {
            Target::Host | Target::Netns { .. } => ParamKind::Sysctl,
            Target::Nic { .. } => ParamKind::Ethtool,
            Target::Cpufreq { .. } => ParamKind::Cpufreq,
        }
    }

    /// The name a policy matches against: the sysctl name, or `ethtool:IFACE:ATTR` /
    /// `cpufreq:POLICY:ATTR` (so one policy entry can say `cpufreq:*:scaling_max_freq`).
    pub fn policy_name(&self) -> String {
        match &self.target {
            Target::Host | Target::Netns { .. } => self.name.clone(),
            Target::Nic { iface } => format!("ethtool:{iface}:{}", self.name),
            Target::Cpufreq { policy } => format!("cpufreq:{policy}:{}", self.name),
        }
    }

    /// The same parameter in another network namespace (sysctls only).
    pub fn in_netns(mut self, netns: Option<NetnsRef>) -> Self {
        if self.kind() == ParamKind::Sysctl {
            self.target = match netns {
                Some(netns) => Target::Netns { netns },
                None => Target::Host,
            };
        }
        self
    }
}

impl fmt::Display for ParamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.policy_name())?;
        if let Target::Netns { netns } = &self.target {
            write!(f, "@netns:{netns}")?;
        }
        Ok(())
    }
}

impl FromStr for ParamAddress {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &'static str| ParamError::BadAddress(s.to_string(), why.into());
        let (head, netns) = match s.split_once("@netns:") {
            Some((head, ns)) => (head, Some(ns.parse::<NetnsRef>()?)),
            None => (s, None),
        };
        if let Some(rest) = head.strip_prefix("ethtool:") {
            let (iface, attr) = rest
                .split_once(':')
                .ok_or(bad("expected ethtool:IFACE:ATTR"))?;
            // Said apart from a malformed address (s54 story AP F7): the form is right, the
            // namespace is what is not taken.
            if netns.is_some() {
                return Err(bad(
                    "an ethtool: address has no @netns: KPO changes the NICs of the agent's own \
                     namespace",
                ));
            }
            if iface.is_empty() || attr.is_empty() {
                return Err(bad("expected ethtool:IFACE:ATTR"));
            }
            return Ok(Self {
                name: attr.to_string(),
                target: Target::Nic {
                    iface: iface.to_string(),
                },
            });
        }
        if let Some(rest) = head.strip_prefix("cpufreq:") {
            let (policy, attr) = rest
                .split_once(':')
                .ok_or(bad("expected cpufreq:POLICY:ATTR"))?;
            if netns.is_some() {
                return Err(bad(
                    "a cpufreq: address has no @netns: CPU frequency is the machine's",
                ));
            }
            if policy.is_empty() || attr.is_empty() {
                return Err(bad("expected cpufreq:POLICY:ATTR"));
            }
            return Ok(Self {
                name: attr.to_string(),
                target: Target::Cpufreq {
                    policy: policy.to_string(),
                },
            });
        }
        let target = match netns {
            Some(netns) => Target::Netns { netns },
            None => Target::Host,
        };
        ParamAddress::sysctl(head, target)
    }
}

impl Serialize for ParamAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ParamAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A sysctl name (or pattern) in its dotted form. As procps' `slashdot`: the first separator
/// tells the form. A slashed name (`net/ipv4/conf/eth0.100/rp_filter`) converts by swapping '.'
/// and '/'; a dotted one (`net.ipv4.conf.eth0/100.rp_filter`) may carry '/' for a dot inside a
/// component, and is returned as it is.
pub fn slashed_to_dotted(name: &str) -> String {
    let slashed = name
        .find(['.', '/'])
        .is_some_and(|i| name[i..].starts_with('/'));
    if !slashed {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The dotted form of a sysctl name given dotted or slashed. Rejects what cannot name a file under
/// `/proc/sys` (empty components, `..`, NUL).
pub fn canonical_sysctl(name: &str) -> Result<String, ParamError> {
    let bad = |why: std::borrow::Cow<'static, str>| ParamError::BadAddress(name.to_string(), why);
    let name = name.trim();
    let dotted = slashed_to_dotted(name.trim_start_matches("/proc/sys/"));
    if dotted.is_empty() || dotted.contains('\0') || dotted.chars().any(char::is_whitespace) {
        return Err(bad("a sysctl name is non-empty, without spaces".into()));
    }
    // In the dotted form '/' stands for a dot inside a component: a component that starts or
    // ends with one would be a hidden file or `..` under /proc/sys.
    if dotted
        .split('.')
        .any(|part| part.is_empty() || part.starts_with('/') || part.ends_with('/'))
    {
        return Err(bad("a sysctl name has no empty or dot-led component".into()));
    }
    if let Some((at, c)) = (dotted.chars().enumerate())
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "._-/+".contains(*c)))
    {
        // The character named, with its code point: a letter of another script that looks like
        // a Latin one (a Cyrillic 'с' in `somaxсonn`) is refused in a name that reads right
        // (s57 story BD-5).
        const ALLOWED: &str =
            "a sysctl name uses only ASCII letters and digits, '_', '-', '.', '/' and '+'";
        let look_alike = match c.is_alphanumeric() {
            true => ", a letter that looks like a Latin one may be another script's",
            false => "",
        };
        return Err(bad(format!(
            "{ALLOWED}; character {} is {c:?} (U+{:04X}{look_alike})",
            at + 1,
            u32::from(c)
        )
        .into()));
    }
    Ok(
        match SYSCTL_ALIASES.iter().find(|(alias, _)| *alias == dotted) {
            Some((_, name)) => name.to_string(),
            None => dotted,
        },
    )
}

/// The alias `name` is written as, when it is one of [`SYSCTL_ALIASES`] (given dotted or
/// slashed): for messages that quote the name as written.
pub fn sysctl_alias(name: &str) -> Option<String> {
    let dotted = slashed_to_dotted(name.trim().trim_start_matches("/proc/sys/"));
    SYSCTL_ALIASES
        .iter()
        .any(|(alias, _)| *alias == dotted)
        .then_some(dotted)
}

/// Sysctls the kernel shows under two names, with the name KPO uses for both. Without this, a
/// policy entry under one name would not bound a change asked under the other, and the journal
/// would keep two originals of one variable (the second change's "original" being KPO's own first
/// value). `net.nf_conntrack_max` is registered in the initial namespace only, over the same
/// variable (`net/netfilter/nf_conntrack_standalone.c`).
const SYSCTL_ALIASES: &[(&str, &str)] =
    &[("net.nf_conntrack_max", "net.netfilter.nf_conntrack_max")];

/// The path of a dotted sysctl name under `/proc/sys`.
pub fn sysctl_rel_path(dotted: &str) -> PathBuf {
    let swapped: String = dotted
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    PathBuf::from(swapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: `net.nf_conntrack_max` was a name of its own, so a policy bound on
    /// `net.netfilter.nf_conntrack_max` did not hold a change asked under the alias, and using
    /// both names split the variable's journal in two.
    /// Review s32: `kpo apply net.core.somaxconn=99999999999999999999999` was refused as "not
    /// the word \"99999999999999999999999\"", which reads as a typo; it is a number too large.
    #[test]
    fn a_number_past_what_a_kernel_value_holds_is_described_as_one() {
        assert_eq!(
            Value::parse("99999999999999999999999").described(),
            "99999999999999999999999, a number beyond the integers a kernel value holds \
             (-9223372036854775808 to 18446744073709551615)"
        );
        assert_eq!(
            Value::parse("-9223372036854775809").described(),
            "-9223372036854775809, a number beyond the integers a kernel value holds \
             (-9223372036854775808 to 18446744073709551615)"
        );
        assert_eq!(
            Value::parse("18446744073709551615").described(),
            "the integer 18446744073709551615"
        );
        assert_eq!(Value::parse("-").described(), "the word \"-\"");
        assert_eq!(Value::parse("12a").described(), "the word \"12a\"");
        // Digits in range as text come only from a JSON string (s55 story AU-1).
        assert_eq!(
            Value::Word("40".into()).described(),
            "the text \"40\" (an integer is sent as a JSON number, not a string)"
        );
    }

    /// s57 story BD-5: a Cyrillic 'с' in `somaxсonn` was refused as using something other
    /// than "letters", which it is: the message says ASCII, and names the character, its place
    /// and code point, and that a look-alike may be it.
    #[test]
    fn a_look_alike_letter_is_refused_as_not_ascii() {
        let e = canonical_sysctl("net.core.somax\u{0441}onn")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "a sysctl name uses only ASCII letters and digits, '_', '-', '.', '/' and '+'; \
                 character 15 is 'с' (U+0441, a letter that looks like a Latin one may be \
                 another script's)"
            ),
            "{e}"
        );
        // ASCII punctuation is no look-alike (s57 story BE-8).
        let e = canonical_sysctl("net.core.somax!conn")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "a sysctl name uses only ASCII letters and digits, '_', '-', '.', '/' and '+'; \
                 character 15 is '!' (U+0021)"
            ),
            "{e}"
        );
        for fine in [
            "net.ipv4.conf.eth0/100.rp_filter",
            "net.ipv6.conf.all.accept_ra",
            "a+b",
        ] {
            canonical_sysctl(fine).unwrap();
        }
    }

    #[test]
    fn a_sysctl_alias_is_the_name_it_stands_for() {
        for name in [
            "net.nf_conntrack_max",
            "net/nf_conntrack_max",
            "/proc/sys/net/nf_conntrack_max",
            "net.netfilter.nf_conntrack_max",
        ] {
            let a: ParamAddress = name.parse().unwrap();
            assert_eq!(a.name, "net.netfilter.nf_conntrack_max", "{name}");
        }
        assert_eq!(
            canonical_sysctl("net.netfilter.nf_conntrack_buckets").unwrap(),
            "net.netfilter.nf_conntrack_buckets"
        );
    }

    #[test]
    fn values_parse_as_the_kernel_prints_them() {
        assert_eq!(Value::parse("4096\n"), Value::Int(4096));
        assert_eq!(
            Value::parse("4096\t131072\t6291456\n"),
            Value::Ints(vec![4096, 131072, 6291456])
        );
        assert_eq!(
            Value::parse("performance"),
            Value::Word("performance".into())
        );
        assert_eq!(Value::parse(" -1 "), Value::Int(-1));
        // Up to u64::MAX, and nothing wider (it could not be read back from the journal).
        assert_eq!(
            Value::parse("18446744073709551615"),
            Value::Int(u64::MAX.into())
        );
        assert_eq!(
            Value::parse("18446744073709551616"),
            Value::Word("18446744073709551616".into())
        );
        assert_eq!(
            Value::Ints(vec![1, 2, 3]).to_string(),
            "1 2 3",
            "written as the kernel reads it"
        );
        let json = serde_json::to_string(&Value::Ints(vec![1, 2])).unwrap();
        assert_eq!(json, "[1,2]");
        assert_eq!(
            serde_json::from_str::<Value>("\"schedutil\"").unwrap(),
            Value::Word("schedutil".into())
        );
        // A value of another type is told what a value is (s55 story AU-2).
        for wrong in ["40.0", "null", "true", "18446744073709551616", "{}"] {
            let e = serde_json::from_str::<Value>(wrong)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("a parameter value: an integer from"),
                "{wrong}: {e}"
            );
        }
        assert!(Value::Int(1).same_shape(&Value::Int(7)));
        assert!(!Value::Ints(vec![1, 2]).same_shape(&Value::Ints(vec![1, 2, 3])));
    }

    /// Defect: an empty value (`ip_local_reserved_ports` before any port is reserved) and several
    /// words (`tcp_allowed_congestion_control = "reno cubic"`) were no value: they could not be
    /// read, so never changed, journaled or put back.
    #[test]
    fn an_empty_value_and_several_words_are_values() {
        for text in ["", "\n", "  \n"] {
            let v = Value::parse(text);
            assert_eq!(v, Value::Word(String::new()), "{text:?}");
            assert!(v.is_empty());
            assert_eq!(v.kernel_text(), "", "written as nothing (then a newline)");
            assert_eq!(v.to_string(), "\"\"", "shown so that it does not vanish");
        }
        let empty = Value::parse("\n");
        let json = serde_json::to_string(&empty).unwrap();
        assert_eq!(json, "\"\"");
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), empty);

        let list = Value::parse("reno cubic\n");
        assert_eq!(list, Value::Word("reno cubic".into()));
        assert!(!list.is_empty());
        assert_eq!(list.kernel_text(), "reno cubic");
        assert_eq!(list.to_string(), "reno cubic");
        assert_eq!(Value::parse(" reno \t cubic "), list, "single spaces");
        assert_eq!(Value::parse("1 two"), Value::Word("1 two".into()));
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, "\"reno cubic\"");
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), list);

        // Text is one shape, whatever its length: a list of one is printed as one word.
        let reno = Value::Word("reno".into());
        assert!(reno.same_shape(&list) && list.same_shape(&empty) && empty.same_shape(&reno));
        for number in [Value::Int(0), Value::Ints(vec![1, 2])] {
            assert!(!empty.same_shape(&number) && !number.same_shape(&list));
        }
        assert!(!Value::Int(0).is_empty());
    }

    #[test]
    fn comma_lists_become_integers_only_where_the_kernel_has_integers() {
        let rmem = Value::Ints(vec![4096, 131072, 6291456]);
        assert_eq!(
            Value::Word("4096,262144,8388608".into()).commas_as_integers(&rmem),
            Some(Value::Ints(vec![4096, 262144, 8388608]))
        );
        // ip_local_reserved_ports as the kernel prints it: a list, one port, none.
        let lists = [
            Value::Word("80-81".into()),
            Value::Int(80),
            Value::Word(String::new()),
        ];
        for ports in &lists {
            for list in ["8080,8443", "8080,9000-9100"] {
                assert_eq!(
                    Value::Word(list.into()).commas_as_integers(ports),
                    None,
                    "{ports:?}"
                );
            }
        }
        // A range is no integer: left as it is (and refused by the shape check).
        assert_eq!(
            Value::Word("1,2-3,4".into()).commas_as_integers(&rmem),
            None
        );
        assert_eq!(Value::Word("cubic".into()).commas_as_integers(&rmem), None);
        assert_eq!(Value::Int(1).commas_as_integers(&rmem), None);
    }

    #[test]
    fn addresses_round_trip() {
        for text in [
            "net.core.somaxconn",
            "net.core.somaxconn@netns:4026532281",
            "net.ipv4.tcp_rmem@netns:/run/netns/web",
            "ethtool:eth0:rx-usecs",
            "cpufreq:policy0:scaling_max_freq",
            "net.ipv4.conf.eth0/100.rp_filter",
        ] {
            let a: ParamAddress = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
        let a: ParamAddress = "net/core/somaxconn@netns:7".parse().unwrap();
        assert_eq!(a.name, "net.core.somaxconn");
        assert_eq!(
            a.target,
            Target::Netns {
                netns: NetnsRef::Inode(7)
            }
        );
        let vlan: ParamAddress = "net/ipv4/conf/eth0.100/rp_filter".parse().unwrap();
        assert_eq!(vlan.name, "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(
            sysctl_rel_path(&vlan.name),
            PathBuf::from("net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(a.kind(), ParamKind::Sysctl);
        let e: ParamAddress = "ethtool:eth0:rx-usecs".parse().unwrap();
        assert_eq!(e.kind(), ParamKind::Ethtool);
        assert_eq!(e.policy_name(), "ethtool:eth0:rx-usecs");
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "",
            "net..core",
            "net.core.somaxconn@netns:",
            "net.core.somaxconn@netns:web",
            "ethtool:eth0",
            "ethtool::rx-usecs",
            "cpufreq:policy0",
            "net.core.some thing",
            "../../etc/passwd",
            "net/../../x",
        ] {
            assert!(bad.parse::<ParamAddress>().is_err(), "{bad:?}");
        }
        // A namespace on a NIC or cpufreq address is said as such, not as a malformed address
        // (s54 story AP F7).
        let e = "ethtool:eth0:rx-usecs@netns:/run/netns/web"
            .parse::<ParamAddress>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("an ethtool: address has no @netns"), "{e}");
        let e = "cpufreq:policy0:scaling_max_freq@netns:7"
            .parse::<ParamAddress>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("a cpufreq: address has no @netns"), "{e}");
    }
}
