//! The in-memory device directory the broker authenticates against and flows are matched
//! by: read-mostly maps (by id, by IP address) loaded from the store at start and updated
//! whenever the registry changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use model::{Device, DeviceId, DeviceStatus, Sector};

#[derive(Debug, Default)]
pub struct Directory {
    devices: RwLock<HashMap<String, Arc<Device>>>,
    /// Who uses each address (the last device registered with it wins).
    addresses: RwLock<HashMap<IpAddr, (DeviceId, Sector)>>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Adds or replaces a device.
    pub fn put(&self, device: Device) {
        let mut map = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let mut addresses = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = map.get(device.id.as_str()) {
            for ip in &old.addresses {
                if addresses.get(ip).is_some_and(|(id, _)| *id == old.id) {
                    addresses.remove(ip);
                }
            }
        }
        for ip in &device.addresses {
            addresses.insert(*ip, (device.id.clone(), device.sector));
        }
        map.insert(device.id.as_str().to_owned(), Arc::new(device));
    }

    /// The device using `ip`, if any.
    pub fn device_at(&self, ip: IpAddr) -> Option<(DeviceId, Sector)> {
        self.addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .cloned()
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

impl ingest::flow::AddressBook for Directory {
    fn device_at(&self, ip: IpAddr) -> Option<(DeviceId, Sector)> {
        Directory::device_at(self, ip)
    }
}
