//! One virtual SDK caller: logs in over the signaling protocol, places or answers a call as
//! planned, negotiates media (one offer, then answers to the server's offers), runs a str0m
//! client over real UDP sending real Opus (and VP8-shaped video), and measures what it
//! receives: who it hears, loss, jitter, latency, setup time, the server's volume and quality.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics::Jitter;
use serde_json::json;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::MediaKind;
use str0m::net::Receive;
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Event, Input, Output, Rtc};

use crate::audio::{Frame, ToneDetector};
use crate::churn::{Every, Toggle};
use crate::impair::{Impairer, Impairment};
use crate::leg::open_leg;
use crate::report::CallerResult;
use crate::signal::Signal;
use crate::video::{VideoSeen, VideoSender};

/// What a callee does when invited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Reject,
    Ignore,
}

#[derive(Clone, Debug)]
pub enum Role {
    /// Call `to` after `delay`.
    Caller {
        to: Vec<String>,
        group: bool,
        delay: Duration,
    },
    Callee {
        answer: Answer,
    },
}

/// Everything one virtual caller needs.
#[derive(Clone)]
pub struct Plan {
    pub user: String,
    pub token: String,
    pub role: Role,
    /// Which of the URLs this caller logs in to.
    pub node: usize,
    /// This caller's tone slot in its call, and the slots of the peers it must hear.
    pub slot: usize,
    pub expected: Vec<(String, usize)>,
    pub frames: Arc<Vec<Frame>>,
    /// Killed this far into its talk time (0..1): sockets dropped, no hangup, never back.
    pub kill_at: Option<f64>,
    /// What this caller asks of every other member's video (`subscribe`), if not the default.
    pub view: Option<&'static str>,
    /// An emulated downlink capacity, kbit/s.
    pub downlink_kbps: Option<u32>,
}

/// Settings shared by every caller of a run.
#[derive(Clone)]
pub struct Shared {
    /// The deployment's signaling URLs (a caller uses `urls[plan.node]`).
    pub urls: Vec<String>,
    pub video: bool,
    /// Media over ICE-TCP instead of UDP.
    pub tcp: bool,
    /// Video layers each publisher sends (1: no simulcast).
    pub simulcast: usize,
    /// Media time once connected.
    pub talk_for: Duration,
    /// How long a caller waits for an answer before giving up, and a callee for an invite.
    pub wait: Duration,
    pub impairment: Impairment,
    /// The clock RTP timestamps are taken from, for one-way latency.
    pub epoch: Instant,
    pub slots: usize,
    /// Mute / hold toggles (zero = never), each lasting [`crate::churn::TOGGLE_FOR`].
    pub mute_every: Duration,
    pub hold_every: Duration,
    /// Churn (zero = never): drop the signaling socket and come back with a new login and a
    /// new media leg; or re-offer a new media leg on the same socket.
    pub reconnect_every: Duration,
    pub reoffer_every: Duration,
}

impl Shared {
    /// The `n`th node's URL, round the list.
    pub fn url(&self, n: usize) -> &str {
        self.urls
            .get(n % self.urls.len().max(1))
            .map_or("", String::as_str)
    }
}

/// Runs one caller to the end; never panics, reports errors in the result.
pub async fn run(shared: Arc<Shared>, plan: Plan) -> CallerResult {
    let mut r = CallerResult {
        user: plan.user.clone(),
        url: shared.url(plan.node).to_string(),
        ..Default::default()
    };
    if let Err(e) = run_inner(&shared, &plan, &mut r).await {
        let kind = e.to_string();
        // A caller that should have heard someone and gave up did not verify: a failure.
        if !plan.expected.is_empty() && r.heard_speakers_in_volume.is_none() {
            r.verification_failures
                .push(format!("did not finish its call ({kind})"));
        }
        r.errors.push(kind);
        if r.outcome.is_empty() {
            r.outcome = "failed".into();
        }
    }
    r
}

