//! KPO agent library. Stages, in data-flow order:
//!
//! - [`sensors`]: BTF offsets, loading and attaching the eBPF programs, duty-cycling.
//! - [`collect`]: eBPF maps, /proc and sock_diag into one [`collect::Sample`] per tick.
//! - [`window`]: samples into a [`window::Window`].
//! - [`advise`]: advisors producing recommendations (the Bayesian [`advise::optimizer`]).
//! - [`energy`]: energy sensing (RAPL powercap or a labelled estimate).
//! - [`actuate`]: knobs the optimizer moves (cpufreq limits, NIC coalescing) behind one trait.
//! - [`policy`], [`journal`], [`change`]: the one change path (policy decision, write-ahead
//!   journal, apply and read-back); [`control`]: operator requests over it.
//! - [`api`]: the local control socket serving [`control`] requests to the CLI.
//! - [`output`]: the NDJSON event stream.
//! - [`agent`]: the run loop tying the stages together; [`cli`]: command-line definitions.
pub mod actuate;
pub mod advise;
pub mod agent;
pub mod api;
pub mod change;
pub mod cli;
pub mod collect;
pub mod config;
pub mod control;
pub mod energy;
pub mod journal;
pub mod guard;
pub mod output;
pub mod policy;
pub mod sensors;
pub mod window;
