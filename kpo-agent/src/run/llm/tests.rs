use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use super::*;
use crate::actuate::param::Value;
use crate::{
    collect::procfs::{HostMetrics, HostSnapshot},
    guard::HealthSignal,
    policy::Source as Proposer,
    window::ListenerWindow,
};

const HOST: u64 = 4026531840;

fn listener(netns: u64, overflows: u64, backlog_max: u32) -> ListenerWindow {
    ListenerWindow {
        netns,
        port: 8080,
        family: "ipv4",
        addresses: vec![],
        backlog_limit: 128,
        backlog_max,
        backlog_now: 0,
        enqueued: None,
        synack_retrans: None,
        overflows: Some(overflows),
        overflows_since: None,
        dropping_limit: None,
        pid: None,
        comm: None,
    }
}

fn window(listeners: Vec<ListenerWindow>) -> Window {
    let t = Instant::now();
    Window {
        start: "2026-12-01T03:00:00Z".into(),
        end: "2026-12-01T03:01:00.250Z".into(),
        duration_s: 60.0,
        longest_tick_s: 60.0,
        sampled_fraction: 1.0,
        accept_queue_sampled_fraction: 1.0,
        listeners,
        listener_full_lost: Some(0),
        netns: vec![],
        irqs: vec![],
        irqs_rest: None,
        softirqs: vec![],
        napi: vec![],
        runq_latency: None,
        sampled_context_switches_per_s: None,
        sampled_context_switches_per_cpu_per_s: None,
        sampled_context_switches_per_cpu_rest: None,
        request_latency: vec![],
        request_latency_untimed_ports: Some(0),
        system: HostMetrics::between(&HostSnapshot::empty(t), &HostSnapshot::empty(t)),
        energy: None,
    }
}

fn names(addresses: &[ParamAddress]) -> Vec<String> {
    addresses.iter().map(ToString::to_string).collect()
}

#[test]
fn candidates_are_the_catalogue_and_named_keys_in_the_namespaces_that_matter() {
    let policy = Policy::parse(
        r#"
[params."net.core.somaxconn"]
mode = "auto"
namespaces = ["host", 4026532999]

[params."net.ipv4.tcp_fin_timeout"]
mode = "recommend"

[params."net.ipv4.tcp_*"]
mode = "recommend"
"#,
        "policy.toml",
    )
    .unwrap();
    // Two namespaces with listeners, the one dropping more first; the host's own listener adds
    // no namespace.
    let w = window(vec![
        listener(111, 5, 10),
        listener(HOST, 900, 10),
        listener(222, 50, 10),
        listener(111, 1, 10),
    ]);
    let got = names(&candidates(&policy, &listening(&w), HOST));
    assert_eq!(
        got,
        [
            // every key at the host first; host-wide keys only there
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.core.netdev_max_backlog",
            "net.core.netdev_budget",
            "net.core.netdev_budget_usecs",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "vm.swappiness",
            // named exactly by the policy; the glob adds nothing
            "net.ipv4.tcp_fin_timeout",
            // then the most dropping namespace's copies of every key
            "net.core.somaxconn@netns:222",
            "net.ipv4.tcp_max_syn_backlog@netns:222",
            "net.ipv4.tcp_rmem@netns:222",
            "net.ipv4.tcp_wmem@netns:222",
            "net.ipv4.tcp_fin_timeout@netns:222",
            "net.core.somaxconn@netns:111",
            "net.ipv4.tcp_max_syn_backlog@netns:111",
            "net.ipv4.tcp_rmem@netns:111",
            "net.ipv4.tcp_wmem@netns:111",
            "net.ipv4.tcp_fin_timeout@netns:111",
            // a namespace only somaxconn's policy entry lists
            "net.core.somaxconn@netns:4026532999",
        ]
    );
}

/// The addresses `offer` gives under `toml`, with `keys` at 128 at the host and at `in_netns(ns)`
/// in 30 namespaces, namespace 1000 + n dropping n connections (the last the most).
fn offered_over_thirty_namespaces(
    toml: &str,
    keys: &[&str],
    in_netns: impl Fn(u64) -> i128,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let namespaces: Vec<u64> = (1..=30).map(|n| 1000 + n).collect();
    let mut values = vec![];
    for key in keys {
        values.push((key.to_string(), Value::Int(128)));
        for ns in &namespaces {
            values.push((format!("{key}@netns:{ns}"), Value::Int(in_netns(*ns))));
        }
    }
    let values: Vec<(&str, Value)> = values
        .iter()
        .map(|(a, v)| (a.as_str(), v.clone()))
        .collect();
    let k = crate::change::tests::kernel(&values);
    let (path, _) = crate::change::tests::path(dir.path(), toml, &k);
    let w = window(
        namespaces
            .iter()
            .map(|ns| listener(*ns, ns - 1000, 10))
            .collect(),
    );
    let offered: Vec<String> = offer(&path, &w, HOST)
        .iter()
        .map(|p| p.address.to_string())
        .collect();
    offered
}

