//! Deterministic rules: small, one per file, deterministic functions of windows (and the few
//! kernel values they need as input), with hysteresis state kept in the rule. No I/O.
pub mod accept_queue;
