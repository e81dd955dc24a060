//! Missing kernel features switch sensors off with a reason; the rest keep working.
use std::path::PathBuf;

use kpo_agent::{
    collect::Collector,
    sensors::{btf, SensorKind, SensorOptions, Sensors},
    window::WindowBuilder,
};

fn reason(sensors: &Sensors, kind: SensorKind) -> Option<String> {
    sensors
        .status()
        .iter()
        .find(|s| s.sensor == kind)
        .and_then(|s| s.reason.as_ref().map(ToString::to_string))
}

pub fn no_btf_keeps_offset_free_sensors() {
    let sensors = Sensors::load(&SensorOptions::new(PathBuf::from("/nonexistent/vmlinux")));
    for kind in [
        SensorKind::AcceptQueue,
        SensorKind::Napi,
        SensorKind::RequestLatency,
    ] {
        let r = reason(&sensors, kind).unwrap_or_else(|| panic!("{kind:?} should be off"));
        assert!(r.contains("BTF"), "{kind:?}: {r}");
    }
    assert!(sensors.is_enabled(SensorKind::Irq));
    assert!(sensors.is_enabled(SensorKind::Softirq));
    // Waiting tasks are keyed by task pointer: no struct field, so no BTF needed.
    assert!(sensors.is_enabled(SensorKind::Sched));
    // The collector keeps producing windows from /proc and the sensors still on.
    let mut collector = Collector::new(
        sensors,
        PathBuf::from("/proc"),
        kpo_agent::config::MAX_WINDOW,
    );
    let mut builder = WindowBuilder::new(collector.sample());
    builder.push(collector.sample());
    let (window, _) = builder.finish().unwrap();
    assert!(
        window.system.mem_available_bytes.is_some(),
        "/proc metrics still read"
    );
    assert!(
        window.listeners.iter().all(|l| l.enqueued.is_none()),
        "enqueued unknown, not zero"
    );
}

pub fn missing_tracepoint_turns_one_sensor_off() {
    let mut opts = SensorOptions::new(PathBuf::from(btf::VMLINUX_BTF));
    opts.tracepoint_exists = Some(Box::new(|tp| tp != "napi_poll"));
    let sensors = Sensors::load(&opts);
    let r = reason(&sensors, SensorKind::Napi).expect("napi off");
    assert!(r.contains("napi_poll"), "{r}");
    for kind in SensorKind::ALL
        .into_iter()
        .filter(|k| *k != SensorKind::Napi)
    {
        assert!(
            sensors.is_enabled(kind),
            "{kind:?}: {:?}",
            reason(&sensors, kind)
        );
    }
}

pub fn btf_offsets_resolve_on_this_kernel() {
    let resolved = btf::resolve(std::path::Path::new(btf::VMLINUX_BTF)).expect("BTF readable");
    assert!(
        resolved.missing.is_empty(),
        "missing: {:?}",
        resolved.missing
    );
    let o = resolved.offsets;
    // struct sock begins with struct sock_common, whose family/state/num sit in its first 32 bytes.
    assert!(o.sk_family < 32 && o.sk_num < 32, "{o:?}");
    assert_eq!(
        o.sk_max_ack_backlog,
        o.sk_ack_backlog + 4,
        "adjacent u32 fields: {o:?}"
    );
    for kind in SensorKind::ALL {
        assert!(kind.missing_offsets(&o).is_empty());
    }
    let kernel = btf::KernelBtf::open(std::path::Path::new(btf::VMLINUX_BTF)).unwrap();
    assert!(kernel.has_raw_tracepoint("sched_switch"));
    assert!(!kernel.has_raw_tracepoint("no_such_tp"));
}
