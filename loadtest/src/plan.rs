//! Who calls whom: pairs or rooms, each callee's answer (accept, reject, never answer), busy
//! calls aimed at callees already in a call, start times from the ramp, tokens, tone slots and
//! the peers each caller must hear.

use std::sync::Arc;
use std::time::Duration;

use sfu::auth::{Auth, DEV_SECRET, unix_now};

use crate::audio::encode_loop;
use crate::caller::{Answer, Plan, Role};
use crate::{Args, Scenario};

/// Tone slots per call, so the largest group.
pub const MAX_SLOTS: usize = 16;

/// How the callee of call `i` of `n` answers, spreading rejects and no-answers evenly.
fn answer_for(i: usize, n: usize, reject: f64, no_answer: f64) -> Answer {
    let nr = (n as f64 * reject).round() as usize;
    let nn = (n as f64 * no_answer).round() as usize;
    // The last calls get the non-answers, so the first ones (busy targets) connect.
    if i >= n.saturating_sub(nr) {
        Answer::Reject
    } else if i >= n.saturating_sub(nr + nn) {
        Answer::Ignore
    } else {
        Answer::Accept
    }
}

/// Whether call `i` is one of the `share` whose member is killed (spread evenly), and when:
/// half-way to 80 % into its talk time, so the others heard it first.
fn kill_for(i: usize, share: f64) -> Option<f64> {
    let picked = ((i + 1) as f64 * share).floor() > (i as f64 * share).floor();
    picked.then(|| 0.5 + 0.3 * ((i * 7) % 10) as f64 / 10.0)
}

/// Which URL member `member` of call `call` uses: spread over the URLs, each call's members on
/// different ones (as far as there are URLs) unless `--same-node`.
fn node_for(args: &Args, call: usize, member: usize) -> usize {
    let n = args.urls.len().max(1);
    if args.same_node {
        call % n
    } else {
        (call + member) % n
    }
}

struct Users {
    auth: Option<Auth>,
    listed: Vec<(String, String)>,
    next: usize,
    ttl: Duration,
}

impl Users {
    fn take(&mut self, name: String) -> anyhow::Result<(String, String)> {
        if let Some(auth) = &self.auth {
            let token = auth
                .mint(&name, None, false, self.ttl, unix_now())
                .map_err(|e| anyhow::anyhow!("cannot mint a token for {name}: {e}"))?;
            return Ok((name, token));
        }
        let pair =
            self.listed.get(self.next).cloned().ok_or_else(|| {
                anyhow::anyhow!("--tokens has fewer users than the scenario needs")
            })?;
        self.next += 1;
        Ok(pair)
    }
}