async fn run_inner(shared: &Shared, plan: &Plan, r: &mut CallerResult) -> anyhow::Result<()> {
    let mut sig = Signal::connect(shared.url(plan.node)).await?;
    sig.request("login", json!({ "token": plan.token })).await?;
    match &plan.role {
        Role::Caller { to, group, delay } => {
            tokio::time::sleep(*delay).await;
            let kind = if shared.video { "video" } else { "audio" };
            let t_call = Instant::now();
            let res = sig
                .request("call", json!({"to": to, "media": kind, "group": group}))
                .await?;
            let call_id = res["call_id"].as_str().unwrap_or_default().to_string();
            let deadline = tokio::time::Instant::now() + shared.wait;
            loop {
                let n = match tokio::time::timeout_at(deadline, sig.next()).await {
                    Ok(n) => n?,
                    Err(_) => {
                        r.outcome = "no_answer".into();
                        sig.request("hangup", json!({ "call_id": call_id })).await?;
                        return Ok(());
                    }
                };
                match n["method"].as_str().unwrap_or("") {
                    "accepted" => {
                        r.outcome = "connected".into();
                        r.setup_accept_ms = Some(t_call.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    "rejected" if !group => r.outcome = "rejected".into(),
                    "busy" if !group => r.outcome = "busy".into(),
                    "no_response" if !group => r.outcome = "no_answer".into(),
                    "call_end" => {
                        if r.outcome.is_empty() {
                            r.outcome = n["params"]["reason"].as_str().unwrap_or("ended").into();
                        }
                        return Ok(());
                    }
                    _ => {}
                }
            }
            if media(shared, plan, &mut sig, &call_id, Some(t_call), r).await? == Ending::Killed {
                return Ok(());
            }
            let _ = sig.request("hangup", json!({ "call_id": call_id })).await;
        }
        Role::Callee { answer } => {
            let deadline = tokio::time::Instant::now() + shared.wait;
            let call_id = loop {
                let n = tokio::time::timeout_at(deadline, sig.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("never invited"))??;
                if n["method"] == "invited" {
                    break n["params"]["call_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                }
            };
            match answer {
                Answer::Reject => {
                    r.outcome = "rejected_by_me".into();
                    sig.request("reject", json!({ "call_id": call_id })).await?;
                }
                Answer::Ignore => {
                    r.outcome = "ignored".into();
                    // Wait for the server's timeout (or the caller's cancel).
                    let _ = tokio::time::timeout(shared.wait, async {
                        while let Ok(n) = sig.next().await {
                            if matches!(n["method"].as_str(), Some("invite_timeout" | "cancelled"))
                            {
                                break;
                            }
                        }
                    })
                    .await;
                }
                Answer::Accept => {
                    r.outcome = "answered".into();
                    sig.request("accept", json!({ "call_id": call_id })).await?;
                    if media(shared, plan, &mut sig, &call_id, None, r).await? == Ending::Killed {
                        return Ok(());
                    }
                    let _ = sig.send("hangup", json!({ "call_id": call_id })).await;
                }
            }
        }
    }
    sig.close().await;
    Ok(())
}

/// Time from the first media after which what a caller asked (`subscribe`) has taken effect.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// What one receiver tracks of one incoming stream.
pub(crate) struct Incoming {
    pub kind: MediaKind,
    pub first: u64,
    pub highest: u64,
    pub received: u64,
    pub jitter: Jitter,
    pub tone: Option<ToneDetector>,
    /// Of a video stream: whose it is, its layers, freezes, bytes.
    pub video: VideoSeen,
}

/// What a media session received, for [`crate::verify::verify`].
pub(crate) struct Received<'a> {
    /// Every incoming stream of every leg.
    pub streams: Vec<&'a Incoming>,
    /// Audio streams of the last leg.
    pub audio_now: usize,
    pub legs: u32,
    pub named_in_volume: &'a BTreeSet<String>,
    pub first_media: Option<Instant>,
}

/// How a media session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Talked for `talk_for` or the call ended: verified.
    Done,
    /// Killed as planned: its sockets are dropped with it, nothing to verify.
    Killed,
}

/// The media session: offer, send for `talk_for`, receive, answer server offers, churn as
/// asked, measure.
async fn media(
    shared: &Shared,
    plan: &Plan,
    sig: &mut Signal,
    call_id: &str,
    t_call: Option<Instant>,
    r: &mut CallerResult,
) -> anyhow::Result<Ending> {
    let (mut rtc, mut socket, mut local, mut audio_mid, mut video_mid) =
        open_leg(shared, sig, call_id).await?;
    let mut legs = 1u32;
    if let Some(video) = plan.view.filter(|_| shared.video) {
        for (peer, _) in &plan.expected {
            sig.send(
                "subscribe",
                json!({"call_id": call_id, "user": peer, "video": video}),
            )
            .await?;
        }
    }
    let mut downlink = plan.downlink_kbps.map(crate::impair::Downlink::new);
    // Only this call's slots can be heard (another call's tones are the same slots), so
    // only they are looked for: 2 Goertzels a packet in a 1v1 call instead of 16.
    let call_slots = (plan.expected.iter().map(|(_, s)| *s))
        .chain([plan.slot])
        .max()
        .map_or(shared.slots, |m| (m + 1).min(shared.slots));
    let mut retired: Vec<Incoming> = Vec::new();
    let mut leg_deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut imp = Impairer::new(shared.impairment, seed(&plan.user));
    let mut streams: HashMap<Ssrc, Incoming> = HashMap::new();
    let mut named_in_volume: BTreeSet<String> = BTreeSet::new();
    let mut first_media: Option<Instant> = None;
    let mut talk_end: Option<tokio::time::Instant> = None;
    let mut ended = false;
    let mut seq_a = 0u64;
    let mut sender = VideoSender::new(shared.simulcast, plan.slot);
    let mut frame_i = 0usize;
    let mut next_audio = tokio::time::Instant::now();
    let mut next_video = next_audio;
    let mut buf = vec![0u8; 2048];
    let setup_deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut mute = Toggle::new(shared.mute_every);
    let mut hold = Toggle::new(shared.hold_every);
    let mut reconnect = Every::new(shared.reconnect_every);
    let mut reoffer = Every::new(shared.reoffer_every);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut asked = false;
    // The last instant handed to str0m: a late-read datagram is never given an earlier one.
    let mut str0m_now = Instant::now();

    // str0m's single-mutation rule: after every mutation, poll until `Timeout`. Every
    // mutation below is followed by `drain!()`, which evaluates to str0m's next deadline.
    macro_rules! drain {
        () => {
            loop {
                let out = rtc
                    .poll_output()
                    .map_err(|e| anyhow::anyhow!("peer: {e}"))?;
                match out {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let now = Instant::now();
                        let data = t.contents.to_vec();
                        let send = if rtc.is_connected() && !shared.impairment.is_none() {
                            imp.push(now, t.destination, data)
                        } else {
                            Some(data)
                        };
                        if let Some(d) = send {
                            let _ = socket.try_send_to(&d, t.destination);
                        }
                    }
                    Output::Event(Event::RtpPacket(p)) => {
                        // When it arrived (a polled socket is read late).
                        let now = p.timestamp;
                        if first_media.is_none() {
                            first_media = Some(now);
                            if let Some(t) = t_call {
                                r.setup_media_ms =
                                    Some(now.duration_since(t).as_secs_f64() * 1000.0);
                            }
                        }
                        let kind = if *p.header.payload_type == opus_pt(&rtc) {
                            MediaKind::Audio
                        } else {
                            MediaKind::Video
                        };
                        let s = streams.entry(p.header.ssrc).or_insert_with(|| Incoming {
                            kind,
                            first: *p.seq_no,
                            highest: *p.seq_no,
                            received: 0,
                            jitter: Jitter::new(if kind == MediaKind::Audio {
                                48_000
                            } else {
                                90_000
                            }),
                            tone: (kind == MediaKind::Audio)
                                .then(|| ToneDetector::new(call_slots).ok())
                                .flatten(),
                            video: VideoSeen::default(),
                        });
                        if kind == MediaKind::Video {
                            // Two seconds in, a `subscribe` sent at the start took effect.
                            let settled = first_media
                                .is_some_and(|t| now.saturating_duration_since(t) > SETTLE);
                            s.video.on_packet(&p.payload, now, shared.epoch, settled);
                        }
                        s.received += 1;
                        if *p.seq_no > s.highest {
                            s.highest = *p.seq_no;
                        }
                        s.jitter.on_packet(p.timestamp, p.header.timestamp);
                        if kind == MediaKind::Audio {
                            if let Some(t) = s.tone.as_mut() {
                                t.push(&p.payload);
                            }
                            // Sent at epoch + ts/48 kHz (the SFU keeps timestamps).
                            let sent_us = u64::from(p.header.timestamp) * 1000 / 48;
                            let now_us =
                                now.saturating_duration_since(shared.epoch).as_micros() as u64;
                            let wrapped = (now_us % (u64::from(u32::MAX) * 1000 / 48)) as i64;
                            let lat = (wrapped - sent_us as i64) as f64 / 1000.0;
                            if (0.0..10_000.0).contains(&lat) {
                                r.latency_ms.push(lat);
                            }
                        }
                    }
                    Output::Event(Event::KeyframeRequest(k)) => sender.keyframe_requested(k.rid),
                    Output::Event(_) => {}
                }
            }
        };
    }
    // One datagram into the peer, as received at `at`, then its output drained.
    macro_rules! receive {
        ($at:expr, $source:expr, $bytes:expr) => {
            if let Ok(contents) = $bytes.try_into() {
                let input = Input::Receive(
                    $at,
                    Receive {
                        proto: socket.proto(),
                        source: $source,
                        destination: local,
                        contents,
                    },
                );
                if rtc.accepts(&input) {
                    rtc.handle_input(input)
                        .map_err(|e| anyhow::anyhow!("peer: {e}"))?;
                    drain!();
                }
            }
        };
    }

    loop {
        let timeout = drain!();
        let now = tokio::time::Instant::now();
        if ended || talk_end.is_some_and(|t| now >= t) {
            break;
        }
        if talk_end.is_none() && rtc.is_connected() {
            talk_end = Some(now + shared.talk_for);
            kill_at = plan.kill_at.map(|f| now + shared.talk_for.mul_f64(f));
        }
        if talk_end.is_none() && now >= setup_deadline {
            anyhow::bail!("media: not connected within 20 s");
        }
        if !rtc.is_connected() && now >= leg_deadline {
            anyhow::bail!("media: leg {legs} not connected within 20 s");
        }
        let sending = rtc.is_connected();
        if sending && !socket.is_polled() {
            socket = socket.into_polled()?;
        }
        let mut wake =
            tokio::time::Instant::from_std(timeout).min(now + Duration::from_millis(100));
        for t in [mute.next, hold.next, reconnect.next, reoffer.next, kill_at]
            .into_iter()
            .flatten()
        {
            wake = wake.min(t);
        }
        if sending {
            wake = wake.min(next_audio);
            if video_mid.is_some() {
                wake = wake.min(next_video);
            }
        }
        if let Some(d) = imp.next_due() {
            wake = wake.min(tokio::time::Instant::from_std(d));
        }
        if let Some(d) = downlink.as_ref().and_then(|d| d.next_due()) {
            wake = wake.min(tokio::time::Instant::from_std(d));
        }
        tokio::select! {
            res = socket.recv_now(&mut buf) => {
                if let Ok((n, source)) = res
                    && straight(&mut downlink, Instant::now(), source, &buf[..n])
                {
                    str0m_now = Instant::now();
                    receive!(str0m_now, source, &buf[..n]);
                }
            }
            frame = sig.next() => {
                let frame = frame?;
                match frame["method"].as_str() {
                    Some("offer") => {
                        let sdp = frame["params"]["sdp"].as_str().unwrap_or_default();
                        let offer = SdpOffer::from_sdp_string(sdp)
                            .map_err(|e| anyhow::anyhow!("server offer: {e}"))?;
                        let answer = rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .map_err(|e| anyhow::anyhow!("server offer: {e}"))?;
                        drain!();
                        sig.send("answer", json!({"call_id": call_id, "sdp": answer.to_sdp_string()}))
                            .await?;
                    }
                    Some("quality") if frame["params"]["user"] == plan.user.as_str() => {
                        let p = &frame["params"];
                        if let Some(mos) = p["mos"].as_f64() {
                            if p["direction"] == "up" { r.mos_up.push(mos) } else { r.mos_down.push(mos) }
                        }
                        if let Some(l) = p["quality"].as_str() {
                            *r.levels.entry(l.to_string()).or_default() += 1;
                        }
                    }
                    Some("volume") => {
                        if let Some(v) = frame["params"]["volumes"].as_array() {
                            for u in v.iter().filter_map(|x| x["user"].as_str()) {
                                named_in_volume.insert(u.to_string());
                            }
                        }
                    }
                    Some("call_end") => ended = true,
                    // The server asks for a fresh session (its m-lines compacted).
                    Some("reoffer") => asked = true,
                    None if frame.get("error").is_some() => {
                        r.errors.push(format!("signaling error {}", frame["error"]["code"]));
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        // A polled socket: what came since the last wake, each at its arrival time.
        while let Some((n, source, arrived)) = socket.poll(&mut buf, str0m_now) {
            str0m_now = arrived;
            if !straight(&mut downlink, arrived, source, &buf[..n]) {
                continue;
            }
            receive!(arrived, source, &buf[..n]);
        }
        // What came out of the emulated downlink by now, at the instant it did.
        while let Some((at, source, data)) = downlink.as_mut().and_then(|d| d.due(Instant::now())) {
            str0m_now = at;
            receive!(at, source, data.as_slice());
        }
        let now_std = Instant::now();
        // Only when due: a timeout is str0m's costliest call, and a received packet does
        // not need one (a written one does, and asks for it as due at once).
        if now_std >= timeout {
            str0m_now = now_std;
            rtc.handle_input(Input::Timeout(now_std))
                .map_err(|e| anyhow::anyhow!("peer: {e}"))?;
            drain!();
        }
        while let Some((to, d)) = imp.due(now_std) {
            let _ = socket.try_send_to(&d, to);
        }
        let now = tokio::time::Instant::now();
        if let Some(muted) = mute.flip(now) {
            sig.send("mute", json!({"call_id": call_id, "audio": muted}))
                .await?;
            r.toggles += 1;
        }
        if let Some(held) = hold.flip(now) {
            sig.send("hold", json!({"call_id": call_id, "held": held}))
                .await?;
            r.toggles += 1;
        }
        if kill_at.is_some_and(|t| now >= t) {
            // Sockets go with this task, as with a killed app: no close frame, no hangup.
            r.outcome = "killed".into();
            return Ok(Ending::Killed);
        }
        let reconnecting = rtc.is_connected() && reconnect.due(now);
        if reconnecting || std::mem::take(&mut asked) || (rtc.is_connected() && reoffer.due(now)) {
            if reconnecting {
                // The old socket is dropped unclosed, as a lost network leaves it.
                // Back on the next node, as after a network change behind a load balancer.
                let node = plan.node + r.reconnects as usize + 1;
                *sig = Signal::connect(shared.url(node)).await?;
                sig.request("login", json!({ "token": plan.token })).await?;
                r.reconnects += 1;
            } else {
                r.reoffers += 1;
            }
            match open_leg(shared, sig, call_id).await {
                Ok(leg) => {
                    (rtc, socket, local, audio_mid, video_mid) = leg;
                    str0m_now = Instant::now();
                }
                // The others hung up meanwhile: the call's end refused the offer.
                Err(_) if sig.queue.iter().any(|n| n["method"] == "call_end") => {
                    ended = true;
                    continue;
                }
                Err(e) => return Err(e),
            }
            retired.extend(streams.drain().map(|(_, s)| s));
            legs += 1;
            leg_deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            sender.restart();
            drain!();
            continue;
        }
        let (muted, held) = (mute.on, hold.on);
        if sending && (muted || held) && now >= next_audio {
            // A muted microphone, or a call on hold, sends nothing.
            next_audio += Duration::from_millis(20);
            frame_i += 1;
        }
        if sending && held && now >= next_video {
            next_video += Duration::from_millis(33);
        }
        if sending && now >= next_audio {
            next_audio += Duration::from_millis(20);
            let frame = &plan.frames[frame_i % plan.frames.len()];
            frame_i += 1;
            seq_a += 1;
            let pt = opus_pt(&rtc);
            let ts = rtp_ts(shared.epoch, now_std, 48);
            let ext = ExtensionValues {
                audio_level: Some(-(frame.level.min(127) as i8)),
                voice_activity: Some(frame.talking),
                ..Default::default()
            };
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(audio_mid, None) {
                tx.write_rtp(
                    RtpWrite::new(pt.into(), seq_a.into(), ts, now_std, frame.opus.clone())
                        .marker(frame_i == 1)
                        .ext_vals(ext),
                );
            }
            drain!();
        }
        if sending
            && let Some(mid) = video_mid
            && now >= next_video
        {
            next_video += Duration::from_millis(33);
            let pt = vp8_pt(&rtc);
            let ts = rtp_ts(shared.epoch, now_std, 90);
            for f in sender.frames(now_std) {
                if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, f.rid) {
                    tx.write_rtp(
                        RtpWrite::new(pt.into(), f.seq.into(), ts, now_std, f.payload)
                            .marker(true)
                            .nackable(true),
                    );
                }
            }
            drain!();
        }
    }

    let seen = Received {
        streams: streams.values().chain(retired.iter()).collect(),
        audio_now: streams
            .values()
            .filter(|s| s.kind == MediaKind::Audio)
            .count(),
        legs,
        named_in_volume: &named_in_volume,
        first_media,
    };
    crate::verify::verify(shared, plan, &seen, r);
    Ok(Ending::Done)
}

fn rtp_ts(epoch: Instant, now: Instant, khz: u64) -> u32 {
    (now.saturating_duration_since(epoch).as_micros() as u64 * khz / 1000) as u32
}

fn opus_pt(rtc: &Rtc) -> u8 {
    rtc.codec_config()
        .find(|p| p.spec().codec == Codec::Opus)
        .map_or(111, |p| *p.pt())
}

fn vp8_pt(rtc: &Rtc) -> u8 {
    rtc.codec_config()
        .find(|p| p.spec().codec == Codec::Vp8)
        .map_or(96, |p| *p.pt())
}

fn seed(user: &str) -> u64 {
    user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Whether a datagram goes to the peer now: without an emulated downlink; with one, it is
/// queued there (or dropped) and comes out when the link has carried it.
fn straight(
    downlink: &mut Option<crate::impair::Downlink>,
    now: Instant,
    source: std::net::SocketAddr,
    data: &[u8],
) -> bool {
    match downlink {
        Some(d) => {
            d.push(now, source, data);
            false
        }
        None => true,
    }
}
