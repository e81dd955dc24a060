//! The energy of one window: what the meter read over it, labelled with where it came from.
use serde::Serialize;

use super::Window;
use crate::energy::{
    handover::SetAside, EnergyError, EnergyMeter, EnergyReading, EnergySource, MeterChoice, NoMeter,
};

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
    /// The meter's reading over `window` (taken when the window closed). `own_endpoint`: the
    /// network namespace (inode), port and family of KPO's own metrics endpoint (a service of
    /// the other family may have the same port number: s59 story BN-1), whose scrapes the
    /// sensor times too: counted, one scrape in an idle window would be charged the whole
    /// window's energy.
    pub fn new(
        meter: &dyn EnergyMeter,
        reading: Result<EnergyReading, EnergyError>,
        window: &Window,
        own_endpoint: Option<super::Endpoint>,
    ) -> Self {
        let (joules, error) = match reading {
            Ok(r) => (Some(r.joules), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let requests: u64 = window
            .request_latency
            .iter()
            .filter(|r| !r.is_at(own_endpoint))
            .map(|r| r.latency.samples)
            .sum();
        let joules_per_request = joules
            .filter(|_| requests > 0 && window.sampled_fraction > 0.0)
            .map(|j| significant6(j * window.sampled_fraction / requests as f64));
        Self {
            source: meter.source(),
            domains: meter.domains(),
            joules: joules.map(round6),
            // The window's exact length: the partial window at SIGTERM can be shorter than the
            // millisecond `duration_s` is rounded to.
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
    pub fn new(choice: &Result<MeterChoice, NoMeter>) -> Self {
        match choice {
            Ok(c) => Self {
                source: Some(c.meter.source()),
                domains: c.meter.domains(),
                skipped: skipped_sources(&c.skipped),
                error: None,
            },
            Err(no) => Self {
                source: None,
                domains: Vec::new(),
                skipped: skipped_sources(&no.skipped),
                error: Some(no.error.to_string()),
            },
        }
    }

    /// The source chosen when `set_aside` replaced another mid-run: `meter` is the watch's meter
    /// now (`None` when none could be opened).
    pub fn after(meter: Option<&dyn EnergyMeter>, set_aside: &SetAside) -> Self {
        Self {
            source: meter.map(|m| m.source()),
            domains: meter.map(|m| m.domains()).unwrap_or_default(),
            skipped: skipped_sources(&set_aside.skipped),
            error: set_aside.error.clone(),
        }
    }
}

fn skipped_sources(skipped: &[(EnergySource, String)]) -> Vec<SkippedSource> {
    skipped
        .iter()
        .map(|(source, reason)| SkippedSource {
            source: *source,
            reason: reason.clone(),
        })
        .collect()
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Six significant digits: joules per request can be a few microjoules, where six decimals
/// would leave one digit.
fn significant6(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(5 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::rules::testing::window;
    use crate::window::{hist::LatencySummary, RequestLatencyWindow};

    /// A meter whose readings the test gives.
    struct Fixed;

    impl EnergyMeter for Fixed {
        fn source(&self) -> EnergySource {
            EnergySource::Rapl
        }
        fn read(&mut self) -> Result<EnergyReading, EnergyError> {
            unreachable!("the tests pass the reading")
        }
        fn domains(&self) -> Vec<String> {
            vec!["package-0".into(), "package-1".into()]
        }
        fn packages(&self) -> usize {
            2
        }
    }

    fn reading(joules: f64) -> Result<EnergyReading, EnergyError> {
        Ok(EnergyReading {
            joules,
            source: EnergySource::Rapl,
            parts: vec![joules],
        })
    }

    /// A window of `seconds` in which the sensor timed `requests` over `sampled_fraction` of it.
    fn timed(seconds: f64, sampled_fraction: f64, requests: &[u64]) -> Window {
        let mut w = window(vec![]);
        w.duration_s = seconds;
        w.sampled_fraction = sampled_fraction;
        w.request_latency = requests
            .iter()
            .enumerate()
            .map(|(i, &samples)| RequestLatencyWindow {
                netns: 1,
                port: 8080 + i as u16,
                family: "ipv4",
                latency: LatencySummary {
                    samples,
                    p50_us: 10.0,
                    p90_us: 20.0,
                    p99_us: 30.0,
                    max_us: 40.0,
                },
            })
            .collect();
        w
    }

    #[test]
    fn joules_watts_and_joules_per_request_of_a_window() {
        // 10 J over 4 s; the sensor timed 600 + 400 requests over half the window, so the
        // energy of that half, 5 J, is what they cost.
        let e = WindowEnergy::new(&Fixed, reading(10.0), &timed(4.0, 0.5, &[600, 400]), None);
        assert_eq!(e.source, EnergySource::Rapl);
        assert_eq!(e.domains, vec!["package-0", "package-1"]);
        assert_eq!(e.joules, Some(10.0));
        assert_eq!(e.watts, Some(2.5));
        assert_eq!(e.joules_per_request, Some(0.005));
        assert_eq!(e.error, None);
    }

    /// A scrape of KPO's own metrics endpoint is not a request of the host's services: in an
    /// otherwise idle window it was charged the whole window's energy (story AI, session 53).
    #[test]
    fn the_agents_own_metrics_endpoint_is_not_counted_as_requests() {
        // Port 8080 (netns 1) timed 600, port 8081 timed 400; the endpoint is (1, 8081, IPv4).
        let w = timed(4.0, 0.5, &[600, 400]);
        let e = WindowEnergy::new(&Fixed, reading(10.0), &w, Some((1, 8081, "ipv4")));
        assert_eq!(e.joules_per_request, Some(significant6(5.0 / 600.0_f64)));
        // The same port in another namespace is someone's service, and so is the same port of
        // the other family (s59 story BN-1: an IPv6 service on the IPv4 endpoint's port).
        for other in [(2, 8081, "ipv4"), (1, 8081, "ipv6")] {
            let e = WindowEnergy::new(&Fixed, reading(10.0), &w, Some(other));
            assert_eq!(e.joules_per_request, Some(0.005), "{other:?}");
        }
        // Only scrapes timed: no request of a service.
        let scraped = timed(4.0, 0.5, &[1]);
        let e = WindowEnergy::new(&Fixed, reading(10.0), &scraped, Some((1, 8080, "ipv4")));
        assert_eq!((e.joules, e.joules_per_request), (Some(10.0), None));
    }

    #[test]
    fn no_request_timed_gives_no_joules_per_request() {
        let none = WindowEnergy::new(&Fixed, reading(10.0), &timed(4.0, 0.5, &[]), None);
        assert_eq!(none.joules_per_request, None);
        let zero = WindowEnergy::new(&Fixed, reading(10.0), &timed(4.0, 0.5, &[0]), None);
        assert_eq!(zero.joules_per_request, None);
        // The sensor never attached: its count covers nothing.
        let unsampled = WindowEnergy::new(&Fixed, reading(10.0), &timed(4.0, 0.0, &[5]), None);
        assert_eq!(unsampled.joules_per_request, None);
        assert_eq!(unsampled.joules, Some(10.0));
    }

    /// A few microjoules per request keeps six significant digits, not one.
    #[test]
    fn small_joules_per_request_keep_their_digits() {
        // 20 W for 1 s over 7 million requests: 2.857142...e-6 J each.
        let e = WindowEnergy::new(&Fixed, reading(20.0), &timed(1.0, 1.0, &[7_000_000]), None);
        assert_eq!(e.joules_per_request, Some(2.85714e-6));
        assert_eq!(significant6(123_456_789.0), 123_457_000.0);
        assert_eq!(significant6(0.0), 0.0);
    }

    #[test]
    fn a_failed_reading_is_null_with_the_reason() {
        let failed = Err(EnergyError::AfterFailedRead {
            meter: EnergySource::Rapl,
        });
        let e = WindowEnergy::new(&Fixed, failed, &timed(4.0, 1.0, &[100]), None);
        assert_eq!(
            (e.joules, e.watts, e.joules_per_request),
            (None, None, None)
        );
        assert!(e.error.unwrap().contains("cannot be split"));
        assert_eq!(e.source, EnergySource::Rapl);
    }

    /// With no source at all, the `start` event still says why each better one was skipped.
    #[test]
    fn no_source_keeps_the_reasons_better_ones_were_skipped() {
        let no = NoMeter {
            error: EnergyError::NoZones("/sys/class/powercap".into()),
            skipped: vec![(EnergySource::Rapl, "set aside: package-0: frozen".into())],
        };
        let choice = EnergySourceChoice::new(&Err(no));
        assert_eq!(choice.source, None);
        assert_eq!(
            choice.skipped,
            vec![SkippedSource {
                source: EnergySource::Rapl,
                reason: "set aside: package-0: frozen".into()
            }]
        );
        assert!(choice.error.unwrap().contains("/sys/class/powercap"));
    }
}
