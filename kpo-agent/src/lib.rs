//! KPO agent library. Stages, in data-flow order:
//!
//! - [`sensors`]: BTF offsets, loading and attaching the eBPF programs, duty-cycling.
//! - [`collect`]: eBPF maps, /proc and sock_diag into one [`collect::Sample`] per tick.
//! - [`window`]: samples into a [`window::Window`].
//! - [`advise`]: advisors producing recommendations: the deterministic [`advise::rules`], the LLM
//!   ([`advise::llm`]) and the Bayesian [`advise::optimizer`].
//! - [`energy`]: energy sensing (RAPL powercap, the perf `power` PMU, or a labelled estimate).
//! - [`actuate`]: writing and reading back every kind of parameter (sysctls per network
//!   namespace, cpufreq limits, NIC coalescing) behind one trait.
//! - [`guard`]: watches the windows after a change; reverts and quarantines on regression.
//! - [`policy`], [`journal`], [`change`]: the one change path (policy decision, write-ahead
//!   journal, apply and read-back); [`control`]: operator requests over it.
//! - [`approvals`]: merging advice, pending approvals and the recommendation history.
//! - [`api`]: the local control socket serving [`control`] requests to the CLI.
//! - [`output`]: the NDJSON event stream and the Prometheus metrics.
//! - [`run`]: the run loop, which only wires the stages above in that order (`kpo run`);
//!   [`cli`]: command-line definitions.
//!
//! Shared by the stages: [`kernel_file`] (bounded reads of kernel files), [`counter`] (deltas
//! of counters, by what a fall means), [`clock`] (periods judged by the wall clock), [`http`] (the HTTP clients' proxy rules), [`logging`]
//! (standard error, never blocking) and [`shown`] (text other users choose, made safe to show).
/// The version and the commit built from (`0.1.0 (commit 1a2b3c4d5e6f)`): `kpo --version`, the
/// `start` event and `kpo status` name it.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KPO_COMMIT"),
    ")"
);

pub mod actuate;
pub mod advise;
pub mod api;
pub mod approvals;
pub mod change;
pub mod check;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod config;
pub mod control;
pub mod counter;
pub mod endpoint_owner;
pub mod energy;
pub mod guard;
pub mod http;
pub mod journal;
pub mod kernel_file;
pub mod logging;
pub mod output;
pub mod policy;
pub mod run;
pub mod sensors;
pub mod shown;
#[cfg(test)]
mod test_child;
pub mod trusted_path;
pub mod who;
pub mod window;

/// `eprintln!` for the command line's warnings and notes, which does not panic when standard
/// error cannot be written (a full disk; s60 story BR-1: `kpo apply` exited 101 after its change
/// was made): the command's work and its exit status matter more than a warning lost.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` (or, with `no_newline;` first, `print!`) for the command-line output: see
/// [`cli::write_out`].
#[macro_export]
macro_rules! out {
    (no_newline; $($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*), false)
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*), true)
    };
}
