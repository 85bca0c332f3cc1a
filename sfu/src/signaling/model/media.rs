//! The call model's side of media: `offer`/`answer` routed to the Worker with a ticket, mute
//! and hold (the Member is their one owner: every command that creates or changes a Peer
//! carries the member's whole state), and what the Worker reports, turned into responses and
//! notifications for the right members.

use serde_json::{Value, json};

use super::{CallModel, ConnId, Output};
use crate::media::simulcast::VideoChoice;
use crate::media::{Command, Leg, MediaError, MediaEvent, MemberMedia};
use crate::protocol::params as parse_params;
use crate::protocol::{
    Media, Method, Notification, QualityDirection, RequestId, RpcError, UserVolume, codes,
};
use crate::signaling::call::Member;
use crate::signaling::params::{
    self, CandidateParams, HoldParams, MuteParams, SdpParams, StreamChoice, SubscribeParams,
};

impl From<Leg> for QualityDirection {
    fn from(leg: Leg) -> Self {
        match leg {
            Leg::Up => QualityDirection::Up,
            Leg::Down => QualityDirection::Down,
        }
    }
}

/// The media state the Worker must enforce for a member.
pub(super) fn member_media(m: &Member) -> MemberMedia {
    MemberMedia {
        audio_muted: m.audio_muted,
        video_muted: m.video_muted,
        held: m.held,
    }
}

impl CallModel {
    /// `offer` / `answer`: checked here, carried out by the Worker hosting the call, which
    /// answers through [`CallModel::media_event`] with the ticket.
    pub(super) fn sdp_request(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        method: Method,
        params: Value,
    ) -> Result<(), RpcError> {
        let Some(Some(me)) = self.conns.get(&conn).cloned() else {
            return Err(RpcError::unauthorized("not logged in: send login first"));
        };
        let p: SdpParams = parse_params(params)?;
        params::check_sdp(&p.sdp)?;
        let state = member_media(self.joined_member_mut(&me, &p.call_id)?);
        let video = self
            .calls
            .get(&p.call_id)
            .is_some_and(|c| c.media == Media::Video);
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.tickets.insert(ticket, (conn, id.clone(), method));
        let (call_id, user, sdp) = (p.call_id, me, p.sdp);
        let cmd = if method == Method::Offer {
            Command::Offer {
                call_id,
                user,
                sdp,
                video,
                state,
                ticket,
            }
        } else {
            Command::Answer {
                call_id,
                user,
                sdp,
                ticket,
            }
        };
        self.out.push_back(Output::Media(cmd));
        Ok(())
    }

    pub(super) fn mute(&mut self, me: &str, p: &MuteParams) -> Result<Value, RpcError> {
        let m = self.joined_member_mut(me, &p.call_id)?;
        if p.audio.is_none() && p.video.is_none() {
            return Ok(json!({}));
        }
        let audio_off = p.audio == Some(true) && !m.audio_muted;
        let video_off = p.video == Some(true) && !m.video_muted;
        if let Some(a) = p.audio {
            m.audio_muted = a;
        }
        if let Some(v) = p.video {
            m.video_muted = v;
        }
        let state = member_media(m);
        self.set_media_state(&p.call_id, me, state);
        let call = self
            .calls
            .get(&p.call_id)
            .ok_or_else(RpcError::no_such_call)?;
        let video_call = call.media == Media::Video;
        let audience = Self::audience(call, me);
        if audio_off {
            self.tell(
                &audience,
                Notification::AudioAvailable {
                    call_id: p.call_id.clone(),
                    user: me.to_string(),
                    available: false,
                },
            );
        }
        if video_off && video_call {
            self.tell(
                &audience,
                Notification::VideoAvailable {
                    call_id: p.call_id.clone(),
                    user: me.to_string(),
                    available: false,
                },
            );
        }
        Ok(json!({}))
    }

    pub(super) fn hold(&mut self, me: &str, p: HoldParams) -> Result<Value, RpcError> {
        let m = self.joined_member_mut(me, &p.call_id)?;
        m.held = p.held;
        let state = member_media(m);
        self.set_media_state(&p.call_id, me, state);
        Ok(json!({}))
    }

    pub(super) fn candidate(&mut self, me: &str, p: CandidateParams) -> Result<Value, RpcError> {
        params::check_candidate(&p.candidate)?;
        self.joined_member_mut(me, &p.call_id)?;
        self.out.push_back(Output::Media(Command::Candidate {
            call_id: p.call_id,
            user: me.to_string(),
            candidate: p.candidate,
        }));
        Ok(json!({}))
    }

    /// `subscribe`: which of another member's video `me` receives (the media core keeps it
    /// for the call, across reconnects).
    pub(super) fn subscribe(&mut self, me: &str, p: &SubscribeParams) -> Result<Value, RpcError> {
        self.joined_member_mut(me, &p.call_id)?;
        if p.user == me {
            return Err(RpcError::invalid_params(
                "user: you do not receive your own video",
            ));
        }
        let call = self
            .calls
            .get(&p.call_id)
            .ok_or_else(RpcError::no_such_call)?;
        if call.member(&p.user).is_none() {
            return Err(RpcError::invalid_params("user: not a member of this call"));
        }
        self.out.push_back(Output::Media(Command::Subscribe {
            call_id: p.call_id.clone(),
            user: me.to_string(),
            publisher: p.user.clone(),
            video: match p.video {
                StreamChoice::High => VideoChoice::High,
                StreamChoice::Low => VideoChoice::Low,
                StreamChoice::Off => VideoChoice::Off,
            },
        }));
        Ok(json!({}))
    }

