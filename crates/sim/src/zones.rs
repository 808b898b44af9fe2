//! The simulated city's network: an address plan (one `/16` per zone), the infrastructure
//! hosts devices talk to (the video management system, the meter head-end, the SCADA
//! poller, the building controller, the vendors' update servers, the maintenance laptops),
//! and the conduits (IEC 62443 style) that allow exactly the benign flows.
//!
//! [`CityNetwork::config_toml`] renders the `[[detect.zones]]`, `[[detect.conduits]]` and
//! `[detect.firmware]` sections of the platform config for this city (what
//! `citysec sim zones` prints and `citysec demo` loads).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use model::DeviceClass;

use crate::population::MIX;

/// One network zone: a name (the devices' `zone` field) and its address block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: &'static str,
    /// The second octet of the zone's `10.N.0.0/16`.
    pub octet: u8,
    /// Whether devices of the registry live here (false for infrastructure zones).
    pub devices: bool,
    pub description: &'static str,
    /// The zone's block when it is not `10.N.0.0/16`.
    pub cidr: Option<&'static str>,
}

impl Zone {
    pub fn cidr(&self) -> String {
        match self.cidr {
            Some(cidr) => cidr.to_owned(),
            None => format!("10.{}.0.0/16", self.octet),
        }
    }

    /// The address of host `n` (0-based) of the zone, starting at `10.N.<block>.1`; 254
    /// hosts per `/24`.
    pub fn host(&self, block: u8, n: usize) -> IpAddr {
        let third = usize::from(block) + n / 254;
        let fourth = 1 + n % 254;
        IpAddr::V4(Ipv4Addr::new(
            10,
            self.octet,
            u8::try_from(third.min(255)).unwrap_or(255),
            fourth as u8,
        ))
    }
}

/// Every zone of the simulated city. Field zones hold the registered devices (their names
/// are the ones [`MIX`] gives devices); the rest hold the servers devices talk to.
pub const ZONES: &[Zone] = &[
    Zone {
        name: "ps-field",
        octet: 1,
        devices: true,
        description: "sirens and cameras",
        cidr: None,
    },
    Zone {
        name: "transport-field",
        octet: 2,
        devices: true,
        description: "traffic signals and EV chargers",
        cidr: None,
    },
    Zone {
        name: "energy-ami",
        octet: 3,
        devices: true,
        description: "smart meters",
        cidr: None,
    },
    Zone {
        name: "energy-field",
        octet: 4,
        devices: true,
        description: "street lights",
        cidr: None,
    },
    Zone {
        name: "energy-ot",
        octet: 5,
        devices: true,
        description: "feeder breakers",
        cidr: None,
    },
    Zone {
        name: "water-ot",
        octet: 6,
        devices: true,
        description: "pumps, valves, level and quality sensors",
        cidr: None,
    },
    Zone {
        name: "env-sensors",
        octet: 7,
        devices: true,
        description: "air quality and weather stations",
        cidr: None,
    },
    Zone {
        name: "bldg-bms",
        octet: 8,
        devices: true,
        description: "HVAC and access control",
        cidr: None,
    },
    Zone {
        name: "city-core",
        octet: 100,
        devices: false,
        description: "the citysec broker, DNS and NTP",
        cidr: None,
    },
    Zone {
        name: "ps-vms",
        octet: 101,
        devices: false,
        description: "the video management system",
        cidr: None,
    },
    Zone {
        name: "energy-headend",
        octet: 102,
        devices: false,
        description: "the AMI head-end",
        cidr: None,
    },
    Zone {
        name: "scada",
        octet: 103,
        devices: false,
        description: "the SCADA poller (energy and water)",
        cidr: None,
    },
    Zone {
        name: "bldg-ctl",
        octet: 104,
        devices: false,
        description: "the building controller",
        cidr: None,
    },
    Zone {
        name: "transport-ctl",
        octet: 105,
        devices: false,
        description: "the traffic management centre and the charging back-end",
        cidr: None,
    },
    Zone {
        name: "energy-cms",
        octet: 106,
        devices: false,
        description: "the street light management system",
        cidr: None,
    },
    Zone {
        name: "city-it",
        octet: 110,
        devices: false,
        description: "the city's office IT",
        cidr: None,
    },
    Zone {
        name: "maint",
        octet: 120,
        devices: false,
        description: "technicians' maintenance laptops",
        cidr: None,
    },
    Zone {
        name: "vendor-updates",
        octet: 0,
        devices: false,
        description: "the vendors' firmware update servers (outside the city)",
        cidr: Some(UPDATE_SERVERS),
    },
];

