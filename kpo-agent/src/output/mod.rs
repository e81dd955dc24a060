//! Outputs: the NDJSON event stream.
pub mod change_events;
pub mod events;
