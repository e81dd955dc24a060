//! The energy of one window: what the meter read over it, labelled with where it came from.
use serde::Serialize;

use super::Window;
use crate::energy::{EnergyError, EnergyMeter, EnergyReading, EnergySource, MeterChoice};

/// A window's `energy` object (docs/events.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowEnergy {
    /// `rapl`, `perf_power` or `estimated`.
    pub source: EnergySource,
    /// What was summed: powercap zones, perf events on their CPUs, or `cpu` for the estimate.
    pub domains: Vec<String>,
    /// Joules over the window; `null` when the reading failed or was not trusted (`error` says why).
    pub joules: Option<f64>,
    /// Mean power over the window.
    pub watts: Option<f64>,
    /// Joules per request of the services the request-latency sensor timed. That sensor is
    /// duty-cycled, so its count covers `sampled_fraction` of the window: the window's energy is
    /// scaled by the same fraction before dividing. `null` when no request was timed.
    pub joules_per_request: Option<f64>,
    pub error: Option<String>,
}

impl WindowEnergy {
    /// The meter's reading over `window` (taken when the window closed).
    pub fn new(
        meter: &dyn EnergyMeter,
        reading: Result<EnergyReading, EnergyError>,
        window: &Window,
    ) -> Self {
        let (joules, error) = match reading {
            Ok(r) => (Some(r.joules), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let requests: u64 = window
            .request_latency
            .iter()
            .map(|r| r.latency.samples)
            .sum();
        let joules_per_request = joules
            .filter(|_| requests > 0 && window.sampled_fraction > 0.0)
            .map(|j| round6(j * window.sampled_fraction / requests as f64));
        Self {
            source: meter.source(),
            domains: meter.domains(),
            joules: joules.map(round6),
            watts: joules.map(|j| round6(j / window.duration_s.max(1e-9))),
            joules_per_request,
            error,
        }
    }
}

/// The `energy` object of the `start` event: the source chosen and why better ones were not.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnergySourceChoice {
    /// `null` when no source could be opened at all (`error` says why).
    pub source: Option<EnergySource>,
    pub domains: Vec<String>,
    /// Each better source that was not used, in the order tried, with the reason.
    pub skipped: Vec<SkippedSource>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SkippedSource {
    pub source: EnergySource,
    pub reason: String,
}

impl EnergySourceChoice {
    pub fn new(choice: &Result<MeterChoice, EnergyError>) -> Self {
        match choice {
            Ok(c) => Self {
                source: Some(c.meter.source()),
                domains: c.meter.domains(),
                skipped: c
                    .skipped
                    .iter()
                    .map(|(source, reason)| SkippedSource {
                        source: *source,
                        reason: reason.clone(),
                    })
                    .collect(),
                error: None,
            },
            Err(e) => Self {
                source: None,
                domains: Vec::new(),
                skipped: Vec::new(),
                error: Some(e.to_string()),
            },
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
