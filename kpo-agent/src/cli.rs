//! Command-line definitions for the `kpo` binary.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    actuate::param::{NetnsRef, ParamAddress, Value},
    advise::optimizer::replay::{run_replay, ReplayArgs},
    change::{ChangeReport, ChangeStatus},
    control::{
        open_offline_kernel, open_offline_kernel_to_read, ApplyRequest, Control, RevertRequest,
    },
    journal::{format_ms, DEFAULT_STATE_DIR},
    who::who,
};

#[derive(Debug, Parser)]
#[command(name = "kpo", version = crate::VERSION, about = "KPO: kernel parameter optimizer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the policy and the state directory are (every command that changes or reads state).
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// Policy file (default /etc/kpo/policy.toml; without it, observe and recommend only).
    #[arg(long, value_name = "PATH")]
    pub policy: Option<PathBuf>,
    /// State directory: journal, lock, pause (default /var/lib/kpo).
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
    /// The control socket (default /run/kpo/kpo.sock): where `kpo run` serves operators'
    /// requests, and where the other commands send them (with no agent answering there, they
    /// open the state directory themselves).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl StateArgs {
    /// The same paths made absolute against the working directory now. The agent keeps and
    /// reports them so (its status, its policy's origin): a CLI run from another directory
    /// compares them with its own flags, and `--state-dir st` there names another `st`.
    pub fn absolute(&self) -> std::io::Result<StateArgs> {
        let absolute = |p: &Option<PathBuf>| p.as_deref().map(std::path::absolute).transpose();
        Ok(StateArgs {
            policy: absolute(&self.policy)?,
            state_dir: absolute(&self.state_dir)?,
            socket: absolute(&self.socket)?,
        })
    }

    /// With no agent answering on a socket of its own (`--socket` not the default), the command
    /// would fall back to the default state directory: the journal of the agent on the default
    /// socket, or none, not that of the agent the operator named, whose originals it would not
    /// see and whose next start would not see this change's. Only `--state-dir` says which.
    pub fn refuse_default_state_dir_for_another_socket(&self, socket: &Path) -> anyhow::Result<()> {
        if self.state_dir.is_some() || socket == Path::new(crate::api::DEFAULT_SOCKET) {
            return Ok(());
        }
        anyhow::bail!(
            "no agent answers on {}, and without one this command opens a state directory \
             itself: give --state-dir too, the one the agent on that socket runs with (the \
             default, {DEFAULT_STATE_DIR}, is the default socket's agent's)",
            socket.display()
        )
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// An agent answers on the socket, and it decides under its own policy and state directory
    /// (`agent`, its status): a `--policy` or `--state-dir` naming others would be ignored
    /// without a word (an approval meant for a staging state directory would be the production
    /// agent's), so it is refused.
    pub fn refuse_if_agent_differs(
        &self,
        socket: &std::path::Path,
        agent: &crate::control::Status,
    ) -> anyhow::Result<()> {
        let same = |a: &std::path::Path, b: &std::path::Path| {
            let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or(p.to_path_buf());
            real(a) == real(b)
        };
        let advice = "leave the flag out to act through that agent, or stop it (or name another \
                      agent's socket with --socket) to act on";
        if let Some(given) = &self.state_dir {
            if !same(given, &agent.state_dir) {
                anyhow::bail!(
                    "the agent answering on {} keeps its state in {}, not --state-dir {}: {advice} {}",
                    socket.display(),
                    agent.state_dir.display(),
                    given.display(),
                    given.display()
                );
            }
        }
        if let Some(given) = &self.policy {
            if !same(given, std::path::Path::new(&agent.policy)) {
                anyhow::bail!(
                    "the agent answering on {} decides under the policy {}, not --policy {}: \
                     {advice} {}",
                    socket.display(),
                    agent.policy,
                    given.display(),
                    given.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod state_args_tests {
    use super::*;

    /// Relative flags become absolute against the working directory; absent ones stay absent
    /// (their defaults are absolute already).
    #[test]
    fn state_paths_are_made_absolute_against_the_working_directory() {
        let given = StateArgs {
            policy: Some("p.toml".into()),
            state_dir: Some("st".into()),
            socket: None,
        };
        let cwd = std::env::current_dir().unwrap();
        let absolute = given.absolute().unwrap();
        assert_eq!(absolute.policy, Some(cwd.join("p.toml")));
        assert_eq!(absolute.state_dir, Some(cwd.join("st")));
        assert_eq!(absolute.socket, None);
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: observe the kernel and write the event stream.
    Run(crate::run::RunArgs),
    /// Energy/performance optimizer tools.
    Optimize {
        #[command(subcommand)]
        command: OptimizeCommand,
    },
    /// Change a parameter as an operator, through the policy and the journal.
    Apply(ApplyArgs),
    /// Put back what change ID replaced, or (--all) every parameter's value before KPO.
    Revert(RevertArgs),
    /// List the journal: every change, revert and refusal with its outcome.
    Journal(JournalArgs),
    /// Pause, parameters KPO changed (original, last applied, now), yielded and quarantined.
    Status(StatusArgs),
    /// Stop all changes (survives restarts) until `kpo resume`.
    Pause(StateOnly),
    /// Lift the pause, or (PARAM) hand a parameter yielded to a person back to KPO.
    Resume(ResumeArgs),
    /// List the changes waiting for an operator's approval.
    Pending(crate::approvals::cli::PendingArgs),
    /// Approve a pending change: it is applied through the policy and the journal.
    Approve(crate::approvals::cli::ApproveArgs),
    /// Reject a pending change (recorded, never applied).
    Reject(crate::approvals::cli::RejectArgs),
    /// The latest recommendations for a parameter, their reasons and what was done.
    Explain(crate::approvals::cli::ExplainArgs),
    /// Check a policy (and an agent configuration) as `kpo run` would load it, and print what it
    /// allows.
    Check(crate::check::CheckArgs),
}

#[derive(Debug, Subcommand)]
pub enum OptimizeCommand {
    /// Replay the optimizer against a CSV table of measured configurations.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// PARAM=VALUE: a parameter address (net.core.somaxconn, ethtool:eth0:rx-usecs, ...) and its
    /// value; several integers separated by spaces or commas ("4096 131072 6291456"), or words
    /// ("reno cubic"); nothing after `=` is the empty value, for a list of integers such as
    /// ip_local_reserved_ports only (elsewhere it is refused). Commas make integers only where the
    /// kernel's value is several integers: a list of ports such as
    /// ip_local_reserved_ports=8080,9000-9100 is written as the kernel prints it (sorted,
    /// consecutive ports as a range).
    pub assignment: String,
    /// The network namespace: a path (/run/netns/NAME, /proc/PID/ns/net) or an inode.
    #[arg(long, value_name = "PATH|INODE")]
    pub netns: Option<String>,
    /// Why, for the journal.
    #[arg(long, value_name = "TEXT", value_parser = ReasonArg)]
    pub reason: Option<String>,
    /// The change report as JSON (docs/api.md) instead of a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
// One of the two, named together when neither is given (required_unless_present named `<ID>` alone).
#[command(group(clap::ArgGroup::new("what").required(true).args(["id", "all"])))]
pub struct RevertArgs {
    /// The journal id of the change to undo.
    #[arg(conflicts_with = "all", value_parser = journal_id_arg)]
    pub id: Option<u64>,
    /// Every parameter back to its value before KPO.
    #[arg(long)]
    pub all: bool,
    /// With ID: write the value back over someone else's too (one KPO did not write, or a
    /// later change of an operator's, which `kpo revert ID` leaves). Not with --all.
    // `conflicts_with`, not `requires`: that let `--all --force` through, the flag ignored (s52
    // storyAG AG-5).
    #[arg(long, conflicts_with = "all")]
    pub force: bool,
    /// The change reports as a JSON array (docs/api.md) instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the latest N entries (at least 1), still oldest first.
    #[arg(long, value_parser = crate::approvals::cli::limit_arg)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct StateOnly {
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// A parameter name (every target) or address (one target) yielded to a person.
    #[arg(value_parser = param_arg)]
    pub param: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `kpo revert ID`: a journal id, said so when it is not a number (s49 storyV V4: "invalid digit
/// found in string").
fn journal_id_arg(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| "a change's journal id, a number as kpo journal lists it (or --all)".into())
}

/// A duration flag (`--tick`, `--window`): humantime's, but a bare number is told the unit it
/// lacks in the words the configuration file's keys use, not humantime's "time unit needed, for
/// example 5sec or 5ms" (s49 storyV V3).
pub fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        let t = text.trim();
        if t.parse::<f64>().is_ok() {
            format!("a duration needs its unit: \"{t}s\" or \"{t}ms\", say (a bare number could be either)")
        } else {
            format!("not a duration: {e} (1s, 500ms, 2m, ...)")
        }
    })
}

/// A parameter name or address given on the command line, as written, once it parses: `''` or
/// `net..core` names nothing, and saying "nothing to resume" of it would hide the typo.
pub fn param_arg(text: &str) -> Result<String, String> {
    // In its canonical form: a slashed sysctl name is looked up dotted.
    text.parse::<crate::actuate::param::ParamAddress>()
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

/// Whether the command running only shows something (`kpo journal`, `status`, `pending`,
/// `explain`, `check`, `optimize`): one whose reader is gone (`kpo journal | head -1`) then ends
/// quietly with status 0, as the Unix tools do (s49 storyS S-3).
static ONLY_SHOWS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes the command's output. `println!` panics when standard output fails (a reader gone, as
/// in `kpo journal | head -1`, or a full disk); a command ends instead with `kpo: error:` and
/// exit status 2, like any other error, except one that only shows something whose reader is
/// gone ([`ONLY_SHOWS`]), which ends quietly.
pub fn write_out(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        let gone = e.kind() == std::io::ErrorKind::BrokenPipe;
        if gone && ONLY_SHOWS.load(std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(0);
        }
        let why = if gone {
            "its reader is gone".to_string()
        } else {
            e.to_string()
        };
        // What the command did (a change applied and journaled) is done; only its report is lost.
        // Not eprintln!: it panics when standard error fails too.
        let _ = writeln!(
            std::io::stderr(),
            "kpo: error: writing to standard output: {why} (anything the command changed is \
             done and journaled)"
        );
        std::process::exit(2);
    }
}

/// The policy file a command would read, refused when it is not a regular file
/// ([`crate::config::not_a_regular_file`]) before anything else: `kpo run` says so before it
/// opens its event stream or anything else. (The policy's reader refuses it too, for a file that
/// becomes one later.)
fn refuse_a_policy_that_is_not_a_file(command: &Command) -> Result<(), crate::policy::PolicyError> {
    let policy = match command {
        Command::Optimize { .. } => return Ok(()),
        Command::Check(a) => &a.policy,
        Command::Run(crate::run::RunArgs { state, .. })
        | Command::Apply(ApplyArgs { state, .. })
        | Command::Revert(RevertArgs { state, .. })
        | Command::Journal(JournalArgs { state, .. })
        | Command::Status(StatusArgs { state, .. })
        | Command::Pause(StateOnly { state })
        | Command::Resume(ResumeArgs { state, .. })
        | Command::Pending(crate::approvals::cli::PendingArgs { state, .. })
        | Command::Approve(crate::approvals::cli::ApproveArgs { state, .. })
        | Command::Reject(crate::approvals::cli::RejectArgs { state, .. })
        | Command::Explain(crate::approvals::cli::ExplainArgs { state, .. }) => &state.policy,
    };
    let path = policy
        .as_deref()
        .unwrap_or(Path::new(crate::policy::DEFAULT_PATH));
    match crate::config::not_a_regular_file(path) {
        Some(source) => Err(crate::policy::PolicyError::Read {
            file: path.display().to_string(),
            source,
        }),
        None => Ok(()),
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    refuse_a_policy_that_is_not_a_file(&cli.command)?;
    ONLY_SHOWS.store(
        matches!(
            cli.command,
            Command::Optimize { .. }
                | Command::Journal(_)
                | Command::Status(_)
                | Command::Pending(_)
                | Command::Explain(_)
                | Command::Check(_)
        ),
        std::sync::atomic::Ordering::Relaxed,
    );
    match cli.command {
        Command::Run(args) => crate::run::run_blocking(args),
        Command::Optimize {
            command: OptimizeCommand::Replay(args),
        } => {
            run_replay(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(a) => cmd_apply(a),
        Command::Revert(a) => cmd_revert(a),
        Command::Journal(a) => cmd_journal(a),
        Command::Status(a) => cmd_status(a),
        Command::Pending(a) => crate::approvals::cli::pending(a),
        Command::Approve(a) => crate::approvals::cli::approve(a),
        Command::Reject(a) => crate::approvals::cli::reject(a),
        Command::Explain(a) => crate::approvals::cli::explain(a),
        Command::Check(a) => crate::check::check(a),
        Command::Pause(a) => {
            let mut c = open(&a.state, Access::Starts)?;
            if c.pause(&who())? {
                // Reverts pass a pause (docs/policy.md): saying "nothing changes" would let an
                // operator freezing things in an incident be surprised by on_exit at a restart.
                crate::out!(
                    "paused: no change is applied until kpo resume; reverts still put values \
                     back (kpo revert, the guard's, on_exit at the agent's stop)"
                );
            } else {
                crate::out!("already paused");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume(a) => {
            let mut c = open(&a.state, Access::Acts)?;
            let resumed = c.resume(a.param.as_deref(), &who())?;
            match (&a.param, resumed.is_empty()) {
                (None, false) => crate::out!("resumed: changes are allowed again"),
                (None, true) => crate::out!("not paused"),
                // A name KPO never changed is most likely a typo: a script that resumes it must
                // not take it for done (s55 story AV-6).
                (Some(p), true) => match nothing_to_resume(p, &c.status()?) {
                    Ok(not_yielded) => crate::out!("{not_yielded}"),
                    Err(never_changed) => anyhow::bail!("{never_changed}"),
                },
                (Some(_), false) => {
                    // As `kpo status` and the admin_override event name it (a namespace by its
                    // path), not by the journal's key (its inode).
                    let params = c.status()?.params;
                    for k in resumed {
                        crate::out!("resumed: KPO manages {} again", shown_param(&k, &params));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A journal key as `kpo status` shows its parameter: its address, or the key when the journal
/// has none for it.
fn shown_param(key: &str, params: &[crate::control::ParamStatus]) -> String {
    params
        .iter()
        .find(|p| p.key == key)
        .and_then(|p| p.address.as_ref())
        .map_or_else(|| key.to_string(), ToString::to_string)
}

/// What `kpo resume PARAM` says when nothing was handed back: a name KPO never changed (a typo,
/// `net.core.somaxcon`), or never changed in the namespace named (`@netns:/run/netns/TYPO`), is
/// told apart from a parameter KPO manages that is simply not yielded: the first two are `Err`.
fn nothing_to_resume(param: &str, status: &crate::control::Status) -> Result<String, String> {
    let name = param.parse::<ParamAddress>().map(|a| a.name).ok();
    let managed = status
        .params
        .iter()
        .any(|s| crate::journal::names_param(param, &s.key, s.address.as_ref()));
    let same_name = status
        .params
        .iter()
        .any(|s| s.address.as_ref().map(|a| &a.name) == name.as_ref());
    if managed {
        Ok(format!("{param}: not yielded; nothing to resume"))
    } else if let (true, Some(name)) = (same_name, name) {
        Err(format!(
            "{param}: KPO has changed {name}, but not there (kpo status lists where it has; is \
             the namespace right?), so none is yielded there; nothing to resume"
        ))
    } else {
        Err(format!(
            "{param}: KPO has changed no parameter of this name (kpo status lists those it has; \
             is the name right?), so none is yielded; nothing to resume"
        ))
    }
}

/// What a command does with the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Only reads (kpo status, kpo journal): a read-only state directory is read as it is.
    Reads,
    /// Acts on what KPO did (kpo revert, kpo resume): finds no state directory an error.
    Acts,
    /// May start a new state directory (kpo apply, kpo pause).
    Starts,
}

/// A command's error, naming the socket no agent answered on when the state directory is missing
/// too: both places a command looks were empty, and the socket may be the one mistyped.
pub(crate) fn nor_an_agent_on(socket: &Path, e: crate::control::ControlError) -> anyhow::Error {
    match e {
        crate::control::ControlError::NoStateDir(_) => anyhow::anyhow!(
            "{e}; and no agent answered on {} (is --socket right? the default is {})",
            socket.display(),
            crate::api::DEFAULT_SOCKET
        ),
        e => e.into(),
    }
}

/// How long a command waits for an agent that holds the state directory's lock to answer on the
/// socket: an agent takes the lock, opens its journal, and only then binds its socket (s57 story
/// BC-1: a `kpo status` in the 100-200 ms after a restart failed with "the agent is running").
const AGENT_STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The state directory opened by `offline`, or, while an agent holds it, that agent once it
/// answers on `socket` (checked to be the one `state` names), each tried again for
/// [`AGENT_STARTING_WAIT`]: an agent that holds the lock without answering is starting, or
/// stopping, or answers on another socket, which the offline open's error says after the wait.
/// Every other outcome of `offline` is the caller's, as it came.
pub(crate) fn offline_or_starting_agent<T>(
    state: &StateArgs,
    socket: &Path,
    offline: impl Fn() -> Result<T, crate::control::ControlError>,
) -> anyhow::Result<
    Result<crate::api::client::SocketControl, Result<T, crate::control::ControlError>>,
> {
    let deadline = std::time::Instant::now() + AGENT_STARTING_WAIT;
    let held = |opened: &Result<T, crate::control::ControlError>| {
        matches!(
            opened,
            Err(crate::control::ControlError::Journal(
                crate::journal::JournalError::AgentRunning { .. }
            ))
        )
    };
    let mut opened = offline();
    loop {
        if !held(&opened) || std::time::Instant::now() >= deadline {
            return Ok(Err(opened));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Some(mut agent) = crate::api::client::SocketControl::connect(socket)? {
            if state.policy.is_some() || state.state_dir.is_some() {
                let status = Control::status(&mut agent)?;
                state.refuse_if_agent_differs(socket, &status)?;
            }
            return Ok(Ok(agent));
        }
        // Opened again only once the lock is free: `offline` says what it says of the policy
        // before it takes the lock, and would say it at every try (s57 review2 R2-4).
        let free = crate::journal::lock::acquire(
            &state.state_dir(),
            crate::journal::lock::Holder::Cli,
            std::time::Duration::ZERO,
        )
        .is_ok();
        if free {
            opened = offline();
        }
    }
}

/// The control interface: the running agent through its socket, or, when no agent answers, the
/// journal directly under the state directory's lock (read as it is on disk, by a command that
/// only reads, when the state directory is read-only).
pub(crate) fn open(state: &StateArgs, access: Access) -> anyhow::Result<Box<dyn Control>> {
    let socket = state
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::api::DEFAULT_SOCKET));
    if let Some(mut agent) = crate::api::client::SocketControl::connect(&socket)? {
        if state.policy.is_some() || state.state_dir.is_some() {
            state.refuse_if_agent_differs(&socket, &agent.status()?)?;
        }
        return Ok(Box::new(agent));
    }
    state.refuse_default_state_dir_for_another_socket(&socket)?;
    let missing = crate::control::require_state_dir(&state.state_dir());
    let new_dir = matches!(missing, Err(crate::control::ControlError::NoStateDir(_)));
    if access != Access::Starts || !new_dir {
        // Both places a command looks were empty: the socket may be the one mistyped (s52
        // storyAC AC-10: "KPO has not run with it" beside an agent on another socket).
        missing.map_err(|e| nor_an_agent_on(&socket, e))?;
    }
    let offline = || -> Result<_, crate::control::ControlError> {
        Ok(if access == Access::Reads {
            let opened = open_offline_kernel_to_read(state.policy.as_deref(), &state.state_dir())?;
            if let Some(why) = &opened.read_only {
                crate::say!("kpo: warning: {why}");
            }
            (opened.path, opened.reconciled)
        } else {
            open_offline_kernel(state.policy.as_deref(), &state.state_dir())?
        })
    };
    let (path, reconciled) = match offline_or_starting_agent(state, &socket, offline)? {
        Ok(agent) => return Ok(Box::new(agent)),
        Err(opened) => opened?,
    };
    if new_dir {
        // A mistyped --state-dir would otherwise pause, or change, out of every agent's sight.
        tracing::warn!(
            "{}: there was no state directory here; this started a new one (is --state-dir \
             right? the default is {DEFAULT_STATE_DIR})",
            state.state_dir().display()
        );
    }
    // Through the logger, which writes a line the journal logged already only once.
    for w in path.journal.warnings() {
        tracing::warn!("{w}");
    }
    for r in &reconciled {
        crate::say!("kpo: reconciled: {}", r.describe());
    }
    Ok(Box::new(path))
}

/// The longest `--reason`, in bytes: the agent's ([`crate::api::MAX_REASON_BYTES`]).
pub const MAX_REASON_BYTES: usize = crate::api::MAX_REASON_BYTES;

/// `--reason TEXT`: at most [`MAX_REASON_BYTES`] as journaled (s46 storyK K9: a 64 KiB reason
/// was refused by the agent in its protocol's words, "request longer than 65536 bytes"). A
/// parser of its own, not a function: clap's message for a function's error quotes the value,
/// kilobytes of it (s56 story AX-4).
#[derive(Clone)]
pub struct ReasonArg;

impl clap::builder::TypedValueParser for ReasonArg {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--reason: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("not UTF-8 text".into()))?;
        // Sent as journaled, on one line: the raw text, runs of spaces and all, could be
        // refused by the agent as a request too long (s56 review2 R2-6).
        match crate::api::reason_too_long(text) {
            Some(why) => Err(refuse(why)),
            None => Ok(crate::shown::one_line(text)),
        }
    }
}

/// `PARAM=VALUE` and `--netns` into a request.
pub fn parse_assignment(
    assignment: &str,
    netns: Option<&str>,
    reason: Option<String>,
) -> anyhow::Result<ApplyRequest> {
    let (param, value) = assignment
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{assignment:?}: expected PARAM=VALUE"))?;
    let mut address: ParamAddress = param.trim().parse()?;
    if let Some(ns) = netns {
        if matches!(address.target, crate::actuate::param::Target::Netns { .. }) {
            anyhow::bail!("{param}: the namespace is given twice (@netns: and --netns)");
        }
        if address.kind() != crate::actuate::param::ParamKind::Sysctl {
            anyhow::bail!("{param}: --netns applies to sysctls only");
        }
        // NetnsRef's own words speak of a parameter address, which confuses for this flag; a
        // bare name is most often one `ip netns` made.
        let netns = ns.parse::<NetnsRef>().map_err(|_| {
            let hint = if ns.is_empty() || ns.contains('/') {
                String::new()
            } else {
                format!(" (/run/netns/{ns} for the one `ip netns add {ns}` made)")
            };
            anyhow::anyhow!(
                "--netns {ns:?}: a network namespace is given by its absolute path or its inode number{hint}"
            )
        })?;
        address = address.in_netns(Some(netns));
    }
    // A value with commas is one word, whitespace around its commas dropped: the change path
    // makes it integers where the kernel's value is integers (`tcp_rmem=4096,131072,6291456`),
    // and leaves it a word where the kernel takes a comma list (`ip_local_reserved_ports=8080,
    // 9000-9100`), which turning commas into spaces here made impossible.
    // `PARAM=` is more often an unset shell variable (`kernel.hostname=$HOST`) than a wish to
    // empty a parameter: only a list that may be empty takes it.
    if value.trim().is_empty() && !crate::actuate::sysctl::is_integer_list(&address) {
        anyhow::bail!(
            "{param}: an empty value (only a list of integers such as \
             net.ipv4.ip_local_reserved_ports may be set empty)"
        );
    }
    let value = if value.contains(',') {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        Value::parse(&parts.join(","))
    } else {
        Value::parse(value)
    };
    Ok(ApplyRequest {
        address,
        value,
        reason: reason.unwrap_or_else(|| "kpo apply".into()),
        by: Some(who()),
    })
}

fn exit_for(reports: &[ChangeReport]) -> ExitCode {
    // For a revert, `reverted` is the success; `skipped` (yielded) is reported, not an error,
    // except a `kpo revert ID` that left someone else's value: not done as asked.
    let ok = reports.iter().all(|r| {
        matches!(
            r.status,
            ChangeStatus::Reverted | ChangeStatus::Unchanged | ChangeStatus::Skipped
        ) && !r.theirs_left
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn cmd_apply(a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let req = parse_assignment(&a.assignment, a.netns.as_deref(), a.reason)?;
    let mut c = open(&a.state, Access::Starts)?;
    let report = c.apply(&req)?;
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", report.describe());
    }
    if let (ChangeStatus::Applied, false) = (report.status, c.guards_changes()) {
        // The output was the same as the running agent's, which watches what it applies (s50
        // storyX F5).
        say_unguarded(report.journal_id, a.json);
    }
    // A change that was put back after a mismatch did not take: that is a failure here.
    Ok(match report.status {
        ChangeStatus::Applied | ChangeStatus::Unchanged => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// Says that change `id`, just applied with no agent running, is not watched: on standard
/// output after the change's line, or with `json` on standard error (standard output stays the
/// JSON document alone).
pub(crate) fn say_unguarded(id: Option<u64>, json: bool) {
    let revert = id.map_or("ID".into(), |id| id.to_string());
    let line = format!("{UNGUARDED} (kpo revert {revert} puts it back)");
    if json {
        crate::say!("kpo: warning: {line}");
    } else {
        crate::out!("{line}");
    }
}

/// What `kpo apply` and `kpo approve` add when no agent runs to watch the change.
const UNGUARDED: &str = "not watched by the guard: no agent is running, and a change made while \
     it is down is not judged when it starts";

fn cmd_revert(a: RevertArgs) -> anyhow::Result<ExitCode> {
    let req = match (a.id, a.force) {
        (Some(id), false) => RevertRequest::Id(id),
        (Some(id), true) => RevertRequest::Forced(id),
        (None, _) => RevertRequest::All,
    };
    let mut c = open(&a.state, Access::Acts)?;
    let reports = c.revert(&req, &who())?;
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(exit_for(&reports));
    }
    if reports.is_empty() {
        // Every parameter a write of KPO's took effect on in this boot has a report (reverted,
        // unchanged, skipped with the reason): none means there is none, not that KPO never
        // wrote (`kpo status` lists changes that failed, were put back, or came before a reboot).
        crate::out!("nothing to revert: no change of KPO's took effect in this boot");
    }
    for r in &reports {
        crate::out!("{}", r.describe());
    }
    Ok(exit_for(&reports))
}

fn cmd_journal(a: JournalArgs) -> anyhow::Result<ExitCode> {
    let c = open(&a.state, Access::Reads)?;
    let print = |e: &crate::journal::Entry| -> anyhow::Result<()> {
        if a.json {
            crate::out!("{}", serde_json::to_string(e)?);
        } else {
            print_journal_entry(e);
        }
        Ok(())
    };
    let header = || {
        if !a.json {
            print_journal_header();
        }
    };
    match a.limit {
        None => list_journal(c, header, print)?,
        // The listing is read whole and its tail kept: entries come oldest first (s58 story
        // BI-4: the last 20 changes of a long-lived agent's 14,000).
        Some(limit) => {
            let mut latest = Latest::new(limit);
            list_journal(
                c,
                || {},
                |e| {
                    latest.push(e.clone());
                    Ok(())
                },
            )?;
            header();
            for e in latest.into_iter() {
                print(&e)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The last `limit` items pushed, oldest first.
struct Latest<T> {
    limit: usize,
    kept: std::collections::VecDeque<T>,
}

impl<T> Latest<T> {
    fn new(limit: usize) -> Self {
        Latest {
            limit,
            kept: std::collections::VecDeque::with_capacity(limit.min(1024)),
        }
    }

    fn push(&mut self, item: T) {
        if self.kept.len() == self.limit {
            self.kept.pop_front();
        }
        self.kept.push_back(item);
    }

    fn into_iter(self) -> impl Iterator<Item = T> {
        self.kept.into_iter()
    }
}

/// Every journal entry, oldest first, after `start`. Opened while the agent is down, the state
/// directory's lock is let go of first (`c` is closed once the listing is taken): printing may
/// wait on a reader for as long as they read (`kpo journal | less`), and an agent started
/// meanwhile would give up waiting for the lock (docs/journal.md, "One writer at a time").
pub(crate) fn list_journal(
    mut c: Box<dyn Control>,
    start: impl FnOnce(),
    mut each: impl FnMut(&crate::journal::Entry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(mut listing) = c.detached_listing() else {
        start();
        return for_each_journal_entry(c.as_mut(), each);
    };
    drop(c);
    start();
    // Each id once, as through the agent's pages (`page_through`): an archive put back or
    // concatenated holds its records twice (s52 storyAH F4: five times each, offline).
    let mut seen = std::collections::HashSet::new();
    while let Some((_, e)) = listing.next() {
        for w in listing.warnings() {
            tracing::warn!("{w}");
        }
        if seen.insert(e.id) {
            each(&e)?;
        }
    }
    for w in listing.warnings() {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// Every journal entry, oldest first, a page at a time: a long-lived agent's journal outgrows
/// one reply.
pub(crate) fn for_each_journal_entry(
    c: &mut dyn Control,
    each: impl FnMut(&crate::journal::Entry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    page_through(
        |from| match c.journal_page(from) {
            // An agent older than this CLI (upgraded, not yet restarted) has no pages: the whole
            // journal in one reply, as it served it.
            Err(e) if from == 0 && e.to_string().contains("unknown variant `journal_page`") => {
                Ok(crate::control::JournalPage {
                    entries: c.journal()?,
                    next: None,
                    warnings: Vec::new(),
                })
            }
            page => Ok(page?),
        },
        each,
    )
}

/// The pages from position 0 on, each entry once: an agent restarted between two pages may have
/// archived the journal, and a position from before then may list again entries already shown
/// (never skip one: docs/journal.md, "Archiving"), which are left out here by id.
pub(crate) fn page_through(
    mut page: impl FnMut(usize) -> anyhow::Result<crate::control::JournalPage>,
    mut each: impl FnMut(&crate::journal::Entry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut next = Some(0);
    while let Some(from) = next {
        let page = page(from)?;
        for w in &page.warnings {
            tracing::warn!("{w}");
        }
        for e in page.entries.iter().filter(|e| seen.insert(e.id)) {
            each(e)?;
        }
        next = page.next;
    }
    Ok(())
}

fn print_journal_header() {
    crate::out!(
        "{:>5}  {:<24}  {:<9}  {:<8}  {:<10}  change",
        "id",
        "time",
        "source",
        "kind",
        "status"
    );
}

fn print_journal_entry(e: &crate::journal::Entry) {
    let before = e
        .before
        .as_ref()
        .map(|b| format!("{b} -> "))
        .unwrap_or_default();
    let mut line = format!(
        "{:>5}  {:<24}  {:<9}  {:<8}  {:<10}  {}: {before}{}",
        e.id,
        format_ms(e.ts_ms),
        e.source.as_str(),
        e.kind,
        e.status,
        e.address,
        e.after
    );
    if let Some(of) = e.revert_of {
        line.push_str(&format!(" (undoes #{of})"));
    }
    // One written before reasons were kept on one line (control::reason_by) is shown so.
    line.push_str(&format!("  [{}]", crate::shown::one_line(&e.reason)));
    if let Some(d) = &e.detail {
        line.push_str(&format!(" {d}"));
    }
    crate::out!("{line}");
}

fn cmd_status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    // The state directory's lock, taken while the agent is down, is let go of before printing
    // (see list_journal).
    let mut control = open(&a.state, Access::Reads)?;
    let mut s = control.status()?;
    s.answered_by = Some(if control.guards_changes() {
        crate::control::AnsweredBy::Agent
    } else {
        crate::control::AnsweredBy::StateDir
    });
    if let Some(warning) = another_build(control.guards_changes(), s.version.as_deref()) {
        crate::say!("kpo: warning: {warning}");
    }
    if a.json {
        crate::out!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::out!("policy: {}", s.policy);
    if let Some(why) = &s.policy_file_differs {
        crate::out!("policy file: not the policy in force: {why}");
    }
    crate::out!("state: {}", s.state_dir.display());
    if let Some(version) = &s.version {
        let who = if control.guards_changes() {
            "agent"
        } else {
            "kpo"
        };
        crate::out!("{who}: kpo {version}");
    }
    match &s.paused {
        Some((by, at)) => crate::out!("paused: yes, by {by} at {at}"),
        None => crate::out!("paused: no"),
    }
    if !s.incomplete.is_empty() {
        crate::out!("incomplete (not yet reconciled): {:?}", s.incomplete);
    }
    for line in param_lines(&s.params) {
        crate::out!("{line}");
    }
    for w in &s.watches {
        crate::out!("{}", watch_line(w));
    }
    if s.saved_watches > 0 {
        crate::out!(
            "guard: {} watch(es) saved by the agent, taken up at its next start (or dropped: \
             their change no longer in place, or saved more than {} min before it)",
            s.saved_watches,
            crate::guard::RESUME_WITHIN.as_secs() / 60
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `kpo status` warns of when the running agent (`through_agent`) is another build than
/// this command: the package was upgraded, or rolled back, and the agent not restarted since.
fn another_build(through_agent: bool, agents: Option<&str>) -> Option<String> {
    if !through_agent || agents == Some(crate::VERSION) {
        return None;
    }
    let agent = match agents {
        Some(v) => format!("kpo {v}"),
        None => "an older kpo, which names no version".to_string(),
    };
    Some(format!(
        "the running agent is {agent}, this command is kpo {}: if this command's build is the \
         one installed, restart the agent to run it (docs/journal.md, \"Upgrading and rolling \
         back\")",
        crate::VERSION
    ))
}

/// A change the guard is watching, on one line of `kpo status`.
pub(crate) fn watch_line(w: &crate::control::WatchStatus) -> String {
    let with = match w.judged_with.as_slice() {
        [] => String::new(),
        ids => format!(
            " (with {})",
            ids.iter()
                .map(|id| format!("#{id}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let since = w
        .since
        .as_ref()
        .map(|t| format!(" since {t}"))
        .unwrap_or_default();
    let signals = match w.signals.as_slice() {
        [] => "nothing".to_string(),
        signals => signals.join(", "),
    };
    // A regression still to be confirmed keeps the watch open past its windows.
    let to_go = match (w.windows_left, w.strikes, w.revert_failed) {
        (_, _, true) => "its regression confirmed".to_string(),
        (0, 1.., false) => "open until its regression is confirmed or gone".to_string(),
        (left, _, false) => format!("{left} window(s) to go"),
    };
    let mut line = format!(
        "guard watching #{}{with}: {}{since}, judged by {signals}; {to_go}, {} clean, {} strike(s)",
        w.change_id, w.address, w.clean_windows, w.strikes
    );
    if w.revert_failed {
        line.push_str("; its revert failed: the next window that regresses tries it again");
    }
    if let Some(word) = &w.not_judged {
        let why = match word.as_str() {
            "made_within_it" => "the change was made within it",
            "without_effect" => "the change had no effect in it (the governor holds it)",
            "awaits_listen" => {
                "its raise of somaxconn waits for a listener capped at the old value to listen \
                 again (or one did within the window)"
            }
            "blamed_on_later" => "its regression was blamed on a later change",
            "blind" => "a signal it is judged by was not measured",
            "no_baseline" => {
                "no window before the change measured its signals (made in the agent's first \
                 window, or signals not measured where it is), so nothing judges it"
            }
            other => other,
        };
        line.push_str(&format!("; last window not judged: {why}"));
    }
    line
}

/// `kpo status`'s line per parameter; those of namespaces gone, where KPO holds nothing, are
/// counted on one line (`--json` lists them).
fn param_lines(params: &[crate::control::ParamStatus]) -> Vec<String> {
    let (history, shown): (Vec<_>, Vec<_>) = params
        .iter()
        .partition(|p| p.only_history_of_a_gone_namespace());
    let mut lines = Vec::new();
    if shown.is_empty() && history.is_empty() {
        lines.push("parameters: none changed by KPO".to_string());
    }
    for p in shown {
        let show = |v: &Option<Value>| v.as_ref().map(|v| v.to_string()).unwrap_or("-".into());
        let now = match (&p.current, &p.current_error) {
            (Some(v), _) => v.to_string(),
            (None, Some(e)) => format!("unreadable ({e})"),
            _ => "-".into(),
        };
        // Who holds it, and the id that undoes it.
        let by = match &p.holder {
            Some(h) => format!(
                " (#{}{})",
                h.change_id,
                h.source
                    .as_ref()
                    .map(|s| format!(" by {s}"))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        lines.push(format!(
            "{}: original {}, last applied {}{by}, now {}, {} change(s){}{}",
            p.address
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or(p.key.clone()),
            show(&p.original),
            show(&p.last_applied),
            now,
            p.changes_applied,
            p.yielded_to
                .as_ref()
                .map(|y| format!(", yielded to {y}"))
                .unwrap_or_default(),
            if p.quarantined.is_empty() {
                String::new()
            } else {
                format!(
                    ", quarantined: {}",
                    p.quarantined
                        .iter()
                        .map(|(v, u)| format!("{v} until {u}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    }
    if !history.is_empty() {
        lines.push(format!(
            "{}{} parameter(s) of network namespaces gone since, where KPO holds nothing \
             (kpo journal has their changes; kpo status --json lists them)",
            if lines.is_empty() { "" } else { "and " },
            history.len()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::param::Target;

    /// `kpo status` on a node whose pods come and go: a namespace's parameter that the journal
    /// settled as gone is counted on one line, not listed with the kernel's value of whichever
    /// namespace has the inode now (s49 storyU U2); one still held is listed.
    #[test]
    fn status_counts_the_parameters_of_gone_namespaces_on_one_line() {
        use crate::change::tests::{kernel, path};
        use crate::control::Control;
        use crate::policy::{Proposal, Source};
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmax_step = \"100%\"\n";
        let (gone, live) = (
            "net.core.somaxconn@netns:4026539981",
            "net.core.somaxconn@netns:4026539982",
        );
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(gone, Value::Int(128)), (live, Value::Int(128))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        for a in [gone, live] {
            let r = p
                .propose(&Proposal {
                    address: a.parse().unwrap(),
                    value: Value::Int(256),
                    source: Source::Operator,
                    reason: "test".into(),
                })
                .unwrap();
            assert_eq!(r.status, crate::change::ChangeStatus::Applied);
        }
        let lines = |p: &mut crate::change::ChangePath| param_lines(&p.status().unwrap().params);
        assert_eq!(lines(&mut p).len(), 2, "{:?}", lines(&mut p));
        p.journal
            .forget_gone_namespace(&gone.parse().unwrap(), "test")
            .unwrap();
        let shown = lines(&mut p);
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            // Who holds it, and the id that undoes it (s52 storyAC AC-3).
            shown[0].starts_with(&format!(
                "{live}: original 128, last applied 256 (#2 by operator), now "
            )),
            "{shown:?}"
        );
        assert_eq!(
            shown[1],
            "and 1 parameter(s) of network namespaces gone since, where KPO holds nothing \
             (kpo journal has their changes; kpo status --json lists them)"
        );
        assert_eq!(p.status().unwrap().params.len(), 2, "--json lists both");
        // Only those: the line stands alone.
        p.journal
            .forget_gone_namespace(&live.parse().unwrap(), "test")
            .unwrap();
        assert_eq!(
            lines(&mut p),
            [
                "2 parameter(s) of network namespaces gone since, where KPO holds nothing (kpo \
              journal has their changes; kpo status --json lists them)"
            ]
        );
    }

    /// `--force` goes with an id only (s52 storyAG AG-5: `kpo revert --all --force` ran, the flag
    /// ignored).
    #[test]
    fn revert_force_goes_with_an_id_only() {
        assert!(Cli::try_parse_from(["kpo", "revert", "3", "--force"]).is_ok());
        for args in [
            &["kpo", "revert", "--all", "--force"][..],
            &["kpo", "revert", "--force"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    /// With no agent on the socket and no state directory, the error names both (s52 storyAC
    /// AC-10: it named the state directory alone, beside an agent on another socket).
    #[test]
    fn a_command_that_finds_neither_agent_nor_state_directory_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateArgs {
            policy: None,
            state_dir: Some(dir.path().join("no-state")),
            socket: Some(dir.path().join("no.sock")),
        };
        let err = open(&state, Access::Reads)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(": no such state directory: KPO has not run with it")
                && err.contains(&format!(
                    "; and no agent answered on {} (is --socket right? the default is \
                     /run/kpo/kpo.sock)",
                    dir.path().join("no.sock").display()
                )),
            "{err}"
        );
    }

    /// A watch past its windows but held open by a regression still to be confirmed does not
    /// read "0 window(s) to go" (s51 review W2).
    #[test]
    fn a_watch_held_open_by_a_regression_says_so() {
        let watch = crate::control::WatchStatus {
            change_id: 4,
            judged_with: Vec::new(),
            address: "net.core.somaxconn".into(),
            since: None,
            signals: vec!["listen_overflows".into()],
            windows_left: 0,
            clean_windows: 2,
            strikes: 1,
            not_judged: None,
            revert_failed: false,
        };
        assert_eq!(
            watch_line(&watch),
            "guard watching #4: net.core.somaxconn, judged by listen_overflows; open until its \
             regression is confirmed or gone, 2 clean, 1 strike(s)"
        );
    }

    /// `kpo status` through an agent of another build (the package upgraded, the agent not
    /// restarted) says so; through its own build's agent, or reading the state directory itself,
    /// it says nothing (s51 story Z3: nothing told the builds apart).
    #[test]
    fn status_warns_of_an_agent_of_another_build() {
        assert_eq!(another_build(true, Some(crate::VERSION)), None);
        assert_eq!(another_build(false, None), None);
        let other = "0.1.0 (commit 000000000000)";
        assert_eq!(
            another_build(true, Some(other)),
            Some(format!(
                "the running agent is kpo {other}, this command is kpo {}: if this command's \
                 build is the one installed, restart the agent to run it (docs/journal.md, \
                 \"Upgrading and rolling back\")",
                crate::VERSION
            ))
        );
        assert!(another_build(true, None)
            .unwrap()
            .starts_with("the running agent is an older kpo, which names no version, "));
        assert!(
            crate::VERSION.starts_with(concat!(env!("CARGO_PKG_VERSION"), " (commit ")),
            "{}",
            crate::VERSION
        );
    }

    /// `kpo journal` while the agent is down lets go of the state directory's lock before it
    /// prints: an agent started while the output waits on its reader (a pager) takes the lock at
    /// once, and the listing still has every entry, the archived ones (read after the lock is
    /// let go of) and the live ones.
    #[test]
    fn an_offline_journal_listing_lets_go_of_the_lock_before_it_prints() {
        use crate::journal::{archive, Boot, Holder, IntentKind, Journal, Outcome};
        use crate::policy::Source;
        use std::time::Duration;
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let open = |options: archive::Options| {
            let boot = Boot {
                id: crate::journal::current_boot(),
                started_ms: crate::journal::boot_started_ms(),
            };
            Journal::open_with(state.path(), Holder::Cli, Duration::ZERO, boot, options).unwrap()
        };
        let change = |j: &mut Journal, before: i64, after: i64| {
            let address = "net.core.somaxconn@netns:4026539999".parse().unwrap();
            let (before, after) = (Value::Int(before.into()), Value::Int(after.into()));
            let id = j
                .record_intent(
                    &address,
                    &before,
                    &after,
                    Source::Rules,
                    "t",
                    IntentKind::Change,
                )
                .unwrap();
            let read_back = after;
            let applied = Outcome::Applied {
                read_back,
                reconciled: false,
                why: None,
            };
            j.record_outcome(id, applied).unwrap();
        };
        let never = archive::Options {
            threshold: u64::MAX,
            ..Default::default()
        };
        let mut j = open(never);
        for v in 4096..4101 {
            change(&mut j, v, v + 1);
        }
        drop(j);
        // Archived at the next open, as of a month later.
        let month_later = archive::Options {
            threshold: 1,
            now_ms: Some(crate::journal::now_ms() + 30 * 24 * 3600 * 1000),
            max_ahead: Duration::from_secs(365 * 24 * 3600),
            ..Default::default()
        };
        let mut j = open(month_later);
        assert!(j.archive_len() > 0, "some changes are archived");
        change(&mut j, 4101, 4102);
        drop(j);
        // An archive an operator put back after rotating it (`cat old >> new`) holds its
        // records twice: each id is listed once, as through the agent (s52 storyAH F4).
        let archive = state.path().join("journal.archive.log");
        let records = std::fs::read(&archive).unwrap();
        std::io::Write::write_all(
            &mut std::fs::OpenOptions::new()
                .append(true)
                .open(&archive)
                .unwrap(),
            &records,
        )
        .unwrap();

        let kernel = crate::change::tests::kernel(&[]);
        let (path, _) = crate::control::open_offline(None, state.path(), Box::new(kernel)).unwrap();
        let mut agent = None;
        let mut ids = Vec::new();
        list_journal(
            Box::new(path),
            || {},
            |e| {
                if agent.is_none() {
                    let started = Journal::open(state.path(), Holder::Agent, Duration::ZERO);
                    agent =
                        Some(started.expect("the agent takes the lock while the listing prints"));
                }
                ids.push(e.id);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(ids, (1..=6).collect::<Vec<u64>>());
    }

    #[test]
    fn assignments_parse_with_namespaces_and_vectors() {
        let r = parse_assignment("net.core.somaxconn=8192", Some("/run/netns/web"), None).unwrap();
        assert_eq!(
            r.address.to_string(),
            "net.core.somaxconn@netns:/run/netns/web"
        );
        assert_eq!(r.value, Value::Int(8192));
        assert_eq!(r.reason, "kpo apply");
        let r = parse_assignment(
            "net.ipv4.tcp_rmem=4096,131072, 6291456",
            Some("4026532281"),
            Some("why".into()),
        )
        .unwrap();
        // One word; the change path makes it integers against the kernel's value.
        assert_eq!(r.value, Value::Word("4096,131072,6291456".into()));
        assert!(matches!(
            r.address.target,
            Target::Netns {
                netns: NetnsRef::Inode(4026532281)
            }
        ));
        assert_eq!(r.reason, "why");
        let r = parse_assignment("net/core/somaxconn@netns:7=1", None, None).unwrap();
        assert_eq!(r.address.to_string(), "net.core.somaxconn@netns:7");
        assert!(parse_assignment("net.core.somaxconn", None, None).is_err());
        assert!(parse_assignment("net.core.somaxconn@netns:7=1", Some("8"), None).is_err());
        assert!(parse_assignment("ethtool:eth0:rx-usecs=8", Some("8"), None).is_err());
        // s43: a bare name was told '"web" is not a parameter address', which it never was.
        for (netns, said) in [
            (
                "web",
                "--netns \"web\": a network namespace is given by its absolute path or its inode \
                 number \
                 (/run/netns/web for the one `ip netns add web` made)",
            ),
            (
                "",
                "--netns \"\": a network namespace is given by its absolute path or its inode number",
            ),
        ] {
            let e = parse_assignment("net.core.somaxconn=8192", Some(netns), None).unwrap_err();
            assert_eq!(e.to_string(), said);
        }
        // Nothing after `=` is the empty value (no port reserved), not an error.
        let r = parse_assignment("net.ipv4.ip_local_reserved_ports=", None, None).unwrap();
        assert_eq!(r.value, Value::Word(String::new()));
        // Elsewhere it is an unset shell variable more often than a wish: refused, with why.
        for empty in ["kernel.hostname=", "net.ipv4.tcp_congestion_control= "] {
            let e = parse_assignment(empty, None, None).unwrap_err().to_string();
            assert!(e.contains("an empty value"), "{empty}: {e}");
        }
        let r = parse_assignment(
            "net.ipv4.tcp_allowed_congestion_control=reno cubic",
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.value, Value::Word("reno cubic".into()));
        // A comma list the kernel takes as such is passed as it is.
        let r = parse_assignment(
            "net.ipv4.ip_local_reserved_ports=8080,9000-9100",
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.value, Value::Word("8080,9000-9100".into()));
        let r = parse_assignment("net.ipv4.tcp_rmem=4096 131072 6291456", None, None).unwrap();
        assert_eq!(r.value, Value::Ints(vec![4096, 131072, 6291456]));
    }

    #[test]
    fn a_reason_longer_than_a_journal_line_is_refused_by_the_cli() {
        use clap::Parser as _;
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        for args in [
            vec!["kpo", "apply", "net.core.somaxconn=8192", "--reason", &long],
            vec!["kpo", "reject", "3", "--reason", &long],
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "--reason: at most {MAX_REASON_BYTES} bytes on one line (this one has 4097)"
                )),
                "{e}"
            );
            // The refusal does not quote the reason back (s56 story AX-4).
            assert!(e.len() < 300, "{e}");
        }
        let fits = "x".repeat(MAX_REASON_BYTES);
        assert!(Cli::try_parse_from(["kpo", "apply", "a.b=1", "--reason", &fits]).is_ok());
        // Measured as journaled: runs of white space are one space there.
        let spaced = format!("{}abcdefgh", " ".repeat(MAX_REASON_BYTES));
        assert!(Cli::try_parse_from(["kpo", "reject", "3", "--reason", &spaced]).is_ok());
    }

    /// `kpo journal --limit N`: the latest N, oldest first; N is at least 1 (s58 story BI-4).
    #[test]
    fn a_journal_limit_keeps_the_latest_entries_oldest_first() {
        use clap::Parser as _;
        let mut latest = Latest::new(3);
        (1..=10).for_each(|i| latest.push(i));
        assert_eq!(latest.into_iter().collect::<Vec<_>>(), [8, 9, 10]);
        let mut few = Latest::new(3);
        (1..=2).for_each(|i| few.push(i));
        assert_eq!(few.into_iter().collect::<Vec<_>>(), [1, 2]);
        let e = Cli::try_parse_from(["kpo", "journal", "--limit", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("it must be at least 1"), "{e}");
        assert!(Cli::try_parse_from(["kpo", "journal", "--limit", "20", "--json"]).is_ok());
    }

    #[test]
    fn every_subcommand_takes_policy_and_state_dir() {
        for args in [
            vec!["kpo", "apply", "a.b=1"],
            vec!["kpo", "revert", "--all"],
            vec!["kpo", "revert", "3"],
            vec!["kpo", "journal", "--json"],
            vec!["kpo", "status"],
            vec!["kpo", "pause"],
            vec!["kpo", "resume", "net.core.somaxconn"],
            vec!["kpo", "pending", "--json"],
            vec!["kpo", "approve", "ap-3", "--json"],
            vec!["kpo", "reject", "3", "--reason", "not now", "--json"],
            vec![
                "kpo",
                "explain",
                "net.core.somaxconn",
                "--limit",
                "3",
                "--json",
            ],
            vec!["kpo", "run", "--recommend-only"],
            vec!["kpo", "run"],
        ] {
            let mut full = args.clone();
            full.extend(["--policy", "/tmp/p.toml", "--state-dir", "/tmp/s"]);
            Cli::try_parse_from(&full).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        // Seen by hand (qa-cli): the error named `<ID>` alone, never `--all`.
        let neither = Cli::try_parse_from(["kpo", "revert"])
            .unwrap_err()
            .to_string();
        assert!(neither.contains("<ID|--all>"), "{neither}");
        assert!(Cli::try_parse_from(["kpo", "revert", "3", "--all"]).is_err());
        let not_an_id = Cli::try_parse_from(["kpo", "revert", "abc"])
            .unwrap_err()
            .to_string();
        assert!(
            not_an_id
                .contains("a change's journal id, a number as kpo journal lists it (or --all)"),
            "{not_an_id}"
        );
    }

    /// A bare number for a duration flag is told the unit it lacks (s49 storyV V3).
    #[test]
    fn a_duration_flag_without_a_unit_says_so() {
        for args in [
            vec!["kpo", "run", "--tick", "5"],
            vec!["kpo", "run", "--window", "60"],
            vec!["kpo", "check", "--window", "5"],
        ] {
            let e = Cli::try_parse_from(&args).err().unwrap().to_string();
            let n = args[3];
            assert!(
                e.contains(&format!(
                    "a duration needs its unit: \"{n}s\" or \"{n}ms\", say (a bare number could \
                     be either)"
                )),
                "{args:?}: {e}"
            );
        }
        let e = Cli::try_parse_from(["kpo", "run", "--tick", "soon"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not a duration: ") && e.contains("(1s, 500ms, 2m, ...)"),
            "{e}"
        );
        Cli::try_parse_from(["kpo", "run", "--tick", "500ms", "--window", "1m"]).unwrap();
    }

    /// Only `ap-N` or `N` can name an approval: anything else is refused by the parser, not sent
    /// to the agent to answer "no approval foo" (s49 storyS S-4).
    #[test]
    fn an_approval_id_is_ap_n_or_n() {
        for id in ["ap-3", "3", "AP-03", " 7 "] {
            for command in ["approve", "reject"] {
                Cli::try_parse_from(["kpo", command, id]).unwrap_or_else(|e| panic!("{id}: {e}"));
            }
        }
        for id in ["foo", "", "ap-", "ap-x", "-", "ap-3x", "3.0"] {
            for command in ["approve", "reject"] {
                let e = Cli::try_parse_from(["kpo", command, id])
                    .err()
                    .unwrap_or_else(|| panic!("{command} {id:?} parsed"))
                    .to_string();
                assert!(e.contains("an approval id is `ap-3` or `3`"), "{id:?}: {e}");
            }
        }
    }

    /// `kpo optimize replay --budget 0` (or `--seeds 0`) says what is needed, not clap's range
    /// up to u64's maximum (seen by hand, qa-opt).
    #[test]
    fn a_replay_budget_or_seed_count_of_0_says_at_least_1() {
        for flag in ["--budget", "--seeds"] {
            let args = [
                "kpo",
                "optimize",
                "replay",
                "--grid",
                "g.csv",
                "--knob",
                "a",
                "--minimize",
                "e",
            ];
            let e = Cli::try_parse_from(args.iter().copied().chain([flag, "0"]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("0: at least 1 is needed"), "{e}");
            assert!(!e.contains("18446744073709551615"), "{e}");
            let e = Cli::try_parse_from(args.iter().copied().chain([flag, "x"]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("\"x\" is not a whole number of 1 or more"),
                "{e}"
            );
            assert!(Cli::try_parse_from(args.iter().copied().chain([flag, "7"])).is_ok());
        }
    }

    /// A parameter as `kpo status` lists one KPO changed once: its journal key and address.
    pub(super) fn changed_once(key: &str, address: &str) -> crate::control::ParamStatus {
        crate::control::ParamStatus {
            key: key.into(),
            address: Some(address.parse().unwrap()),
            original: None,
            last_applied: None,
            current: None,
            current_error: None,
            changes_applied: 1,
            yielded_to: None,
            quarantined: Vec::new(),
            holder: None,
        }
    }

    /// `kpo resume PARAM` said "resumed: KPO manages net.core.somaxconn@netns:4026532239 again"
    /// (the journal's key) where `kpo status` and the admin_override event name /run/netns/NAME
    /// (seen by hand, qa-run): it names the parameter as status does.
    #[test]
    fn a_resumed_parameter_is_named_as_status_names_it() {
        let key = "net.core.somaxconn@netns:4026532239";
        let params = [
            changed_once("net.core.netdev_budget", "net.core.netdev_budget"),
            changed_once(key, "net.core.somaxconn@netns:/run/netns/web"),
        ];
        assert_eq!(
            shown_param(key, &params),
            "net.core.somaxconn@netns:/run/netns/web"
        );
        assert_eq!(shown_param(key, &params[..1]), key, "not listed: the key");
    }

    /// `kpo resume` and `kpo explain` refuse a parameter that names nothing, rather than saying
    /// there is nothing to resume or explain.
    #[test]
    fn a_parameter_that_names_nothing_is_refused() {
        for bad in ["", "net..core", "net core", "x@netns:relative"] {
            assert!(
                Cli::try_parse_from(["kpo", "resume", bad]).is_err(),
                "{bad:?}"
            );
            assert!(
                Cli::try_parse_from(["kpo", "explain", bad]).is_err(),
                "{bad:?}"
            );
        }
        for good in ["net.core.somaxconn", "cpufreq:policy0:scaling_max_freq"] {
            assert!(
                Cli::try_parse_from(["kpo", "resume", good]).is_ok(),
                "{good:?}"
            );
            assert!(
                Cli::try_parse_from(["kpo", "explain", good]).is_ok(),
                "{good:?}"
            );
        }
        assert!(Cli::try_parse_from(["kpo", "resume"]).is_ok(), "the pause");
        // A slashed name is looked up as the dotted one.
        assert_eq!(
            param_arg("net/core/somaxconn").unwrap(),
            "net.core.somaxconn"
        );
    }
}

#[cfg(test)]
mod agent_flag_tests {
    use super::StateArgs;
    use crate::control::Status;

    fn agent(policy: &str, state_dir: &std::path::Path) -> Status {
        Status {
            policy: policy.into(),
            state_dir: state_dir.to_path_buf(),
            paused: None,
            params: vec![],
            incomplete: vec![],
            warnings: vec![],
            policy_file_differs: None,
            watches: vec![],
            saved_watches: 0,
            version: None,
            answered_by: None,
        }
    }

    /// `kpo resume net.core.somaxcon` (a typo) said "not yielded", as of a parameter KPO manages,
    /// and exited 0 (s55 story AV-6): a name or namespace KPO never changed is an error.
    #[test]
    fn resuming_a_name_kpo_never_changed_says_so() {
        let mut status = agent("p.toml", std::path::Path::new("/var/lib/kpo"));
        status.params.push(super::tests::changed_once(
            "net.core.somaxconn@netns:4026532174",
            "net.core.somaxconn@netns:/run/netns/web",
        ));
        assert_eq!(
            super::nothing_to_resume("net.core.somaxconn", &status),
            Ok("net.core.somaxconn: not yielded; nothing to resume".into())
        );
        assert_eq!(
            super::nothing_to_resume("net.core.somaxconn@netns:4026532174", &status),
            Ok("net.core.somaxconn@netns:4026532174: not yielded; nothing to resume".into())
        );
        assert_eq!(
            super::nothing_to_resume("net.core.somaxconn@netns:/run/netns/web", &status),
            Ok("net.core.somaxconn@netns:/run/netns/web: not yielded; nothing to resume".into())
        );
        // Seen by hand: a namespace KPO never changed it in (a typo) read as "not yielded".
        for elsewhere in [
            "net.core.somaxconn@netns:4026532999",
            "net.core.somaxconn@netns:/run/netns/wbe",
        ] {
            assert_eq!(
                super::nothing_to_resume(elsewhere, &status),
                Err(format!(
                    "{elsewhere}: KPO has changed net.core.somaxconn, but not there (kpo status \
                     lists where it has; is the namespace right?), so none is yielded there; \
                     nothing to resume"
                ))
            );
        }
        assert_eq!(
            super::nothing_to_resume("net.core.somaxcon", &status),
            Err(
                "net.core.somaxcon: KPO has changed no parameter of this name (kpo status lists \
             those it has; is the name right?), so none is yielded; nothing to resume"
                    .into()
            )
        );
    }

    /// An agent answering on the socket decides under its own policy and state directory: a flag
    /// naming others is refused, naming the agent's; the same paths (spelled otherwise) pass.
    #[test]
    fn flags_naming_another_policy_or_state_directory_than_the_agents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let prod = dir.path().join("kpo");
        let staging = dir.path().join("kpo-staging");
        std::fs::create_dir_all(&prod).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "[defaults]\n").unwrap();
        let running = agent(&policy.display().to_string(), &prod);
        let socket = std::path::Path::new("/run/kpo/kpo.sock");
        let args =
            |policy: Option<std::path::PathBuf>, state_dir: Option<std::path::PathBuf>| StateArgs {
                policy,
                state_dir,
                socket: None,
            };
        let err = args(None, Some(staging.clone()))
            .refuse_if_agent_differs(socket, &running)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("keeps its state in {}", prod.display()))
                && err.contains(&format!("not --state-dir {}", staging.display())),
            "{err}"
        );
        let other = dir.path().join("other.toml");
        let err = args(Some(other.clone()), None)
            .refuse_if_agent_differs(socket, &running)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("under the policy {}", policy.display()))
                && err.contains(&format!("not --policy {}", other.display())),
            "{err}"
        );
        // The built-in policy is no file a flag could name.
        let builtin = agent("built-in default (observe and recommend)", &prod);
        assert!(args(Some(policy.clone()), None)
            .refuse_if_agent_differs(socket, &builtin)
            .is_err());
        // The agent's own paths, one spelled with a `..`: accepted.
        let roundabout = staging.join("..").join("kpo");
        args(Some(policy.clone()), Some(roundabout))
            .refuse_if_agent_differs(socket, &running)
            .unwrap();
    }
}
