//! `kpo run`'s flags, merged over the configuration file.
use std::{path::PathBuf, time::Duration};

use crate::config::{Config, ConfigError};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file (see README); flags override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How often to read the kernel, e.g. 1s, 500ms (default 1s; 10ms to 30m).
    #[arg(long, value_parser = crate::cli::duration_arg)]
    pub tick: Option<Duration>,
    /// Window length, a whole number of ticks, e.g. 60s (default 60s; at most 30m).
    #[arg(long, value_parser = crate::cli::duration_arg)]
    pub window: Option<Duration>,
    /// Where to write NDJSON events: a file (appended; re-opened on SIGHUP) or - for standard
    /// output (the default).
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
    /// Fraction of each window (0..=1) during which high-rate sensors are attached; above 0, at
    /// least one tick per window (default 0.05).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub duty_fraction: Option<f64>,
    /// Keep a sensor off (repeatable): accept_queue, synack_retrans, irq, softirq, napi, sched,
    /// request_latency.
    #[arg(long = "disable-sensor", value_name = "SENSOR")]
    pub disable_sensor: Vec<String>,
    /// Kernel BTF file used for struct offsets (default /sys/kernel/btf/vmlinux).
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
    /// The /proc to read (default /proc; a pod sees the host's /proc where it is mounted).
    #[arg(long, value_name = "PATH")]
    pub proc_root: Option<PathBuf>,
    /// Treat every parameter in mode auto as mode recommend: nothing is applied automatically;
    /// what the policy would apply waits for `kpo approve` (observe stays observe).
    #[arg(long)]
    pub recommend_only: bool,
    /// Where cpufreq is changed and the optimizer lists NICs (default /sys; a copy of sysfs in
    /// tests); NIC coalescing always goes to the real device over netlink.
    #[arg(long, value_name = "PATH")]
    pub sysfs_root: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (off by default).
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Policy, state directory and control socket.
    #[command(flatten)]
    pub state: crate::cli::StateArgs,
}

impl RunArgs {
    /// Where the configuration comes from, as its errors name it.
    pub fn config_origin(&self) -> String {
        self.config
            .as_ref()
            .map_or_else(|| "command line".into(), |p| p.display().to_string())
    }

    /// What SIGHUP logs of a `--config` file edited (or gone) since the start: its changes wait
    /// for a restart, and a file that would stop that restart is said now, with its error, rather
    /// than when a service manager's restart fails.
    pub fn config_edited_note(&self, running: &Config) -> Option<String> {
        let edited = running.edited_since_start()?;
        let next_start = self.config().and_then(|config| {
            config
                .llm
                .resolve_with(|k| std::env::var(k).ok())
                .map_err(|e| ConfigError::from_llm(&self.config_origin(), &e).into())
        });
        Some(match next_start {
            Ok(_) => edited,
            Err(e) => format!(
                "{edited}; as it is now, the next start would stop with: {e} (kpo check \
                 --config {})",
                self.config_origin()
            ),
        })
    }

