//! Property tests over hostile input: no frame, token or datagram makes the parsers, the call
//! model or the media core panic, and errors stay within the protocol's codes.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::Value;
use sfu::auth::Auth;
use sfu::media::{Command, MediaConfig, MediaCore, MediaEvent, MemberMedia};
use sfu::protocol::{Incoming, Method, codes, parse_frame};
use sfu::signaling::{CallModel, ConnId, ModelConfig};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_frame_parses_to_a_request_or_a_protocol_error(text in ".{0,300}") {
        match parse_frame(&text) {
            Incoming::Invalid { error, .. } => prop_assert!(codes::ALL.contains(&error.code)),
            Incoming::Request { .. } | Incoming::Notification => {}
        }
    }

    #[test]
    fn json_shaped_frames_too(method in "[a-z_]{0,12}", id in prop_oneof![Just("1".to_string()), Just("\"x\"".to_string()), Just("null".to_string()), Just("{}".to_string())], params in ".{0,80}") {
        let text = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\",\"params\":{params}}}");
        let _ = parse_frame(&text);
    }

    #[test]
    fn tokens_never_panic(token in ".{0,600}") {
        let auth = Auth::new(b"a-test-secret-of-some-length");
        prop_assert!(auth.verify(&token, 1_800_000_000).is_err());
    }

    #[test]
    fn the_call_model_answers_any_params(method_i in 0usize..15, params in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut m = CallModel::new(ModelConfig::default());
        let now = Instant::now();
        m.login(now, ConnId(1), Value::from(1), "alice".into());
        let method = [Method::Login, Method::Logout, Method::Call, Method::Invite, Method::Accept,
            Method::Reject, Method::Hangup, Method::Offer, Method::Answer, Method::Mute, Method::Hold,
            Method::Dtmf, Method::Message, Method::Candidate, Method::Ping][method_i];
        let params = serde_json::from_slice::<Value>(&params).unwrap_or(Value::Array(vec![]));
        if method != Method::Login {
            m.request(now, ConnId(1), Value::from(2), method, params);
        }
        m.handle_timeout(now + Duration::from_secs(3600));
        while m.poll_output().is_some() {}
    }

    #[test]
    fn the_media_core_drops_garbage_datagrams(data in prop::collection::vec(any::<u8>(), 0..1500), port in 1u16..65535) {
        let mut core = MediaCore::new(MediaConfig::new("127.0.0.1:5000".parse().unwrap()));
        let now = Instant::now();
        core.handle_datagram(now, ([10, 0, 0, 1], port).into(), &data);
        core.handle_timeout(now + Duration::from_secs(1));
        prop_assert_eq!(core.peers(), 0);
    }

    #[test]
    fn the_media_core_rejects_garbage_sdp(sdp in ".{0,400}") {
        let mut core = MediaCore::new(MediaConfig::new("127.0.0.1:5000".parse().unwrap()));
        core.handle_command(Instant::now(), Command::Offer {
            call_id: "c".into(),
            user: "u".into(),
            sdp: format!("v=0\r\n{sdp}"),
            video: true,
            state: MemberMedia::default(),
            ticket: 1,
        });
        let replied = std::iter::from_fn(|| core.poll_event())
            .any(|e| matches!(e, MediaEvent::Reply { ticket: 1, result: Err(_) }));
        prop_assert!(replied, "garbage SDP gets an error reply");
        prop_assert_eq!(core.peers(), 0);
    }
}