/// With more namespaces than the prompt has room for, the offer still holds every key the
/// policy gives the `llm` at the host, and then the keys in the namespaces dropping most: not
/// only copies of the first key.
#[test]
fn a_crowd_of_namespaces_does_not_crowd_out_keys_in_the_offer() {
    let keys = [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "vm.swappiness",
    ];
    let mut toml = String::new();
    for key in keys {
        toml.push_str(&format!(
            "[params.\"{key}\"]\nmode = \"recommend\"\nmin = 0\nmax = 100000\nsources = [\"llm\"]\n"
        ));
    }
    let offered = offered_over_thirty_namespaces(&toml, &keys, |_| 128);
    assert_eq!(offered.len(), MAX_OFFERED);
    assert_eq!(
        offered[..5],
        [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "vm.swappiness",
            "net.core.somaxconn@netns:1030",
            "net.ipv4.tcp_max_syn_backlog@netns:1030",
        ]
    );
    for key in ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"] {
        let copies = offered
            .iter()
            .filter(|a| a.starts_with(&format!("{key}@netns:")))
            .count();
        assert_eq!(
            copies,
            (MAX_OFFERED - 3) / 2 + usize::from(key.contains("somaxconn"))
        );
    }
    assert_eq!(offered[MAX_OFFERED - 1], "net.core.somaxconn@netns:1020");
}

/// s43 (found by hand): with `[defaults]` in observe for the llm, observe-only copies (the host's
/// keys, other namespaces') took places in the cut ahead of a recommend entry's copies in the
/// namespaces dropping most, which were left out. What the policy lets the model drive comes
/// first; observe-only parameters fill what room is left.
#[test]
fn observe_only_parameters_do_not_crowd_out_ones_the_llm_may_drive() {
    // somaxconn in recommend in every namespace; two other keys observe-only everywhere.
    let toml = "[defaults]\nmode = \"observe\"\nsources = [\"llm\"]\n\n\
                [params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nmin = 0\nmax = 100000\n\
                sources = [\"llm\"]\n\n\
                [params.\"net.ipv4.tcp_max_syn_backlog\"]\nmode = \"observe\"\nsources = [\"llm\"]\n\n\
                [params.\"vm.swappiness\"]\nmode = \"observe\"\nsources = [\"llm\"]\n";
    let keys = [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "vm.swappiness",
    ];
    let offered = offered_over_thirty_namespaces(toml, &keys, |_| 128);
    assert_eq!(offered.len(), MAX_OFFERED);
    // The host's somaxconn and its 23 copies in the namespaces dropping most, none observe-only.
    assert_eq!(offered[0], "net.core.somaxconn");
    assert_eq!(offered[1], "net.core.somaxconn@netns:1030");
    assert!(
        offered.iter().all(|a| a.starts_with("net.core.somaxconn")),
        "{offered:?}"
    );
    assert_eq!(offered[MAX_OFFERED - 1], "net.core.somaxconn@netns:1008");
}

/// Defect: the cut at [`MAX_OFFERED`] came before `offered_params` left out the parameters no
/// value can satisfy (somaxconn 16 under min 128, max_step 100%), so each still took a place and
/// the prompt held fewer than it could. They are left out before the cut.
#[test]
fn a_parameter_no_value_can_satisfy_takes_no_place_in_the_offer() {
    let toml = "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nmin = 128\nmax = 100000\n\
                max_step = \"100%\"\nsources = [\"llm\"]\n";
    // The 3 namespaces dropping most at 16.
    let offered = offered_over_thirty_namespaces(toml, &["net.core.somaxconn"], |ns| {
        if ns > 1027 {
            16
        } else {
            128
        }
    });
    let expected: Vec<String> = std::iter::once("net.core.somaxconn".to_string())
        .chain(
            (1004..=1027)
                .rev()
                .map(|ns| format!("net.core.somaxconn@netns:{ns}")),
        )
        .take(MAX_OFFERED)
        .collect();
    assert_eq!(offered, expected);
}

