//! `kpo pending`, `kpo approve ID`, `kpo reject ID`, `kpo explain PARAM`: one trait,
//! [`ApprovalControl`], served by the running agent's desk through the control socket
//! ([`SocketControl`]), or, while the agent is down, by [`Offline`]: the change path and the desk
//! opened on the state directory under its lock.
use std::path::Path;

use super::{desk::Desk, ApprovalItem, ApproveOutcome, Explained};
use crate::{
    api::{client::SocketControl, reply, Reply, Request},
    change::ChangePath,
    control::{open_offline_kernel, open_offline_kernel_to_read, ControlError},
};

/// What an operator can do with approvals.
pub trait ApprovalControl {
    /// Pending approvals, oldest first (those past their time are expired first).
    fn pending(&mut self) -> Result<Vec<ApprovalItem>, ControlError>;
    fn approve(&mut self, id: &str, by: &str) -> Result<ApproveOutcome, ControlError>;
    fn reject(
        &mut self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalItem, ControlError>;
    /// The latest `limit` recommendations for a parameter name or address, newest first.
    fn explain(&mut self, param: &str, limit: usize) -> Result<Vec<Explained>, ControlError>;
}

/// The desk with the change path it approves through.
pub struct AtDesk<'a> {
    pub path: &'a mut ChangePath,
    pub desk: &'a mut Desk,
}

impl ApprovalControl for AtDesk<'_> {
    fn pending(&mut self) -> Result<Vec<ApprovalItem>, ControlError> {
        let mut items = self.desk.pending()?;
        // Every `kpo approve` is refused while the file says something else than the policy
        // in force (s60 story BQ-3: only `kpo status` said so).
        let file_differs = self.path.policy.changed_on_disk();
        for item in &mut items {
            if let Some(why) = &file_differs {
                item.approving_now = Some(format!("refused for now: {why}"));
                continue;
            }
            let proposal = crate::policy::Proposal {
                address: item.parameter.clone(),
                value: item.value.clone(),
                source: item.source.into(),
                reason: String::new(),
            };
            if let crate::policy::Decision::Refused(why) = self.path.preview_approved(&proposal) {
                item.approving_now = Some(format!("refused for now: {why}"));
            }
        }
        Ok(items)
    }

    fn approve(&mut self, id: &str, by: &str) -> Result<ApproveOutcome, ControlError> {
        self.desk.approve(self.path, id, by)
    }

    fn reject(
        &mut self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalItem, ControlError> {
        self.desk.reject(id, by, reason)
    }

    fn explain(&mut self, param: &str, limit: usize) -> Result<Vec<Explained>, ControlError> {
        let mut explained = self.desk.explain(param, limit);
        let reverts = crate::journal::reverted_by(&self.path.journal.entries());
        for e in &mut explained {
            let approved = e.approval.as_ref().and_then(|a| match a.state {
                super::ApprovalState::Approved { journal_id, .. } => journal_id,
                _ => None,
            });
            e.reverted_by =
                (e.entry.journal_id.or(approved)).and_then(|id| reverts.get(&id).copied());
        }
        Ok(explained)
    }
}

/// Serves an approval request (`pending`, `approve`, `reject`, `explain`); `None` for others.
pub fn handle(control: &mut dyn ApprovalControl, request: &Request) -> Option<Reply> {
    Some(match request {
        Request::Pending => reply(control.pending()),
        Request::Approve { id, by } => reply(control.approve(id, by)),
        Request::Reject { id, by, reason } => reply(control.reject(id, by, reason.as_deref())),
        // As `kpo explain --limit 0` is: an empty list reads as "no recommendation recorded".
        Request::Explain { limit: 0, .. } => {
            Reply::Error("explain: limit must be at least 1 (0 would show none)".into())
        }
        // Checked and made canonical as `kpo explain`'s argument is: a slashed name answered
        // nothing, and a typo "no recommendations" (s55 story AU-5), as `resume` does.
        Request::Explain { param, limit } => match crate::cli::param_arg(param) {
            Ok(param) => reply(control.explain(&param, *limit)),
            Err(why) => Reply::Error(
                ControlError::NotAParameter(format!("{param:?} is not a parameter: {why}"))
                    .to_string(),
            ),
        },
        _ => return None,
    })
}

