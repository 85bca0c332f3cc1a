//! Draining a Peer's str0m session after every mutation: datagrams straight to the core's
//! output, events for the core to act on (str0m's single-mutation rule).

use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::{Event, IceConnectionState, Output};

use super::*;

impl Peer {
    /// Polls str0m until it has nothing more to say.
    pub(super) fn drain(&mut self, now: Instant, sink: &mut Sink) -> Result<(), Failure> {
        loop {
            // One flat match on the polled result: each packet is moved once, straight into
            // its queue entry.
            let event = match guarded(|| self.rtc.poll_output()) {
                Err(_) | Ok(Err(_)) => return Err(Failure::Rtc),
                Ok(Ok(Output::Timeout(t))) => {
                    let urgent = t <= now;
                    let t = Some(t.max(now));
                    if self.wake != t || urgent != self.urgent {
                        self.wake = t;
                        self.urgent = urgent;
                        self.wake_changed = true;
                    }
                    return Ok(());
                }
                Ok(Ok(Output::Transmit(t))) => {
                    sink.out.push_back(MediaEvent::Transmit {
                        proto: t.proto,
                        destination: t.destination,
                        contents: t.contents,
                    });
                    continue;
                }
                Ok(Ok(Output::Event(Event::RtpPacket(pkt)))) => {
                    let ssrc = pkt.header.ssrc;
                    let at = guarded(|| {
                        self.rtc
                            .direct_api()
                            .stream_rx(&ssrc)
                            .map(|s| (s.mid(), s.rid()))
                    })?;
                    if let Some((mid, rid)) = at {
                        sink.events
                            .push_back((self.id, PeerEvent::Rtp(mid, rid, pkt)));
                    }
                    continue;
                }
                Ok(Ok(Output::Event(Event::Connected))) => PeerEvent::Connected,
                Ok(Ok(Output::Event(Event::IceConnectionStateChange(s)))) => match s {
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        PeerEvent::IceConnected
                    }
                    IceConnectionState::Disconnected => PeerEvent::IceDisconnected,
                    _ => continue,
                },
                Ok(Ok(Output::Event(Event::MediaAdded(m)))) if m.direction.is_receiving() => {
                    PeerEvent::MediaAdded(m.mid, m.kind)
                }
                Ok(Ok(Output::Event(Event::KeyframeRequest(r)))) => {
                    PeerEvent::KeyframeRequest(r.mid, r.kind)
                }
                Ok(Ok(Output::Event(Event::EgressBitrateEstimate(BweKind::Twcc {
                    estimate,
                    ..
                })))) => PeerEvent::Estimate(estimate.as_u64()),
                Ok(Ok(Output::Event(Event::MediaEgressStats(s)))) => PeerEvent::Egress(s),
                Ok(Ok(Output::Event(Event::MediaIngressStats(s)))) => PeerEvent::Ingress(s),
                Ok(Ok(Output::Event(_))) => continue,
            };
            sink.events.push_back((self.id, event));
        }
    }
}