/// Every caller of the run.
pub fn plan(args: &Args) -> anyhow::Result<Vec<Plan>> {
    if args.calls == 0 {
        anyhow::bail!("--calls must be at least 1");
    }
    if let Some(bad) = args
        .urls
        .iter()
        .find(|u| !(u.starts_with("ws://") || u.starts_with("wss://")))
    {
        anyhow::bail!("--url {bad}: expected ws://HOST:PORT/ws or wss://...");
    }
    if !(2..=MAX_SLOTS).contains(&args.group_size) {
        anyhow::bail!("--group-size must be between 2 and {MAX_SLOTS}");
    }
    if args.ramp <= 0.0 {
        anyhow::bail!("--ramp must be positive");
    }
    if args.reject + args.no_answer + args.busy > 1.0 {
        anyhow::bail!("--reject + --no-answer + --busy must not exceed 1");
    }
    let mut users = Users {
        auth: None,
        listed: Vec::new(),
        next: 0,
        ttl: args.duration + Duration::from_secs(3600),
    };
    match &args.tokens {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --tokens {}: {e}", path.display()))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut it = line.split_whitespace();
                match (it.next(), it.next()) {
                    (Some(u), Some(t)) => users.listed.push((u.to_string(), t.to_string())),
                    _ => anyhow::bail!("--tokens lines are `user token`"),
                }
            }
        }
        None => {
            let secret = args
                .jwt_secret
                .clone()
                .unwrap_or_else(|| DEV_SECRET.to_string());
            users.auth = Some(Auth::new(secret.as_bytes()));
        }
    }
    let loops: Vec<Arc<Vec<crate::audio::Frame>>> = (0..MAX_SLOTS)
        .map(|s| encode_loop(s).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let step = Duration::from_secs_f64(1.0 / args.ramp);
    // Callers start once every callee had time to log in.
    let base = Duration::from_secs(1);
    let phantom = |mut v: Vec<(String, usize)>| {
        if args.expect_phantom_peer && !v.is_empty() {
            v.push(("phantom".to_string(), MAX_SLOTS - 1));
        }
        v
    };
    let mut plans = Vec::new();
    match args.scenario {
        Scenario::OneToOne => {
            let n = args.calls;
            let busy = (n as f64 * args.busy).round() as usize;
            let normal = n - busy;
            if busy > 0 && normal == 0 {
                anyhow::bail!("--busy needs some calls that connect to be busy against");
            }
            let mut targets = Vec::new();
            for i in 0..normal {
                let (a, ta) = users.take(format!("{}-{i}-a", args.prefix))?;
                let (b, tb) = users.take(format!("{}-{i}-b", args.prefix))?;
                let answer = answer_for(i, normal, args.reject, args.no_answer);
                let connects = answer == Answer::Accept;
                if connects {
                    targets.push(b.clone());
                }
                plans.push(Plan {
                    user: a.clone(),
                    token: ta,
                    node: node_for(args, i, 0),
                    role: Role::Caller {
                        to: vec![b.clone()],
                        group: false,
                        delay: base + step * i as u32,
                    },
                    slot: 0,
                    expected: phantom(if connects {
                        vec![(b.clone(), 1)]
                    } else {
                        vec![]
                    }),
                    frames: loops[0].clone(),
                    kill_at: None,
                    view: None,
                    downlink_kbps: None,
                });
                plans.push(Plan {
                    user: b,
                    token: tb,
                    node: node_for(args, i, 1),
                    role: Role::Callee { answer },
                    slot: 1,
                    expected: phantom(if connects { vec![(a, 0)] } else { vec![] }),
                    frames: loops[1].clone(),
                    kill_at: kill_for(i, args.kill).filter(|_| connects),
                    view: None,
                    downlink_kbps: None,
                });
            }
            if busy > 0 && targets.is_empty() {
                anyhow::bail!("--busy needs some callees that accept");
            }
            for j in 0..busy {
                let (c, tc) = users.take(format!("{}-busy{j}-a", args.prefix))?;
                // Start once the targets' calls are up.
                let delay = base + step * normal as u32 + Duration::from_secs(3) + step * j as u32;
                plans.push(Plan {
                    user: c,
                    token: tc,
                    node: node_for(args, normal + j, 0),
                    role: Role::Caller {
                        to: vec![targets[j % targets.len()].clone()],
                        group: false,
                        delay,
                    },
                    slot: 0,
                    expected: vec![],
                    frames: loops[0].clone(),
                    kill_at: None,
                    view: None,
                    downlink_kbps: None,
                });
            }
        }
        Scenario::Group => {
            let k = args.group_size;
            for room in 0..args.calls {
                let mut members = Vec::new();
                for m in 0..k {
                    members.push(users.take(format!("{}-g{room}-{m}", args.prefix))?);
                }
                let answers: Vec<Answer> = (1..k)
                    .map(|m| answer_for(m - 1, k - 1, args.reject, args.no_answer))
                    .collect();
                let joined: Vec<(String, usize)> = std::iter::once((members[0].0.clone(), 0))
                    .chain(
                        (1..k)
                            .filter(|m| answers[m - 1] == Answer::Accept)
                            .map(|m| (members[m].0.clone(), m)),
                    )
                    .collect();
                let connected = joined.len() >= 2;
                let victim = joined
                    .last()
                    .map(|(_, s)| *s)
                    .filter(|s| *s != 0 && connected);
                let kill_at = kill_for(room, args.kill);
                let callees: Vec<String> = members[1..].iter().map(|(u, _)| u.clone()).collect();
                for (m, (user, token)) in members.into_iter().enumerate() {
                    let expect = if connected && joined.iter().any(|(_, s)| *s == m) {
                        joined.iter().filter(|(_, s)| *s != m).cloned().collect()
                    } else {
                        vec![]
                    };
                    let role = if m == 0 {
                        Role::Caller {
                            to: callees.clone(),
                            group: true,
                            delay: base + step * room as u32,
                        }
                    } else {
                        Role::Callee {
                            answer: answers[m - 1],
                        }
                    };
                    plans.push(Plan {
                        user,
                        token,
                        node: node_for(args, room, m),
                        role,
                        slot: m,
                        expected: phantom(expect),
                        frames: loops[m].clone(),
                        kill_at: kill_at.filter(|_| victim == Some(m)),
                        view: None,
                        downlink_kbps: None,
                    });
                }
            }
        }
    }
    choose_views_and_caps(args, &mut plans);
    Ok(plans)
}

