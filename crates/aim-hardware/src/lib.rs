//! GPU hardware for AIM: the catalog of AMD GPUs, the cluster's GPU inventory from node labels,
//! whether a template's hardware is available, the node affinity of its inference pods, and the
//! resolved hardware summary. Pure: no client, no async, deterministic output.

pub mod affinity;
pub mod availability;
pub mod catalog;
pub mod inventory;
pub mod quantity;
pub mod resolved;

pub use affinity::node_affinity;
pub use availability::{Availability, HardwareError, availability};
pub use catalog::{GpuModel, catalog, normalize_device_id, normalize_model};
pub use inventory::{Inventory, NodeGpus, alters_gpu_inventory, strip_to_inventory};
pub use resolved::{DiscoveredHardware, hardware_summary, resolve_hardware};