/// The state directory opened by the CLI while the agent is down.
pub struct Offline {
    pub path: ChangePath,
    pub desk: Desk,
}

impl Offline {
    /// Takes the state directory's lock (failing at once if the agent holds it), reconciles the
    /// journal as every offline command does, and opens the approvals. No webhook: it is the
    /// running agent's.
    pub fn open(policy: Option<&Path>, state_dir: &Path) -> Result<Offline, ControlError> {
        crate::control::require_state_dir(state_dir)?;
        let (path, reconciled) = open_offline_kernel(policy, state_dir)?;
        Self::at_desk(path, &reconciled)
    }

    /// [`Offline::open`] for a command that only reads (`kpo pending`, `kpo explain`): a
    /// read-only state directory is read as it is on disk
    /// ([`crate::control::open_offline_to_read`]), after the warning saying so.
    pub fn open_to_read(policy: Option<&Path>, state_dir: &Path) -> Result<Offline, ControlError> {
        crate::control::require_state_dir(state_dir)?;
        let opened = open_offline_kernel_to_read(policy, state_dir)?;
        if let Some(why) = &opened.read_only {
            crate::say!("kpo: warning: {why}");
        }
        Self::at_desk(opened.path, &opened.reconciled)
    }

    fn at_desk(
        path: ChangePath,
        reconciled: &[crate::change::ChangeReport],
    ) -> Result<Offline, ControlError> {
        // Through the logger, as crate::cli's commands do: it writes once a line the journal
        // or the store logged already as it loaded.
        for w in path.journal.warnings() {
            tracing::warn!("{w}");
        }
        for r in reconciled {
            crate::say!("kpo: reconciled: {}", r.describe());
        }
        let desk = Desk::open_offline(&path.journal, path.policy.approvals.clone())?;
        for w in desk.store().warnings() {
            tracing::warn!("{w}");
        }
        Ok(Offline { path, desk })
    }

    fn at(&mut self) -> AtDesk<'_> {
        AtDesk {
            path: &mut self.path,
            desk: &mut self.desk,
        }
    }
}

impl ApprovalControl for Offline {
    fn pending(&mut self) -> Result<Vec<ApprovalItem>, ControlError> {
        self.at().pending()
    }
    fn approve(&mut self, id: &str, by: &str) -> Result<ApproveOutcome, ControlError> {
        self.at().approve(id, by)
    }
    fn reject(
        &mut self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalItem, ControlError> {
        self.at().reject(id, by, reason)
    }
    fn explain(&mut self, param: &str, limit: usize) -> Result<Vec<Explained>, ControlError> {
        self.at().explain(param, limit)
    }
}

impl ApprovalControl for SocketControl {
    fn pending(&mut self) -> Result<Vec<ApprovalItem>, ControlError> {
        Ok(self.call(&Request::Pending)?)
    }
    fn approve(&mut self, id: &str, by: &str) -> Result<ApproveOutcome, ControlError> {
        Ok(self.call(&Request::Approve {
            id: id.into(),
            by: by.into(),
        })?)
    }
    fn reject(
        &mut self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalItem, ControlError> {
        Ok(self.call(&Request::Reject {
            id: id.into(),
            by: by.into(),
            reason: reason.map(str::to_string),
        })?)
    }
    fn explain(&mut self, param: &str, limit: usize) -> Result<Vec<Explained>, ControlError> {
        Ok(self.call(&Request::Explain {
            param: param.into(),
            limit,
        })?)
    }
}

#[cfg(test)]
mod tests {
    //! The approval requests over a real socket: the agent side answering from a desk and a
    //! change path over an in-memory kernel, the CLI side as an `ApprovalControl`.
    use std::time::Duration;

