//! A Peer's birth: the str0m session for a member's offer (RTP mode, ICE-lite, our host
//! candidates, Opus and VP8) and our answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::net::TcpType;
use str0m::{Candidate, RtcConfig};

use super::*;

impl Peer {
    /// A Peer for `user`'s offer, and our answer to it.
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        id: PeerId,
        now: Instant,
        advertised: SocketAddr,
        advertised_tcp: Option<SocketAddr>,
        call_id: &str,
        user: &str,
        offer: SdpOffer,
        video: bool,
        bwe: bool,
        state: MemberMedia,
        sink: &mut Sink,
    ) -> Result<(Peer, String), MediaError> {
        let unusable = |_| MediaError::BadSdp("media address unusable".into());
        let candidate = guarded(|| Candidate::host(advertised, "udp"))
            .map_err(unusable)?
            .map_err(|e| MediaError::BadSdp(format!("media address: {e}")))?;
        // Passive: clients connect to it (RFC 6544); str0m ranks TCP host below UDP host.
        let tcp = match advertised_tcp {
            Some(a) => Some(
                guarded(|| {
                    Candidate::builder()
                        .tcp()
                        .host(a)
                        .tcptype(TcpType::Passive)
                        .build()
                })
                .map_err(unusable)?
                .map_err(|e| MediaError::BadSdp(format!("media TCP address: {e}")))?,
            ),
            None => None,
        };
        let rtc = guarded(|| {
            let mut rtc = RtcConfig::new()
                .set_rtp_mode(true)
                .set_ice_lite(true)
                .clear_codecs()
                .enable_opus(true, false)
                .enable_vp8(true)
                .set_stats_interval(Some(Duration::from_secs(1)))
                // What each subscriber's downlink carries decides its simulcast layers
                // (str0m's send-side GCC on its TWCC feedback; MediaConfig::bwe).
                .enable_bwe((video && bwe).then(|| Bitrate::kbps(BWE_START_KBPS)))
                .build(now);
            if video && bwe {
                // The first probes (3 and 6 times the start) are capped by the desired rate:
                // with none yet, they would find nothing.
                rtc.bwe()
                    .set_bitrate(Bitrate::ZERO, Bitrate::kbps(BWE_DESIRED_KBPS));
            }
            rtc.add_local_candidate(candidate);
            if let Some(tcp) = tcp {
                rtc.add_local_candidate(tcp);
            }
            rtc
        })
        .map_err(|_| MediaError::BadSdp("media session could not be created".into()))?;
        let sdp = offer.to_sdp_string();
        let fec = sdp.contains("useinbandfec=1");
        // str0m's parser, like every str0m call here, behind catch_unwind.
        let relays = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate"))
            .filter_map(|l| {
                guarded(|| Candidate::from_sdp_string(&format!("candidate{l}")))
                    .ok()?
                    .ok()
            })
            .filter(|c| c.kind() == str0m::CandidateKind::Relayed)
            .map(|c| c.addr())
            .take(MAX_RELAYS)
            .collect();
        let mut peer = Peer {
            id,
            rtc,
            call_id: call_id.to_string(),
            user: user.to_string(),
            created: now,
            ice_connected: false,
            connected: false,
            ufrag: String::new(),
            video,
            state,
            addrs: Vec::new(),
            relays,
            tracks: Vec::new(),
            subs: Subscriptions::default(),
            pending: None,
            replied: false,
            wake: None,
            wake_changed: false,
            urgent: false,
            paced: video && bwe,
            inject_panic: false,
            rate: TokenBucket::new(2000.0, 2000.0, now),
            candidates: 0,
            stopped_mlines: 0,
            reoffer_asked: false,
            quality: LinkQuality::new(fec),
            volume: (0.0, 0.0),
            downlink: Downlink::default(),
            desired: if video && bwe {
                BWE_DESIRED_KBPS * 1000
            } else {
                0
            },
            probed_at: None,
            probe_wait: Duration::ZERO,
        };
        let answer = match peer.mutate(now, sink, |rtc| rtc.sdp_api().accept_offer(offer)) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(MediaError::BadSdp(e.to_string())),
            Err(_) => return Err(MediaError::BadSdp("offer could not be handled".into())),
        };
        peer.ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        Ok((peer, answer.to_sdp_string()))
    }
}
