//! Bayesian optimization of NIC coalescing and CPU frequency limits under a latency SLO.
pub mod replay;