    pub fn config(&self) -> anyhow::Result<Config> {
        let (mut config, file) = match &self.config {
            Some(path) => (Config::from_file(path)?, Some(path)),
            None => (Config::default(), None),
        };
        // Flags override the file, so the two are judged together; an error is then blamed on
        // the file when the file alone has that very error, else on the flags that brought it
        // (the file alone may fail for another reason that a flag fixes, as a window that a
        // `--window` makes a whole number of the file's ticks).
        let file = file.map(|path| path.display().to_string());
        let file_error = file
            .as_ref()
            .and_then(|path| config.validate(path).err())
            .map(|e| e.to_string());
        if let Some(v) = self.tick {
            config.tick = v;
        }
        if let Some(v) = self.window {
            config.window = v;
        }
        if let Some(v) = &self.events {
            config.events = v.clone();
        }
        if let Some(v) = self.duty_fraction {
            config.duty_fraction = v;
        }
        config
            .disabled_sensors
            .extend(self.disable_sensor.iter().cloned());
        if let Some(v) = &self.btf {
            config.btf = v.clone();
        }
        if let Some(v) = &self.proc_root {
            config.proc_root = v.clone();
        }
        if let Some(v) = &self.sysfs_root {
            config.sysfs_root = v.clone();
        }
        if let Some(v) = self.metrics {
            config.metrics = Some(v);
        }
        let Some(path) = file else {
            config.validate("command line")?;
            return Ok(config);
        };
        match config.validate(&path) {
            Ok(()) => Ok(config),
            Err(e) if file_error == Some(e.to_string()) => Err(e.into()),
            Err(mut e) => {
                if let ConfigError::Invalid { origin, .. } = &mut e {
                    *origin = format!("command line (over {path})");
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn config(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("kpo").chain(args.iter().copied())).unwrap();
        cli.run.config().unwrap_err().to_string()
    }

    /// Defect: a SIGHUP after an edit that the next start refuses (an unknown key) said only
    /// that the changes take effect at a restart; the restart then failed (under systemd, up to
    /// its start limit) with the agent down.
    #[test]
    fn sighup_says_when_the_edited_config_would_stop_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpo.toml");
        std::fs::write(&path, "tick = \"2s\"\n").unwrap();
        let p = path.to_str().unwrap();
        let args = Cli::try_parse_from(["kpo", "--config", p]).unwrap().run;
        let running = args.config().unwrap();
        assert_eq!(args.config_edited_note(&running), None);

        std::fs::write(&path, "tick = \"4s\"\n").unwrap();
        let loads = args.config_edited_note(&running).unwrap();
        assert_eq!(loads, running.edited_since_start().unwrap());

        std::fs::write(&path, "tick = \"2s\"\nbogus = 1\n").unwrap();
        let stops = args.config_edited_note(&running).unwrap();
        let error = args.config().unwrap_err();
        assert_eq!(
            stops,
            format!(
                "{}; as it is now, the next start would stop with: {error} (kpo check --config \
                 {p})",
                running.edited_since_start().unwrap()
            )
        );
        assert!(stops.contains("bogus"), "{stops}");
    }

    #[test]
    fn an_error_names_the_file_or_the_flags_it_comes_from() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "tick = \"2s\"\nwindow = \"60s\"\n").unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "tick = \"2s\"\nwindow = \"61s\"\n").unwrap();
        let good = good.to_str().unwrap();
        let bad = bad.to_str().unwrap();
        // The file's own mistake names the file.
        assert!(config(&["--config", bad]).starts_with(&format!("{bad}: `window`")));
        // A flag's names the command line, over the file whose values it met.
        assert!(config(&["--config", good, "--window", "61s"])
            .starts_with(&format!("command line (over {good}): `--window`")));
        assert!(config(&["--config", good, "--disable-sensor", "foo"])
            .starts_with(&format!("command line (over {good}): `--disable-sensor`")));
        assert!(
            config(&["--disable-sensor", "foo"]).starts_with("command line: `--disable-sensor`")
        );
        // A flag can still make the file's values whole: 63 s is a whole number of 7 s ticks.
        let tick = dir.path().join("tick.toml");
        std::fs::write(&tick, "tick = \"7s\"\n").unwrap();
        let cli =
            Cli::try_parse_from(["kpo", "--config", tick.to_str().unwrap(), "--window", "63s"])
                .unwrap();
        assert_eq!(cli.run.config().unwrap().window, Duration::from_secs(63));
    }

    /// Defect: once the file alone failed, every error was blamed on it, even one a flag brought
    /// in over a file value the flags had fixed.
    #[test]
    fn a_flag_error_over_a_file_that_fails_alone_is_blamed_on_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        // Alone, 7 s ticks do not divide the default 60 s window.
        let tick = dir.path().join("tick.toml");
        std::fs::write(&tick, "tick = \"7s\"\n").unwrap();
        let tick = tick.to_str().unwrap();
        assert_eq!(
            config(&["--config", tick, "--window", "63s", "--duty-fraction", "2"]),
            format!(
                "command line (over {tick}): `--duty-fraction` is 2; it must be between 0 and 1"
            )
        );
        // The file's own error, the flags changing nothing it depends on: the file's.
        assert!(
            config(&["--config", tick, "--duty-fraction", "0.5"]).starts_with(&format!(
                "{tick}: `window` (1m) must be a whole number of ticks"
            ))
        );
        // The file's error and a flag's: the file's comes first, and is the file's.
        let both = dir.path().join("both.toml");
        std::fs::write(&both, "disabled_sensors = [\"nope\"]\n").unwrap();
        let both = both.to_str().unwrap();
        assert_eq!(
            config(&["--config", both, "--disable-sensor", "other"]),
            format!(
                "{both}: `disabled_sensors` names unknown sensor \"nope\"; known: accept_queue, \
                 synack_retrans, irq, softirq, napi, sched, request_latency"
            )
        );
    }

    /// Defect: clap took the `-0.5` of `--duty-fraction -0.5` for a flag and said "unexpected
    /// argument '-0' found", naming neither the flag nor the range.
    #[test]
    fn a_negative_duty_fraction_is_refused_with_its_range() {
        assert_eq!(
            config(&["--duty-fraction", "-0.5"]),
            "command line: `--duty-fraction` is -0.5; it must be between 0 and 1"
        );
    }

    /// Defect: `--metrics localhost:9464` said only "invalid socket address syntax".
    #[test]
    fn a_metrics_address_error_gives_the_form_wanted() {
        let e = Cli::try_parse_from(["kpo", "--metrics", "localhost:9464"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(
                "invalid value 'localhost:9464' for '--metrics <ADDR>': not an IP address and \
                 port, such as 127.0.0.1:9464 or [::1]:9464 (a host name is not looked up)"
            ),
            "{e}"
        );
    }

    /// Defect: `kpo run --help` gave no flag's default, which README's table does; clap's own
    /// defaults cannot say them, since a flag's value overrides the configuration file.
    #[test]
    fn help_gives_each_default_readme_gives() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for default in [
            "(default 1s; 10ms to 30m)",
            "(default 60s; at most 30m)",
            "(the default)",
            "(default 0.05)",
            "(default /sys/kernel/btf/vmlinux)",
            "(default /proc;",
            "(default /sys;",
        ] {
            assert!(help.contains(default), "{default} missing from:\n{help}");
        }
    }
}
