//! Root integration tests: the real eBPF programs against the kernel's own counters.
//! Run by `cargo xtask test` with one test thread (they share tracepoints and namespaces).
mod accept_queue;
mod actuate_sysctl;
mod agent_binary;
mod agent_cpufreq;
mod agent_decides;
mod approvals;
mod coalesce_ethtool;
mod common;
mod control_socket;
mod degraded;
mod energy_trust;
mod journal_crash;
mod llm_advisor;
mod perf_counter;
mod request_latency;
mod rules_react;
mod run_loop;
mod runq_latency;
mod sensors_load;
mod sysctl_watch;

use kpo_integration::{needs_root, needs_root_and_btf, needs_root_and_ethtool, trial, Arguments};

fn main() {
    let args = Arguments::from_args();
    // Every agent a test starts inherits this environment: one that names a real LLM endpoint
    // would be consulted. The LLM tests give their agents a local server explicitly.
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL"] {
        std::env::remove_var(var);
    }
    let req = needs_root_and_btf;
    let trials = vec![
        trial(
            "accept_queue::burst_matches_ss_and_drains",
            req(),
            accept_queue::burst_matches_ss_and_drains,
        ),
        trial(
            "sensors_load::irq_softirq_sched_agree_with_proc",
            req(),
            sensors_load::irq_softirq_sched_agree_with_proc,
        ),
        trial(
            "sensors_load::idle_namespace_traffic_is_quiet",
            req(),
            sensors_load::idle_namespace_traffic_is_quiet,
        ),
        trial(
            "request_latency::matches_server_service_time",
            req(),
            request_latency::matches_server_service_time,
        ),
        trial(
            "runq_latency::preempted_and_woken_waits_land_in_their_buckets",
            req(),
            runq_latency::preempted_and_woken_waits_land_in_their_buckets,
        ),
        trial(
            "degraded::no_btf_keeps_offset_free_sensors",
            req(),
            degraded::no_btf_keeps_offset_free_sensors,
        ),
        trial(
            "degraded::missing_tracepoint_turns_one_sensor_off",
            req(),
            degraded::missing_tracepoint_turns_one_sensor_off,
        ),
        trial(
            "degraded::btf_offsets_resolve_on_this_kernel",
            req(),
            degraded::btf_offsets_resolve_on_this_kernel,
        ),
        trial(
            "agent_binary::sigkill_leaves_no_program_behind",
            req(),
            agent_binary::sigkill_leaves_no_program_behind,
        ),
        trial(
            "agent_binary::events_match_schema_and_sigterm_flushes",
            req(),
            agent_binary::events_match_schema_and_sigterm_flushes,
        ),
        trial(
            "agent_binary::a_second_agent_in_the_namespace_is_refused",
            req(),
            agent_binary::a_second_agent_in_the_namespace_is_refused,
        ),
        trial(
            "run_loop::stalled_reader_keeps_ticking_and_honours_sigterm",
            req(),
            run_loop::stalled_reader_keeps_ticking_and_honours_sigterm,
        ),
        trial(
            "run_loop::full_disk_drops_whole_events_and_recovers",
            req(),
            run_loop::full_disk_drops_whole_events_and_recovers,
        ),
        trial(
            "run_loop::sighup_reopens_the_event_file",
            req(),
            run_loop::sighup_reopens_the_event_file,
        ),
        trial(
            "run_loop::unsampled_partial_window_has_no_ebpf_counts",
            req(),
            run_loop::unsampled_partial_window_has_no_ebpf_counts,
        ),
        trial(
            "run_loop::small_duty_fraction_still_samples_every_window",
            req(),
            run_loop::small_duty_fraction_still_samples_every_window,
        ),
        trial(
            "run_loop::no_capabilities_reason_names_the_os_error",
            req(),
            run_loop::no_capabilities_reason_names_the_os_error,
        ),
        trial(
            "run_loop::closed_stdout_ends_the_agent_with_the_reason",
            req(),
            run_loop::closed_stdout_ends_the_agent_with_the_reason,
        ),
        trial(
            "coalesce_ethtool::parses_ethtool_c_output",
            None,
            coalesce_ethtool::parses_ethtool_c_output,
        ),
        trial(
            "coalesce_ethtool::get_on_eth0_matches_ethtool_c",
            needs_root_and_ethtool(Some("eth0")),
            coalesce_ethtool::get_on_eth0_matches_ethtool_c,
        ),
        trial(
            "coalesce_ethtool::unsupported_and_missing_devices_in_a_namespace",
            needs_root_and_ethtool(None),
            coalesce_ethtool::unsupported_and_missing_devices_in_a_namespace,
        ),
        trial(
            "coalesce_ethtool::set_without_cap_net_admin_is_a_permission_error",
            needs_root_and_ethtool(None),
            coalesce_ethtool::set_without_cap_net_admin_is_a_permission_error,
        ),
        trial(
            "perf_counter::software_counter_opens_and_counts",
            needs_root(),
            perf_counter::software_counter_opens_and_counts,
        ),
        trial(
            "journal_crash::kill_at_each_step_then_reconcile_and_revert_all",
            journal_crash::requirement(),
            journal_crash::kill_at_each_step_then_reconcile_and_revert_all,
        ),
        trial(
            "journal_crash::two_clis_racing_serialise",
            journal_crash::requirement(),
            journal_crash::two_clis_racing_serialise,
        ),
        trial(
            "journal_crash::apply_of_core_pattern_is_refused",
            None,
            journal_crash::apply_of_core_pattern_is_refused,
        ),
        trial(
            "control_socket::non_root_callers_are_refused",
            needs_root(),
            control_socket::non_root_callers_are_refused,
        ),
        trial(
            "energy_trust::an_advancing_pmu_is_chosen",
            needs_root(),
            energy_trust::an_advancing_pmu_is_chosen,
        ),
        trial(
            "energy_trust::a_frozen_pmu_is_set_aside",
            needs_root(),
            energy_trust::a_frozen_pmu_is_set_aside,
        ),
        trial(
            "energy_trust::this_machines_power_pmu_is_read_or_reported_absent",
            needs_root(),
            energy_trust::this_machines_power_pmu_is_read_or_reported_absent,
        ),
        trial(
            "energy_trust::an_impossible_pmu_is_set_aside",
            needs_root(),
            energy_trust::an_impossible_pmu_is_set_aside,
        ),
        trial(
            "sysctl_watch::writes_by_others_are_reported_with_pid_comm_and_value",
            needs_root_and_btf(),
            sysctl_watch::writes_by_others_are_reported_with_pid_comm_and_value,
        ),
        trial(
            "actuate_sysctl::somaxconn_and_tcp_rmem_by_path",
            actuate_sysctl::requirement(),
            actuate_sysctl::somaxconn_and_tcp_rmem_by_path,
        ),
        trial(
            "actuate_sysctl::somaxconn_and_tcp_rmem_by_inode",
            actuate_sysctl::requirement(),
            actuate_sysctl::somaxconn_and_tcp_rmem_by_inode,
        ),
        trial(
            "actuate_sysctl::kernel_refusals_are_clear_errors",
            actuate_sysctl::requirement(),
            actuate_sysctl::kernel_refusals_are_clear_errors,
        ),
        trial(
            "actuate_sysctl::is_per_netns_matches_this_kernel",
            actuate_sysctl::requirement(),
            actuate_sysctl::is_per_netns_matches_this_kernel,
        ),
        trial(
            "actuate_sysctl::somaxconn_by_proc_pid_path",
            actuate_sysctl::requirement(),
            actuate_sysctl::somaxconn_by_proc_pid_path,
        ),
        trial(
            "actuate_sysctl::coalescing_dispatch_in_a_namespace",
            actuate_sysctl::requirement(),
            actuate_sysctl::coalescing_dispatch_in_a_namespace,
        ),
        trial(
            "agent_decides::applies_through_the_socket_yields_to_people_and_reverts_on_exit",
            req(),
            agent_decides::applies_through_the_socket_yields_to_people_and_reverts_on_exit,
        ),
        trial(
            "agent_decides::the_accept_queue_rule_raises_somaxconn_in_the_listeners_namespace",
            req(),
            agent_decides::the_accept_queue_rule_raises_somaxconn_in_the_listeners_namespace,
        ),
        trial(
            "approvals::a_burst_makes_a_pending_approval_that_survives_a_restart_and_approve_applies",
            req(),
            approvals::a_burst_makes_a_pending_approval_that_survives_a_restart_and_approve_applies,
        ),
        trial(
            "approvals::recommend_only_holds_an_auto_change_and_rejected_or_expired_ones_are_not_applied",
            req(),
            approvals::recommend_only_holds_an_auto_change_and_rejected_or_expired_ones_are_not_applied,
        ),
        trial(
            "llm_advisor::a_clean_structured_reply_is_applied",
            llm_advisor::requirement(),
            llm_advisor::a_clean_structured_reply_is_applied,
        ),
        trial(
            "llm_advisor::a_fenced_reply_is_applied",
            llm_advisor::requirement(),
            llm_advisor::a_fenced_reply_is_applied,
        ),
        trial(
            "llm_advisor::prose_around_the_json_is_applied",
            llm_advisor::requirement(),
            llm_advisor::prose_around_the_json_is_applied,
        ),
        trial(
            "llm_advisor::an_unknown_parameter_is_dropped",
            llm_advisor::requirement(),
            llm_advisor::an_unknown_parameter_is_dropped,
        ),
        trial(
            "llm_advisor::an_out_of_bounds_value_is_dropped",
            llm_advisor::requirement(),
            llm_advisor::an_out_of_bounds_value_is_dropped,
        ),
        trial(
            "llm_advisor::a_value_of_the_wrong_type_is_dropped",
            llm_advisor::requirement(),
            llm_advisor::a_value_of_the_wrong_type_is_dropped,
        ),
        trial(
            "llm_advisor::a_deny_listed_key_is_dropped",
            llm_advisor::requirement(),
            llm_advisor::a_deny_listed_key_is_dropped,
        ),
        trial(
            "llm_advisor::can_auto_apply_cannot_lift_the_policys_recommend",
            llm_advisor::requirement(),
            llm_advisor::can_auto_apply_cannot_lift_the_policys_recommend,
        ),
        trial(
            "llm_advisor::a_slow_reply_times_out_while_the_loop_keeps_ticking",
            llm_advisor::requirement(),
            llm_advisor::a_slow_reply_times_out_while_the_loop_keeps_ticking,
        ),
        trial(
            "llm_advisor::rate_limited_then_success_honours_retry_after",
            llm_advisor::requirement(),
            llm_advisor::rate_limited_then_success_honours_retry_after,
        ),
        trial(
            "llm_advisor::server_errors_open_the_circuit_breaker",
            llm_advisor::requirement(),
            llm_advisor::server_errors_open_the_circuit_breaker,
        ),
        trial(
            "llm_advisor::an_injected_process_name_reaches_the_model_only_as_data",
            llm_advisor::requirement(),
            llm_advisor::an_injected_process_name_reaches_the_model_only_as_data,
        ),
        trial(
            "llm_advisor::without_a_key_or_an_endpoint_the_advisor_is_off_with_one_log_line",
            llm_advisor::requirement(),
            llm_advisor::without_a_key_or_an_endpoint_the_advisor_is_off_with_one_log_line,
        ),
        trial(
            "rules_react::somaxconn_is_raised_within_ticks_of_a_long_window",
            req(),
            rules_react::somaxconn_is_raised_within_ticks_of_a_long_window,
        ),
        trial(
            "rules_react::a_listener_asking_for_less_gets_application_advice",
            req(),
            rules_react::a_listener_asking_for_less_gets_application_advice,
        ),
        trial(
            "agent_cpufreq::another_writer_of_a_cpufreq_limit_is_yielded_to",
            req(),
            agent_cpufreq::another_writer_of_a_cpufreq_limit_is_yielded_to,
        ),
        trial(
            "agent_cpufreq::an_optimizer_without_cpufreq_says_unsupported",
            req(),
            agent_cpufreq::an_optimizer_without_cpufreq_says_unsupported,
        ),
        trial(
            "agent_cpufreq::the_optimizer_moves_a_knob_in_the_running_agent",
            req(),
            agent_cpufreq::the_optimizer_moves_a_knob_in_the_running_agent,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
