//! What the rules judged that must outlive the agent: the budgets a raise of the receive-path
//! rule went to without cutting the squeezes, the `netdev_max_backlog` a raise of it went to
//! without cutting the drops, and the listeners a raise of somaxconn did not cut the drops of
//! (docs/rules.md). Judged over windows that the journal does not keep, so it cannot be read back
//! from there; it is kept in [`RULES_FILE`] in the state directory, replaced atomically whenever
//! it changes. A file that cannot be read (not JSON, or not an object) is logged and the rules
//! start without it, as they did before it was kept; each mark in it stands alone: one that is
//! not what it should be is left out with a warning saying why, and the others are taken up.
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    advise::rules::{accept_queue::FutileRaise, RuleSet},
    journal::JournalError,
};

pub const RULES_FILE: &str = "rules.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RulesState {
    /// (`net.core.netdev_budget`, `net.core.netdev_budget_usecs`) a raise to which did not help.
    pub receive_path_futile: Option<Checked<(i64, i64)>>,
    /// The mark was judged by a version that raises `netdev_budget_usecs` by whole ticks, on a
    /// kernel whose tick rate it knew. Without it, the mark may come from a raise that stayed
    /// within one tick and so changed nothing (an earlier version's, or one made while the rate
    /// was unknown): it is checked against the kernel's tick rate at start
    /// ([`RulesState::restore`]). One that is not a boolean is read as absent: the check is then
    /// made, which at worst drops a mark that stood.
    pub whole_ticks: Checked<bool>,
    /// Listeners a raise of `net.core.somaxconn` to whose limit did not cut their drops; left
    /// out of the file when there is none. Each is checked alone, so one listener's broken mark
    /// does not cost the others theirs.
    #[serde(skip_serializing_if = "no_listener_marks")]
    pub accept_queue_futile: Checked<Vec<Checked<FutileRaise>>>,
    /// The `net.core.netdev_max_backlog` a raise to which did not cut the drops; left out of the
    /// file when there is none (as in files an earlier version wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_path_backlog_futile: Option<Checked<i64>>,
}

/// A mark as the file has it: of the type it should be, or anything else (a file edited by hand,
/// or a future version's) with serde's reason it is not, which is left out when the rules take
/// the file up instead of failing the whole file and losing the other marks with it. Written as
/// the value itself, either way.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked<T> {
    Valid(T),
    Malformed {
        raw: serde_json::Value,
        /// Why `raw` is not a `T` (`invalid type: string "abc", expected u16`, `missing field
        /// `to``).
        why: String,
    },
}

impl<T: Default> Default for Checked<T> {
    /// What a file without the field has: the field's own absence.
    fn default() -> Self {
        Checked::Valid(T::default())
    }
}

impl<T: Serialize> Serialize for Checked<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Checked::Valid(value) => value.serialize(serializer),
            Checked::Malformed { raw, .. } => raw.serialize(serializer),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    /// Fails only where the input is not JSON at all; any JSON value is a mark, valid or not.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        Ok(match T::deserialize(&raw) {
            Ok(value) => Checked::Valid(value),
            Err(e) => Checked::Malformed {
                why: e.to_string(),
                raw,
            },
        })
    }
}

impl<T> Checked<T> {
    /// The mark, if it is what it should be; if not, `None`, and a warning in `left_out` that
    /// names the field (`field`), what the file has there and why it cannot be read, and what
    /// is done `instead`.
    fn taken(&self, field: &str, instead: &str, left_out: &mut Vec<String>) -> Option<&T> {
        match self {
            Checked::Valid(value) => Some(value),
            Checked::Malformed { raw, why } => {
                left_out.push(format!(
                    "{RULES_FILE}: {field} is {raw}, which cannot be read ({why}): {instead}"
                ));
                None
            }
        }
    }
}

fn no_listener_marks(marks: &Checked<Vec<Checked<FutileRaise>>>) -> bool {
    matches!(marks, Checked::Valid(marks) if marks.is_empty())
}

impl RulesState {
    /// What to save of `rules`, which judged with the tick rate `hz` (`None`: unknown, so its
    /// raises of the time budget were not by whole ticks).
    pub fn of(rules: &RuleSet, hz: Option<u32>) -> Self {
        RulesState {
            receive_path_futile: rules.receive_path.futile().map(Checked::Valid),
            whole_ticks: Checked::Valid(hz.is_some()),
            accept_queue_futile: Checked::Valid(
                rules
                    .futile_listeners()
                    .into_iter()
                    .map(Checked::Valid)
                    .collect(),
            ),
            receive_path_backlog_futile: rules.receive_path.backlog_futile().map(Checked::Valid),
        }
    }

