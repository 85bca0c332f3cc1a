//! Unit tests of layer ranking and selection.
use super::*;

fn rid(s: &str) -> Rid {
    Rid::from(s)
}

/// Three layers named against their size ("f" smallest, "q" largest) over 1.2 s at 50
/// packets/s: 150, 500 and 1,500 kbit/s.
fn three(t0: Instant) -> (Layers, Instant) {
    let mut l = Layers::default();
    for i in 0..60u64 {
        let at = t0 + Duration::from_millis(i * 20);
        let booked = LayerPacket::Booked { new_source: false };
        assert_eq!(l.on_packet(rid("f"), 1.into(), 375, at), booked);
        assert_eq!(l.on_packet(rid("h"), 2.into(), 1_250, at), booked);
        assert_eq!(l.on_packet(rid("q"), 3.into(), 3_750, at), booked);
    }
    (l, t0 + Duration::from_millis(1_200))
}

#[test]
fn layers_rank_by_bitrate_not_by_name() {
    let t0 = Instant::now();
    let (l, now) = three(t0);
    let ranked: Vec<(Rid, u64)> = l.active(now).collect();
    assert_eq!(
        ranked.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [rid("f"), rid("h"), rid("q")]
    );
    let kbps: Vec<u64> = ranked.iter().map(|(_, b)| b / 1000).collect();
    assert!((145..=155).contains(&kbps[0]), "{kbps:?}");
    assert!((1450..=1550).contains(&kbps[2]), "{kbps:?}");
}

#[test]
fn a_fourth_rid_is_refused_and_a_silent_layer_drops_out() {
    let t0 = Instant::now();
    let (mut l, now) = three(t0);
    assert_eq!(
        l.on_packet(rid("x"), 9.into(), 100, now),
        LayerPacket::Refused
    );
    assert_eq!(l.ssrc_of(rid("h")), Some(2.into()));
    assert_eq!(
        l.on_packet(rid("h"), 7.into(), 100, now),
        LayerPacket::Booked { new_source: true },
        "a re-offer's new SSRC"
    );
    // Only "f" goes on: 1.5 s later the others are no longer sent.
    let mut at = now;
    for _ in 0..80 {
        at += Duration::from_millis(20);
        l.on_packet(rid("f"), 1.into(), 375, at);
    }
    assert_eq!(l.active(at).map(|(r, _)| r).collect::<Vec<_>>(), [rid("f")]);
}

#[test]
fn choices_pick_the_highest_the_lowest_or_nothing() {
    let t0 = Instant::now();
    let (l, now) = three(t0);
    let mut s = LayerSelector::default();
    assert_eq!(s.retarget(&l, now), Some(rid("q")), "high by default");
    s.set_choice(VideoChoice::Low);
    assert_eq!(s.retarget(&l, now), Some(rid("f")));
    s.set_choice(VideoChoice::Off);
    assert_eq!(s.retarget(&l, now), None);
    assert!(!s.paused(), "off is asked, not paused");
    assert_eq!(s.on_packet(rid("f"), true), Decision::Drop);
}

#[test]
fn a_cap_steps_down_pauses_below_the_lowest_and_lifts_back() {
    let t0 = Instant::now();
    let (l, now) = three(t0);
    let mut s = LayerSelector::default();
    s.set_cap(Some(600_000));
    assert_eq!(s.retarget(&l, now), Some(rid("h")), "the best that fits");
    s.set_cap(Some(100_000));
    assert_eq!(s.retarget(&l, now), None);
    assert!(s.paused());
    s.set_cap(None);
    assert_eq!(s.retarget(&l, now), Some(rid("q")), "climbs back");
    assert!(!s.paused());
    // Low asked but even low does not fit: paused too.
    s.set_choice(VideoChoice::Low);
    s.set_cap(Some(100_000));
    s.retarget(&l, now);
    assert!(s.paused());
}

#[test]
fn switches_land_on_keyframes_of_the_new_layer_only() {
    let t0 = Instant::now();
    let (l, now) = three(t0);
    let mut s = LayerSelector::default();
    s.retarget(&l, now);
    // Nothing forwarded until q's keyframe; other layers never.
    assert_eq!(s.on_packet(rid("q"), false), Decision::Drop);
    assert_eq!(s.on_packet(rid("h"), true), Decision::Drop);
    assert!(s.switching());
    assert_eq!(s.on_packet(rid("q"), true), Decision::Switch);
    assert_eq!(s.on_packet(rid("q"), false), Decision::Forward);
    assert!(!s.switching());
    // Down to low: q goes on until f's keyframe, then only f.
    s.set_choice(VideoChoice::Low);
    assert_eq!(s.retarget(&l, now), Some(rid("f")));
    assert_eq!(s.on_packet(rid("q"), false), Decision::Forward);
    assert_eq!(s.on_packet(rid("f"), false), Decision::Drop);
    assert_eq!(s.on_packet(rid("f"), true), Decision::Switch);
    assert_eq!(s.current(), Some(rid("f")));
    assert_eq!(s.on_packet(rid("q"), true), Decision::Drop);
    // Off, then on again: a keyframe restarts it.
    s.set_choice(VideoChoice::Off);
    s.retarget(&l, now);
    assert_eq!(s.on_packet(rid("f"), false), Decision::Drop);
    s.set_choice(VideoChoice::Low);
    assert_eq!(s.retarget(&l, now), Some(rid("f")));
    assert_eq!(s.on_packet(rid("f"), false), Decision::Drop);
    assert_eq!(s.on_packet(rid("f"), true), Decision::Switch);
    // Retargeting to the current layer asks for nothing.
    assert_eq!(s.retarget(&l, now), None);
}

