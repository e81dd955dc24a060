//! Advisors. Each produces recommendations for the policy gate.
pub mod optimizer;
