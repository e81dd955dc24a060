//! What the rules judged that must outlive the agent: the budgets a raise of the receive-path
//! rule went to without cutting the squeezes, and the listeners a raise of somaxconn did not cut
//! the drops of (docs/rules.md). Judged over windows that the journal does not keep, so it cannot
//! be read back from there; it is kept in
//! [`RULES_FILE`] in the state directory, replaced atomically whenever it changes. A file that
//! cannot be read is logged and the rules start without it, as they did before it was kept.
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
}

impl RulesState {
    /// What to save of `rules`, which judged with the tick rate `hz` (`None`: unknown, so its
    /// raises of the time budget were not by whole ticks).
    pub fn of(rules: &RuleSet, hz: Option<u32>) -> Self {
        RulesState {
            receive_path_futile: rules.receive_path.futile(),
            whole_ticks: hz.is_some(),
            accept_queue_futile: rules.accept_queue.futile(),
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
}
