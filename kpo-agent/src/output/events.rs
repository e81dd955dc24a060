//! The NDJSON event stream: one JSON object per line, each with `schema`, `ts`, `host`, `kind`.
//! Documented in docs/events.md; docs/events.schema.json is checked against real output in tests.
use std::{
    fs::OpenOptions,
    io::{self, Write},
    path::Path,
};

use serde::Serialize;

use crate::{
    sensors::SensorStatus,
    window::{energy::EnergySourceChoice, Window},
};

pub const SCHEMA: &str = "kpo.event/v1";

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The agent started: its settings.
    Start {
        version: &'static str,
        pid: u32,
        tick_s: f64,
        window_s: f64,
        duty_fraction: f64,
        /// The energy source chosen for the windows' `energy`, and why better ones were not.
        energy: EnergySourceChoice,
    },
    /// Which sensors are on, which are off and why. Sent at start and whenever that changes.
    Sensors { sensors: Vec<SensorStatus> },
    /// A finished window of telemetry.
    Window {
        /// True for the last, shorter window flushed at shutdown.
        partial: bool,
        #[serde(flatten)]
        window: Box<Window>,
    },
    /// A listener's accept queue reached its limit (sent at once, at most once per tick).
    ListenerFull {
        netns: u64,
        port: u16,
        family: &'static str,
        backlog: u32,
        backlog_limit: u32,
        pid: Option<u32>,
        comm: Option<String>,
    },
    /// The agent stopped.
    Stop { reason: String, windows: u64 },
}

#[derive(Serialize)]
struct Envelope<'a> {
    schema: &'static str,
    ts: String,
    host: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

pub struct EventWriter {
    out: Box<dyn Write + Send>,
    host: String,
}

impl EventWriter {
    /// `-` is standard output; anything else is a file, appended to.
    pub fn open(target: &Path) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(OpenOptions::new().create(true).append(true).open(target)?)
        };
        Ok(Self::new(out))
    }

    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            host: hostname(),
        }
    }

    /// Writes one event as one line, in a single write so that a reader never sees half a line.
    pub fn emit(&mut self, event: &Event) -> io::Result<()> {
        let envelope = Envelope {
            schema: SCHEMA,
            ts: crate::window::rfc3339(time::OffsetDateTime::now_utc()),
            host: &self.host,
            event,
        };
        let mut line = serde_json::to_vec(&envelope).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