/// A parameter yielded to a person is refused whatever the model says, until `kpo resume`: it
/// is not offered (s50 storyY F7), and it is again once handed back.
#[test]
fn a_parameter_yielded_to_a_person_is_not_offered() {
    let toml = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nsources = [\"llm\"]\n";
    let (host, pod) = ("net.core.somaxconn", "net.core.somaxconn@netns:1001");
    let dir = tempfile::tempdir().unwrap();
    let k = crate::change::tests::kernel(&[(host, Value::Int(128)), (pod, Value::Int(128))]);
    let (mut path, _) = crate::change::tests::path(dir.path(), toml, &k);
    let w = window(vec![listener(1001, 5, 10)]);
    let offered = |path: &ChangePath| -> Vec<String> {
        offer(path, &w, HOST)
            .iter()
            .map(|p| p.address.to_string())
            .filter(|a| a.starts_with("net.core.somaxconn"))
            .collect()
    };
    assert_eq!(offered(&path), [host, pod]);
    let address: ParamAddress = pod.parse().unwrap();
    (path.journal)
        .set_yielded(&address, Some(Value::Int(4096)), "pid 42 (sysctl)")
        .unwrap();
    assert_eq!(offered(&path), [host]);
    assert_eq!(path.journal.resume_param(pod).unwrap().len(), 1);
    assert_eq!(offered(&path), [host, pod]);
}

#[test]
fn the_offered_policy_allows_exactly_what_was_offered_to_the_llm() {
    let somaxconn: ParamAddress = "net.core.somaxconn@netns:7".parse().unwrap();
    let limits = ParamLimits::new(crate::advise::limits::Mode::Auto).bounds(128, 4096);
    let p = OfferedPolicy::new(&[ParamContext {
        address: somaxconn.clone(),
        current: Value::Int(256),
        limits: limits.clone(),
        netns_cookie: None,
        netns: None,
        held: vec![],
    }]);
    assert_eq!(p.allowed(&somaxconn, Source::Llm), Some(limits));
    assert_eq!(p.allowed(&somaxconn, Source::Rules), None);
    let host: ParamAddress = "net.core.somaxconn".parse().unwrap();
    assert_eq!(p.allowed(&host, Source::Llm), None, "another target");
    assert!(p.is_denied("kernel.core_pattern"));
    assert!(p.is_denied("kernel.poweroff_cmd"), "the policy's full list");
    assert!(!p.is_denied("net.core.somaxconn"));
}

#[test]
fn notable_windows_are_those_with_drops_or_a_full_queue() {
    let none = BTreeSet::new();
    let notable = |w: &Window, asked: &BTreeSet<ListenerId>| notable(w, asked, 1, |_| true);
    assert!(!notable(&window(vec![listener(1, 0, 64)]), &none));
    assert!(notable(&window(vec![listener(1, 3, 64)]), &none));
    assert!(notable(&window(vec![listener(1, 0, 128)]), &none));
    let mut w = window(vec![]);
    w.system.listen_overflows = Some(2);
    assert!(notable(&w, &none));
    // A queue full already when the last consultation was asked brings none forward again (s56
    // story AY-4); another listener's, or drops, do.
    let asked = full_listeners(&window(vec![listener(1, 0, 128)]));
    assert!(!notable(&window(vec![listener(1, 0, 128)]), &asked));
    assert!(notable(
        &window(vec![listener(1, 0, 128), listener(2, 0, 128)]),
        &asked
    ));
    assert!(notable(&window(vec![listener(1, 5, 128)]), &asked));
}

/// s61 story BX-2: a namespace where the model is offered nothing (a pod the policy gives it no
/// parameter in) brought every consultation forward while one of its listeners dropped, each
/// prompt offering only the agent's own parameters. Only an offered namespace's drops do now,
/// and the policy says which: a parameter named without `@netns` acts in the agent's own.
#[test]
fn only_drops_where_the_model_is_offered_a_parameter_bring_advice_forward() {
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"
[defaults]
mode = "observe"
sources = ["operator"]

[params."net.core.somaxconn"]
mode = "auto"
sources = ["llm"]
namespaces = ["host"]
"#;
    let (_stage, deciding, _k) = stage_and_deciding(dir.path(), policy, &[]);
    let offered_in = OfferedIn::new(&deciding.change_path().policy, HOST);
    let none = BTreeSet::new();
    let pod = HOST + 1;
    let notable = |w: &Window| notable(w, &none, HOST, |ns| offered_in.any(ns));
    assert!(notable(&window(vec![listener(HOST, 3, 64)])));
    assert!(!notable(&window(vec![listener(pod, 3, 64)])));
    assert!(!notable(&window(vec![listener(pod, 0, 128)])), "full");
    let mut w = window(vec![]);
    w.system.listen_overflows = Some(2);
    assert!(notable(&w));
    // Offered in the pod too: its drops count.
    let policy = policy.replace("[\"host\"]", &format!("[\"host\", {pod}]"));
    let dir = tempfile::tempdir().unwrap();
    let (_stage, deciding, _k) = stage_and_deciding(dir.path(), &policy, &[]);
    let offered_in = OfferedIn::new(&deciding.change_path().policy, HOST);
    assert!(offered_in.any(pod));
    // And the prompt names the namespace each parameter acts in.
    let host = "net.core.somaxconn".parse().unwrap();
    assert_eq!(acts_in(&host, HOST), Some(HOST));
    let copy = format!("net.core.somaxconn@netns:{pod}").parse().unwrap();
    assert_eq!(acts_in(&copy, HOST), Some(pod));
    assert_eq!(acts_in(&"vm.swappiness".parse().unwrap(), HOST), None);
    let offered = offer_among(
        &deciding.change_path().policy,
        HOST,
        vec![host, copy],
        |_| false,
        |_| Some((Value::Int(4096), None)),
    );
    let user = crate::advise::llm::prompt::build_prompt(&offered, &[], &[]).user;
    for (address, netns) in [
        ("net.core.somaxconn".to_string(), HOST),
        (format!("net.core.somaxconn@netns:{pod}"), pod),
    ] {
        assert!(
            user.contains(&format!("{{\"address\":\"{address}\",\"netns\":{netns},")),
            "{user}"
        );
    }
}

#[test]
fn the_window_end_is_read_to_the_millisecond() {
    assert_eq!(end_ms(&window(vec![])), 1_796_094_060_250);
}

fn health(overflows: f64, p99: Option<f64>) -> Health {
    let mut h = BTreeMap::new();
    h.insert(HealthSignal::ListenOverflows, overflows);
    if let Some(p) = p99 {
        h.insert(HealthSignal::RequestP99, p);
    }
    Health(h)
}

fn entry(id: u64, ts_ms: u64, kind: &str, status: &str, revert_of: Option<u64>) -> Entry {
    Entry {
        id,
        ts_ms,
        address: "net.core.somaxconn@netns:7".parse().unwrap(),
        key: None,
        before: Some(Value::Int(128)),
        after: Value::Int(1024),
        source: Proposer::Llm,
        reason: "r".into(),
        kind: kind.into(),
        revert_of,
        status: status.into(),
        detail: None,
        read_back: None,
    }
}

#[test]
fn changes_are_measured_between_the_window_before_and_the_latest_after() {
    let history = vec![
        WindowHealth {
            index: 4,
            end_ms: 1_000,
            health: health(90.0, Some(2000.0)),
            netns: BTreeMap::new(),
            services: Default::default(),
        },
        WindowHealth {
            index: 5,
            end_ms: 2_000,
            health: health(80.04, None),
            netns: BTreeMap::new(),
            services: Default::default(),
        },
        WindowHealth {
            index: 6,
            end_ms: 3_000,
            health: health(0.0, Some(900.0)),
            netns: BTreeMap::new(),
            services: Default::default(),
        },
    ];
    let entries = vec![
        // Before any window kept: not measurable, left out.
        entry(1, 500, "change", "applied", None),
        // After window 5, measured against window 6.
        entry(2, 2_100, "change", "applied", None),
        // Reverted later.
        entry(3, 2_200, "change", "applied", None),
        entry(
            4,
            2_900,
            "revert",
            &status_of_a_revert_carried_out(),
            Some(3),
        ),
        // After the latest window: no effect yet.
        entry(5, 3_100, "change", "failed", None),
    ];
    let got = change_outcomes(&entries, &history, |_| Scope::Host);
    assert_eq!(got.len(), 3, "{got:#?}");
    // An earlier version listed a revert carried out as `applied`.
    let mut listed_by_an_earlier_version = entries.clone();
    listed_by_an_earlier_version[3].status = "applied".into();
    assert_eq!(
        change_outcomes(&listed_by_an_earlier_version, &history, |_| Scope::Host)[1].outcome,
        "reverted"
    );
    assert_eq!(got[0].window_index, 5);
    assert_eq!(got[0].outcome, "applied");
    assert_eq!(
        got[0].effect,
        [MetricChange {
            metric: "listen_overflows".into(),
            before: 80.0,
            after: 0.0
        }],
        "only signals measured in both windows"
    );
    assert_eq!(got[0].from, Value::Int(128));
    assert_eq!(got[0].source, Proposer::Llm);
    assert_eq!(got[1].outcome, "reverted");
    assert_eq!(got[2].window_index, 6);
    assert_eq!(got[2].outcome, "failed");
    assert!(got[2].effect.is_empty());
    // Only the latest MAX_CHANGES.
    let many: Vec<Entry> = (0..20)
        .map(|i| entry(i, 2_100 + i, "change", "applied", None))
        .collect();
    let got = change_outcomes(&many, &history, |_| Scope::Host);
    assert_eq!(got.len(), MAX_CHANGES);
}

/// A change the guard judges by one namespace is measured, for the model, by that namespace's
/// listeners, not by every namespace's (s50 storyY F2); a namespace neither window saw gives no
/// effect.
#[test]
fn a_change_in_one_namespace_is_measured_by_that_namespace_alone() {
    let ending = |end: &str, elsewhere: u64| {
        let mut w = window(vec![listener(7, 0, 128), listener(8, elsewhere, 128)]);
        w.end = end.into();
        w
    };
    let (before, after) = (
        ending("2026-12-01T03:01:00Z", 0),
        ending("2026-12-01T03:02:00Z", 6000),
    );
    let history = vec![WindowHealth::of(5, &before), WindowHealth::of(6, &after)];
    let mut here = entry(1, end_ms(&before) + 1, "change", "applied", None);
    let mut unseen = here.clone();
    unseen.address = "net.core.somaxconn@netns:9".parse().unwrap();
    here.address = "net.core.somaxconn@netns:7".parse().unwrap();
    let overflows = |got: &[ChangeOutcome]| -> Vec<(f64, f64)> {
        got[0]
            .effect
            .iter()
            .filter(|m| m.metric == "listen_overflows")
            .map(|m| (m.before, m.after))
            .collect()
    };
    let entries = [here];
    assert_eq!(Scope::of(&entries[0].address), Scope::Netns(7));
    assert_eq!(
        overflows(&change_outcomes(&entries, &history, Scope::of)),
        [(0.0, 0.0)]
    );
    assert_eq!(
        overflows(&change_outcomes(&entries, &history, |_| Scope::Host)),
        [(0.0, 100.0)],
        "host-wide: namespace 8's 6000 in 60 s"
    );
    let got = change_outcomes(&[unseen], &history, Scope::of);
    assert!(got[0].effect.is_empty(), "{got:?}");
}

/// `request_p99`'s effect is judged over the services busy before the change, as the guard judges
/// it: a port that merely got busy after it is not the change's effect (s62 review1 R1-10), and
/// a busy service that went quiet is counted with however few requests it has left.
#[test]
fn request_p99s_effect_is_over_the_services_busy_before_the_change() {
    let with_services = |end: &str, services: &[(u16, u64, f64)]| {
        let mut w = window(vec![]);
        w.end = end.into();
        w.request_latency = (services.iter())
            .map(
                |&(port, samples, p99_us)| crate::window::RequestLatencyWindow {
                    netns: HOST,
                    port,
                    family: "ipv4",
                    latency: crate::window::hist::LatencySummary {
                        samples,
                        p50_us: p99_us / 2.0,
                        p90_us: p99_us,
                        p99_us,
                        max_us: p99_us,
                    },
                },
            )
            .collect();
        w
    };
    let request_p99 = |before: &Window, after: &Window| -> Vec<(f64, f64)> {
        let history = vec![WindowHealth::of(5, before), WindowHealth::of(6, after)];
        let change = entry(1, end_ms(before) + 1, "change", "applied", None);
        change_outcomes(&[change], &history, |_| Scope::Host)[0]
            .effect
            .iter()
            .filter(|m| m.metric == "request_p99")
            .map(|m| (m.before, m.after))
            .collect()
    };
    let before = with_services(
        "2026-12-01T03:01:00Z",
        &[(8080, 50, 2000.0), (9090, 5, 50000.0)],
    );
    let busier = with_services(
        "2026-12-01T03:02:00Z",
        &[(8080, 50, 2100.0), (9090, 30, 50000.0)],
    );
    assert_eq!(request_p99(&before, &busier), [(2000.0, 2100.0)]);
    let slower_and_fewer = with_services(
        "2026-12-01T03:02:00Z",
        &[(8080, 3, 9000.0), (9090, 30, 50000.0)],
    );
    assert_eq!(request_p99(&before, &slower_and_fewer), [(2000.0, 9000.0)]);
    let quiet = with_services("2026-12-01T03:02:00Z", &[(9090, 30, 50000.0)]);
    assert_eq!(request_p99(&before, &quiet), [], "none of the busy timed");
}

/// The status `kpo journal` gives a revert that was carried out, from a real one (s50 storyY F1:
/// a fixture's `applied` hid that the prompt never said `reverted`).
fn status_of_a_revert_carried_out() -> String {
    use crate::change::tests::{kernel, path};
    let dir = tempfile::tempdir().unwrap();
    let somaxconn = "net.core.somaxconn@netns:4026539999";
    let k = kernel(&[(somaxconn, Value::Int(128))]);
    let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmax_step = \"100%\"\n";
    let (mut p, _) = path(dir.path(), policy, &k);
    let applied = p
        .propose(&crate::policy::Proposal {
            address: somaxconn.parse().unwrap(),
            value: Value::Int(256),
            source: crate::policy::Source::Operator,
            reason: "test".into(),
        })
        .unwrap();
    let revert = p
        .revert(
            applied.journal_id.unwrap(),
            crate::policy::Source::Operator,
            "test",
        )
        .unwrap();
    let entries = p.journal.entries();
    let listed = entries
        .iter()
        .find(|e| Some(e.id) == revert.journal_id)
        .unwrap();
    listed.status.clone()
}

/// Containers' devices share names and indices: the model is told each device's namespace.
#[test]
fn napi_devices_in_the_prompt_carry_their_namespace() {
    use crate::window::NapiWindow;
    let napi = |netns: Option<u64>, ifindex, device: &str, budget_exhausted| NapiWindow {
        netns,
        ifindex,
        device: Some(device.to_string()),
        polls: 100,
        packets: 6400,
        budget_exhausted,
        polls_per_s: 10.0,
        packets_per_s: 640.0,
    };
    let mut w = window(vec![]);
    w.napi = vec![
        napi(None, 0, "backlog", 3),
        napi(Some(4026532001), 2, "eth0", 9),
        napi(Some(4026532002), 2, "eth0", 0),
    ];
    let summary = crate::advise::llm::WindowSummary::from_window(1, &w);
    assert_eq!(
        serde_json::to_value(&summary.napi).unwrap(),
        serde_json::json!([
            {"netns": 4026532001u64, "device": "eth0", "packets_per_s": 640.0,
             "budget_exhausted": 9},
            {"device": "backlog", "packets_per_s": 640.0, "budget_exhausted": 3},
        ])
    );
}

const STAGE_KEY: &str = "sk-stage-test-SECRET";

/// A stage with the advisor on (against a port nothing listens on: nothing here asks it), and
/// the deciding half over an in-memory kernel holding `values`, with `policy`.
fn stage_and_deciding(
    dir: &std::path::Path,
    policy: &str,
    values: &[(&str, Value)],
) -> (LlmStage, Deciding, crate::change::tests::FakeActuators) {
    use crate::advise::llm::{ApiKey, ResolvedLlm};
    let advisor = LlmAdvisor::new(ResolvedLlm {
        base_url: "http://127.0.0.1:9/v1".into(),
        api_key: ApiKey::new(STAGE_KEY),
        config: LlmConfig::default(),
    })
    .unwrap();
    let stage = LlmStage {
        advisor: Some(advisor),
        in_flight: None,
        health: VecDeque::new(),
        host_netns: HOST,
        full_when_asked: BTreeSet::new(),
    };
    let k = crate::change::tests::kernel(values);
    let (path, _) = crate::change::tests::path(dir, policy, &k);
    let deciding = Deciding::with_path(path, false).unwrap().0;
    (stage, deciding, k)
}

/// A consultation whose task panicked still has its `llm` event (docs/llm.md: one per
/// consultation that ended), valid against the schema, without the key, and nothing of it is
/// taken.
#[tokio::test]
async fn a_consultation_that_panicked_has_its_llm_event() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stage, mut deciding, _) = stage_and_deciding(dir.path(), "", &[]);
    let joined = tokio::spawn(async move {
        panic!("boom {STAGE_KEY} {}", "x".repeat(600));
    })
    .await;
    let finished = Finished {
        result: joined.map(|()| unreachable!()),
        asked: Asked {
            offered: vec!["net.core.somaxconn".parse().unwrap()],
            about: WindowRef {
                index: 41,
                end: "2026-12-01T03:01:00Z".into(),
            },
            started: Instant::now(),
        },
    };
    // The warning logged beside the event, captured: it quoted the panic's message unredacted.
    let (events, logged) = crate::logging::logged(|| stage.settle(finished, &mut deciding));
    assert!(
        logged.contains("LLM consultation ended abnormally") && logged.contains("boom [redacted]"),
        "{logged}"
    );
    assert!(!logged.contains(STAGE_KEY), "{logged}");
    assert_eq!(events.len(), 1, "the llm event alone");
    let json: serde_json::Value = serde_json::from_slice(&crate::output::events::encode(
        &events[0],
        "h",
        time::OffsetDateTime::now_utc(),
    ))
    .unwrap();
    assert_eq!(json["kind"], "llm");
    assert_eq!(json["outcome"], "internal_error");
    assert_eq!(json["window"]["index"], 41);
    assert_eq!(json["offered"], 1);
    assert_eq!(json["accepted_ids"], serde_json::json!([]));
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("boom [redacted]"), "{error}");
    assert!(!error.contains(STAGE_KEY));
    assert!(error.len() < 500, "{} bytes", error.len());
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/events.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
}