/// A video forwarded at its lowest layer now (or not at all, with no layers).
fn wanted(choice: VideoChoice, rates: &[u64]) -> Wanted {
    let mut w = Wanted {
        choice,
        layers: rates.len(),
        current: (!rates.is_empty()).then_some(0),
        ..Default::default()
    };
    w.rates[..rates.len()].copy_from_slice(rates);
    w
}

fn caps(budget: u64, w: &[Wanted]) -> Vec<Option<u64>> {
    let mut c = Vec::new();
    allocate(Budget::flat(budget), w, &mut c);
    c
}

#[test]
fn the_allocator_gives_everyone_low_first_then_upgrades_in_order() {
    let three = [100, 300, 1000];
    let w = [
        wanted(VideoChoice::High, &three),
        wanted(VideoChoice::High, &three),
        wanted(VideoChoice::High, &three),
    ];
    // Plenty: everyone high (with headroom).
    assert_eq!(caps(10_000, &w), vec![Some(1150); 3]);
    // 300: everyone low.
    assert_eq!(caps(300, &w), vec![Some(115); 3]);
    // 800: low for all, then the first up to mid (+200, with 25% headroom: 250) and the
    // second too; 700 takes only the first.
    assert_eq!(caps(800, &w), vec![Some(345), Some(345), Some(115)]);
    assert_eq!(caps(700, &w), vec![Some(345), Some(115), Some(115)]);
    // 250: two lows fit, the third is paused.
    assert_eq!(caps(250, &w), vec![Some(115), Some(115), Some(0)]);
}

#[test]
fn climbing_a_step_needs_headroom_and_a_lasting_estimate_keeping_it_does_not() {
    let three = [100, 300, 1000];
    let mut w = [wanted(VideoChoice::High, &three)];
    let alloc = |keep: u64, climb: u64, w: &[Wanted]| {
        let mut c = Vec::new();
        allocate(Budget { keep, climb }, w, &mut c);
        c
    };
    // 300 holds the middle layer exactly: kept when forwarded, not climbed to from low.
    assert_eq!(alloc(300, 300, &w), vec![Some(115)]);
    w[0].current = Some(1);
    assert_eq!(alloc(300, 300, &w), vec![Some(345)]);
    // Kept on what the link carried during the hold, even if the latest estimate dipped.
    assert_eq!(alloc(300, 200, &w), vec![Some(345)]);
    // Going down needs nothing: below it, low.
    assert_eq!(alloc(299, 299, &w), vec![Some(115)]);
    // From low, 350 (the step's 200 plus a quarter) climbs; only if it lasted.
    w[0].current = Some(0);
    assert_eq!(alloc(350, 350, &w), vec![Some(345)]);
    assert_eq!(alloc(350, 349, &w), vec![Some(115)]);
    // A video not forwarded yet (or paused) starts only with headroom for its lowest layer.
    w[0].current = None;
    assert_eq!(alloc(120, 120, &w), vec![Some(0)]);
    assert_eq!(alloc(125, 125, &w), vec![Some(115)]);
}

#[test]
fn the_allocator_respects_low_and_off() {
    let three = [100, 300, 1000];
    let w = [
        wanted(VideoChoice::Low, &three),
        wanted(VideoChoice::Off, &three),
        wanted(VideoChoice::High, &three),
        wanted(VideoChoice::High, &[]),
    ];
    assert_eq!(caps(10_000, &w), vec![Some(115), None, Some(1150), None]);
    assert_eq!(w[0].desired() + w[1].desired() + w[2].desired(), 1100);
    // Too little even for one low layer: paused, and nothing after it jumps ahead.
    assert_eq!(caps(50, &w), vec![Some(0), None, Some(0), None]);
}

#[test]
fn a_cap_from_the_allocator_makes_the_selector_pick_that_layer() {
    let t0 = Instant::now();
    let (l, now) = three(t0);
    let w = Wanted::of(VideoChoice::High, &l, Held::Layer(rid("f")), now);
    assert_eq!(w.layers, 3);
    let c = caps(w.rates[0] + (w.rates[1] - w.rates[0]) * 5 / 4 + 1, &[w]);
    let mut s = LayerSelector::default();
    s.set_cap(c[0]);
    assert_eq!(
        s.retarget(&l, now),
        Some(rid("h")),
        "the middle-rate layer is named h"
    );
    s.set_cap(Some(0));
    assert_eq!(s.retarget(&l, now), None);
    assert!(s.paused());
}

#[test]
fn an_estimated_subscriber_starts_on_the_lowest_layer_once_all_have_shown_up() {
    let t0 = Instant::now();
    let mut l = Layers::default();
    // The top layer's first packet arrives first: alone, it would rank lowest.
    l.on_packet(rid("q"), 3.into(), 3_750, t0);
    let mut s = LayerSelector::default();
    s.start_low();
    assert_eq!(s.retarget(&l, t0), None, "no guess on one layer seen");
    assert!(!s.paused());
    let (l, now) = three(t0);
    assert_eq!(s.retarget(&l, now), Some(rid("f")));
    // Under a cap, the allocator decides; without start_low, the choice alone.
    s.set_cap(Some(u64::MAX));
    assert_eq!(s.retarget(&l, now), Some(rid("q")));
    let mut plain = LayerSelector::default();
    assert_eq!(plain.retarget(&l, now), Some(rid("q")));
}
