//! Outputs: the NDJSON event stream.
pub mod events;