    use super::*;
    use crate::{
        actuate::param::Value,
        advise::recommendation::{Recommendation, Source, WindowRef},
        api::server::Server,
        change::{tests::kernel, ChangeStatus},
        journal::{Holder, Journal},
        policy::Policy,
    };

    const NS: &str = "net.core.somaxconn@netns:4026539999";

    /// Defect (s39 docs review): the socket answered `"limit":0` with an empty list, which reads
    /// as no recommendation recorded, where `kpo explain --limit 0` is refused.
    #[test]
    fn an_explain_of_no_entries_is_refused_as_the_cli_refuses_it() {
        let request: Request =
            serde_json::from_str(r#"{"op":"explain","param":"net.core.somaxconn","limit":0}"#)
                .unwrap();
        assert_eq!(
            handle(&mut Asked::default(), &request),
            Some(Reply::Error(
                "explain: limit must be at least 1 (0 would show none)".into()
            ))
        );
    }

    /// The parameter an `explain` asks about, as `explain` was asked.
    #[derive(Default)]
    struct Asked(Option<String>);
    impl ApprovalControl for Asked {
        fn pending(&mut self) -> Result<Vec<ApprovalItem>, ControlError> {
            unreachable!()
        }
        fn approve(&mut self, _: &str, _: &str) -> Result<ApproveOutcome, ControlError> {
            unreachable!()
        }
        fn reject(
            &mut self,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> Result<ApprovalItem, ControlError> {
            unreachable!()
        }
        fn explain(&mut self, param: &str, limit: usize) -> Result<Vec<Explained>, ControlError> {
            assert!(limit > 0, "asked for no entries");
            self.0 = Some(param.to_string());
            Ok(Vec::new())
        }
    }

    /// Defect (s55 story AU-5): the socket's `explain` took its `param` as written: a slashed
    /// name found nothing, and a name that names nothing answered "no recommendations", where
    /// `kpo explain` normalizes the one and refuses the other.
    #[test]
    fn an_explain_over_the_socket_takes_its_parameter_as_the_cli_does() {
        let ask = |param: &str| {
            let request: Request = serde_json::from_value(
                serde_json::json!({"op": "explain", "param": param, "limit": 1}),
            )
            .unwrap();
            let mut control = Asked::default();
            let reply = handle(&mut control, &request).unwrap();
            (reply, control.0)
        };
        let (reply, asked) = ask("net/core/somaxconn");
        assert_eq!(reply, Reply::Ok(serde_json::json!([])));
        assert_eq!(asked.as_deref(), Some("net.core.somaxconn"));
        for bad in ["", "net..core", "net.core.*"] {
            let (reply, asked) = ask(bad);
            let Reply::Error(why) = reply else {
                panic!("{bad:?}: {reply:?}")
            };
            assert!(why.contains("is not a parameter"), "{bad:?}: {why}");
            assert_eq!(asked, None);
        }
    }

    /// A desk and change path over a fresh state directory in `dir`, somaxconn in mode recommend
    /// and at 16 in namespace [`NS`].
    fn somaxconn_in_recommend(
        dir: &std::path::Path,
    ) -> (Desk, ChangePath, crate::change::tests::FakeActuators) {
        let k = kernel(&[(NS, Value::Int(16))]);
        let journal = Journal::open(&dir.join("state"), Holder::Agent, Duration::ZERO).unwrap();
        let policy = Policy::parse(
            "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nmax = 65535\n",
            "t.toml",
        )
        .unwrap();
        let desk = Desk::open(&journal, policy.approvals.clone(), false).unwrap();
        (
            desk,
            ChangePath::new(policy, journal, Box::new(k.clone())),
            k,
        )
    }

    /// The rules' advice to raise somaxconn at `address` from 16 to `value`.
    fn rules_advice(address: &str, value: i128) -> Recommendation {
        let parameter: crate::actuate::param::ParamAddress = address.parse().unwrap();
        Recommendation {
            id: Recommendation::make_id(Source::Rules, 1, &parameter, Some(&Value::Int(value))),
            parameter,
            current_value: Some(Value::Int(16)),
            recommended_value: Some(Value::Int(value)),
            can_auto_apply: false,
            reason: "listener dropped 24".into(),
            confidence: 0.9,
            source: Source::Rules,
            window: WindowRef {
                index: 1,
                end: "2026-01-01T00:00:00Z".into(),
            },
            application: None,
            netns_cookie: None,
        }
    }

    /// `kpo explain` of a recommendation whose change was reverted since says so: `approved
    /// (journal #1)` alone read as a value still in place (s50 storyY F5).
    #[test]
    fn explain_says_a_change_was_reverted_since() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desk, mut path, _k) = somaxconn_in_recommend(dir.path());
        desk.consider(&mut path, vec![rules_advice(NS, 32)], &mut Vec::new);
        let mut at = AtDesk {
            path: &mut path,
            desk: &mut desk,
        };
        let applied = at.approve("ap-1", "op").unwrap().report.journal_id.unwrap();
        let explained = at.explain("net.core.somaxconn", 10).unwrap();
        assert_eq!(explained[0].reverted_by, None);
        let revert = (at.path)
            .revert(applied, crate::policy::Source::Operator, "test")
            .unwrap();
        let explained = at.explain("net.core.somaxconn", 10).unwrap();
        assert_eq!(explained[0].reverted_by, revert.journal_id);
        let said = crate::approvals::cli::done(&explained[0]);
        assert!(
            said.ends_with(&format!(
                "(journal #{applied}), reverted since (journal #{})",
                revert.journal_id.unwrap()
            )),
            "{said}"
        );
    }

