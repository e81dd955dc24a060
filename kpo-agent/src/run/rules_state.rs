//! What the rules judged that must outlive the agent: the budgets a raise of the receive-path
//! rule went to without cutting the squeezes, the `netdev_max_backlog` a raise of it went to
//! without cutting the drops, and the listeners a raise of somaxconn did not cut the drops of
//! (docs/rules.md). Judged over windows that the journal does not keep, so it cannot be read back
//! from there; it is kept in [`RULES_FILE`] in the state directory, replaced atomically whenever
//! it changes. A file that cannot be read is logged and the rules start without it, as they did
//! before it was kept; a mark that is not what it should be is left out with a warning, and the
//! rest of the file stands.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    advise::rules::{accept_queue::FutileRaise, RuleSet},
    journal::JournalError,
};

pub const RULES_FILE: &str = "rules.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RulesState {
    /// (`net.core.netdev_budget`, `net.core.netdev_budget_usecs`) a raise to which did not help.
    pub receive_path_futile: Option<(i64, i64)>,
    /// The mark was judged by a version that raises `netdev_budget_usecs` by whole ticks, on a
    /// kernel whose tick rate it knew. Without it, the mark may come from a raise that stayed
    /// within one tick and so changed nothing (an earlier version's, or one made while the rate
    /// was unknown): it is checked against the kernel's tick rate at start
    /// ([`RulesState::restore`]).
    pub whole_ticks: bool,
    /// Listeners a raise of `net.core.somaxconn` to whose limit did not cut their drops; left
    /// out of the file when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accept_queue_futile: Vec<FutileRaise>,
    /// The `net.core.netdev_max_backlog` a raise to which did not cut the drops; left out of the
    /// file when there is none (as in files an earlier version wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_path_backlog_futile: Option<Checked<i64>>,
}

/// A mark as the file has it: of the type it should be, or anything else (a file edited by hand,
/// or a future version's), which is left out when the rules take the file up instead of failing
/// the whole file and losing the other marks with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Checked<T> {
    Valid(T),
    Malformed(serde_json::Value),
}

impl RulesState {
    /// What to save of `rules`, which judged with the tick rate `hz` (`None`: unknown, so its
    /// raises of the time budget were not by whole ticks).
    pub fn of(rules: &RuleSet, hz: Option<u32>) -> Self {
        RulesState {
            receive_path_futile: rules.receive_path.futile(),
            whole_ticks: hz.is_some(),
            accept_queue_futile: rules.accept_queue.futile(),
            receive_path_backlog_futile: rules.receive_path.backlog_futile().map(Checked::Valid),
        }
    }

    /// Gives the rules what an earlier run judged. A judgement an earlier version made, whose
    /// raise stayed within one tick at `hz` (the kernel's tick rate), says nothing and is dropped
    /// (logged); this version's judgements stand (a raise that left the time budget alone, at HZ
    /// 100 say, judged the packet budget).
    pub fn restore(&self, rules: &mut RuleSet, hz: Option<u32>) {
        let hz = hz.filter(|_| !self.whole_ticks);
        if let Some(why) = rules
            .receive_path
            .restore_futile(self.receive_path_futile, hz)
        {
            tracing::info!("rules: {why}");
        }
        for why in rules.accept_queue.restore_futile(&self.accept_queue_futile) {
            tracing::warn!("rules: {why}");
        }
        let backlog = match &self.receive_path_backlog_futile {
            None => None,
            Some(Checked::Valid(value)) => Some(*value),
            Some(Checked::Malformed(other)) => {
                tracing::warn!(
                    "rules: a futile raise of {} to {other}, not an integer: left out",
                    crate::advise::rules::receive_path::MAX_BACKLOG
                );
                None
            }
        };
        if let Some(why) = rules.receive_path.restore_backlog_futile(backlog) {
            tracing::warn!("rules: {why}");
        }
    }

    /// The state an earlier run left in `dir`; none when there is no file.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(RULES_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RulesState::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
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
            receive_path_futile: Some((600, 4000)),
            whole_ticks: true,
            accept_queue_futile: vec![FutileRaise {
                netns: 4026532281,
                port: 8080,
                family: "ipv4".into(),
                from: 128,
                to: 256,
                drops_before: 1200.0,
                drops_after: 1150.0,
            }],
            receive_path_backlog_futile: Some(Checked::Valid(2000)),
        };
        judged.save(dir.path()).unwrap();
        assert_eq!(RulesState::load(dir.path()), Ok(judged));
        std::fs::write(dir.path().join(RULES_FILE), "{\"receive_path_futile\":[600").unwrap();
        let e = RulesState::load(dir.path()).unwrap_err();
        assert!(e.contains(RULES_FILE), "{e}");
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
        assert!(!saved.whole_ticks);
        let text = serde_json::to_string(&saved).unwrap();
        let restored = |hz: Option<u32>| {
            let state: RulesState = serde_json::from_str(&text).unwrap();
            let mut rules = RuleSet::default();
            state.restore(&mut rules, hz);
            rules.receive_path.futile()
        };
        assert_eq!(restored(None), Some((600, 4000)));
        assert_eq!(restored(Some(250)), None);
        assert!(RulesState::of(&rules, Some(250)).whole_ticks);
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
}
