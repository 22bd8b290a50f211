//! Who may do what: the one role check every aggregate's commands make.

use krisbud_proto::{Actor, Problem, Role};

/// Refuses an actor holding none of `roles`, naming them.
pub(crate) fn require(actor: &Actor, roles: &[Role]) -> Result<(), Problem> {
    if roles.iter().any(|r| actor.has(*r)) {
        Ok(())
    } else {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(Problem::forbidden(format!(
            "{} lacks the role for this; it needs one of: {}",
            actor.user,
            names.join(", ")
        )))
    }
}
