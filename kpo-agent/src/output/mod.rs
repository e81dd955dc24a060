//! Outputs: the NDJSON event stream ([`events`]), written off the run loop ([`sink`]).
pub mod change_events;
pub mod events;
pub mod sink;
