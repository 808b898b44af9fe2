//! The Prometheus text exposition of `/metrics`, rendered from the atomic counters the
//! components keep (no registry: the set of series is fixed and small).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::platform::Inner;

struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.metric(name, "counter", help, value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.metric(name, "gauge", help, value);
    }
}

pub(crate) fn render(inner: &Inner) -> String {
    let mut out = Out(String::with_capacity(4096));
    // A process without the ingest role has no broker: its broker figures are zero.
    let none = ingest::mqtt::BrokerMetrics::default();
    let b = inner
        .broker
        .as_ref()
        .map_or(&none, |broker| broker.metrics());
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    out.gauge(
        "mqtt_connections",
        "Open MQTT connections.",
        load(&b.connections_current) as f64,
    );
    out.counter(
        "mqtt_connects_accepted_total",
        "MQTT connects accepted.",
        load(&b.connects_accepted),
    );
    out.counter(
        "mqtt_connects_refused_total",
        "MQTT connects refused.",
        load(&b.connects_refused),
    );
    out.counter(
        "mqtt_auth_failures_total",
        "MQTT authentication failures.",
        load(&b.auth_failures),
    );
    out.counter(
        "mqtt_received_total",
        "MQTT PUBLISH packets received.",
        load(&b.messages_received),
    );
    out.counter(
        "mqtt_received_bytes_total",
        "MQTT bytes received.",
        load(&b.bytes_received),
    );
    out.counter(
        "mqtt_decode_errors_total",
        "Payloads that could not be decoded.",
        load(&b.decode_errors),
    );
    out.counter(
        "mqtt_publish_denied_total",
        "Publishes refused by the topic policy.",
        load(&b.publish_denied),
    );
    out.counter(
        "mqtt_subscribe_denied_total",
        "Subscriptions refused by the topic policy.",
        load(&b.subscribe_denied),
    );
    out.counter(
        "mqtt_malformed_packets_total",
        "Malformed MQTT packets.",
        load(&b.malformed_packets),
    );
    out.counter(
        "mqtt_dropped_total",
        "Messages dropped (slow subscribers, limits).",
        load(&b.dropped),
    );
    out.counter(
        "mqtt_rate_limited_total",
        "Publishes dropped because their device is over its rate limit.",
        load(&b.rate_limited),
    );
    let c = &inner.counters;
    out.counter(
        "bus_events_published_total",
        "Events published to the bus.",
        load(&c.events_published),
    );
    out.counter(
        "store_events_written_total",
        "Events written to the store.",
        load(&c.events_stored),
    );
    out.counter(
        "store_errors_total",
        "Failed store writes (retried).",
        load(&c.store_errors),
    );
    let status = crate::platform::status(inner);
    let flag = |up: bool| if up { 1.0 } else { 0.0 };
    out.gauge(
        "bus_up",
        "1 while this process reaches the bus and the bus takes events.",
        flag(status.bus_up),
    );
    out.gauge(
        "store_up",
        "1 while this process reaches the store.",
        flag(status.store_up),
    );
    out.gauge(
        "bus_events_buffered",
        "Events held in memory for a bus that does not take them ([bus] buffer_messages).",
        status.events_buffered as f64,
    );
    out.counter(
        "events_refused_unavailable_total",
        "Events refused because the platform could not take them (MQTT, flows, HTTP intake).",
        status.events_refused,
    );
    out.counter(
        "detect_events_total",
        "Events evaluated by detection.",
        load(&c.detect_events),
    );
    out.counter(
        "detect_alerts_raised_total",
        "New alerts raised.",
        load(&c.alerts_raised),
    );
    out.counter(
        "detect_alerts_merged_total",
        "Repeats merged into open alerts.",
        load(&c.alerts_updated),
    );
    out.gauge(
        "devices_registered",
        "Devices in the registry.",
        inner.directory.len() as f64,
    );
    out.gauge(
        "messages_per_second",
        "MQTT messages received per second (1 s sample).",
        c.messages_per_s(),
    );
    out.gauge(
        "uptime_seconds",
        "Seconds since the platform started.",
        inner.started.elapsed().as_secs_f64(),
    );
    let g = &inner.gateway.stats;
    for (name, help, value) in [
        (
            "gateway_commands_requested_total",
            "Command requests the gateway received.",
            &g.requested,
        ),
        (
            "gateway_commands_refused_total",
            "Requests and approvals the gateway refused (audited).",
            &g.refused,
        ),
        (
            "gateway_commands_delivered_total",
            "Commands signed and handed to the broker.",
            &g.delivered,
        ),
        (
            "gateway_commands_acked_total",
            "Commands every device acknowledged.",
            &g.acked,
        ),
        (
            "gateway_commands_device_refused_total",
            "Commands a device refused (its verifier or its own checks).",
            &g.device_refused,
        ),
        (
            "gateway_commands_timed_out_total",
            "Commands not acknowledged in time or undeliverable.",
            &g.timed_out,
        ),
        (
            "gateway_approvals_expired_total",
            "Commands whose approval window closed.",
            &g.expired,
        ),
        (
            "gateway_auto_all_clears_total",
            "All-clears sent for uncommanded siren actuations.",
            &g.auto_all_clears,
        ),
    ] {
        out.counter(name, help, load(value));
    }
    out.gauge(
        "gateway_audit_backlog",
        "Audit entries waiting for the store (cancels sent while it was unreachable).",
        load(&g.audit_backlog) as f64,
    );
    out.counter(
        "gateway_audit_lost_total",
        "Audit entries dropped from a full backlog while the store was unreachable (each gap is an audit.gap entry).",
        load(&g.audit_lost),
    );
    inner.flows.render_metrics(&mut out.0);
    if let Some(bridge) = &inner.bridge {
        // Bridge mode: the consumer of the city's broker.
        let m = bridge.metrics();
        for (name, help, value) in [
            (
                "mqtt_bridge_messages_received_total",
                "Messages read from the city's broker.",
                &m.messages_received,
            ),
            (
                "mqtt_bridge_events_published_total",
                "Events the bridge handed to the bus.",
                &m.events_published,
            ),
            (
                "mqtt_bridge_acks_total",
                "Messages acknowledged to the broker (after the bus took them).",
                &m.acks_sent,
            ),
            (
                "mqtt_bridge_unknown_device_total",
                "Messages naming no registered device (skipped).",
                &m.unknown_device,
            ),
            (
                "mqtt_bridge_decode_errors_total",
                "Payloads that did not decode (skipped).",
                &m.decode_errors,
            ),
            (
                "mqtt_bridge_not_device_topic_total",
                "Messages on topics that are not device topics (skipped).",
                &m.not_device_topic,
            ),
            (
                "mqtt_bridge_log_lines_total",
                "Broker log lines read.",
                &m.log_lines,
            ),
            (
                "mqtt_bridge_log_unrecognised_total",
                "Broker log lines that were not connection messages.",
                &m.log_unrecognised,
            ),
            (
                "mqtt_bridge_connects_total",
                "Connections to the city's broker established.",
                &m.connects,
            ),
            (
                "mqtt_bridge_connection_errors_total",
                "Connection errors with the city's broker.",
                &m.connection_errors,
            ),
            (
                "mqtt_bridge_commands_sent_total",
                "Commands published to devices through the bridge.",
                &m.commands_sent,
            ),
            (
                "mqtt_bridge_commands_unsent_total",
                "Commands not sent: no broker connection was up.",
                &m.commands_unsent,
            ),
        ] {
            out.counter(name, help, load(value));
        }
        out.gauge(
            "mqtt_bridge_connected",
            "Connections to the city's broker that are up.",
            load(&m.connected) as f64,
        );
    }
    out.0
}