/// Looks a zone up by name.
pub fn zone(name: &str) -> Option<&'static Zone> {
    ZONES.iter().find(|z| z.name == name)
}

/// The third octet where the city's own devices start in their zone (`10.N.1.1` on).
pub const CITY_BLOCK: u8 = 1;
/// The third octet where exercise devices start (`10.N.200.1` on), so an exercise's
/// devices never collide with a running city's.
pub const EXERCISE_BLOCK: u8 = 200;

/// The vendors' firmware update servers (outside the city; TEST-NET-2).
pub const UPDATE_SERVERS: &str = "198.51.100.0/28";

/// Well-known hosts devices talk to.
pub mod hosts {
    use std::net::{IpAddr, Ipv4Addr};

    pub const BROKER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 100, 0, 10));
    pub const DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 100, 0, 53));
    pub const NTP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 100, 0, 123));
    pub const VMS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 101, 0, 10));
    pub const HEADEND: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 102, 0, 10));
    pub const SCADA: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 103, 0, 10));
    pub const BMS_CONTROLLER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 104, 0, 10));
    pub const TRAFFIC_CENTRE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 105, 0, 10));
    pub const LIGHT_CMS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 106, 0, 10));
    pub const IT_FILE_SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 110, 0, 20));
    pub const IT_DOMAIN_CONTROLLER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 110, 0, 5));
    pub const MAINT_LAPTOP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 120, 0, 20));
    pub const UPDATE_SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 5));
}

/// A flow the city allows between zones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conduit {
    pub name: &'static str,
    /// A zone name, `internet` or `*`.
    pub from: &'static str,
    pub to: &'static str,
    /// `tcp`, `udp`, `icmp` or `any`.
    pub protocol: &'static str,
    /// Destination ports; empty is any.
    pub ports: &'static [u16],
}

/// The conduits of the simulated city: exactly the benign flows the simulator generates.
pub const CONDUITS: &[Conduit] = &[
    Conduit {
        name: "devices to the citysec broker (MQTT)",
        from: "*",
        to: "city-core",
        protocol: "tcp",
        ports: &[1883, 8883],
    },
    Conduit {
        name: "devices to city DNS and NTP",
        from: "*",
        to: "city-core",
        protocol: "udp",
        ports: &[53, 123],
    },
    Conduit {
        name: "camera video to the VMS",
        from: "ps-field",
        to: "ps-vms",
        protocol: "tcp",
        ports: &[554, 443],
    },
    Conduit {
        name: "meter readings to the AMI head-end",
        from: "energy-ami",
        to: "energy-headend",
        protocol: "tcp",
        ports: &[443, 4059],
    },
    Conduit {
        name: "SCADA polling of feeder breakers (Modbus/TCP, DNP3)",
        from: "scada",
        to: "energy-ot",
        protocol: "tcp",
        ports: &[502, 20000],
    },
    Conduit {
        name: "SCADA polling of the water network (Modbus/TCP)",
        from: "scada",
        to: "water-ot",
        protocol: "tcp",
        ports: &[502],
    },
    Conduit {
        name: "BMS devices to the building controller (BACnet/IP)",
        from: "bldg-bms",
        to: "bldg-ctl",
        protocol: "udp",
        ports: &[47808],
    },
    Conduit {
        name: "traffic signals and chargers to the traffic centre (NTCIP, OCPP)",
        from: "transport-field",
        to: "transport-ctl",
        protocol: "tcp",
        ports: &[443, 8443],
    },
    Conduit {
        name: "street lights to their management system",
        from: "energy-field",
        to: "energy-cms",
        protocol: "tcp",
        ports: &[443],
    },
    Conduit {
        name: "devices to the vendors' update servers",
        from: "*",
        to: "vendor-updates",
        protocol: "tcp",
        ports: &[443],
    },
    Conduit {
        name: "maintenance laptops to devices (SSH, HTTPS) in maintenance windows",
        from: "maint",
        to: "*",
        protocol: "tcp",
        ports: &[22, 443],
    },
];

/// The network of a simulated city: zones, conduits and update servers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CityNetwork;