/// A consultation's answer, settled as if it had been asked about nothing in particular.
fn answered(consultation: Consultation) -> Finished {
    Finished {
        result: Ok(consultation),
        asked: Asked {
            offered: Vec::new(),
            about: WindowRef {
                index: 0,
                end: String::new(),
            },
            started: Instant::now(),
        },
    }
}

/// A policy that lets the LLM alone drive `net.core.somaxconn` in `mode`, within 128 to 65535 and
/// doubling at most.
fn llms_somaxconn(mode: &str) -> String {
    format!(
        "[params.\"net.core.somaxconn\"]\nmode = \"{mode}\"\nmin = 128\nmax = 65535\n\
         max_step = \"100%\"\nsources = [\"llm\"]\n"
    )
}

/// The model's answer `item`, validated against what was offered, which must accept it.
fn accepted_alone(
    item: serde_json::Value,
    offered: &[ParamContext],
    at: &WindowRef,
) -> Vec<crate::advise::recommendation::Recommendation> {
    let v = crate::advise::llm::validate::validate(
        vec![item],
        offered,
        &OfferedPolicy::new(offered),
        at,
    );
    assert_eq!(v.accepted.len(), 1, "{:?}", v.dropped);
    v.accepted
}

/// A consultation about window `at` that offered `offered` parameters and was answered with
/// `recommendations` (validated already).
fn ok_answer(
    stage: &LlmStage,
    at: &WindowRef,
    offered: usize,
    recommendations: Vec<crate::advise::recommendation::Recommendation>,
) -> Consultation {
    let mut c = Consultation::task_failed(
        stage.advisor.as_ref().unwrap(),
        at.clone(),
        offered,
        std::time::Duration::ZERO,
        "",
    );
    c.outcome = crate::advise::llm::Outcome::Ok;
    c.error = None;
    c.recommendations = recommendations;
    c
}