    /// Gives the rules what an earlier run judged. A judgement an earlier version made, whose
    /// raise stayed within one tick at `hz` (the kernel's tick rate), says nothing and is dropped
    /// (logged); this version's judgements stand (a raise that left the time budget alone, at HZ
    /// 100 say, judged the packet budget). A mark that cannot be read, or that no judgement can
    /// have left, is left out alone; the warnings, logged, are returned.
    pub fn restore(&self, rules: &mut RuleSet, hz: Option<u32>) -> Vec<String> {
        let mut left_out = Vec::new();
        let whole_ticks = self
            .whole_ticks
            .taken(
                "whole_ticks",
                "read as absent, so the receive path's budgets' mark is checked against the \
                 tick rate",
                &mut left_out,
            )
            .copied()
            .unwrap_or(false);
        let hz = hz.filter(|_| !whole_ticks);
        let budgets = self.receive_path_futile.as_ref().and_then(|mark| {
            mark.taken(
                "receive_path_futile",
                "left out: the receive path's budgets may be raised again, the other marks stand",
                &mut left_out,
            )
        });
        if let Some(why) = rules.receive_path.restore_futile(budgets.copied(), hz) {
            tracing::info!("rules: {why}");
        }
        let listeners: Vec<FutileRaise> = self
            .accept_queue_futile
            .taken(
                "accept_queue_futile",
                "left out: no listener's mark is taken up, the other marks stand",
                &mut left_out,
            )
            .map(|marks| {
                marks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, mark)| {
                        mark.taken(
                            &format!("accept_queue_futile[{i}]"),
                            "left out, the other marks taken up",
                            &mut left_out,
                        )
                        .cloned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        left_out.extend(rules.restore_futile_listeners(&listeners));
        let backlog = self.receive_path_backlog_futile.as_ref().and_then(|mark| {
            mark.taken(
                "receive_path_backlog_futile",
                "left out, the other marks taken up",
                &mut left_out,
            )
        });
        left_out.extend(rules.receive_path.restore_backlog_futile(backlog.copied()));
        for why in &left_out {
            tracing::warn!("rules: {why}");
        }
        left_out
    }

    /// The state an earlier run left in `dir`; none when there is no file. Only a file that is
    /// not a JSON object is an error: a mark in it that cannot be read is kept as it is, for
    /// [`RulesState::restore`] to leave out alone.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(RULES_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RulesState::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if !value.is_object() {
            return Err(format!("{}: not a JSON object", path.display()));
        }
        serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec(self).expect("plain data");
        bytes.push(b'\n');
        crate::journal::store::replace(dir, RULES_FILE, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No file is no judgement; a saved one reads back; one that does not decode is an error
    /// naming the file (the agent logs it and starts without).
    #[test]
    fn saved_state_reads_back_and_a_broken_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RulesState::load(dir.path()), Ok(RulesState::default()));
        let judged = RulesState {
            receive_path_futile: Some(Checked::Valid((600, 4000))),
            whole_ticks: Checked::Valid(true),
            accept_queue_futile: Checked::Valid(vec![Checked::Valid(FutileRaise {
                netns: 4026532281,
                port: 8080,
                family: "ipv4".into(),
                from: 128,
                to: 256,
                drops_before: 1200.0,
                drops_after: 1150.0,
                cookie: Some(20802),
            })]),
            receive_path_backlog_futile: Some(Checked::Valid(2000)),
        };
        judged.save(dir.path()).unwrap();
        assert_eq!(RulesState::load(dir.path()), Ok(judged));
        std::fs::write(dir.path().join(RULES_FILE), "{\"receive_path_futile\":[600").unwrap();
        let e = RulesState::load(dir.path()).unwrap_err();
        assert!(e.contains(RULES_FILE), "{e}");
        for text in ["[null,true]", "[]", "5", "\"marks\"", "null"] {
            std::fs::write(dir.path().join(RULES_FILE), text).unwrap();
            let e = RulesState::load(dir.path()).unwrap_err();
            assert!(
                e.contains(RULES_FILE) && e.contains("not a JSON object"),
                "{text}: {e}"
            );
        }
    }

