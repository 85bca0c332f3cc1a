//! Unit tests of the Peer: the reply-before-our-offer rule and one offer at a time.
use super::*;
use crate::media::subscription::Subscription;
use str0m::RtcConfig;
use str0m::change::SdpOffer;

fn client(now: Instant) -> Rtc {
    let mut rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    rtc.add_local_candidate(Candidate::host("10.0.0.2:4000".parse().unwrap(), "udp").unwrap());
    rtc
}

#[test]
fn our_offer_waits_for_the_reply_then_one_at_a_time() {
    let now = Instant::now();
    let (mut out, mut events) = (VecDeque::new(), VecDeque::new());
    let mut sink = Sink {
        out: &mut out,
        events: &mut events,
    };
    let mut c = client(now);
    let mut api = c.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let id = PeerId::new(0, 0);
    let (mut peer, answer) = Peer::accept(
        id,
        now,
        "10.0.0.1:5000".parse().unwrap(),
        Some("10.0.0.1:5000".parse().unwrap()),
        "call",
        "bob",
        offer,
        false,
        false,
        MemberMedia::default(),
        &mut sink,
    )
    .unwrap();
    // ICE-TCP: a passive TCP host candidate, ranked below the UDP one.
    let prio = |proto: &str| {
        let line = answer
            .lines()
            .find(|l| l.starts_with("a=candidate") && l.contains(&format!(" {proto} ")))
            .unwrap_or_else(|| panic!("no {proto} candidate in {answer}"));
        line.split(' ').nth(3).unwrap().parse::<u32>().unwrap()
    };
    assert!(answer.contains("tcptype passive"), "{answer}");
    assert!(prio("tcp") < prio("udp"), "{answer}");
    c.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    assert!(peer.wake.is_some(), "drained to a deadline");
    let alice = PeerId::new(1, 0);
    peer.subs.insert(Subscription::new(
        alice,
        "alice",
        Mid::from("0"),
        MediaKind::Audio,
    ));
    assert_eq!(
        peer.negotiate(now, &mut sink),
        Ok(None),
        "not before the reply"
    );
    peer.replied = true;
    let ours = peer.negotiate(now, &mut sink).unwrap().expect("our offer");
    assert!(ours.contains("a=msid:alice alice-audio"), "{ours}");
    assert!(
        ours.contains("tcptype passive"),
        "server offers carry the TCP candidate too"
    );
    assert_eq!(
        peer.negotiate(now, &mut sink),
        Ok(None),
        "one offer outstanding"
    );
    let theirs = c
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&ours).unwrap())
        .unwrap();
    let opened = peer
        .accept_answer(
            now,
            SdpAnswer::from_sdp_string(&theirs.to_sdp_string()).unwrap(),
            &mut sink,
        )
        .unwrap()
        .unwrap();
    assert!(opened.is_empty(), "audio needs no keyframe");
    assert!(peer.subs.iter().all(|(_, s)| s.open_mid().is_some()));
    assert_eq!(
        peer.accept_answer(
            now,
            SdpAnswer::from_sdp_string(&theirs.to_sdp_string()).unwrap(),
            &mut sink
        )
        .unwrap(),
        Err(MediaError::NoPendingOffer)
    );
}
