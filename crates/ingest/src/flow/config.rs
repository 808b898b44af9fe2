//! `[ingest.flow]`: the flow collector's configuration section.

use serde::{Deserialize, Serialize};

/// The NetFlow v5/v9 and IPFIX collector (UDP) and the bounds of its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Whether the UDP listener runs (JSON lines over HTTP are accepted either way). Off
    /// when a config file has no `[ingest.flow]` section, so no port opens unasked;
    /// `config/default.toml` turns it on.
    pub enabled: bool,
    /// UDP listen address for NetFlow v5, v9 and IPFIX (one port takes all three).
    pub listen: String,
    /// The socket's kernel receive buffer (SO_RCVBUF), in bytes; bursts beyond it are
    /// dropped by the kernel.
    pub recv_buffer_bytes: usize,
    /// Exporter IP addresses allowed to send; empty allows any (UDP sources can be
    /// spoofed, so also filter on the network).
    pub exporters: Vec<std::net::IpAddr>,
    /// Distinct exporter addresses tracked at once; datagrams from further ones are dropped.
    pub max_exporters: usize,
    /// Datagrams per second accepted from one exporter (token bucket; bursts up to twice this).
    pub datagrams_per_s_per_exporter: u32,
    /// A template not refreshed for this long is forgotten.
    pub template_timeout_s: u64,
    /// Templates kept per exporter address.
    pub max_templates_per_exporter: usize,
    /// Templates kept in total.
    pub max_templates: usize,
    /// How long a data set may wait for its template before it is dropped.
    pub pending_timeout_s: u64,
    /// Bytes of template-less data sets buffered per exporter address.
    pub max_pending_bytes_per_exporter: usize,
    /// Bytes of template-less data sets buffered in total.
    pub max_pending_bytes: usize,
}

impl Default for FlowConfig {
    fn default() -> FlowConfig {
        FlowConfig {
            enabled: false,
            listen: "127.0.0.1:2055".to_owned(),
            recv_buffer_bytes: 4 * 1024 * 1024,
            exporters: Vec::new(),
            max_exporters: 1024,
            datagrams_per_s_per_exporter: 20_000,
            template_timeout_s: 1800,
            max_templates_per_exporter: 512,
            max_templates: 16_384,
            pending_timeout_s: 10,
            max_pending_bytes_per_exporter: 1024 * 1024,
            max_pending_bytes: 16 * 1024 * 1024,
        }
    }
}

impl FlowConfig {
    /// The collector's bounds.
    pub fn limits(&self) -> crate::flow::Limits {
        crate::flow::Limits {
            template_timeout_ms: self.template_timeout_s.saturating_mul(1000) as i64,
            max_templates_per_exporter: self.max_templates_per_exporter,
            max_templates: self.max_templates,
            pending_timeout_ms: self.pending_timeout_s.saturating_mul(1000) as i64,
            max_pending_bytes_per_exporter: self.max_pending_bytes_per_exporter,
            max_pending_bytes: self.max_pending_bytes,
        }
    }
}
