//! `kpo pending`, `kpo approve ID`, `kpo reject ID`, `kpo explain PARAM`: one trait,
//! [`ApprovalControl`], served by the running agent's desk through the control socket
//! ([`SocketControl`]), or, while the agent is down, by [`Offline`]: the change path and the desk
//! opened on the state directory under its lock.
use std::path::Path;

use super::{desk::Desk, ApprovalItem, ApproveOutcome, Explained};
use crate::{
    api::{client::SocketControl, reply, Reply, Request},
    change::ChangePath,
    control::{open_offline_kernel, ControlError},
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
        self.desk.pending()
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
        Ok(self.desk.explain(param, limit))
    }
}

/// Serves an approval request (`pending`, `approve`, `reject`, `explain`); `None` for others.
pub fn handle(control: &mut dyn ApprovalControl, request: &Request) -> Option<Reply> {
    Some(match request {
        Request::Pending => reply(control.pending()),
        Request::Approve { id, by } => reply(control.approve(id, by)),
        Request::Reject { id, by, reason } => reply(control.reject(id, by, reason.as_deref())),
        Request::Explain { param, limit } => reply(control.explain(param, *limit)),
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
        let (path, reconciled) = open_offline_kernel(policy, state_dir)?;
        for w in path.journal.warnings() {
            eprintln!("kpo: warning: {w}");
        }
        for r in &reconciled {
            eprintln!("kpo: reconciled: {}", r.describe());
        }
        let desk = Desk::open(&path.journal, path.policy.approvals.clone(), false)?;
        for w in desk.store().warnings() {
            eprintln!("kpo: warning: {w}");
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