    /// The accept-queue rule's marks go through the file and back into a new rule set; the
    /// file holds them as docs/journal.md shows.
    #[test]
    fn an_accept_queue_mark_is_saved_and_taken_up() {
        let dir = tempfile::tempdir().unwrap();
        let mark = FutileRaise {
            netns: 4026532281,
            port: 8080,
            family: "ipv6".into(),
            from: 128,
            to: 256,
            drops_before: 1200.0,
            drops_after: 1175.5,
            cookie: None,
        };
        let mut rules = RuleSet::default();
        assert!(rules
            .accept_queue
            .restore_futile(std::slice::from_ref(&mark))
            .is_empty());
        RulesState::of(&rules, Some(250)).save(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(RULES_FILE)).unwrap(),
            "{\"receive_path_futile\":null,\"whole_ticks\":true,\"accept_queue_futile\":[{\"netns\":4026532281,\"port\":8080,\"family\":\"ipv6\",\"from\":128,\"to\":256,\"drops_before\":1200.0,\"drops_after\":1175.5}]}\n"
        );
        let mut restarted = RuleSet::default();
        RulesState::load(dir.path())
            .unwrap()
            .restore(&mut restarted, Some(250));
        assert_eq!(restarted.accept_queue.futile(), [mark]);
    }

    /// A mark an earlier version left (no `whole_ticks`) is checked against the tick rate: at HZ
    /// 250 its 2000 -> 4000 µs raise moved nothing, and it is dropped. This version's mark of the
    /// same budgets stands: it raised the packet budget alone.
    #[test]
    fn only_an_earlier_versions_mark_is_checked_against_the_tick_rate() {
        let restored = |text: &str| {
            let state: RulesState = serde_json::from_str(text).unwrap();
            let mut rules = RuleSet::default();
            state.restore(&mut rules, Some(250));
            rules.receive_path.futile()
        };
        assert_eq!(restored(r#"{"receive_path_futile":[600,4000]}"#), None);
        assert_eq!(
            restored(r#"{"receive_path_futile":[600,4000],"whole_ticks":true}"#),
            Some((600, 4000))
        );
        assert_eq!(
            restored(r#"{"receive_path_futile":[600,8000]}"#),
            Some((600, 8000))
        );
    }

    /// A mark judged while the tick rate was unknown (the time budget doubled in µs) is saved as
    /// unchecked, kept as it is while the rate stays unknown, and checked at a start that knows
    /// it: at HZ 250 its 2000 -> 4000 µs raise moved nothing.
    #[test]
    fn a_mark_judged_without_the_tick_rate_is_checked_once_the_rate_is_known() {
        let mut rules = RuleSet::default();
        rules.receive_path.restore_futile(Some((600, 4000)), None);
        let saved = RulesState::of(&rules, None);
        assert_eq!(saved.whole_ticks, Checked::Valid(false));
        let text = serde_json::to_string(&saved).unwrap();
        let restored = |hz: Option<u32>| {
            let state: RulesState = serde_json::from_str(&text).unwrap();
            let mut rules = RuleSet::default();
            state.restore(&mut rules, hz);
            rules.receive_path.futile()
        };
        assert_eq!(restored(None), Some((600, 4000)));
        assert_eq!(restored(Some(250)), None);
        assert_eq!(
            RulesState::of(&rules, Some(250)).whole_ticks,
            Checked::Valid(true)
        );
    }

    /// The receive-path rule's judgement that a raise of `netdev_max_backlog` did not cut the
    /// drops goes through the file and back into a new rule set, which gives no raise from the
    /// judged value while the kernel has it; the file holds it as docs/journal.md shows.
    #[test]
    fn a_backlog_mark_is_saved_and_taken_up() {
        use crate::advise::{
            limits::{Mode, ParamLimits, StaticPolicy},
            recommendation::Source,
            rules::{
                receive_path::MAX_BACKLOG,
                testing::{at, window, FakeKernel},
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let mut rules = RuleSet::default();
        assert_eq!(rules.receive_path.restore_backlog_futile(Some(2000)), None);
        RulesState::of(&rules, Some(250)).save(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(RULES_FILE)).unwrap(),
            "{\"receive_path_futile\":null,\"whole_ticks\":true,\"receive_path_backlog_futile\":2000}\n"
        );
        let mut restarted = RuleSet::default();
        RulesState::load(dir.path())
            .unwrap()
            .restore(&mut restarted, Some(250));
        assert_eq!(restarted.receive_path.backlog_futile(), Some(2000));
        let policy =
            StaticPolicy::new().with(MAX_BACKLOG, &[Source::Rules], ParamLimits::new(Mode::Auto));
        let mut drops = window(vec![]);
        drops.system.softnet_dropped = Some(37);
        drops.duration_s = 1.0;
        let mut k = FakeKernel::default().with(MAX_BACKLOG, 2000);
        assert!(
            restarted
                .on_tick(&at(1), &drops, &mut k, &policy)
                .is_empty(),
            "no raise from the value judged futile"
        );
        assert_eq!(
            RulesState::of(&restarted, Some(250)),
            RulesState::load(dir.path()).unwrap()
        );
    }

    /// A file an earlier version wrote, without the backlog's mark, reads as before: no mark.
    #[test]
    fn a_file_without_the_backlog_mark_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RULES_FILE),
            "{\"receive_path_futile\":[600,8000],\"whole_ticks\":true}\n",
        )
        .unwrap();
        let state = RulesState::load(dir.path()).unwrap();
        assert_eq!(state.receive_path_backlog_futile, None);
        let mut rules = RuleSet::default();
        state.restore(&mut rules, Some(250));
        assert_eq!(rules.receive_path.futile(), Some((600, 8000)));
        assert_eq!(rules.receive_path.backlog_futile(), None);
        assert_eq!(
            RulesState::of(&rules, Some(250)),
            state,
            "nothing to write again"
        );
    }

    /// A backlog mark that is not an integer, or that no raise can reach, is left out (with a
    /// warning) and the other marks of the file are taken up; the next save writes the file
    /// without it.
    #[test]
    fn a_malformed_backlog_mark_is_left_out_and_the_rest_kept() {
        let aq = r#"{"netns":4026532281,"port":8080,"family":"ipv4","from":128,"to":256,"drops_before":1200.0,"drops_after":1150.0}"#;
        for mark in ["\"lots\"", "1.5", "[2000]", "-4", "0", "2147483648"] {
            let text = format!(
                r#"{{"receive_path_futile":[600,8000],"whole_ticks":true,"accept_queue_futile":[{aq}],"receive_path_backlog_futile":{mark}}}"#
            );
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(RULES_FILE), &text).unwrap();
            let state = RulesState::load(dir.path()).unwrap_or_else(|e| panic!("{mark}: {e}"));
            let mut rules = RuleSet::default();
            state.restore(&mut rules, Some(250));
            assert_eq!(rules.receive_path.backlog_futile(), None, "{mark}");
            assert_eq!(rules.receive_path.futile(), Some((600, 8000)), "{mark}");
            assert_eq!(rules.accept_queue.futile().len(), 1, "{mark}");
            let kept = RulesState::of(&rules, Some(250));
            assert_ne!(kept, state, "{mark}: saved again, without it");
            assert_eq!(kept.receive_path_backlog_futile, None);
            assert_eq!(kept.accept_queue_futile, state.accept_queue_futile);
        }
    }

    /// A file with every kind of mark, the field `field` set to `value` (its text in the file).
    fn file_with(field: &str, value: &str) -> String {
        let listeners = [LISTENER_8080, LISTENER_9090]
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
        let mut marks = serde_json::json!({
            "receive_path_futile": [600, 8000],
            "whole_ticks": true,
            "accept_queue_futile": listeners,
            "receive_path_backlog_futile": 2000,
        });
        marks[field] = serde_json::from_str(value).unwrap();
        marks.to_string()
    }

    const LISTENER_8080: &str = r#"{"netns":4026532281,"port":8080,"family":"ipv4","from":128,"to":256,"drops_before":1200.0,"drops_after":1150.0}"#;
    const LISTENER_9090: &str = r#"{"netns":4026532281,"port":9090,"family":"ipv6","from":256,"to":512,"drops_before":900.0,"drops_after":880.0}"#;

    /// The marks a rule set takes up from `text` as `rules.json`, at HZ 250, and the warnings.
    fn taken_up(text: &str) -> (RuleSet, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RULES_FILE), text).unwrap();
        let state = RulesState::load(dir.path()).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut rules = RuleSet::default();
        let warnings = state.restore(&mut rules, Some(250));
        (rules, warnings)
    }

    fn ports(rules: &RuleSet) -> Vec<u16> {
        rules.accept_queue.futile().iter().map(|m| m.port).collect()
    }

    /// Defect: one listener's mark of the wrong shape (a port that is not a number, a field
    /// missing, drops that are not a number) failed the whole file, and every mark was lost at
    /// start. It is left out alone, with a warning naming the entry and what is wrong with it;
    /// the other listeners' marks and the receive path's are taken up, and the next save writes
    /// the file without it.
    #[test]
    fn a_malformed_listener_mark_is_left_out_alone() {
        for (entry, why) in [
            (
                LISTENER_8080.replace("\"port\":8080", "\"port\":\"abc\""),
                "invalid type: string \"abc\", expected u16",
            ),
            (
                LISTENER_8080.replace(",\"to\":256", ""),
                "missing field `to`",
            ),
            (
                LISTENER_8080.replace("\"drops_before\":1200.0", "\"drops_before\":\"1200\""),
                "invalid type: string \"1200\", expected f64",
            ),
            (
                LISTENER_8080.replace("\"port\":8080", "\"port\":70000"),
                "expected u16",
            ),
            ("8080".to_string(), "expected struct FutileRaise"),
        ] {
            let text = file_with("accept_queue_futile", &format!("[{entry},{LISTENER_9090}]"));
            let (rules, warnings) = taken_up(&text);
            assert_eq!(ports(&rules), [9090], "{entry}");
            assert_eq!(rules.receive_path.futile(), Some((600, 8000)), "{entry}");
            assert_eq!(rules.receive_path.backlog_futile(), Some(2000), "{entry}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains("accept_queue_futile[0] is ") && warnings[0].contains(why),
                "{}",
                warnings[0]
            );
            let kept = serde_json::to_string(&RulesState::of(&rules, Some(250))).unwrap();
            assert_eq!(
                kept,
                format!(
                    r#"{{"receive_path_futile":[600,8000],"whole_ticks":true,"accept_queue_futile":[{LISTENER_9090}],"receive_path_backlog_futile":2000}}"#
                ),
                "saved again without it"
            );
        }
    }

    /// A list of listeners' marks that is not a list is left out, with a warning; the receive
    /// path's marks are taken up.
    #[test]
    fn a_listener_list_that_is_not_a_list_is_left_out_and_the_rest_kept() {
        for list in [LISTENER_8080, "5", "null", "\"none\""] {
            let (rules, warnings) = taken_up(&file_with("accept_queue_futile", list));
            assert_eq!(ports(&rules), [] as [u16; 0], "{list}");
            assert_eq!(rules.receive_path.futile(), Some((600, 8000)), "{list}");
            assert_eq!(rules.receive_path.backlog_futile(), Some(2000), "{list}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains("accept_queue_futile is ")
                    && warnings[0].contains("expected a sequence"),
                "{}",
                warnings[0]
            );
        }
    }

    /// Defect: budgets of the receive path's mark that were not a pair of integers failed the
    /// whole file. They are left out, with a warning, and the listeners' and the backlog's marks
    /// are taken up.
    #[test]
    fn a_malformed_budgets_mark_is_left_out_and_the_rest_kept() {
        for (mark, why) in [
            ("\"600,8000\"", "invalid type: string"),
            ("[600]", "invalid length 1"),
            (
                "[600,\"8000\"]",
                "invalid type: string \"8000\", expected i64",
            ),
            ("[600,8000,16000]", "invalid length 3"),
            ("[600.5,8000]", "invalid type: floating point"),
            ("{\"budget\":600}", "invalid type: map"),
            ("true", "invalid type: boolean"),
        ] {
            let (rules, warnings) = taken_up(&file_with("receive_path_futile", mark));
            assert_eq!(rules.receive_path.futile(), None, "{mark}");
            assert_eq!(ports(&rules), [8080, 9090], "{mark}");
            assert_eq!(rules.receive_path.backlog_futile(), Some(2000), "{mark}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains(&format!("receive_path_futile is {mark}"))
                    && warnings[0].contains(why),
                "{}",
                warnings[0]
            );
        }
        let (rules, warnings) = taken_up(&file_with("receive_path_futile", "null"));
        assert_eq!(rules.receive_path.futile(), None);
        assert_eq!(ports(&rules), [8080, 9090]);
        assert_eq!(
            warnings,
            [] as [String; 0],
            "null is no mark, as the file says it"
        );
    }

    /// Defect: a `whole_ticks` that was not a boolean failed the whole file. It is read as absent
    /// (an earlier version's file), with a warning: the budgets' mark is checked against the tick
    /// rate, so at HZ 250 a mark of a raise within one tick (2000 to 4000 µs) is dropped, one
    /// that moved the tick stands; the other marks are taken up.
    #[test]
    fn a_malformed_whole_ticks_is_read_as_absent() {
        for flag in ["\"yes\"", "1", "null", "[true]"] {
            let within_one_tick = file_with("whole_ticks", flag).replace("8000]", "4000]");
            let (rules, warnings) = taken_up(&within_one_tick);
            assert_eq!(
                rules.receive_path.futile(),
                None,
                "{flag}: checked, dropped"
            );
            assert_eq!(ports(&rules), [8080, 9090], "{flag}");
            assert_eq!(rules.receive_path.backlog_futile(), Some(2000), "{flag}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains(&format!("whole_ticks is {flag}"))
                    && warnings[0].contains("read as absent"),
                "{}",
                warnings[0]
            );
            let (rules, _) = taken_up(&file_with("whole_ticks", flag));
            assert_eq!(rules.receive_path.futile(), Some((600, 8000)), "{flag}");
        }
    }
}
