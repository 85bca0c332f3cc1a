//! Deterministic call-quality tests through the in-memory network: injected loss and jitter on
//! one member's uplink show in that member's `up` MOS as the E-model says and in the other's
//! `down` MOS; known audio levels give the formula's volume; mute, stalls and resumes flip
//! availability within the promised times.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use analytics::mos::{Conditions, sample};
use sfu::media::{Leg, MediaEvent};
use sfu_suite::netsim::{World, server_addr};
use str0m::media::MediaKind;

fn addr(i: usize) -> SocketAddr {
    format!("10.0.1.{}:6000", i + 1).parse().unwrap()
}

/// (user, leg, mos, rtt, jitter, loss) of every quality report after `since`.
fn qualities(w: &World, since: Instant) -> Vec<(String, Leg, f64, f64, f64, f64)> {
    w.notices
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(_, n)| match n {
            MediaEvent::Quality {
                user, leg, report, ..
            } => Some((
                user.clone(),
                *leg,
                report.mos,
                report.rtt_ms,
                report.jitter_ms,
                report.loss,
            )),
            _ => None,
        })
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// A 1v1 audio call with `loss` and `jitter` on alice's uplink; returns the average of alice's
/// `up` and bob's `down` samples over 30 s after warm-up, with the measured RTT and jitter.
fn impaired(loss: f64, jitter: Duration) -> (f64, f64, f64, f64) {
    let mut w = World::new();
    w.join("alice", &[MediaKind::Audio]);
    w.join("bob", &[MediaKind::Audio]);
    w.run(Duration::from_secs(6));
    if loss > 0.0 {
        w.media_loss
            .insert((addr(0), server_addr()), (loss, Vec::new()));
    }
    w.jitter.insert((addr(0), server_addr()), jitter);
    w.run(Duration::from_secs(6));
    let since = w.now;
    w.run(Duration::from_secs(30));
    let q = qualities(&w, since);
    let up: Vec<_> = q
        .iter()
        .filter(|s| s.0 == "alice" && s.1 == Leg::Up)
        .collect();
    let down: Vec<_> = q
        .iter()
        .filter(|s| s.0 == "bob" && s.1 == Leg::Down)
        .collect();
    assert!(up.len() >= 5, "alice up samples: {up:?}");
    assert!(down.len() >= 4, "bob down samples: {down:?}");
    let up_mos = mean(&up.iter().map(|s| s.2).collect::<Vec<_>>());
    let down_mos = mean(&down.iter().map(|s| s.2).collect::<Vec<_>>());
    let rtt = mean(&up.iter().map(|s| s.3).collect::<Vec<_>>());
    let up_loss = mean(&up.iter().map(|s| s.5).collect::<Vec<_>>());
    eprintln!(
        "loss {loss} jitter {jitter:?}: up MOS {up_mos:.2} (loss {up_loss:.3}, rtt {rtt:.1}), down MOS {down_mos:.2}"
    );
    (up_mos, down_mos, rtt, up_loss)
}

fn expected(loss: f64, jitter: Duration, rtt: f64) -> f64 {
    sample(
        Conditions {
            rtt_ms: rtt,
            jitter_ms: jitter.as_secs_f64() * 1000.0,
            loss,
        },
        true,
    )
    .unwrap()
    .mos
}

#[test]
fn uplink_impairment_moves_mos_as_the_e_model_says() {
    for jitter_ms in [0u64, 30] {
        for loss in [0.0, 0.01, 0.05, 0.10] {
            let jitter = Duration::from_millis(jitter_ms);
            let (up, down, rtt, measured_loss) = impaired(loss, jitter);
            // The injected path: 10 ms each way, so RTT ≈ 20 ms.
            assert!((15.0..60.0).contains(&rtt), "rtt {rtt}");
            assert!(
                (measured_loss - loss).abs() < 0.01,
                "loss {measured_loss} vs {loss}"
            );
            let want = expected(loss, jitter, 20.0);
            assert!(
                (up - want).abs() <= 0.15,
                "alice up MOS {up:.2}, E-model {want:.2} (loss {loss}, jitter {jitter_ms} ms)"
            );
            assert!(
                (down - want).abs() <= 0.15,
                "bob down MOS {down:.2}, E-model {want:.2} (loss {loss}, jitter {jitter_ms} ms)"
            );
        }
    }
}

fn volumes(w: &World, since: Instant) -> Vec<(Vec<(String, u8)>, u8)> {
    w.notices
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(_, n)| match n {
            MediaEvent::Volume { volumes, total, .. } => Some((volumes.clone(), *total)),
            _ => None,
        })
        .collect()
}