/// The namespace an offered value was read in is gone by the time the model answers, and the
/// kernel gave its inode to another: the advice is refused there (a `change` event, refusal
/// `invalid`), not applied to that other namespace.
#[test]
fn advice_is_refused_in_a_namespace_that_replaced_the_one_read_while_the_model_thought() {
    const NS: &str = "net.core.somaxconn@netns:4026532999";
    let dir = tempfile::tempdir().unwrap();
    let policy = &llms_somaxconn("auto");
    let (mut stage, mut deciding, k) = stage_and_deciding(
        dir.path(),
        policy,
        &[
            ("net.core.somaxconn", Value::Int(4096)),
            (NS, Value::Int(4096)),
        ],
    );
    k.0.lock().unwrap().netns_cookie = Some(7);
    let w = window(vec![listener(4026532999, 50, 128)]);
    let offered = offer(deciding.change_path(), &w, HOST);
    let cookies: Vec<(String, Option<u64>)> = offered
        .iter()
        .map(|p| (p.address.to_string(), p.netns_cookie))
        .collect();
    assert_eq!(
        cookies,
        [
            ("net.core.somaxconn".to_string(), None),
            (NS.to_string(), Some(7))
        ]
    );
    let at = WindowRef {
        index: 3,
        end: "2026-12-01T03:01:00Z".into(),
    };
    let item = serde_json::json!({"parameter": NS, "value": 8192, "can_auto_apply": true});
    let accepted = accepted_alone(item, &offered, &at);
    assert_eq!(accepted[0].netns_cookie, Some(7));
    let consultation = |recommendations| ok_answer(&stage, &at, offered.len(), recommendations);
    let (replaced, same) = (consultation(accepted.clone()), consultation(accepted));

    // While the model thought, the namespace died and its inode went to another (cookie 8).
    k.0.lock().unwrap().netns_cookie = Some(8);
    let events: Vec<serde_json::Value> = stage
        .settle(answered(replaced), &mut deciding)
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let refused: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "change" && e["phase"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0]["refusal"], "invalid");
    let detail = refused[0]["detail"].as_str().unwrap();
    assert!(detail.contains("(cookie 8, was 7 "), "{detail}");
    assert!(
        !events.iter().any(|e| e["phase"] == "applied"),
        "{events:#?}"
    );
    assert_eq!(
        k.0.lock().unwrap().values[NS],
        Value::Int(4096),
        "not written"
    );

    // In the namespace it was read in, the same advice applies.
    k.0.lock().unwrap().netns_cookie = Some(7);
    stage.settle(answered(same), &mut deciding);
    assert_eq!(k.0.lock().unwrap().values[NS], Value::Int(8192));
}