    fn set_media_state(&mut self, call_id: &str, user: &str, state: MemberMedia) {
        self.out.push_back(Output::Media(Command::SetState {
            call_id: call_id.to_string(),
            user: user.to_string(),
            state,
        }));
    }

    /// What a Worker reported: replies to `offer`/`answer`, our offers, volume, quality,
    /// availability and failures, for the call's joined members. Datagrams are not for us.
    pub fn media_event(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Transmit { .. } => {}
            MediaEvent::Reply { ticket, result } => {
                let Some((conn, id, method)) = self.tickets.remove(&ticket) else {
                    return;
                };
                let result = match result {
                    Ok(Some(sdp)) => Ok(json!({ "sdp": sdp })),
                    Ok(None) => Ok(json!({})),
                    Err(e) => Err(rpc_error(e)),
                };
                self.respond_at(self.out.len(), conn, id, method, result);
            }
            MediaEvent::Offer { call_id, user, sdp } => {
                if self.joined(&call_id, &user).is_some() {
                    self.notify(&user, Notification::Offer { call_id, sdp });
                }
            }
            MediaEvent::Volume {
                call_id,
                volumes,
                total,
            } => {
                let volumes = volumes
                    .into_iter()
                    .map(|(user, volume)| UserVolume { user, volume })
                    .collect();
                let n = Notification::Volume {
                    call_id: call_id.clone(),
                    volumes,
                    total,
                };
                self.tell_call(&call_id, "", n);
            }
            MediaEvent::Quality {
                call_id,
                user,
                leg,
                report,
            } => {
                let n = Notification::Quality {
                    call_id: call_id.clone(),
                    user,
                    direction: leg.into(),
                    mos: report.mos,
                    quality: report.level,
                    rtt_ms: report.rtt_ms,
                    jitter_ms: report.jitter_ms,
                    loss: report.loss,
                };
                self.tell_call(&call_id, "", n);
            }
            MediaEvent::Available {
                call_id,
                user,
                kind,
                available,
            } => {
                // The Worker knows mute too, but the call model has the last word: a muted
                // member's media is never announced as available.
                let Some(m) = self.joined(&call_id, &user) else {
                    return;
                };
                let state = member_media(m);
                if available && (state.muted(kind) || state.held) {
                    return;
                }
                let (c, u) = (call_id.clone(), user.clone());
                let n = match kind {
                    str0m::media::MediaKind::Audio => Notification::AudioAvailable {
                        call_id: c,
                        user: u,
                        available,
                    },
                    str0m::media::MediaKind::Video => Notification::VideoAvailable {
                        call_id: c,
                        user: u,
                        available,
                    },
                };
                self.tell_call(&call_id, &user, n);
            }
            MediaEvent::Failed {
                call_id,
                user,
                failure,
            } => {
                if self.joined(&call_id, &user).is_some() {
                    let reason = failure.as_str().to_string();
                    self.notify(&user, Notification::MediaFailed { call_id, reason });
                }
            }
            MediaEvent::VideoPaused {
                call_id,
                user,
                publisher,
                paused,
            } => {
                if self.joined(&call_id, &user).is_some() {
                    let n = Notification::StreamPaused {
                        call_id,
                        user: publisher,
                        paused,
                    };
                    self.notify(&user, n);
                }
            }
            MediaEvent::Reoffer { call_id, user } => {
                if self.joined(&call_id, &user).is_some() {
                    let reason = "compact".to_string();
                    self.notify(&user, Notification::Reoffer { call_id, reason });
                }
            }
        }
    }

    /// A media command the Worker could not take: its request, if any, is answered with an
    /// internal error so the client is never left waiting.
    pub fn media_undelivered(&mut self, cmd: &Command) {
        if let Some((conn, id, method)) = cmd.ticket().and_then(|t| self.tickets.remove(&t)) {
            let e = RpcError::new(codes::INTERNAL, "internal error: media worker unavailable");
            self.respond_at(self.out.len(), conn, id, method, Err(e));
        }
    }

    /// `user` as a joined member of `call_id`.
    fn joined(&self, call_id: &str, user: &str) -> Option<&Member> {
        self.calls.get(call_id)?.member(user).filter(|m| m.joined())
    }

    /// Tells the joined members of `call_id` but `except`.
    fn tell_call(&mut self, call_id: &str, except: &str, n: Notification) {
        if let Some(call) = self.calls.get(call_id) {
            let to = Self::audience(call, except);
            self.tell(&to, n);
        }
    }
}

fn rpc_error(e: MediaError) -> RpcError {
    match e {
        MediaError::BadSdp(_) => RpcError::invalid_params(e),
        MediaError::NoPendingOffer | MediaError::NoPeer => {
            RpcError::new(codes::WRONG_STATE, e.to_string())
        }
    }
}
