//! The in-memory device directory the broker authenticates against: a read-mostly map
//! loaded from the store at start and updated whenever the registry changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use model::{Device, DeviceStatus};

#[derive(Debug, Default)]
pub struct Directory {
    devices: RwLock<HashMap<String, Arc<Device>>>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Adds or replaces a device.
    pub fn put(&self, device: Device) {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        map.insert(device.id.as_str().to_owned(), Arc::new(device));
    }

    pub fn len(&self) -> usize {
        self.devices.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn active(&self) -> usize {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|d| d.status == DeviceStatus::Active)
            .count()
    }

    /// Every registered device, in no particular order.
    pub fn snapshot(&self) -> Vec<Arc<Device>> {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        devices.values().cloned().collect()
    }

    pub fn lookup(&self, id: &str) -> Option<Arc<Device>> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

impl ingest::mqtt::DeviceDirectory for Directory {
    fn get(&self, id: &str) -> Option<Arc<Device>> {
        self.lookup(id)
    }
}