    #[test]
    fn pending_approve_reject_and_explain_through_the_socket() {
        if crate::api::socket_test_skipped_unless_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut desk, mut path, k) = somaxconn_in_recommend(dir.path());
        // Two namespaces, one approval each.
        const OTHER: &str = "net.core.somaxconn@netns:4026540015";
        k.0.lock()
            .unwrap()
            .values
            .insert(OTHER.into(), Value::Int(16));
        let recs = [(NS, 32), (OTHER, 48)].map(|(address, v)| rules_advice(address, v));
        desk.consider(&mut path, recs.to_vec(), &mut Vec::new);

        let socket = dir.path().join("kpo.sock");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let at = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (_server, mut requests) = Server::bind(&at).unwrap();
                ready_tx.send(()).unwrap();
                loop {
                    tokio::select! {
                        Some(incoming) = requests.recv() => {
                            let mut at = AtDesk { path: &mut path, desk: &mut desk };
                            let reply = handle(&mut at, &incoming.request).expect("an approval request");
                            let _ = incoming.answer.send(reply);
                        }
                        _ = &mut stopped => break,
                    }
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

        let mut c = SocketControl::connect(&socket)
            .unwrap()
            .expect("agent answers");
        let pending = c.pending().unwrap();
        let ids: Vec<_> = pending.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["ap-1", "ap-2"]);
        let approved = c.approve("ap-1", "op").unwrap();
        assert_eq!(approved.report.status, ChangeStatus::Applied);
        assert_eq!(approved.approval.state.name(), "approved");
        assert_eq!(k.0.lock().unwrap().values[NS], Value::Int(32));
        let rejected = c.reject("2", "op", Some("no")).unwrap();
        assert_eq!(rejected.state.name(), "rejected");
        assert!(c.pending().unwrap().is_empty());
        let err = c.approve("ap-2", "op").unwrap_err();
        assert!(
            err.to_string().contains("can no longer be approved"),
            "{err}"
        );
        let explained = c.explain("net.core.somaxconn", 10).unwrap();
        assert_eq!(explained.len(), 2);
        assert_eq!(
            explained[0].approval.as_ref().unwrap().id,
            "ap-2",
            "newest first"
        );
        assert_eq!(
            explained[1].approval.as_ref().unwrap().state,
            approved.approval.state
        );
        let _ = stop.send(());
        thread.join().unwrap();
    }
}