#[test]
fn known_audio_levels_give_the_formula_volume() {
    let mut w = World::new();
    w.join("alice", &[MediaKind::Audio]);
    w.join("bob", &[MediaKind::Audio]);
    w.clients[0].level = 30; // -30 dBov -> 50
    w.clients[1].level = 127; // silence
    w.run(Duration::from_secs(3));
    let since = w.now;
    w.run(Duration::from_secs(3));
    let v = volumes(&w, since);
    assert!(v.len() >= 9, "one report per 300 ms: {}", v.len());
    for (members, total) in &v {
        assert_eq!(members.len(), 1, "only alice is audible: {members:?}");
        assert_eq!(members[0].0, "alice");
        assert!((47..=53).contains(&members[0].1), "{members:?}");
        assert!((47..=53).contains(total));
    }
    // alice stops: one all-silent report, then nothing.
    w.clients[0].sending = false;
    let since = w.now;
    w.run(Duration::from_secs(2));
    let v = volumes(&w, since);
    let silent: Vec<_> = v.iter().filter(|(m, _)| m.is_empty()).collect();
    assert_eq!(silent.len(), 1, "{v:?}");
    assert_eq!(silent[0].1, 0);
    assert!(v.last().is_some_and(|(m, t)| m.is_empty() && *t == 0));
}

fn availability(w: &World, since: Instant, user: &str, kind: MediaKind) -> Vec<(Instant, bool)> {
    w.notices
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(t, n)| match n {
            MediaEvent::Available {
                user: u,
                kind: k,
                available,
                ..
            } if u == user && *k == kind => Some((*t, *available)),
            _ => None,
        })
        .collect()
}

#[test]
fn availability_follows_publication_stalls_and_mute() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    w.join("alice", &media);
    w.join("bob", &media);
    let t0 = w.now;
    w.run(Duration::from_secs(2));
    assert_eq!(
        availability(&w, t0, "alice", MediaKind::Audio)
            .iter()
            .map(|x| x.1)
            .collect::<Vec<_>>(),
        [true],
        "published and flowing"
    );
    assert_eq!(availability(&w, t0, "alice", MediaKind::Video).len(), 1);

    // Stall: alice stops sending. Audio unavailable within 2.5 s, video within 3.5 s.
    w.clients[0].sending = false;
    let stall = w.now;
    w.run(Duration::from_secs(4));
    let a = availability(&w, stall, "alice", MediaKind::Audio);
    assert_eq!(a.len(), 1);
    assert!(!a[0].1);
    assert!(
        a[0].0 - stall <= Duration::from_millis(2500),
        "{:?}",
        a[0].0 - stall
    );
    let v = availability(&w, stall, "alice", MediaKind::Video);
    assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), [false]);
    assert!(v[0].0 - stall <= Duration::from_millis(3500));

    // Resume: available again.
    w.clients[0].sending = true;
    let resume = w.now;
    w.run(Duration::from_secs(1));
    let a = availability(&w, resume, "alice", MediaKind::Audio);
    assert_eq!(a.iter().map(|x| x.1).collect::<Vec<_>>(), [true]);
    assert!(a[0].0 - resume <= Duration::from_millis(700));

    // Mute is announced by signaling; the media side stays silent, then reports the return.
    w.mute(0, Some(true), None);
    let muted = w.now;
    w.run(Duration::from_secs(3));
    assert_eq!(availability(&w, muted, "alice", MediaKind::Audio), []);
    w.mute(0, Some(false), None);
    let unmuted = w.now;
    w.run(Duration::from_secs(1));
    let a = availability(&w, unmuted, "alice", MediaKind::Audio);
    assert_eq!(a.iter().map(|x| x.1).collect::<Vec<_>>(), [true]);
    // Video was never muted: no flapping.
    assert_eq!(availability(&w, muted, "alice", MediaKind::Video), []);
}

#[test]
fn publishers_without_the_level_extension_are_measured_from_their_opus() {
    let mut w = World::new();
    w.join("alice", &[MediaKind::Audio]);
    w.join("bob", &[MediaKind::Audio]);
    w.clients[0].level = 30;
    w.clients[0].opus =
        Some(opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap());
    w.clients[1].level = 127;
    w.run(Duration::from_secs(3));
    let since = w.now;
    w.run(Duration::from_secs(3));
    let v = volumes(&w, since);
    assert!(v.len() >= 9, "{v:?}");
    for (members, _) in &v {
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].0, "alice");
        assert!(
            (47..=53).contains(&members[0].1),
            "decoded level -> {members:?}"
        );
    }
}

#[test]
fn muted_members_are_not_heard_in_volume() {
    let mut w = World::new();
    w.join("alice", &[MediaKind::Audio]);
    w.join("bob", &[MediaKind::Audio]);
    w.clients[1].level = 127;
    w.run(Duration::from_secs(2));
    w.mute(0, Some(true), None);
    w.run(Duration::from_millis(700));
    let since = w.now;
    w.run(Duration::from_secs(2));
    assert!(
        volumes(&w, since).is_empty(),
        "silent after the closing report"
    );
}
