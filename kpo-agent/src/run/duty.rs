//! The duty cycle around each tick's map read.
//!
//! What a probe counts lands in the maps until it is detached, so the order matters: a sensor
//! that will be off during the next tick is detached *before* the read that closes this tick (else
//! what it counted between the read and the detach would spill into the next tick, unsampled, or
//! into the next window), and one that will be on is attached *after* the read (else the next
//! tick's first counts would land in this one). Each sample then holds exactly what was counted
//! during the ticks it closes, and says whether the sensors were attached during its tick.
use crate::{
    collect::Sample,
    config::{duty_tick, duty_ticks},
    sensors::{SensorKind, Sensors},
};

/// Which ticks of each window the duty-cycled sensors are attached for.
#[derive(Debug, Clone, Copy)]
pub struct DutyCycle {
    ticks_per_window: u64,
    fraction: f64,
}

/// What was attached during the tick that is ending, noted before anything is detached.
#[derive(Debug, Clone, Copy)]
#[must_use = "the sample must be stamped with what was attached during its tick"]
pub struct Attached {
    duty: bool,
    accept_queue: bool,
}

impl Attached {
    /// Records in the sample whether the accept-queue sensor was attached during the tick it
    /// closes (the sensors' state at the read itself may already be that of the next tick).
    pub fn stamp(self, sample: &mut Sample) {
        sample.accept_queue_attached = self.accept_queue;
    }
}

impl DutyCycle {
    pub fn new(ticks_per_window: u64, fraction: f64) -> Self {
        Self {
            ticks_per_window,
            fraction,
        }
    }

    /// Ticks per window the duty-cycled sensors are attached for (at least one above 0).
    pub fn ticks_on(&self) -> u64 {
        duty_ticks(self.ticks_per_window, self.fraction)
    }

    /// Whether tick `i` of a window is sampled.
    pub fn on(&self, i: u64) -> bool {
        duty_tick(i, self.ticks_per_window, self.fraction)
    }

    /// Before the read that closes a tick: detaches what will be off during tick `next` (of its
    /// window). The accept-queue sensor stays if the next tick is sampled or `accept_queue_stays`
    /// (pressure that one calm sample cannot end); otherwise it goes now, and [`Self::after_read`]
    /// attaches it again if the sample shows new pressure.
    pub fn before_read(
        &self,
        sensors: &mut Sensors,
        next: u64,
        accept_queue_stays: bool,
    ) -> Attached {
        let was = Attached {
            duty: sensors.duty_attached(),
            accept_queue: sensors.is_attached(SensorKind::AcceptQueue),
        };
        // Only detaches: nothing wanted here is off now (what is attached stays, what is not is
        // not wanted).
        let keep = was.duty && self.on(next);
        sensors.apply_duty(keep, was.accept_queue && (keep || accept_queue_stays));
        was
    }

    /// After the read: attaches what tick `next` samples.
    pub fn after_read(&self, sensors: &mut Sensors, next: u64, accept_queue_escalated: bool) {
        sensors.apply_duty(self.on(next), accept_queue_escalated);
    }

    /// Before the last read, at shutdown: detaches every duty-cycled sensor.
    pub fn before_last_read(&self, sensors: &mut Sensors) -> Attached {
        let was = Attached {
            duty: sensors.duty_attached(),
            accept_queue: sensors.is_attached(SensorKind::AcceptQueue),
        };
        sensors.apply_duty(false, false);
        was
    }
}
