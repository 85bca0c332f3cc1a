//! A short run of the fuzz targets' bodies (`sfu_suite::fuzz_harness`) over seeds and
//! deterministic mutations of them, so the suite keeps them sound between fuzzing runs
//! (`scripts/fuzz.sh`, cargo-fuzz, figures in docs/security.md).

use sfu_suite::fuzz_harness;
use sfu_suite::netsim::{Client, Rng};
use str0m::media::{Direction, MediaKind};

/// `n` inputs: each seed, then random byte flips, insertions and truncations of them.
fn mutations(seeds: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut out: Vec<Vec<u8>> = seeds.to_vec();
    while out.len() < n {
        rng.chance(0.5);
        let mut v = seeds[(rng.0 % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + rng.0 % 8 {
            rng.chance(0.5);
            let at = (rng.0 % (v.len() as u64 + 1)) as usize;
            match rng.0 % 3 {
                0 if at < v.len() => v[at] ^= 1 << (rng.0 % 8),
                1 => v.insert(at, (rng.0 >> 8) as u8),
                _ => v.truncate(at),
            }
        }
        out.push(v);
    }
    out
}

#[test]
fn frames() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"jsonrpc":"2.0","id":1,"method":"call","params":{"to":["bob"],"media":"video"}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"mute","params":{"call_id":"sfu-c1","audio":true}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"invite","params":{"call_id":"sfu-c1","to":["x"]}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"offer","params":{"call_id":"sfu-c1","sdp":"v=0"}}"#,
        r#"{"jsonrpc":"2.0","id":"a","method":"hangup","params":{"call_id":"sfu-c1"}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for input in mutations(&seeds, 5_000) {
        fuzz_harness::frame(&input);
    }
}

#[test]
fn sdp_offers_and_answers() {
    let mut c = Client::new(0, "seed", std::time::Instant::now());
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    let seeds = vec![offer.to_sdp_string().into_bytes(), b"v=0\r\n".to_vec()];
    for input in mutations(&seeds, 300) {
        fuzz_harness::sdp(&input);
    }
}

#[test]
fn datagrams_after_the_handshake() {
    let seeds: Vec<Vec<u8>> = vec![
        // RTP (PT 111), RTCP RR, a DTLS record header, a STUN binding request header.
        [vec![0x80, 0x6f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2], vec![0; 40]].concat(),
        vec![
            0x81, 0xc9, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,
        ],
        vec![
            0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,
        ],
        vec![
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ],
    ];
    for input in mutations(&seeds, 20_000) {
        fuzz_harness::datagram(&input);
    }
}