/// The model is told, with each parameter offered, which of its values an operator rejected
/// (with their reason, until when), which are quarantined after a revert of an advisor's change,
/// and which wait on an approval (s50 storyY F4: it was told none of it, and proposed the
/// rejected and the quarantined values at every consultation).
#[test]
fn the_prompt_names_the_values_rejected_quarantined_and_pending() {
    let dir = tempfile::tempdir().unwrap();
    let policy = &llms_somaxconn("recommend");
    let (mut stage, mut deciding, k) = stage_and_deciding(
        dir.path(),
        policy,
        &[("net.core.somaxconn", Value::Int(4096))],
    );
    let w = window(vec![]);
    let at = WindowRef {
        index: 3,
        end: "2026-12-01T03:01:00Z".into(),
    };
    let advise = |stage: &mut LlmStage, deciding: &mut Deciding, value: i64| {
        let offered = offer_with_held(deciding, &w, HOST);
        let item = serde_json::json!({"parameter": "net.core.somaxconn", "value": value});
        let c = ok_answer(
            stage,
            &at,
            offered.len(),
            accepted_alone(item, &offered, &at),
        );
        stage.settle(answered(c), deciding);
    };
    let operator = |deciding: &mut Deciding, request| {
        let (answer, mut reply) = tokio::sync::oneshot::channel();
        deciding.serve(crate::api::server::Incoming {
            request,
            caller: "uid 0 (root)".into(),
            answer,
            connection: None,
        });
        match reply.try_recv().expect("answered") {
            crate::api::Reply::Ok(v) => v,
            other => panic!("{other:?}"),
        }
    };
    let held = |deciding: &Deciding| offer_with_held(deciding, &w, HOST)[0].held.clone();
    assert_eq!(held(&deciding), []);

    advise(&mut stage, &mut deciding, 8192);
    let rejected = operator(
        &mut deciding,
        crate::api::Request::Reject {
            id: "ap-1".into(),
            by: String::new(),
            reason: Some("not during business hours".into()),
        },
    );
    let rejected_at = rejected["resolved_ms"].as_u64().unwrap();
    advise(&mut stage, &mut deciding, 6000);
    let approved = operator(
        &mut deciding,
        crate::api::Request::Approve {
            id: "ap-2".into(),
            by: String::new(),
        },
    );
    assert_eq!(approved["report"]["status"], "applied", "{approved}");
    let applied = approved["report"]["journal_id"].as_u64().unwrap();
    operator(
        &mut deciding,
        crate::api::Request::Revert {
            revert: crate::control::RevertRequest::Id(applied),
            by: None,
        },
    );
    assert_eq!(
        k.0.lock().unwrap().values["net.core.somaxconn"],
        Value::Int(4096)
    );
    advise(&mut stage, &mut deciding, 5000);

    let quarantine = deciding
        .change_path()
        .journal
        .param_state(&"net.core.somaxconn".parse().unwrap())
        .unwrap()
        .quarantine[0]
        .clone();
    assert_eq!(quarantine.value, Value::Int(6000));
    let want = [
        HeldValue {
            value: Value::Int(5000),
            status: HeldStatus::PendingApproval,
            until: None,
            reason: None,
        },
        HeldValue {
            value: Value::Int(8192),
            status: HeldStatus::Rejected,
            until: Some(format_ms(rejected_at + 3_600_000)),
            reason: Some("not during business hours".into()),
        },
        HeldValue {
            value: Value::Int(6000),
            status: HeldStatus::Quarantined,
            until: Some(format_ms(quarantine.until_ms)),
            reason: None,
        },
    ];
    assert_eq!(held(&deciding), want);
    let offered = offer_with_held(&deciding, &w, HOST);
    let user = crate::advise::llm::prompt::build_prompt(&offered, &[], &[]).user;
    let json = serde_json::to_string(&want).unwrap();
    assert!(user.contains(&format!(",\"held\":{json}}}")), "{user}");

    // A quarantine that ended is not held (s51 review F1: its record stays a day), and a long
    // reason is cut.
    (deciding.path_for_tests_mut().journal)
        .quarantine(
            &"net.core.somaxconn".parse().unwrap(),
            &Value::Int(7000),
            std::time::Duration::from_millis(1),
            "test",
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(
        held(&deciding),
        want,
        "the ended quarantine of 7000 is not held"
    );
    advise(&mut stage, &mut deciding, 7100);
    let pending = operator(&mut deciding, crate::api::Request::Pending);
    operator(
        &mut deciding,
        crate::api::Request::Reject {
            id: pending[0]["id"].as_str().unwrap().to_string(),
            by: String::new(),
            reason: Some("é".repeat(300)),
        },
    );
    let reason = held(&deciding)[0].reason.clone().unwrap();
    assert_eq!(reason, format!("{}…", "é".repeat(200)));

    // However many values an operator rejects, the prompt names the latest 8.
    for value in 4200..4208 {
        advise(&mut stage, &mut deciding, value);
        let pending = operator(&mut deciding, crate::api::Request::Pending);
        let id = pending[0]["id"].as_str().unwrap().to_string();
        assert_eq!(pending[0]["value"], value, "{pending}");
        operator(
            &mut deciding,
            crate::api::Request::Reject {
                id,
                by: String::new(),
                reason: None,
            },
        );
    }
    let values: Vec<(Value, HeldStatus)> = (held(&deciding).into_iter())
        .map(|h| (h.value, h.status))
        .collect();
    let newest: Vec<(Value, HeldStatus)> = (4200..4208)
        .rev()
        .map(|v| (Value::Int(v), HeldStatus::Rejected))
        .collect();
    assert_eq!(values, newest);
}

/// An answer for an offered parameter that validation drops for its value (outside the policy's
/// bounds) is in the parameter's history, `kpo explain`, as refused with why (s50 storyY F3: it
/// was only in the `llm` event), the first for the parameter in a reply; one for a parameter not
/// offered, or of another type, is not in anyone's history.
#[test]
fn an_answer_dropped_for_its_value_is_in_the_parameters_history() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stage, mut deciding, _) = stage_and_deciding(
        dir.path(),
        &llms_somaxconn("auto"),
        &[("net.core.somaxconn", Value::Int(4096))],
    );
    let at = WindowRef {
        index: 3,
        end: "2026-12-01T03:01:00Z".into(),
    };
    let offered = offer_with_held(&deciding, &window(vec![]), HOST);
    let v = crate::advise::llm::validate::validate(
        vec![
            serde_json::json!({"parameter": "net.core.somaxconn", "value": 100000, "confidence": 0.8}),
            serde_json::json!({"parameter": "net.core.somaxconn", "value": 200000}),
            serde_json::json!({"parameter": "net.core.somaxconn", "value": 1.5}),
            serde_json::json!({"parameter": "vm.swappiness", "value": 10}),
        ],
        &offered,
        &OfferedPolicy::new(&offered),
        &at,
    );
    assert_eq!(v.accepted, []);
    assert_eq!(v.dropped.len(), 4, "{:?}", v.dropped);
    let mut c = ok_answer(&stage, &at, offered.len(), vec![]);
    c.dropped = v.dropped.clone();
    let mut finished = answered(c);
    finished.asked.offered = offered.iter().map(|p| p.address.clone()).collect();
    stage.settle(finished, &mut deciding);
    // The first for the parameter alone (s51 review4 B2), and not the one of another type (B1).
    let explained = deciding.desk().explain("net.core.somaxconn", 10);
    assert_eq!(explained.len(), 1, "{explained:#?}");
    let entry = &explained[0].entry;
    assert_eq!(entry.done, crate::approvals::Done::Refused);
    assert_eq!(
        entry.recommendation.recommended_value,
        Some(Value::Int(100000))
    );
    // The model's confidence, not 0 (s56 story AY-5: `kpo explain` showed 0.00).
    assert_eq!(entry.recommendation.confidence, 0.8);
    assert_eq!(
        entry.detail.as_deref(),
        Some(format!("dropped (out_of_bounds): {}", v.dropped[0].detail).as_str())
    );
    assert_eq!(deciding.desk().explain("vm.swappiness", 10), []);
}

