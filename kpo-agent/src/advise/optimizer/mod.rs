//! Bayesian optimization of NIC coalescing and CPU frequency limits under a latency SLO.
//!
//! Data flow: [`space`] (knobs and their allowed values, normalization) → [`gp`] (Matérn-5/2
//! Gaussian process, hyperparameters by marginal likelihood) → [`acquisition`] (constrained
//! expected improvement) → [`bo`] (the ask/tell optimizer) → [`replay`] (the optimizer against a
//! table of measurements, `kpo optimize replay`) and [`live`] (the loop that moves real knobs)
//! → [`agent`] (that loop inside `kpo run`, through the change path; [`levels`]: the values
//! it tries for each knob).
//! See `docs/optimizer.md`.
pub mod acquisition;
pub mod agent;
pub mod bo;
pub mod gp;
pub mod levels;
pub mod live;
pub mod replay;
pub mod space;
pub mod stats;