impl CityNetwork {
    /// The `[[detect.zones]]`, `[[detect.conduits]]` and `[detect.firmware]` sections.
    pub fn detect_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# The simulated city's zones and conduits (citysec sim zones).\n\
             # Field zones hold the registered devices; the others the servers they talk to.\n",
        );
        for zone in ZONES {
            let _ = writeln!(
                out,
                "[[detect.zones]]\n# {}\nname = \"{}\"\ncidrs = [\"{}\"]{}\n",
                zone.description,
                zone.name,
                zone.cidr(),
                if zone.devices {
                    ""
                } else {
                    // Servers and laptops are not registered devices.
                    "\nallow_unregistered = true"
                }
            );
        }
        for conduit in CONDUITS {
            let ports: Vec<String> = conduit.ports.iter().map(u16::to_string).collect();
            let _ = writeln!(
                out,
                "[[detect.conduits]]\nname = \"{}\"\nfrom = \"{}\"\nto = \"{}\"\nprotocol = \"{}\"\nports = [{}]\n",
                conduit.name,
                conduit.from,
                conduit.to,
                conduit.protocol,
                ports.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "# And in [detect.firmware] (a firmware change is a vendor update only after a flow\n# to one of these): update_servers = [\"{UPDATE_SERVERS}\"]\n\
             # `citysec sim zones --merge FILE` writes all of it into a config file."
        );
        out
    }

    /// `config` (a platform config file's text) with this city's zones, conduits and update
    /// servers in `[detect]`, and, when `flow_listen` is given, `[ingest.flow] listen`.
    /// Comments are not kept.
    pub fn merge_into(&self, config: &str, flow_listen: Option<&str>) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let mut table: toml::Table = toml::from_str(config).context("invalid config TOML")?;
        let ours: toml::Table = toml::from_str(&self.detect_toml()).expect("zones toml parses");
        let section = |table: &mut toml::Table, name: &str| -> anyhow::Result<toml::Table> {
            match table.remove(name) {
                None => Ok(toml::Table::new()),
                Some(toml::Value::Table(t)) => Ok(t),
                Some(_) => anyhow::bail!("`{name}` in the config is not a table"),
            }
        };
        let mut detect = section(&mut table, "detect")?;
        let ours_detect = ours["detect"].as_table().expect("detect table");
        for key in ["zones", "conduits"] {
            detect.insert(key.to_owned(), ours_detect[key].clone());
        }
        let mut firmware = section(&mut detect, "firmware")?;
        firmware.insert(
            "update_servers".to_owned(),
            toml::Value::Array(vec![toml::Value::String(UPDATE_SERVERS.to_owned())]),
        );
        detect.insert("firmware".to_owned(), toml::Value::Table(firmware));
        table.insert("detect".to_owned(), toml::Value::Table(detect));
        if let Some(listen) = flow_listen {
            let mut ingest = section(&mut table, "ingest")?;
            let mut flow = section(&mut ingest, "flow")?;
            flow.insert("listen".to_owned(), toml::Value::String(listen.to_owned()));
            ingest.insert("flow".to_owned(), toml::Value::Table(flow));
            table.insert("ingest".to_owned(), toml::Value::Table(ingest));
        }
        // `version` first, as the platform requires it to be present.
        let mut out = String::from("version = 1\n");
        table.remove("version");
        out.push_str(&toml::to_string(&table).context("render the merged config")?);
        Ok(out)
    }

    /// The infrastructure host a class's main application flow goes to, with the
    /// destination port and protocol (`None` for classes that only speak MQTT).
    pub fn application_peer(class: DeviceClass) -> Option<(IpAddr, u16, u8)> {
        use model::proto::{TCP, UDP};
        Some(match class {
            DeviceClass::Camera => (hosts::VMS, 554, TCP),
            DeviceClass::SmartMeter => (hosts::HEADEND, 4059, TCP),
            DeviceClass::TrafficSignal | DeviceClass::EvCharger => {
                (hosts::TRAFFIC_CENTRE, 8443, TCP)
            }
            DeviceClass::StreetLight => (hosts::LIGHT_CMS, 443, TCP),
            DeviceClass::Hvac | DeviceClass::AccessControl => (hosts::BMS_CONTROLLER, 47808, UDP),
            _ => return None,
        })
    }

    /// Whether the SCADA poller polls this class (the device answers from port 502).
    pub fn scada_polled(class: DeviceClass) -> bool {
        matches!(
            class,
            DeviceClass::FeederBreaker
                | DeviceClass::Pump
                | DeviceClass::Valve
                | DeviceClass::LevelSensor
                | DeviceClass::QualitySensor
        )
    }
}

/// Whether every zone [`MIX`] assigns devices to is in [`ZONES`] (checked by a test).
pub fn mix_zones_are_planned() -> bool {
    MIX.iter().all(|p| zone(p.zone).is_some_and(|z| z.devices))
}