/// `--view` for a `--view-share` of the callers (spread evenly), and `--downlink-kbps` for
/// `--capped` callees who answer: the callee of the first calls, or the last member of the
/// first rooms.
fn choose_views_and_caps(args: &Args, plans: &mut [Plan]) {
    if args.view != crate::ViewArg::High {
        for (k, p) in plans.iter_mut().enumerate() {
            if ((k + 1) as f64 * args.view_share).floor() > (k as f64 * args.view_share).floor() {
                p.view = Some(args.view.as_str());
            }
        }
    }
    let Some(kbps) = args.downlink_kbps else {
        return;
    };
    let last_slot = match args.scenario {
        Scenario::OneToOne => 1,
        Scenario::Group => args.group_size - 1,
    };
    plans
        .iter_mut()
        .filter(|p| {
            p.slot == last_slot
                && matches!(
                    p.role,
                    Role::Callee {
                        answer: Answer::Accept
                    }
                )
        })
        .take(args.capped)
        .for_each(|p| p.downlink_kbps = Some(kbps));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn answers_are_spread_as_asked() {
        let a: Vec<Answer> = (0..10).map(|i| answer_for(i, 10, 0.2, 0.1)).collect();
        assert_eq!(a.iter().filter(|x| **x == Answer::Reject).count(), 2);
        assert_eq!(a.iter().filter(|x| **x == Answer::Ignore).count(), 1);
        assert_eq!(a[0], Answer::Accept);
    }

    #[test]
    fn one_to_one_plan_with_busy() {
        let args = Args::parse_from([
            "loadtest", "--calls", "4", "--busy", "0.25", "--reject", "0.25",
        ]);
        let p = plan(&args).unwrap();
        // 3 pairs + 1 busy caller.
        assert_eq!(p.len(), 7);
        let busy = p.last().unwrap();
        match &busy.role {
            Role::Caller { to, .. } => assert_eq!(to, &vec!["lt-0-b".to_string()]),
            _ => panic!("busy plan is a caller"),
        }
        assert!(busy.expected.is_empty());
        // The rejected pair expects nobody.
        assert!(p[4].expected.is_empty() && p[5].expected.is_empty());
        assert_eq!(p[0].expected, vec![("lt-0-b".to_string(), 1)]);
    }

    #[test]
    fn kills_are_spread_and_land_after_half_the_talk() {
        let picked: Vec<f64> = (0..10).filter_map(|i| kill_for(i, 0.3)).collect();
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().all(|f| (0.5..0.8).contains(f)));
        assert_eq!((0..10).filter_map(|i| kill_for(i, 0.0)).count(), 0);
        assert_eq!((0..10).filter_map(|i| kill_for(i, 1.0)).count(), 10);
        let args = Args::parse_from([
            "loadtest",
            "--scenario",
            "group",
            "--calls",
            "2",
            "--group-size",
            "3",
            "--kill",
            "1",
        ]);
        let p = plan(&args).unwrap();
        // The last member of each room, never its caller.
        let killed: Vec<&str> = p
            .iter()
            .filter(|x| x.kill_at.is_some())
            .map(|x| x.user.as_str())
            .collect();
        assert_eq!(killed, vec!["lt-g0-2", "lt-g1-2"]);
    }

    #[test]
    fn callers_spread_over_urls_with_each_calls_members_apart() {
        let urls = "ws://a/ws,ws://b/ws,ws://c/ws";
        let p = plan(&Args::parse_from([
            "loadtest", "--url", urls, "--calls", "3",
        ]))
        .unwrap();
        let nodes: Vec<usize> = p.iter().map(|x| x.node).collect();
        assert_eq!(
            nodes,
            vec![0, 1, 1, 2, 2, 0],
            "caller and callee on different nodes"
        );
        let p = plan(&Args::parse_from([
            "loadtest",
            "--url",
            "ws://a/ws",
            "--url",
            "ws://b/ws",
            "--calls",
            "2",
            "--same-node",
        ]))
        .unwrap();
        let nodes: Vec<usize> = p.iter().map(|x| x.node).collect();
        assert_eq!(nodes, vec![0, 0, 1, 1]);
        let p = plan(&Args::parse_from([
            "loadtest",
            "--url",
            urls,
            "--scenario",
            "group",
            "--calls",
            "1",
            "--group-size",
            "4",
        ]))
        .unwrap();
        let nodes: Vec<usize> = p.iter().map(|x| x.node).collect();
        assert_eq!(nodes, vec![0, 1, 2, 0]);
        assert!(plan(&Args::parse_from(["loadtest", "--url", "http://a"])).is_err());
    }

    #[test]
    fn views_and_downlink_caps_go_where_asked() {
        let p = plan(&Args::parse_from([
            "loadtest",
            "--scenario",
            "group",
            "--group-size",
            "3",
            "--calls",
            "2",
            "--view",
            "low",
            "--view-share",
            "0.5",
            "--downlink-kbps",
            "300",
        ]))
        .unwrap();
        assert_eq!(p.iter().filter(|x| x.view == Some("low")).count(), 3);
        let capped: Vec<&str> = p
            .iter()
            .filter(|x| x.downlink_kbps == Some(300))
            .map(|x| x.user.as_str())
            .collect();
        assert_eq!(
            capped,
            ["lt-g0-2"],
            "one, the last member of the first room"
        );
        let p = plan(&Args::parse_from(["loadtest", "--calls", "2"])).unwrap();
        assert!(
            p.iter()
                .all(|x| x.view.is_none() && x.downlink_kbps.is_none())
        );
    }

    #[test]
    fn group_plan() {
        let args = Args::parse_from([
            "loadtest",
            "--scenario",
            "group",
            "--calls",
            "1",
            "--group-size",
            "3",
        ]);
        let p = plan(&args).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].expected.len(), 2);
        assert_eq!(
            p[2].expected,
            vec![("lt-g0-0".to_string(), 0), ("lt-g0-1".to_string(), 1)]
        );
        assert!(plan(&Args::parse_from(["loadtest", "--group-size", "40"])).is_err());
    }
}
