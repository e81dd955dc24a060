//! Advisors. Each produces recommendations for the policy gate.
pub mod limits;
pub mod llm;
pub mod optimizer;
pub mod recommendation;
pub mod rules;
