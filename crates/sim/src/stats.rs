//! Counters the simulator keeps while it runs, readable at any time via a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, shared between the simulation's tasks and whoever reports on them.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Devices connected right now.
    pub devices_connected: AtomicU64,
    /// Successful device connects, reconnects included.
    pub connects: AtomicU64,
    /// Device connects that failed or were refused.
    pub connect_failures: AtomicU64,
    /// Publishes written by devices (telemetry, state and acks; attacks excluded).
    pub messages_sent: AtomicU64,
    /// Bytes written by devices.
    pub bytes_sent: AtomicU64,
    /// QoS 1 publishes of devices the broker acknowledged as accepted (attacks excluded):
    /// what the broker promised to deliver.
    pub messages_acked: AtomicU64,
    /// QoS 1 publishes of devices the broker refused (an MQTT 5 PUBACK reason >= 0x80).
    pub messages_refused: AtomicU64,
    /// Attacks started.
    pub attacks_launched: AtomicU64,
    /// Attacker connect attempts (brute force and spraying).
    pub attack_attempts: AtomicU64,
    /// Attacker connects the broker refused.
    pub attack_refused: AtomicU64,
    /// Attacker connects the broker accepted (should stay 0).
    pub attack_accepted: AtomicU64,
    /// Commands actuators received on their `.../cmd` topic.
    pub cmds_received: AtomicU64,
    /// Commands the actuators' verifier refused (bad signature, replay, stale, other device).
    pub cmds_refused: AtomicU64,
}

/// A point-in-time copy of [`SimStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimSnapshot {
    pub devices_connected: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_acked: u64,
    pub messages_refused: u64,
    pub attacks_launched: u64,
    pub attack_attempts: u64,
    pub attack_refused: u64,
    pub attack_accepted: u64,
    pub cmds_received: u64,
    pub cmds_refused: u64,
}

impl SimStats {
    pub fn snapshot(&self) -> SimSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimSnapshot {
            devices_connected: get(&self.devices_connected),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            messages_sent: get(&self.messages_sent),
            bytes_sent: get(&self.bytes_sent),
            messages_acked: get(&self.messages_acked),
            messages_refused: get(&self.messages_refused),
            attacks_launched: get(&self.attacks_launched),
            attack_attempts: get(&self.attack_attempts),
            attack_refused: get(&self.attack_refused),
            attack_accepted: get(&self.attack_accepted),
            cmds_received: get(&self.cmds_received),
            cmds_refused: get(&self.cmds_refused),
        }
    }
}
