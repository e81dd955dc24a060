//! Outputs: the NDJSON event stream ([`events`]), written off the run loop ([`sink`]), and the
//! Prometheus metrics counted from the same events ([`metrics`]).
pub mod change_events;
pub mod events;
pub mod metrics;
pub mod sink;
