//! A source trusted at start can stop giving figures later: a hypervisor that stops updating the
//! counters after a live migration, a powercap driver unloaded, a perf PMU gone with a CPU. Its
//! windows then read `joules: null` with the reason, which is safe but measures nothing, for as
//! long as the agent runs. [`MeterWatch`] sets such a source aside after
//! [`SET_ASIDE_AFTER_WINDOWS`] windows in a row without a figure and chooses again among the
//! sources after it in the order, with the same checks as at start
//! ([`super::choose_meter_after`]).
//!
//! A source set aside is not tried again until the agent restarts: one that comes back after
//! stopping once may stop again, and switching back and forth would make windows of two sources
//! alternate, which no series of figures should do unannounced. The estimate is never set aside:
//! there is nothing after it.
use super::{EnergyError, EnergyMeter, EnergyReading, EnergySource, MeterChoice, NoMeter};

/// Windows in a row without a figure after which a measured source is set aside. One or two
/// are ordinary (a counter reset caught at its tick, a read that failed once, and the window it
/// reaches into); three in a row, at the default 60 s window, is three minutes of a meter that
/// measures nothing.
pub const SET_ASIDE_AFTER_WINDOWS: u32 = 3;

/// Chooses a source among those after the one given (the one set aside).
pub type Rechoose = Box<dyn FnMut(EnergySource) -> Result<MeterChoice, NoMeter> + Send>;

/// The agent's energy meter, set aside and replaced when it stops giving figures.
pub struct MeterWatch {
    meter: Option<Box<dyn EnergyMeter + Send>>,
    rechoose: Rechoose,
    /// Windows in a row whose reading failed.
    failed_in_a_row: u32,
    /// The meter was chosen after the window now open began (the sources before it checked
    /// with CPU work, or the estimate's baseline taken after them): its first reading does not
    /// cover the whole window.
    chosen_mid_window: bool,
    /// The last reading was refused for that alone: not the meter's failure.
    read_part_of_a_window: bool,
}

/// A source set aside while the agent ran, and what replaced it.
#[derive(Debug)]
pub struct SetAside {
    /// The source set aside.
    pub from: EnergySource,
    /// Why: the windows without a figure and the last one's error.
    pub reason: String,
    /// Each source after it that was not used either, and why.
    pub skipped: Vec<(EnergySource, String)>,
    /// Why no source could be opened in its place (the agent then has none).
    pub error: Option<String>,
}

impl MeterWatch {
    /// `meter`, the source chosen at start (`None`: none could be opened); `rechoose` picks
    /// another when it is set aside.
    pub fn new(meter: Option<Box<dyn EnergyMeter + Send>>, rechoose: Rechoose) -> Self {
        Self {
            meter,
            rechoose,
            failed_in_a_row: 0,
            chosen_mid_window: false,
            read_part_of_a_window: false,
        }
    }

    pub fn meter(&self) -> Option<&dyn EnergyMeter> {
        self.meter.as_deref().map(|m| m as &dyn EnergyMeter)
    }

    /// Between two window reads (every tick): see [`EnergyMeter::sample`].
    pub fn sample(&mut self) {
        if let Some(m) = self.meter.as_mut() {
            m.sample();
        }
    }

    /// The energy of the window now closing: `None` without a meter.
    pub fn read(&mut self) -> Option<Result<EnergyReading, EnergyError>> {
        let meter = self.meter.as_mut()?;
        let reading = meter.read();
        self.read_part_of_a_window = std::mem::take(&mut self.chosen_mid_window);
        if self.read_part_of_a_window {
            // Read all the same: the next window's reading starts here.
            return Some(Err(EnergyError::ChosenMidWindow {
                meter: meter.source(),
            }));
        }
        Some(reading)
    }

    /// After the window's [`read`](Self::read): `Ok` if it gave a figure, else its error. Counts
    /// the windows in a row without one, and sets the meter aside once
    /// [`SET_ASIDE_AFTER_WINDOWS`] had none.
    pub fn after_window(&mut self, figure: Result<(), String>) -> Option<SetAside> {
        let Err(error) = figure else {
            self.failed_in_a_row = 0;
            return None;
        };
        if std::mem::take(&mut self.read_part_of_a_window) {
            return None;
        }
        let from = self.meter.as_ref()?.source();
        self.failed_in_a_row += 1;
        if self.failed_in_a_row < SET_ASIDE_AFTER_WINDOWS || from == EnergySource::Estimated {
            return None;
        }
        let reason = format!(
            "no figure for {} windows in a row; the last: {error}",
            self.failed_in_a_row
        );
        self.failed_in_a_row = 0;
        // The old meter goes first: a perf counter it holds open is closed before the next is
        // checked.
        self.meter = None;
        Some(match (self.rechoose)(from) {
            Ok(choice) => {
                // The measured sources before it were checked with 100 ms of work each after
                // this window began, and the estimate took its baseline after them.
                self.chosen_mid_window = true;
                self.meter = Some(choice.meter);
                SetAside {
                    from,
                    reason,
                    skipped: choice.skipped,
                    error: None,
                }
            }
            Err(no) => SetAside {
                from,
                reason,
                skipped: no.skipped,
                error: Some(no.error.to_string()),
            },
        })
    }
}