/// A suggestion of a parameter the policy lets another advisor change is dropped as `managed`
/// (docs/llm.md, Suggestions), in `kpo run` too: the consultation's task validates against the
/// answers for what it offered alone ([`OfferedPolicy`]), by which nothing else is anyone's, so
/// `kpo run` kept such a suggestion, reported it and would post it for a person to change by hand.
#[test]
fn a_suggestion_of_a_parameter_the_rules_change_is_dropped_as_managed() {
    let dir = tempfile::tempdir().unwrap();
    // Everything else observed only (as deploy/policy.example.toml has it): no advisor's.
    let policy = r#"
[defaults]
mode = "observe"

[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
sources = ["llm"]

[params."net.ipv4.tcp_fin_timeout"]
mode = "recommend"
sources = ["rules"]
"#;
    let (mut stage, mut deciding, _) = stage_and_deciding(
        dir.path(),
        policy,
        &[("net.core.somaxconn", Value::Int(4096))],
    );
    let offered = offer(deciding.change_path(), &window(vec![]), HOST);
    assert_eq!(offered.len(), 1, "somaxconn alone is offered");
    let at = WindowRef {
        index: 3,
        end: "2026-12-01T03:01:00Z".into(),
    };
    // As the consultation's task validates a reply's suggestions.
    let s = crate::advise::llm::validate::suggestions(
        Some(serde_json::json!([
            {"parameter": "net.ipv4.tcp_fin_timeout", "reason": "FIN_WAIT2 sockets pile up"},
            {"parameter": "net.ipv4.tcp_tw_reuse", "reason": "TIME_WAIT sockets"},
        ])),
        &offered,
        &OfferedPolicy::new(&offered),
        &at,
        &|_| crate::advise::llm::validate::Current::Exists(Some(Value::Int(60))),
    );
    let mut c = Consultation::task_failed(
        stage.advisor.as_ref().unwrap(),
        at,
        offered.len(),
        std::time::Duration::ZERO,
        "",
    );
    c.outcome = crate::advise::llm::Outcome::Ok;
    c.error = None;
    c.suggested_ids = s.kept.iter().map(|r| r.id.clone()).collect();
    c.dropped_suggestions = s.dropped;
    c.suggestions = s.kept;
    let events: Vec<serde_json::Value> = stage
        .settle(answered(c), &mut deciding)
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let llm = events.iter().find(|e| e["kind"] == "llm").unwrap();
    assert_eq!(
        llm["dropped_suggestions"],
        serde_json::json!([{
            "parameter": "net.ipv4.tcp_fin_timeout",
            "value": null,
            "kind": "managed",
            "detail": "KPO's policy lets rules change net.ipv4.tcp_fin_timeout: it is not one to \
                       change by hand",
        }]),
        "{events:#?}"
    );
    let reported: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "recommendation")
        .map(|e| e["parameter"].as_str().unwrap())
        .collect();
    assert_eq!(reported, ["net.ipv4.tcp_tw_reuse"], "{events:#?}");
    assert_eq!(
        llm["suggested_ids"],
        serde_json::json!([events
            .iter()
            .find(|e| e["kind"] == "recommendation")
            .unwrap()["id"]])
    );
}
