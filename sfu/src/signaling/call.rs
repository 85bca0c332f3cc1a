//! A Call and its Members: who is in it, in which state, and who is told what. Pure data plus
//! the small queries the call model's rules are written with.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::protocol::Media;

/// A member's place in a call. A member who leaves is removed from the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Invited while offline: the invite waits for them to log in (push flow).
    Invited,
    /// The invite was delivered to a session.
    Ringing,
    /// In the call (the caller from the start, callees after `accept`).
    Joined,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub user: String,
    pub state: MemberState,
    /// Who invited them and the `to` of that request, to re-send `invited` on login.
    pub inviter: String,
    pub invite_to: Vec<String>,
    pub invited_at: Instant,
    /// When the invite times out (meaningless once joined).
    pub deadline: Instant,
    pub audio_muted: bool,
    pub video_muted: bool,
    pub held: bool,
}

impl Member {
    pub fn pending(&self) -> bool {
        matches!(self.state, MemberState::Invited | MemberState::Ringing)
    }
    pub fn joined(&self) -> bool {
        self.state == MemberState::Joined
    }
}

#[derive(Clone, Debug)]
pub struct Call {
    pub id: String,
    pub group: bool,
    pub media: Media,
    pub caller: String,
    pub client_state: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub created: Instant,
    /// Set by the first `accept`: from then on the caller's hangup is a plain leave.
    pub answered: bool,
    pub members: Vec<Member>,
    /// Callees whose cluster claim is in flight (`ModelConfig::claims`), with who invited
    /// them and the `to` of that request: members once granted.
    pub claiming: Vec<(String, String, Vec<String>)>,
}

impl Call {
    pub fn member(&self, user: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.user == user)
    }

    pub fn member_mut(&mut self, user: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.user == user)
    }

    pub fn remove(&mut self, user: &str) -> Option<Member> {
        let i = self.members.iter().position(|m| m.user == user)?;
        Some(self.members.remove(i))
    }

    pub fn joined(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.joined())
    }

    /// Joined members other than `user`: who hears about `user`.
    pub fn others_joined<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a str> {
        self.joined()
            .filter(move |m| m.user != user)
            .map(|m| m.user.as_str())
    }

    pub fn pending_count(&self) -> usize {
        self.members.iter().filter(|m| m.pending()).count()
    }

    /// PROTOCOL.md: the call goes on while at least two members are joined or any invite is
    /// pending (or being claimed). With nobody joined at all, pending invites are cancelled: nobody would be
    /// there to talk to.
    pub fn should_end(&self) -> bool {
        let joined = self.joined().count();
        joined == 0 || (joined < 2 && self.pending_count() == 0 && self.claiming.is_empty())
    }

    /// Whether `user` is a member or being claimed for this call.
    pub fn involves(&self, user: &str) -> bool {
        self.member(user).is_some() || self.claiming.iter().any(|(u, _, _)| u == user)
    }
}
