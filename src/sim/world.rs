//! The simulated Azure estate: subscriptions, VMs and NSGs, as a TOML file or a test builder.
//!
//! This module owns the data and its invariants (names resolve, subnets agree on their NSG). It
//! knows nothing about HTTP or ARM JSON: `arm.rs` renders it.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

mod guest;
pub use guest::{Guest, ServiceStatus, StartType};
mod jit;
mod paths;
mod peering;
pub use jit::{
    duration_hours as jit_duration_hours, JitPolicy, JitPort, JitRequest, JIT_ALLOW_PRIORITY,
    JIT_DENY_PRIORITY, JIT_RULE_PREFIX,
};
pub use paths::{AdminRule, Bastion, RouteEntry, RouteTable};
pub use peering::Peering;

/// The resource group Azure puts a subscription's Network Watchers in.
pub const NETWORK_WATCHER_RG: &str = "NetworkWatcherRG";

/// The subscription `World::new()` starts with.
pub const DEFAULT_SUBSCRIPTION: &str = "11111111-1111-1111-1111-111111111111";

/// Everything the simulator serves. Loaded from TOML (`World::from_toml_str`) or built in tests
/// (`World::new().vm("web-01").stopped()`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// The only client secret the token endpoint accepts. Tenant and client ids can be anything.
    #[serde(default = "default_client_secret")]
    pub client_secret: String,
    /// How many items one page of a list holds (VMs, NICs, public IPs, availability statuses);
    /// further pages are reached through `nextLink`. The default, 2, makes paging show in small
    /// worlds; fleets want ARM's usual size (e.g. 100).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// What a VM list asked for `$expand=instanceView` answers: "full" instance views,
    /// "status-only" ones (power and provisioning, no `vmAgent`), or "refused" (400: the
    /// compute spec allows the expansion only with a `$filter`).
    #[serde(default)]
    pub vm_list_instance_view: ListedInstanceView,
    /// Resources besides its VMs (disks, NICs, public IPs...) that each resource group with a
    /// VM holds: Resource Health lists them too, so a large subscription's list is long.
    #[serde(default)]
    pub other_resources_per_group: usize,
    /// The subscriptions that exist. Any other subscription id answers 404 `SubscriptionNotFound`.
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<Subscription>,
    /// The virtual machines, each with one NIC named `{name}-nic`.
    #[serde(default, rename = "vm")]
    pub vms: Vec<Vm>,
    /// Network security groups, referenced from `subnet_nsg` / `nic_nsg` of a VM (see
    /// `pick`).
    #[serde(default, rename = "nsg")]
    pub nsgs: Vec<Nsg>,
    /// Service principals and their role assignments (`[[principal]]`). Without any, the one
    /// client `client_secret` signs in may do everything, as an Owner of every subscription;
    /// with some, only a listed principal signs in, and ARM answers 403 `AuthorizationFailed`
    /// for an action none of its roles grants on the scope (see `sim/rbac.rs`).
    #[serde(default, rename = "principal")]
    pub principals: Vec<Principal>,
    /// Route tables, referenced by name from `route_table` of a VM (its subnet's).
    #[serde(default, rename = "route_table", skip_serializing_if = "Vec::is_empty")]
    pub route_tables: Vec<RouteTable>,
    /// Azure Virtual Network Manager security admin rules on virtual networks.
    #[serde(default, rename = "admin_rule", skip_serializing_if = "Vec::is_empty")]
    pub admin_rules: Vec<AdminRule>,
    /// Azure Bastion hosts, each in the `AzureBastionSubnet` of a VM's virtual network or of a
    /// hub virtual network that holds only the host.
    #[serde(default, rename = "bastion", skip_serializing_if = "Vec::is_empty")]
    pub bastions: Vec<Bastion>,
    /// Virtual network peerings (`world/peering.rs`).
    #[serde(default, rename = "peering", skip_serializing_if = "Vec::is_empty")]
    pub peerings: Vec<Peering>,
    /// Defender for Cloud's just-in-time access policies; each writes a deny rule for its
    /// ports into its VMs' NIC NSGs (`world/jit.rs`).
    #[serde(default, rename = "jit_policy", skip_serializing_if = "Vec::is_empty")]
    pub jit_policies: Vec<JitPolicy>,
    /// The JIT requests whose allow rules are in the NSGs now (live state).
    #[serde(skip)]
    pub jit_requests: Vec<JitRequest>,
    /// How far the world's clock is ahead of the machine's, in seconds (tests move it to see a
    /// JIT request end; nothing else reads it).
    #[serde(skip)]
    pub clock_offset_secs: i64,
    /// Regions (e.g. "northeurope") with no Network Watcher. Every other region where a
    /// subscription has a VM has `NetworkWatcher_<region>` in `NetworkWatcherRG`, as Azure
    /// creates it with the first virtual network there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions_without_network_watcher: Vec<String>,
    /// Activity Log events from before the simulator started (`[[activity]]`); the writes it
    /// serves are added as they happen (see `sim/activity.rs`).
    #[serde(default, rename = "activity", skip_serializing_if = "Vec::is_empty")]
    pub activity: Vec<Activity>,
    /// How many events one page of the Activity Log holds (default 200); the rest are reached
    /// through `nextLink`.
    #[serde(default = "default_activity_page_size")]
    pub activity_page_size: usize,
    /// The VM the builder's modifiers change (builder state, not part of the estate).
    #[serde(skip)]
    selected: Selection,
}

/// A service principal (an app registration's client) and what it may do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The application (client) id it signs in with; also its object id in Azure's messages
    /// unless `object_id` is given.
    pub client_id: String,
    /// Its client secret. A federated or managed-identity sign-in naming `client_id` gets the
    /// same role assignments.
    pub client_secret: String,
    /// The service principal's object id, as `AuthorizationFailed` names it.
    #[serde(default)]
    pub object_id: Option<String>,
    /// Role assignments.
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleAssignment>,
    /// The name the Activity Log gives as `caller` of its writes (a UPN, or a display name);
    /// without one, the client id, as Azure writes a service principal's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One Activity Log event from before the simulator started (`[[activity]]` in a world file):
/// someone's write, shown by `Microsoft.Insights/eventtypes/management/values`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// How long before the simulator started it happened, in minutes.
    pub minutes_ago: u64,
    /// Who: a UPN (`alice@contoso.com`) or a service principal's client id.
    pub caller: String,
    /// The operation, as Azure names it, e.g.
    /// `Microsoft.Network/networkSecurityGroups/securityRules/write`.
    pub operation: String,
    /// The full id of the resource it changed.
    pub resource: String,
    /// `Succeeded` unless told otherwise (`Failed`, `Accepted`...).
    #[serde(default = "default_activity_status")]
    pub status: String,
    /// The HTTP status's name, as Azure gives it in `subStatus`: `Created` (201), `OK` (200),
    /// `Accepted` (202)...; `Created` unless told otherwise.
    #[serde(default = "default_activity_sub_status")]
    pub sub_status: String,
}

fn default_activity_page_size() -> usize {
    super::activity::DEFAULT_PAGE_SIZE
}

fn default_activity_status() -> String {
    "Succeeded".to_owned()
}

fn default_activity_sub_status() -> String {
    "Created".to_owned()
}

impl Principal {
    /// The object id Azure's messages name.
    pub fn object_id(&self) -> &str {
        self.object_id.as_deref().unwrap_or(&self.client_id)
    }
}

/// A role assignment: a built-in role's name (see `sim/roles.rs` for the ones modelled) or a
/// custom role's actions, at a subscription (`/subscriptions/{id}`) or resource group
/// (`/subscriptions/{id}/resourceGroups/{name}`) scope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    /// "Reader", "Virtual Machine Contributor", "Network Contributor" or "Contributor"; empty
    /// for a custom role given by `actions`.
    #[serde(default)]
    pub role: String,
    /// A custom role's actions (wildcards as Azure writes them: `*`, `*/read`,
    /// `Microsoft.Compute/virtualMachines/*`).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Where the role is assigned.
    pub scope: String,
}

/// How a VM list answers `$expand=instanceView` (`VirtualMachines_List`/`_ListAll` in the
/// compute spec: "'instanceView' enables fetching run time status of all Virtual Machines, this
/// can only be specified if a valid $filter option is specified"). Refused by default, as the
/// spec says (an open request to allow it, azure-rest-api-specs#42411, quotes the same
/// words); the error's code and message are ours, no recorded answer having been found.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ListedInstanceView {
    /// Every VM with its whole instance view (kinder than the spec).
    Full,
    /// Run-time statuses only: no guest agent (`vmAgent`), computer or OS name (what
    /// `statusOnly=true` answers).
    StatusOnly,
    /// 400 `InvalidParameter` without a `$filter`.
    #[default]
    Refused,
}

/// Which VM the builder's modifiers change: the last one added, or one picked with
/// [`World::select`]. It is builder state, not part of the estate, so it is never serialised and
/// two worlds that differ only in it are equal.
#[derive(Clone, Copy, Debug, Default)]
struct Selection(Option<usize>);

impl PartialEq for Selection {
    fn eq(&self, _: &Selection) -> bool {
        true
    }
}

/// One Azure subscription.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The subscription id (a GUID in Azure; any string here).
    pub id: String,
    /// Whether `Microsoft.ResourceHealth` is registered. When false, Resource Health answers
    /// 409 `MissingSubscriptionRegistration` with its flat error body.
    #[serde(default = "yes")]
    pub resource_health_registered: bool,
}

/// One virtual machine with its NIC, public IP and guest state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// VM name; also the computer name. Matched case-insensitively, like Azure does.
    pub name: String,
    /// Subscription id; defaults to the first `[[subscription]]` of the file.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of the VM, its NIC, public IP and virtual network.
    pub resource_group: String,
    /// Azure region, e.g. "westeurope".
    #[serde(default = "default_location")]
    pub location: String,
    /// Size shown in `hardwareProfile.vmSize`.
    #[serde(default = "default_vm_size")]
    pub vm_size: String,
    /// Guest operating system: "Windows" or "Linux".
    #[serde(default)]
    pub os: Os,
    /// Power state: running, stopped, deallocated, starting, stopping, deallocating, unknown, or
    /// absent (no `PowerState/*` status at all, as for some failed VMs).
    #[serde(default)]
    pub power_state: PowerState,
    /// Provisioning state as in the status code, e.g. "succeeded" or "failed/InternalOperationError".
    #[serde(default = "default_provisioning_state")]
    pub provisioning_state: String,
    /// Guest agent while the VM runs: ready, not-ready or missing. A stopped VM always reports
    /// Not Ready and a deallocated one reports no agent, as Azure does.
    #[serde(default)]
    pub agent: AgentState,
    /// Message of a not-ready agent (default "VM status blob not found.").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_message: Option<String>,
    /// Private IPv4 address of the NIC.
    #[serde(default = "default_private_ip")]
    pub private_ip: String,
    /// The public IP of the NIC, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<PublicIp>,
    /// Subnet name (in `vnet`).
    #[serde(default = "default_subnet")]
    pub subnet: String,
    /// Virtual network name; defaults to `{resource_group}-vnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnet: Option<String>,
    /// The NSG on the subnet, an `[[nsg]]` in the same subscription: `resource-group/name`, or a
    /// bare name (the VM's resource group's NSG of that name, else the subscription's only one).
    /// VMs sharing a subnet must agree on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_nsg: Option<String>,
    /// The NSG on the NIC, named as `subnet_nsg` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_nsg: Option<String>,
    /// The route table on the subnet, a `[[route_table]]` in the same subscription, named as
    /// `subnet_nsg` is. VMs sharing a subnet must agree on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table: Option<String>,
    /// Resource Health of the VM (default: Available).
    #[serde(default)]
    pub health: Health,
    /// `diagnosticsProfile.bootDiagnostics.enabled`.
    #[serde(default = "yes")]
    pub boot_diagnostics: bool,
    /// A custom storage account for boot diagnostics (`bootDiagnostics.storageUri`); without
    /// one, boot diagnostics use managed storage, as Azure does when `storageUri` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_diagnostics_storage: Option<BootStorage>,
    /// Serial console log served by boot diagnostics; default: a generated boot log for the OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_log: Option<String>,
    /// What the boot-diagnostics screenshot shows; default: derived from power and health state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<Screen>,
    /// Whether Remote Desktop is enabled in the guest (`fDenyTSConnections` = 0). A VMAccess
    /// "reset configuration" turns it back on, and its firewall rule (`guest.firewall_rdp_rule`).
    #[serde(default = "yes")]
    pub rdp_enabled: bool,
    /// The port the guest's Remote Desktop service listens on; a VMAccess reset sets 3389.
    #[serde(default = "default_rdp_port")]
    pub rdp_port: u16,
    /// Local administrator accounts in the guest. A VMAccess password reset for a new user adds it.
    #[serde(default = "default_local_admins")]
    pub local_admins: Vec<String>,
    /// How many times a password was set through VMAccess. The password itself is never kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub password_resets: u32,
    /// VM extensions (`virtualMachines/{vm}/extensions`).
    #[serde(default, rename = "extension", skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Extension>,
    /// Inside the guest (`[vm.guest]`): what Run Command's scripts read and fix. Healthy unless
    /// told otherwise.
    #[serde(default)]
    pub guest: Guest,
    /// Until when the VM settles after a start, restart or redeploy (`SimOptions::settle`):
    /// its agent reports Not Ready and Resource Health lags until then.
    #[serde(skip)]
    pub settles_at: Option<std::time::Instant>,
}

/// A customer's storage account holding a VM's boot diagnostics. Managed storage (no account
/// here) belongs to Microsoft and has no firewall of the customer's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootStorage {
    /// Storage account name (3-24 lowercase letters and digits); `storageUri` is
    /// `https://{account}.blob.core.windows.net/`.
    pub account: String,
    /// The account's firewall does not let the simulator's clients in: blob downloads answer
    /// 403 `AuthorizationFailure`, as Azure Storage does for a request from outside the
    /// account's allowed networks, SAS or not.
    #[serde(default)]
    pub firewall: bool,
}

/// A VM extension as ARM keeps it. `protectedSettings` are never stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Extension name, e.g. "enablevmAccess". Matched case-insensitively.
    pub name: String,
    /// Publisher, e.g. "Microsoft.Compute".
    pub publisher: String,
    /// Extension type, e.g. "VMAccessAgent".
    #[serde(rename = "type")]
    pub kind: String,
    /// typeHandlerVersion, e.g. "2.4".
    pub type_handler_version: String,
    /// autoUpgradeMinorVersion.
    #[serde(default = "yes")]
    pub auto_upgrade_minor_version: bool,
    /// forceUpdateTag of the last PUT, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_update_tag: Option<String>,
    /// Public settings as JSON text (TOML cannot hold every JSON value); default "{}".
    #[serde(default = "empty_json_object")]
    pub settings: String,
    /// provisioningState: "Succeeded", "Failed", or "Creating"/"Updating" while an operation runs.
    #[serde(default = "default_extension_state")]
    pub provisioning_state: String,
    /// Message of the extension's status in the instance view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
}

impl Extension {
    /// A VMAccessAgent extension that last ran successfully with empty settings.
    pub fn vmaccess(name: &str) -> Extension {
        Extension {
            name: name.to_owned(),
            publisher: VMACCESS_PUBLISHER.to_owned(),
            kind: VMACCESS_TYPE.to_owned(),
            type_handler_version: "2.4".to_owned(),
            auto_upgrade_minor_version: true,
            force_update_tag: None,
            settings: empty_json_object(),
            provisioning_state: default_extension_state(),
            status_message: None,
        }
    }

    /// The handler, "publisher.type", e.g. "Microsoft.Compute.VMAccessAgent".
    pub fn handler(&self) -> String {
        format!("{}.{}", self.publisher, self.kind)
    }

    /// Whether this is Windows' VMAccessAgent.
    pub fn is_vmaccess(&self) -> bool {
        self.publisher.eq_ignore_ascii_case(VMACCESS_PUBLISHER)
            && self.kind.eq_ignore_ascii_case(VMACCESS_TYPE)
    }

    /// Whether `name` names this extension.
    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Publisher of the Windows VMAccess extension.
pub const VMACCESS_PUBLISHER: &str = "Microsoft.Compute";
/// Type of the Windows VMAccess extension.
pub const VMACCESS_TYPE: &str = "VMAccessAgent";

/// Guest operating system family (`storageProfile.osDisk.osType`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Os {
    /// Windows Server.
    #[default]
    Windows,
    /// Linux (Ubuntu in the generated details).
    Linux,
}

/// The `PowerState/*` code of the instance view.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// `PowerState/running`.
    #[default]
    Running,
    /// `PowerState/stopped` (still allocated, still billed).
    Stopped,
    /// `PowerState/deallocated`.
    Deallocated,
    /// `PowerState/starting`.
    Starting,
    /// `PowerState/stopping`.
    Stopping,
    /// `PowerState/deallocating`.
    Deallocating,
    /// `PowerState/unknown`.
    Unknown,
    /// No PowerState status at all.
    Absent,
}

impl PowerState {
    /// The lowercase word after `PowerState/`, or "absent".
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Deallocated => "deallocated",
            PowerState::Starting => "starting",
            PowerState::Stopping => "stopping",
            PowerState::Deallocating => "deallocating",
            PowerState::Unknown => "unknown",
            PowerState::Absent => "absent",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configured state of the Azure VM guest agent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Reports `Ready`.
    #[default]
    Ready,
    /// Reports `Not Ready` (version "Unknown").
    NotReady,
    /// No `vmAgent` in the instance view.
    Missing,
}

/// What the console screenshot shows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Screen {
    /// Windows lock screen: dark blue with a light login box.
    Login,
    /// Black: the VM is off.
    Black,
    /// A stop error ("blue screen").
    Crash,
    /// "Working on updates" with a progress ring.
    Updates,
    /// A Linux text console with a login prompt.
    Console,
}

/// A public IP address resource attached to the NIC.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicIp {
    /// Resource name, e.g. "web-01-ip".
    pub name: String,
    /// The address; absent for a dynamic IP of a deallocated VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// "Static" or "Dynamic".
    #[serde(default)]
    pub allocation: Allocation,
    /// "Standard" or "Basic".
    #[serde(default)]
    pub sku: Sku,
}

/// `publicIPAllocationMethod`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Allocation {
    /// Keeps its address across deallocation.
    #[default]
    Static,
    /// Loses its address on deallocation, may change on redeploy.
    Dynamic,
}

/// Public IP SKU.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sku {
    /// Closed to inbound traffic unless an NSG allows it.
    #[default]
    Standard,
    /// Open unless an NSG denies.
    Basic,
}

/// Resource Health of a VM (`availabilityStatuses/current`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// availabilityState: Available, Unavailable, Degraded or Unknown.
    #[serde(default = "default_health_state")]
    pub state: String,
    /// One-line summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// reasonType, e.g. "Unplanned".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_type: Option<String>,
    /// reasonChronicity, e.g. "Persistent".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_chronicity: Option<String>,
    /// detailedStatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_status: Option<String>,
    /// When the current state began (RFC 3339); default: when the simulator rendered it, minus an hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred: Option<String>,
    /// recommendedActions (returned with `$expand=recommendedactions`): plain text, or a table
    /// `{ action, url, url_text }`. Plain text gets the `<#ResourceBlade>` link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommended_actions: Vec<RecommendedAction>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: default_health_state(),
            summary: None,
            reason_type: None,
            reason_chronicity: None,
            detailed_status: None,
            occurred: None,
            recommended_actions: Vec::new(),
        }
    }
}

/// One recommended action of Resource Health.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum RecommendedAction {
    /// Just the text; rendered with `actionUrl: "<#ResourceBlade>"`.
    Text(String),
    /// Text with its portal placeholder link.
    Link {
        /// The action text.
        action: String,
        /// A portal placeholder such as "<#SupportCase>".
        url: String,
        /// The link text, e.g. "contact support".
        url_text: String,
    },
}

/// A network security group with its custom rules; Azure's six default rules are implicit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nsg {
    /// NSG name, unique within its resource group.
    pub name: String,
    /// Subscription id; defaults to the first `[[subscription]]`.
    #[serde(default)]
    pub subscription: String,
    /// Resource group of the NSG.
    pub resource_group: String,
    /// Azure region.
    #[serde(default = "default_location")]
    pub location: String,
    /// Custom security rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A custom security rule as configured (`securityRules[]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Rule name.
    pub name: String,
    /// 100..=4096; the lowest matching number wins.
    pub priority: u32,
    /// "Inbound" or "Outbound".
    #[serde(default = "default_direction")]
    pub direction: String,
    /// "Allow" or "Deny".
    pub access: String,
    /// "Tcp", "Udp", "Icmp" or "*".
    #[serde(default = "any")]
    pub protocol: String,
    /// Source address prefix, CIDR or service tag ("Internet", "VirtualNetwork", "*").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Several source prefixes (rendered as `sourceAddressPrefixes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Source port range (default "*").
    #[serde(default = "any")]
    pub source_port: String,
    /// Destination address prefix (default "*").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Destination port or range, e.g. "3389", "1000-2000", "*".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<String>,
    /// Several destination ports (rendered as `destinationPortRanges`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<String>,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Rule {
    /// An inbound TCP rule for one destination port from one source.
    pub fn inbound_tcp(name: &str, priority: u32, access: &str, source: &str, port: &str) -> Rule {
        Rule {
            name: name.to_owned(),
            priority,
            direction: "Inbound".to_owned(),
            access: access.to_owned(),
            protocol: "Tcp".to_owned(),
            source: Some(source.to_owned()),
            sources: Vec::new(),
            source_port: "*".to_owned(),
            destination: Some("*".to_owned()),
            destination_port: Some(port.to_owned()),
            destination_ports: Vec::new(),
            description: None,
        }
    }

    /// Source prefixes, singular or plural, whichever the rule uses.
    pub fn source_prefixes(&self) -> Vec<String> {
        plural_or(&self.sources, self.source.as_deref())
    }

    /// Destination port ranges as configured.
    pub fn destination_port_list(&self) -> Vec<String> {
        plural_or(&self.destination_ports, self.destination_port.as_deref())
    }
}

fn plural_or(plural: &[String], single: Option<&str>) -> Vec<String> {
    if plural.is_empty() {
        vec![single.unwrap_or("*").to_owned()]
    } else {
        plural.to_vec()
    }
}

fn default_client_secret() -> String {
    "sim-secret".to_owned()
}
fn default_page_size() -> usize {
    2
}
fn yes() -> bool {
    true
}
fn default_location() -> String {
    "westeurope".to_owned()
}
fn default_vm_size() -> String {
    "Standard_D2s_v3".to_owned()
}
fn default_provisioning_state() -> String {
    "succeeded".to_owned()
}
fn default_private_ip() -> String {
    "10.0.1.4".to_owned()
}
fn default_subnet() -> String {
    "default".to_owned()
}
fn default_health_state() -> String {
    "Available".to_owned()
}
fn default_direction() -> String {
    "Inbound".to_owned()
}
fn default_rdp_port() -> u16 {
    3389
}
fn default_local_admins() -> Vec<String> {
    vec!["azureadmin".to_owned()]
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn empty_json_object() -> String {
    "{}".to_owned()
}
fn default_extension_state() -> String {
    "Succeeded".to_owned()
}
fn any() -> String {
    "*".to_owned()
}

/// Why a world file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The TOML did not parse or has unknown fields.
    #[error("world file is not valid TOML for the simulator: {0}")]
    Toml(#[from] toml::de::Error),
    /// The TOML parsed but does not describe a consistent estate.
    #[error("world file is inconsistent: {0}")]
    Invalid(String),
}

impl Vm {
    /// Whether the VM is in this subscription and resource group (ARM compares them ignoring
    /// case).
    pub(crate) fn is_in(&self, sub: &str, rg: &str) -> bool {
        self.subscription.eq_ignore_ascii_case(sub) && self.resource_group.eq_ignore_ascii_case(rg)
    }

    /// The VM's ARM id, `/subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/virtualMachines/…`.
    pub(crate) fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// Whether the VM is still settling after a power action brought it back.
    pub fn settling(&self) -> bool {
        self.settles_at
            .is_some_and(|at| std::time::Instant::now() < at)
    }

    /// The virtual network name, `{resource_group}-vnet` unless given.
    pub fn vnet_name(&self) -> String {
        self.vnet
            .clone()
            .unwrap_or_else(|| format!("{}-vnet", self.resource_group))
    }

    /// The NIC name: `{vm}-nic`.
    pub fn nic_name(&self) -> String {
        format!("{}-nic", self.name)
    }

    /// Whether `name` names this VM (Azure names are case-insensitive).
    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn healthy(name: &str, subscription: &str, index: usize) -> Vm {
        let host = 4 + (index % 250);
        Vm {
            name: name.to_owned(),
            subscription: subscription.to_owned(),
            resource_group: "rg-web".to_owned(),
            location: default_location(),
            vm_size: default_vm_size(),
            os: Os::Windows,
            power_state: PowerState::Running,
            provisioning_state: default_provisioning_state(),
            agent: AgentState::Ready,
            agent_message: None,
            private_ip: format!("10.0.1.{host}"),
            public_ip: Some(PublicIp {
                name: format!("{name}-ip"),
                address: Some(format!("20.1.2.{}", 3 + (index % 250))),
                allocation: Allocation::Static,
                sku: Sku::Standard,
            }),
            subnet: default_subnet(),
            vnet: None,
            subnet_nsg: None,
            nic_nsg: Some(format!("{name}-nsg")),
            route_table: None,
            health: Health::default(),
            boot_diagnostics: true,
            boot_diagnostics_storage: None,
            serial_log: None,
            screen: None,
            rdp_enabled: true,
            rdp_port: default_rdp_port(),
            local_admins: default_local_admins(),
            password_resets: 0,
            extensions: Vec::new(),
            guest: Guest::default(),
            settles_at: None,
        }
    }
}

/// Addresses `{a}.{b}.{k / 250}.{4 + k % 250}` for k = 0, 1, ... that are not taken yet.
struct FreshAddresses {
    prefix: &'static str,
    next: usize,
    taken: HashSet<String>,
}

impl FreshAddresses {
    fn new(prefix: &'static str, taken: impl Iterator<Item = String>) -> FreshAddresses {
        FreshAddresses {
            prefix,
            next: 0,
            taken: taken.collect(),
        }
    }

    const CAPACITY: usize = 64_000;

    /// The next free address; it is taken from then on. When all 64,000 are taken, addresses
    /// repeat.
    fn next(&mut self) -> String {
        let mut candidate = String::new();
        for _ in 0..Self::CAPACITY {
            let k = self.next % Self::CAPACITY;
            self.next += 1;
            candidate = format!("{}.{}.{}", self.prefix, k / 250, 4 + k % 250);
            if self.taken.insert(candidate.clone()) {
                break;
            }
        }
        candidate
    }
}

/// The builder: `World::new().vm("a").stopped().vm("b")`. Modifiers apply to the current VM:
/// the last one added, or the one picked with [`World::select`] (to break a few VMs of a
/// [`World::fleet`]). They panic if there is none (a mistake in the test, not in input).
impl World {
    /// An empty world with subscription `11111111-1111-1111-1111-111111111111`.
    pub fn new() -> World {
        World {
            client_secret: default_client_secret(),
            page_size: default_page_size(),
            vm_list_instance_view: ListedInstanceView::default(),
            other_resources_per_group: 0,
            subscriptions: vec![Subscription {
                id: DEFAULT_SUBSCRIPTION.to_owned(),
                resource_health_registered: true,
            }],
            vms: Vec::new(),
            nsgs: Vec::new(),
            principals: Vec::new(),
            route_tables: Vec::new(),
            admin_rules: Vec::new(),
            bastions: Vec::new(),
            peerings: Vec::new(),
            jit_policies: Vec::new(),
            jit_requests: Vec::new(),
            clock_offset_secs: 0,
            regions_without_network_watcher: Vec::new(),
            activity: Vec::new(),
            activity_page_size: default_activity_page_size(),
            selected: Selection::default(),
        }
    }

    /// Adds a service principal signing in with `client_id` and `secret`, with no role yet.
    /// From the first principal on, the world's own `client_secret` no longer signs anyone in.
    pub fn principal(mut self, client_id: &str, secret: &str) -> World {
        self.principals.push(Principal {
            client_id: client_id.to_owned(),
            client_secret: secret.to_owned(),
            object_id: None,
            roles: Vec::new(),
            name: None,
        });
        self
    }

    /// Adds an Activity Log event `minutes_ago` before the simulator starts: `caller` ran
    /// `operation` on `resource` (a full id), and it succeeded.
    pub fn activity(
        mut self,
        minutes_ago: u64,
        caller: &str,
        operation: &str,
        resource: &str,
    ) -> World {
        self.activity.push(Activity {
            minutes_ago,
            caller: caller.to_owned(),
            operation: operation.to_owned(),
            resource: resource.to_owned(),
            status: default_activity_status(),
            sub_status: default_activity_sub_status(),
        });
        self
    }

    /// Assigns a built-in role (by name) to the last principal at `scope`.
    pub fn role_at(mut self, role: &str, scope: &str) -> World {
        let principal = self
            .principals
            .last_mut()
            .expect("role_at needs a principal first");
        principal.roles.push(RoleAssignment {
            role: role.to_owned(),
            actions: Vec::new(),
            scope: scope.to_owned(),
        });
        self
    }

    /// Assigns a custom role with these actions to the last principal at `scope`.
    pub fn custom_role_at(mut self, actions: &[&str], scope: &str) -> World {
        let principal = self
            .principals
            .last_mut()
            .expect("custom_role_at needs a principal first");
        principal.roles.push(RoleAssignment {
            role: String::new(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            scope: scope.to_owned(),
        });
        self
    }

    /// How VM lists answer `$expand=instanceView`.
    pub fn vm_list_instance_view(mut self, answer: ListedInstanceView) -> World {
        self.vm_list_instance_view = answer;
        self
    }

    /// Each resource group with a VM also holds `count` other resources Resource Health lists.
    pub fn other_resources_per_group(mut self, count: usize) -> World {
        self.other_resources_per_group = count;
        self
    }

    /// Adds a subscription (if new). VMs added afterwards go into it.
    pub fn subscription(mut self, id: &str) -> World {
        self.ensure_subscription(id);
        if let Some(pos) = self.subscriptions.iter().position(|s| s.id == id) {
            let sub = self.subscriptions.remove(pos);
            self.subscriptions.push(sub);
        }
        self
    }

    /// Adds a healthy running Windows VM in "rg-web" of the last subscription: agent Ready,
    /// static public IP, NIC NSG `{vm}-nsg` allowing TCP 3389 from any source at priority 1000
    /// (rule "allow-rdp"), boot diagnostics on, Resource Health Available.
    pub fn vm(mut self, name: &str) -> World {
        let sub = self
            .subscriptions
            .last()
            .map(|s| s.id.clone())
            .unwrap_or_else(|| DEFAULT_SUBSCRIPTION.to_owned());
        self.ensure_subscription(&sub);
        let vm = Vm::healthy(name, &sub, self.vms.len());
        self.nsgs.push(Nsg {
            name: format!("{name}-nsg"),
            subscription: sub,
            resource_group: vm.resource_group.clone(),
            location: vm.location.clone(),
            rules: vec![Rule::inbound_tcp("allow-rdp", 1000, "Allow", "*", "3389")],
        });
        self.vms.push(vm);
        self.selected = Selection::default();
        self
    }

    /// Adds `n` healthy running Windows VMs `{prefix}-000`, `{prefix}-001`... (three digits, more
    /// when `n` needs them) to resource group `rg` of the last subscription, for fleet sweeps.
    /// Each has its own NIC `{vm}-nic` (no NIC NSG) and static Standard public IP `{vm}-ip`, agent
    /// Ready, boot diagnostics on, Resource Health Available. They share subnet
    /// `{prefix}-subnet` of `{rg}-vnet`, whose NSG `{rg}-{prefix}-nsg` allows TCP 3389 from any
    /// source at priority 1000 (rule "allow-rdp"). Private addresses come from 10.1.0.0/16 and
    /// public ones from 20.6.0.0/16, skipping any the world already uses, so both stay unique.
    /// The last fleet VM becomes current; pick others with [`World::select`].
    pub fn fleet(mut self, rg: &str, prefix: &str, n: usize) -> World {
        let sub = self
            .subscriptions
            .last()
            .map(|s| s.id.clone())
            .unwrap_or_else(|| DEFAULT_SUBSCRIPTION.to_owned());
        self.ensure_subscription(&sub);
        let nsg_name = format!("{rg}-{prefix}-nsg");
        if self.find_nsg(&sub, rg, &nsg_name).is_none() {
            self.nsgs.push(Nsg {
                name: nsg_name.clone(),
                subscription: sub.clone(),
                resource_group: rg.to_owned(),
                location: default_location(),
                rules: vec![Rule::inbound_tcp("allow-rdp", 1000, "Allow", "*", "3389")],
            });
        }
        let mut private =
            FreshAddresses::new("10.1", self.vms.iter().map(|v| v.private_ip.clone()));
        let mut public = FreshAddresses::new(
            "20.6",
            self.vms
                .iter()
                .filter_map(|v| v.public_ip.as_ref()?.address.clone()),
        );
        let width = n.saturating_sub(1).to_string().len().max(3);
        for i in 0..n {
            let name = format!("{prefix}-{i:0width$}");
            let mut vm = Vm::healthy(&name, &sub, self.vms.len());
            vm.resource_group = rg.to_owned();
            vm.private_ip = private.next();
            if let Some(ip) = vm.public_ip.as_mut() {
                ip.address = Some(public.next());
            }
            vm.subnet = format!("{prefix}-subnet");
            vm.subnet_nsg = Some(nsg_name.clone());
            vm.nic_nsg = None;
            self.vms.push(vm);
        }
        self.selected = Selection::default();
        self
    }

    /// Makes the VM called `name` (the first of that name, in the order added) the current VM,
    /// e.g. `.fleet("rg-fleet", "vm", 500).select("vm-042").stopped()`. Adding VMs makes the
    /// last one added current again. Panics if there is no such VM (a mistake in the test).
    pub fn select(mut self, name: &str) -> World {
        let index = self
            .vms
            .iter()
            .position(|v| v.is_named(name))
            .unwrap_or_else(|| panic!("select(\"{name}\"): no VM of that name in the world"));
        self.selected = Selection(Some(index));
        self
    }

    /// Moves the current VM (and the NSGs made for it) to resource group `rg`.
    pub fn in_group(mut self, rg: &str) -> World {
        let (sub, group, own) = self.own_nsgs();
        for nsg in self.nsgs.iter_mut() {
            if own.iter().any(|name| nsg.is(&sub, &group, name)) {
                nsg.resource_group = rg.to_owned();
            }
        }
        self.current_vm().resource_group = rg.to_owned();
        self
    }

    /// Moves the current VM to virtual network `vnet` (in its resource group).
    pub fn in_vnet(mut self, vnet: &str) -> World {
        self.current_vm().vnet = Some(vnet.to_owned());
        self
    }

    /// Moves the current VM (and the NSGs made for it) to subscription `id`, adding it if new.
    pub fn in_subscription(mut self, id: &str) -> World {
        self.ensure_subscription(id);
        let (sub, group, own) = self.own_nsgs();
        for nsg in self.nsgs.iter_mut() {
            if own.iter().any(|name| nsg.is(&sub, &group, name)) {
                nsg.subscription = id.to_owned();
            }
        }
        self.current_vm().subscription = id.to_owned();
        self
    }

    /// Makes the current VM a Linux VM.
    pub fn linux(mut self) -> World {
        self.current_vm().os = Os::Linux;
        self
    }

    /// Powers the current VM off (still allocated).
    pub fn stopped(self) -> World {
        self.power_state(PowerState::Stopped)
    }

    /// Deallocates the current VM.
    pub fn deallocated(self) -> World {
        self.power_state(PowerState::Deallocated)
    }

    /// Sets the current VM's power state.
    pub fn power_state(mut self, state: PowerState) -> World {
        self.current_vm().power_state = state;
        self
    }

    /// Sets the current VM's provisioning state, e.g. "failed/InternalOperationError".
    pub fn provisioning_state(mut self, state: &str) -> World {
        self.current_vm().provisioning_state = state.to_owned();
        self
    }

    /// The current VM's guest agent reports Not Ready with `message`.
    pub fn agent_not_ready(mut self, message: &str) -> World {
        let vm = self.current_vm();
        vm.agent = AgentState::NotReady;
        vm.agent_message = Some(message.to_owned());
        self
    }

    /// The current VM reports no guest agent at all.
    pub fn agent_missing(mut self) -> World {
        self.current_vm().agent = AgentState::Missing;
        self
    }

    /// The current VM's NIC has no public IP.
    pub fn no_public_ip(mut self) -> World {
        self.current_vm().public_ip = None;
        self
    }

    /// The current VM's public IP is dynamic and currently has no address.
    pub fn dynamic_public_ip_without_address(mut self) -> World {
        let vm = self.current_vm();
        let name = format!("{}-ip", vm.name);
        let ip = vm.public_ip.get_or_insert(PublicIp {
            name,
            address: None,
            allocation: Allocation::Dynamic,
            sku: Sku::Basic,
        });
        ip.address = None;
        ip.allocation = Allocation::Dynamic;
        ip.sku = Sku::Basic;
        self
    }

    /// Puts the current VM in its own subnet `{vm}-snet` whose NSG `{vm}-snet-nsg` denies TCP 3389
    /// from Internet at priority 200 (rule "deny-rdp-internet"). The NIC NSG still allows RDP.
    pub fn nsg_denies_rdp(mut self) -> World {
        let (name, sub, rg, location) = self.current_vm_place();
        let nsg_name = format!("{name}-snet-nsg");
        self.nsgs.retain(|n| !n.is(&sub, &rg, &nsg_name));
        self.nsgs.push(Nsg {
            name: nsg_name.clone(),
            subscription: sub,
            resource_group: rg,
            location,
            rules: vec![Rule::inbound_tcp(
                "deny-rdp-internet",
                200,
                "Deny",
                "Internet",
                "3389",
            )],
        });
        let vm = self.current_vm();
        vm.subnet = format!("{name}-snet");
        vm.subnet_nsg = Some(nsg_name);
        self
    }

    /// The current VM's NIC NSG also denies TCP 3389 from Internet at priority 100
    /// (rule "deny-rdp-internet"), ahead of its allow at 1000.
    pub fn nic_nsg_denies_rdp(mut self) -> World {
        let nsg = self.nic_nsg_mut();
        nsg.rules.retain(|r| r.name != "deny-rdp-internet");
        nsg.rules.push(Rule::inbound_tcp(
            "deny-rdp-internet",
            100,
            "Deny",
            "Internet",
            "3389",
        ));
        self
    }

    /// The current VM's NIC NSG allows TCP 3389 only from `cidr` (rule "allow-rdp-office", priority
    /// 1000); the default rules then deny everyone else.
    pub fn office_only_rdp(mut self, cidr: &str) -> World {
        let nsg = self.nic_nsg_mut();
        nsg.rules = vec![Rule::inbound_tcp(
            "allow-rdp-office",
            1000,
            "Allow",
            cidr,
            "3389",
        )];
        self
    }

    /// Removes every NSG from the current VM's NIC and subnet. A VM on a subnet it shares with
    /// others (a fleet's) moves to its own subnet `{vm}-snet` instead, so its neighbours keep
    /// their NSG.
    pub fn no_nsg(mut self) -> World {
        let (sub, group, own) = self.own_nsgs();
        self.nsgs
            .retain(|n| !own.iter().any(|name| n.is(&sub, &group, name)));
        let vm = self.current_vm();
        vm.nic_nsg = None;
        if vm.subnet_nsg.take().is_some_and(|nsg| !own.contains(&nsg)) {
            vm.subnet = format!("{}-snet", vm.name);
        }
        self
    }

    /// Sets the current VM's Resource Health state and summary.
    pub fn health(mut self, state: &str, summary: &str) -> World {
        let health = &mut self.current_vm().health;
        health.state = state.to_owned();
        health.summary = Some(summary.to_owned());
        if !state.eq_ignore_ascii_case("Available") {
            health
                .reason_type
                .get_or_insert_with(|| "Unplanned".to_owned());
        }
        self
    }

    /// Keeps the current VM's boot diagnostics in the customer's storage account `account`
    /// instead of managed storage.
    pub fn boot_diagnostics_in(mut self, account: &str) -> World {
        self.current_vm().boot_diagnostics_storage = Some(BootStorage {
            account: account.to_owned(),
            firewall: false,
        });
        self
    }

    /// Puts a firewall on the current VM's boot-diagnostics storage account (a custom one,
    /// `diagstore01` unless [`World::boot_diagnostics_in`] named another).
    pub fn storage_firewall(mut self) -> World {
        let storage = self
            .current_vm()
            .boot_diagnostics_storage
            .get_or_insert_with(|| BootStorage {
                account: "diagstore01".to_owned(),
                firewall: false,
            });
        storage.firewall = true;
        self
    }

    /// Turns boot diagnostics off on the current VM.
    pub fn boot_diagnostics_off(mut self) -> World {
        self.current_vm().boot_diagnostics = false;
        self
    }

    /// Unregisters Microsoft.ResourceHealth on the current VM's subscription (or the last
    /// subscription when there is no VM yet).
    pub fn resource_health_unregistered(mut self) -> World {
        let sub = match self.current_vm_ref() {
            Some(vm) => vm.subscription.clone(),
            None => self
                .subscriptions
                .last()
                .map(|s| s.id.clone())
                .unwrap_or_default(),
        };
        for s in self.subscriptions.iter_mut().filter(|s| s.id == sub) {
            s.resource_health_registered = false;
        }
        self
    }

    /// Remote Desktop is disabled in the current VM's guest (what a VMAccess reset repairs).
    pub fn rdp_disabled(mut self) -> World {
        self.current_vm().rdp_enabled = false;
        self
    }

    /// Changes the current VM's guest (`[vm.guest]`), e.g. `.guest(|g| g.firewall_rdp_rule = false)`.
    pub fn guest(mut self, change: impl FnOnce(&mut Guest)) -> World {
        change(&mut self.current_vm().guest);
        self
    }

    /// The current VM already has a VMAccessAgent extension called `name` (e.g. "enablevmAccess"),
    /// as left behind by an earlier reset from the portal.
    pub fn with_vmaccess_extension(mut self, name: &str) -> World {
        let vm = self.current_vm();
        vm.extensions.retain(|e| !e.is_named(name));
        vm.extensions.push(Extension::vmaccess(name));
        self
    }

    /// Sets the client secret the token endpoint accepts.
    pub fn client_secret(mut self, secret: &str) -> World {
        self.client_secret = secret.to_owned();
        self
    }

    /// Sets how many items one page of a list holds (e.g. 100 for a fleet).
    pub fn page_size(mut self, size: usize) -> World {
        self.page_size = size;
        self
    }

    fn ensure_subscription(&mut self, id: &str) {
        if !self.subscriptions.iter().any(|s| s.id == id) {
            self.subscriptions.push(Subscription {
                id: id.to_owned(),
                resource_health_registered: true,
            });
        }
    }

    fn current_index(&self) -> Option<usize> {
        self.selected
            .0
            .filter(|&i| i < self.vms.len())
            .or_else(|| self.vms.len().checked_sub(1))
    }

    fn current_vm_ref(&self) -> Option<&Vm> {
        self.current_index().map(|i| &self.vms[i])
    }

    fn current_vm(&mut self) -> &mut Vm {
        let index = self
            .current_index()
            .expect("call .vm(name) before a VM modifier");
        &mut self.vms[index]
    }

    fn current_vm_place(&mut self) -> (String, String, String, String) {
        let vm = self.current_vm();
        (
            vm.name.clone(),
            vm.subscription.clone(),
            vm.resource_group.clone(),
            vm.location.clone(),
        )
    }

    /// Subscription, resource group and names of the NSGs the builder made for the current VM.
    fn own_nsgs(&mut self) -> (String, String, Vec<String>) {
        let (name, sub, rg, _) = self.current_vm_place();
        (
            sub,
            rg,
            vec![format!("{name}-nsg"), format!("{name}-snet-nsg")],
        )
    }

    fn nic_nsg_mut(&mut self) -> &mut Nsg {
        let (name, sub, rg, location) = self.current_vm_place();
        let found = match self.current_vm().nic_nsg.clone() {
            // The NSG the VM uses, wherever it is.
            Some(reference) => pick(&self.nsgs, &sub, &rg, &reference)
                .and_then(|found| self.nsgs.iter().position(|n| std::ptr::eq(n, found))),
            // A new one of its own, in its group (not another group's of the same name).
            None => {
                let own = format!("{name}-nsg");
                self.current_vm().nic_nsg = Some(own.clone());
                self.nsgs.iter().position(|n| n.is(&sub, &rg, &own))
            }
        };
        let nsg_name = self.current_vm().nic_nsg.clone().unwrap_or_default();
        let pos = match found {
            Some(pos) => pos,
            None => {
                let (group, name) = nsg_name
                    .split_once('/')
                    .map_or((rg, nsg_name.as_str()), |(g, n)| (g.to_owned(), n));
                self.nsgs.push(Nsg {
                    name: name.to_owned(),
                    subscription: sub,
                    resource_group: group,
                    location,
                    rules: Vec::new(),
                });
                self.nsgs.len() - 1
            }
        };
        &mut self.nsgs[pos]
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// Lookups and validation.
impl World {
    /// Parses a world file, fills defaults and checks that it is consistent.
    pub fn from_toml_str(text: &str) -> Result<World, WorldError> {
        let mut world: World = toml::from_str(text)?;
        world.fill_defaults();
        world.validate()?;
        Ok(world)
    }

    /// The admin rules on `vm`'s virtual network, in priority order (equal priorities as
    /// written).
    pub fn admin_rules_of(&self, vm: &Vm) -> Vec<&AdminRule> {
        let mut rules: Vec<&AdminRule> = self
            .admin_rules
            .iter()
            .filter(|r| {
                r.subscription.eq_ignore_ascii_case(&vm.subscription)
                    && r.resource_group.eq_ignore_ascii_case(&vm.resource_group)
                    && r.vnet.eq_ignore_ascii_case(&vm.vnet_name())
            })
            .collect();
        rules.sort_by_key(|r| r.priority);
        rules
    }

    /// The `AzureBastionSubnet` prefix of a Bastion host: its own, else `a.b.255.0/26` of the
    /// `a.b.0.0/16` of a VM in its virtual network.
    pub fn bastion_subnet_prefix(&self, bastion: &Bastion) -> String {
        if let Some(prefix) = &bastion.subnet_prefix {
            return prefix.clone();
        }
        let ip = self
            .vms
            .iter()
            .find(|v| bastion.is_in(&v.subscription, &v.resource_group, &v.vnet_name()))
            .map_or("10.0.1.4", |v| v.private_ip.as_str());
        let octets: Vec<&str> = ip.split('.').collect();
        format!("{}.{}.255.0/26", octets[0], octets.get(1).unwrap_or(&"0"))
    }

    /// Renders the world back to TOML.
    pub fn to_toml_string(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    fn fill_defaults(&mut self) {
        let first = self
            .subscriptions
            .first()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        for vm in self.vms.iter_mut().filter(|v| v.subscription.is_empty()) {
            vm.subscription = first.clone();
        }
        for nsg in self.nsgs.iter_mut().filter(|n| n.subscription.is_empty()) {
            nsg.subscription = first.clone();
        }
        for table in self
            .route_tables
            .iter_mut()
            .filter(|t| t.subscription.is_empty())
        {
            table.subscription = first.clone();
        }
        for rule in self
            .admin_rules
            .iter_mut()
            .filter(|r| r.subscription.is_empty())
        {
            rule.subscription = first.clone();
        }
        for bastion in self
            .bastions
            .iter_mut()
            .filter(|b| b.subscription.is_empty())
        {
            bastion.subscription = first.clone();
        }
        for peering in &mut self.peerings {
            peering.fill_defaults(&first);
        }
        for policy in self
            .jit_policies
            .iter_mut()
            .filter(|p| p.subscription.is_empty())
        {
            policy.subscription = first.clone();
        }
        self.write_jit_rules();
    }

    /// Defender's deny rules for every JIT policy's ports in its VMs' NIC NSGs (idempotent).
    fn write_jit_rules(&mut self) {
        let mut wanted = Vec::new();
        for policy in &self.jit_policies {
            for vm in self.vms.iter().filter(|vm| jit::protects(policy, vm)) {
                for port in &policy.ports {
                    wanted.push((vm.clone(), port.number));
                }
            }
        }
        for (vm, port) in wanted {
            let Some(nsg) = vm.nic_nsg.as_deref() else {
                continue;
            };
            if let Some(nsg) = self.vm_nsg_mut(&vm.subscription, &vm.resource_group, nsg) {
                jit::ensure_deny(nsg, &vm, port);
            }
        }
    }

    /// Now on the world's clock, in Unix seconds.
    pub fn now_unix(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now + self.clock_offset_secs
    }

    /// Ends the JIT requests whose end time has passed: their allow rules leave the NSGs, as
    /// Defender removes them.
    pub fn expire_jit(&mut self) {
        let now = self.now_unix();
        let (ended, live): (Vec<JitRequest>, Vec<JitRequest>) =
            self.jit_requests.drain(..).partition(|r| r.end <= now);
        self.jit_requests = live;
        for request in ended {
            for nsg in self
                .nsgs
                .iter_mut()
                .filter(|n| n.subscription.eq_ignore_ascii_case(&request.subscription))
            {
                nsg.rules.retain(|r| r.name != request.rule);
            }
        }
    }

    /// The JIT policy protecting `vm`, if one does.
    pub fn jit_policy_of(&self, vm: &Vm) -> Option<&JitPolicy> {
        self.jit_policies.iter().find(|p| jit::protects(p, vm))
    }

    /// The current VM is protected by just-in-time access: a policy (`default` of its group and
    /// region) for 3389 from any address for at most 3 hours, its NIC NSG's standing
    /// `allow-rdp` removed and Defender's deny written in.
    pub fn jit_protected(mut self) -> World {
        let vm = self.current_vm().clone();
        match self.jit_policies.iter_mut().find(|p| {
            p.subscription == vm.subscription
                && p.resource_group.eq_ignore_ascii_case(&vm.resource_group)
                && p.location == vm.location
        }) {
            Some(policy) => policy.vms.push(vm.name.clone()),
            None => self.jit_policies.push(JitPolicy {
                name: "default".to_owned(),
                subscription: vm.subscription.clone(),
                resource_group: vm.resource_group.clone(),
                location: vm.location.clone(),
                vms: vec![vm.name.clone()],
                ports: vec![JitPort {
                    number: 3389,
                    allowed_source: "*".to_owned(),
                    max_duration: "PT3H".to_owned(),
                }],
            }),
        }
        if let Some(nsg) = vm.nic_nsg.as_deref() {
            if let Some(n) = self.vm_nsg_mut(&vm.subscription, &vm.resource_group, nsg) {
                n.rules.retain(|r| r.name != "allow-rdp");
            }
        }
        self.write_jit_rules();
        self
    }

    /// Checks that names resolve and subnets agree on their NSG.
    pub fn validate(&self) -> Result<(), WorldError> {
        let bad = |msg: String| Err(WorldError::Invalid(msg));
        if self.page_size == 0 {
            return bad("page_size must be at least 1".to_owned());
        }
        for (i, event) in self.activity.iter().enumerate() {
            if crate::domain::ResourceId::parse(&event.resource).is_err() {
                return bad(format!(
                    "activity #{}: resource '{}' is not a full resource id (/subscriptions/SUB/resourceGroups/RG/providers/...)",
                    i + 1,
                    event.resource
                ));
            }
        }
        for principal in &self.principals {
            for assignment in &principal.roles {
                if let Err(e) =
                    super::roles::validate(&assignment.role, &assignment.actions, &assignment.scope)
                {
                    return bad(format!("principal '{}': {e}", principal.client_id));
                }
            }
        }
        // Indexes keep validation linear: fleets have hundreds of VMs.
        let lower = |s: &str| s.to_ascii_lowercase();
        // NSGs and route tables by subscription and name; a name is unique within a group.
        let nsgs_named = ByName::new(&self.nsgs, "NSG");
        nsgs_named.unique()?;
        let tables_named = ByName::new(&self.route_tables, "route table");
        tables_named.unique()?;
        let mut names = HashSet::new();
        // Each subnet's first VM, with the NSG and route table it names for the subnet.
        type OnSubnet<'w> = (&'w Vm, Option<&'w Nsg>, Option<&'w RouteTable>);
        let mut subnets: HashMap<(String, String, String, String), OnSubnet> = HashMap::new();
        for vm in &self.vms {
            let at = format!("VM '{}'", vm.name);
            vm.guest.validate(&at)?;
            if self.subscription_entry(&vm.subscription).is_none() {
                return bad(format!(
                    "{at} names subscription '{}', which has no [[subscription]] entry",
                    vm.subscription
                ));
            }
            let group = (vm.subscription.clone(), lower(&vm.resource_group));
            if !names.insert((group.clone(), lower(&vm.name))) {
                return bad(format!(
                    "{at} appears twice in resource group '{}'",
                    vm.resource_group
                ));
            }
            nsgs_named.resolve(&at, vm, vm.nic_nsg.as_deref())?;
            let subnet_nsg = nsgs_named.resolve(&at, vm, vm.subnet_nsg.as_deref())?;
            let route_table = tables_named.resolve(&at, vm, vm.route_table.as_deref())?;
            validate_extensions(vm, &at)?;
            if let Some(storage) = &vm.boot_diagnostics_storage {
                let a = &storage.account;
                let valid = (3..=24).contains(&a.len())
                    && a.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !valid {
                    return bad(format!(
                        "{at}: boot diagnostics storage account '{a}' is not 3-24 lowercase letters and digits"
                    ));
                }
            }
            let subnet = (group.0, group.1, lower(&vm.vnet_name()), lower(&vm.subnet));
            // The same NSG and route table, however each VM names them.
            let (first, first_nsg, first_table) =
                *subnets
                    .entry(subnet)
                    .or_insert((vm, subnet_nsg, route_table));
            if !same_resource(first_nsg, subnet_nsg) {
                return bad(format!(
                    "VMs '{}' and '{}' share subnet '{}' but name different subnet NSGs",
                    first.name, vm.name, vm.subnet
                ));
            }
            if !same_resource(first_table, route_table) {
                return bad(format!(
                    "VMs '{}' and '{}' share subnet '{}' but name different route tables",
                    first.name, vm.name, vm.subnet
                ));
            }
        }
        for table in &self.route_tables {
            if self.subscription_entry(&table.subscription).is_none() {
                return bad(format!(
                    "route table '{}' names subscription '{}', which has no [[subscription]] entry",
                    table.name, table.subscription
                ));
            }
            paths::validate_route_table(table)?;
        }
        for rule in &self.admin_rules {
            paths::validate_admin_rule(rule)?;
        }
        for bastion in &self.bastions {
            paths::validate_bastion(bastion)?;
            // The subnet lies in its virtual network's address space (the /16 of its VMs'
            // addresses), which the `VirtualNetwork` service tag stands for.
            let prefix: Option<ipnet::Ipv4Net> = bastion
                .subnet_prefix
                .as_deref()
                .and_then(|p| p.parse().ok());
            for vm in self
                .vms
                .iter()
                .filter(|v| bastion.is_in(&v.subscription, &v.resource_group, &v.vnet_name()))
            {
                let space = vm
                    .private_ip
                    .parse::<std::net::Ipv4Addr>()
                    .ok()
                    .and_then(|ip| ipnet::Ipv4Net::new(ip, 16).ok())
                    .map(|n| n.trunc());
                if let (Some(prefix), Some(space)) = (prefix, space) {
                    if !space.contains(&prefix) {
                        return bad(format!(
                            "bastion '{}': subnet_prefix {prefix} is outside virtual network {}'s {space} (VM '{}')",
                            bastion.name, bastion.vnet, vm.name
                        ));
                    }
                }
            }
        }
        self.validate_peerings()?;
        for policy in &self.jit_policies {
            jit::validate(policy)?;
            for name in &policy.vms {
                let vm = self.vms.iter().find(|v| {
                    v.subscription.eq_ignore_ascii_case(&policy.subscription)
                        && v.resource_group
                            .eq_ignore_ascii_case(&policy.resource_group)
                        && v.name.eq_ignore_ascii_case(name)
                });
                match vm {
                    Some(vm) if vm.nic_nsg.is_some() => {}
                    Some(_) => {
                        return bad(format!(
                            "JIT policy '{}': VM '{name}' has no NIC NSG for its rules",
                            policy.name
                        ))
                    }
                    None => {
                        return bad(format!(
                        "JIT policy '{}' names VM '{name}', which is not in resource group '{}'",
                        policy.name, policy.resource_group
                    ))
                    }
                }
            }
        }
        for nsg in &self.nsgs {
            if self.subscription_entry(&nsg.subscription).is_none() {
                return bad(format!(
                    "NSG '{}' names subscription '{}', which has no [[subscription]] entry",
                    nsg.name, nsg.subscription
                ));
            }
            for rule in &nsg.rules {
                let at = format!("rule '{}' of NSG '{}'", rule.name, nsg.name);
                if !(100..=4096).contains(&rule.priority) {
                    return bad(format!("{at}: priority must be 100..=4096"));
                }
                if !["Allow", "Deny"].contains(&rule.access.as_str()) {
                    return bad(format!("{at}: access must be Allow or Deny"));
                }
                if !["Inbound", "Outbound"].contains(&rule.direction.as_str()) {
                    return bad(format!("{at}: direction must be Inbound or Outbound"));
                }
                if !["Tcp", "Udp", "Icmp", "*"].contains(&rule.protocol.as_str()) {
                    return bad(format!("{at}: protocol must be Tcp, Udp, Icmp or *"));
                }
            }
        }
        Ok(())
    }

    /// The subscription entry with this id (case-insensitive).
    pub fn subscription_entry(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }

    /// Whether the resource group exists: some VM or NSG lives in it.
    pub fn has_resource_group(&self, sub: &str, rg: &str) -> bool {
        let same = |s: &str, r: &str| s.eq_ignore_ascii_case(sub) && r.eq_ignore_ascii_case(rg);
        self.vms
            .iter()
            .any(|v| same(&v.subscription, &v.resource_group))
            || self
                .nsgs
                .iter()
                .any(|n| same(&n.subscription, &n.resource_group))
            || self
                .route_tables
                .iter()
                .any(|t| same(&t.subscription, &t.resource_group))
            || self
                .bastions
                .iter()
                .any(|b| same(&b.subscription, &b.resource_group))
            || (rg.eq_ignore_ascii_case(NETWORK_WATCHER_RG)
                && self.vms.iter().any(|v| {
                    v.subscription.eq_ignore_ascii_case(sub)
                        && self.has_network_watcher(sub, &v.location)
                }))
    }

    /// The VM in this subscription and resource group.
    pub fn find_vm(&self, sub: &str, rg: &str, name: &str) -> Option<&Vm> {
        self.vms
            .iter()
            .find(|v| v.is_in(sub, rg) && v.is_named(name))
    }

    /// Mutable form of [`World::find_vm`].
    pub fn find_vm_mut(&mut self, sub: &str, rg: &str, name: &str) -> Option<&mut Vm> {
        self.vms
            .iter_mut()
            .find(|v| v.is_in(sub, rg) && v.is_named(name))
    }

    /// The route table `name` in resource group `rg` of subscription `sub`.
    pub fn find_route_table(&self, sub: &str, rg: &str, name: &str) -> Option<&RouteTable> {
        self.route_tables.iter().find(|t| t.is(sub, rg, name))
    }

    /// The route table on the VM's subnet (its `route_table`, resolved by `pick`).
    pub fn vm_route_table(&self, vm: &Vm) -> Option<&RouteTable> {
        pick(
            &self.route_tables,
            &vm.subscription,
            &vm.resource_group,
            vm.route_table.as_deref()?,
        )
    }

    /// Whether the subscription has a Network Watcher in `region`: it has a VM there (so a
    /// virtual network, with which Azure creates the watcher) and the world does not leave the
    /// region without one.
    pub fn has_network_watcher(&self, sub: &str, region: &str) -> bool {
        !self
            .regions_without_network_watcher
            .iter()
            .any(|r| r.eq_ignore_ascii_case(region))
            && self.vms.iter().any(|v| {
                v.subscription.eq_ignore_ascii_case(sub) && v.location.eq_ignore_ascii_case(region)
            })
    }

    /// The NSG `name` in resource group `rg` of subscription `sub`: an NSG's name is unique within
    /// its resource group, as every Azure resource's is within its type and group.
    pub fn find_nsg(&self, sub: &str, rg: &str, name: &str) -> Option<&Nsg> {
        self.nsgs.iter().find(|n| n.is(sub, rg, name))
    }

    /// The NSG a VM's `nic_nsg` or `subnet_nsg` names (see `pick`).
    pub fn vm_nsg(&self, vm: &Vm, reference: &str) -> Option<&Nsg> {
        pick(&self.nsgs, &vm.subscription, &vm.resource_group, reference)
    }

    /// The NSG on the VM's NIC.
    pub fn nic_nsg(&self, vm: &Vm) -> Option<&Nsg> {
        self.vm_nsg(vm, vm.nic_nsg.as_deref()?)
    }

    /// The NSG on the VM's subnet.
    pub fn subnet_nsg(&self, vm: &Vm) -> Option<&Nsg> {
        self.vm_nsg(vm, vm.subnet_nsg.as_deref()?)
    }

    /// The NSG `reference` names for a VM in `sub` and `vm_rg` (see `pick`), to change.
    pub fn vm_nsg_mut(&mut self, sub: &str, vm_rg: &str, reference: &str) -> Option<&mut Nsg> {
        let found = pick(&self.nsgs, sub, vm_rg, reference)?;
        let i = self.nsgs.iter().position(|n| std::ptr::eq(n, found))?;
        self.nsgs.get_mut(i)
    }
}

/// A resource a VM names from the world file (an NSG, a route table): by `resource-group/name`,
/// or by a bare name (see `pick`). Its name is unique within its resource group, as every
/// Azure resource's is within its type and group (Microsoft Learn, "Naming rules and restrictions
/// for Azure resources").
pub trait InGroup {
    fn subscription_id(&self) -> &str;
    fn group(&self) -> &str;
    fn resource_name(&self) -> &str;

    /// Whether this is `name` of resource group `rg` in subscription `sub` (Azure compares names
    /// and ids without regard to case).
    fn is(&self, sub: &str, rg: &str, name: &str) -> bool {
        self.subscription_id().eq_ignore_ascii_case(sub)
            && self.group().eq_ignore_ascii_case(rg)
            && self.resource_name().eq_ignore_ascii_case(name)
    }
}

/// `InGroup` for world types with `subscription`, `resource_group` and `name` fields.
macro_rules! in_group {
    ($($type:ty),*) => {$(
        impl InGroup for $type {
            fn subscription_id(&self) -> &str {
                &self.subscription
            }
            fn group(&self) -> &str {
                &self.resource_group
            }
            fn resource_name(&self) -> &str {
                &self.name
            }
        }
    )*};
}

in_group!(Nsg, RouteTable);

/// The name in a VM's reference to an NSG or route table (`resource-group/name` or `name`).
fn referenced_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// The resource that `reference` (a VM's `nic_nsg`, `subnet_nsg` or `route_table`) names for a
/// VM in subscription `sub` and resource group `vm_rg`, among `candidates`:
/// `resource-group/name` names one exactly; a bare name is the one of that name in the VM's own
/// resource group, else the only one of that name in the subscription (a shared networking
/// group's). `None` when there is none, or when several groups have one of that name and none is
/// the VM's (ambiguous: the world must say which, and `World::validate` tells it so).
fn pick<'w, T: InGroup>(
    candidates: impl IntoIterator<Item = &'w T>,
    sub: &str,
    vm_rg: &str,
    reference: &str,
) -> Option<&'w T> {
    let (rg, name) = match reference.split_once('/') {
        Some((rg, name)) => (Some(rg), name),
        None => (None, reference),
    };
    let mut named = candidates.into_iter().filter(|c| {
        c.subscription_id().eq_ignore_ascii_case(sub)
            && c.resource_name().eq_ignore_ascii_case(name)
    });
    if let Some(rg) = rg {
        return named.find(|c| c.group().eq_ignore_ascii_case(rg));
    }
    let (mut own, mut other, mut others) = (None, None, 0);
    for c in named {
        if c.group().eq_ignore_ascii_case(vm_rg) {
            own = own.or(Some(c));
        } else {
            other = other.or(Some(c));
            others += 1;
        }
    }
    own.or(if others == 1 { other } else { None })
}

/// Both the same resource, or both none.
fn same_resource<T>(a: Option<&T>, b: Option<&T>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Resources of one kind by subscription and lowercase name, so that finding what each of
/// hundreds of VMs names stays linear (validation, a page of NICs with their NSGs).
pub struct ByName<'w, T> {
    kind: &'static str,
    named: HashMap<(String, String), Vec<&'w T>>,
}

impl<'w, T: InGroup> ByName<'w, T> {
    /// `all`, indexed; `kind` ("NSG", "route table") names them in errors.
    pub fn new(all: &'w [T], kind: &'static str) -> Self {
        let mut named: HashMap<(String, String), Vec<&'w T>> = HashMap::new();
        for item in all {
            named
                .entry((
                    item.subscription_id().to_ascii_lowercase(),
                    item.resource_name().to_ascii_lowercase(),
                ))
                .or_default()
                .push(item);
        }
        ByName { kind, named }
    }

    /// Fails on a name that repeats within a resource group.
    fn unique(&self) -> Result<(), WorldError> {
        for same_name in self.named.values() {
            for (i, item) in same_name.iter().enumerate() {
                if same_name[..i]
                    .iter()
                    .any(|other| other.group().eq_ignore_ascii_case(item.group()))
                {
                    return Err(WorldError::Invalid(format!(
                        "{} '{}' appears twice in resource group '{}' of subscription '{}'",
                        self.kind,
                        item.resource_name(),
                        item.group(),
                        item.subscription_id()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Those of `reference`'s name in `vm`'s subscription.
    fn named(&self, vm: &Vm, reference: &str) -> &[&'w T] {
        let key = (
            vm.subscription.to_ascii_lowercase(),
            referenced_name(reference).to_ascii_lowercase(),
        );
        self.named.get(&key).map_or(&[], Vec::as_slice)
    }

    /// What `vm`'s `reference` names (see `pick`).
    pub fn get(&self, vm: &Vm, reference: &str) -> Option<&'w T> {
        pick(
            self.named(vm, reference).iter().copied(),
            &vm.subscription,
            &vm.resource_group,
            reference,
        )
    }

    /// [`ByName::get`] of an optional reference, or why it names nothing (`at` names the VM).
    fn resolve(
        &self,
        at: &str,
        vm: &Vm,
        reference: Option<&str>,
    ) -> Result<Option<&'w T>, WorldError> {
        let Some(reference) = reference else {
            return Ok(None);
        };
        self.get(vm, reference).map(Some).ok_or_else(|| {
            let named = self.named(vm, reference);
            WorldError::Invalid(unresolved(at, vm, self.kind, reference, named))
        })
    }
}

/// Why a VM's reference to a `kind` ("NSG", "route table") picks nothing, among `named` (those of
/// its name in its subscription).
fn unresolved<T: InGroup>(at: &str, vm: &Vm, kind: &str, reference: &str, named: &[&T]) -> String {
    let name = referenced_name(reference);
    match reference.split_once('/') {
        Some((group, _)) => format!(
            "{at} uses {kind} '{reference}', but resource group '{group}' of subscription '{}' has no {kind} '{name}'",
            vm.subscription
        ),
        None if named.is_empty() => format!(
            "{at} uses {kind} '{name}', but subscription '{}' has no {kind} of that name",
            vm.subscription
        ),
        None => format!(
            "{at} uses {kind} '{name}', but subscription '{}' has {} {kind}s of that name and none in the VM's resource group '{}': write 'resource-group/{name}'",
            vm.subscription,
            named.len(),
            vm.resource_group
        ),
    }
}

/// Extension settings are JSON objects and no name or handler repeats.
fn validate_extensions(vm: &Vm, at: &str) -> Result<(), WorldError> {
    let bad = |msg: String| Err(WorldError::Invalid(msg));
    for (j, ext) in vm.extensions.iter().enumerate() {
        let settings: Result<serde_json::Value, _> = serde_json::from_str(&ext.settings);
        if !settings.is_ok_and(|v| v.is_object()) {
            return bad(format!(
                "{at}: extension '{}' has settings that are not a JSON object",
                ext.name
            ));
        }
        if vm.extensions[..j]
            .iter()
            .any(|o| o.is_named(&ext.name) || o.handler().eq_ignore_ascii_case(&ext.handler()))
        {
            return bad(format!(
                "{at}: extension '{}' repeats a name or a handler ({})",
                ext.name,
                ext.handler()
            ));
        }
    }
    Ok(())
}

/// Shared, live access to the simulator's world (tests read and change it while it serves).
#[derive(Clone, Debug)]
pub struct WorldHandle(Arc<Mutex<World>>);

impl WorldHandle {
    /// Wraps a world.
    pub fn new(world: World) -> WorldHandle {
        WorldHandle(Arc::new(Mutex::new(world)))
    }

    /// Locks the world. A panic elsewhere while holding the lock leaves the data usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the world as it is now.
    pub fn snapshot(&self) -> World {
        self.lock().clone()
    }

    /// Changes the world.
    pub fn update<R>(&self, change: impl FnOnce(&mut World) -> R) -> R {
        change(&mut self.lock())
    }

    /// A live view of the first VM with this name (any subscription or resource group).
    pub fn vm(&self, name: &str) -> VmView {
        VmView {
            world: self.clone(),
            name: name.to_owned(),
        }
    }
}

/// A live view of one VM by name. Reading a VM that does not exist panics: it is a test helper.
#[derive(Clone, Debug)]
pub struct VmView {
    world: WorldHandle,
    name: String,
}

impl VmView {
    /// Whether a VM of this name exists.
    pub fn exists(&self) -> bool {
        self.world.lock().vms.iter().any(|v| v.is_named(&self.name))
    }

    /// A copy of the VM as it is now.
    pub fn get(&self) -> Vm {
        self.read(Vm::clone)
    }

    /// The power state.
    pub fn power_state(&self) -> PowerState {
        self.read(|vm| vm.power_state)
    }

    /// The provisioning state, e.g. "succeeded".
    pub fn provisioning_state(&self) -> String {
        self.read(|vm| vm.provisioning_state.clone())
    }

    /// The configured agent state.
    pub fn agent(&self) -> AgentState {
        self.read(|vm| vm.agent)
    }

    /// The public IP address, if the VM has one with an address.
    pub fn public_ip_address(&self) -> Option<String> {
        self.read(|vm| vm.public_ip.as_ref().and_then(|ip| ip.address.clone()))
    }

    /// The Resource Health availability state.
    pub fn health_state(&self) -> String {
        self.read(|vm| vm.health.state.clone())
    }

    /// Whether Remote Desktop is enabled in the guest.
    pub fn rdp_enabled(&self) -> bool {
        self.read(|vm| vm.rdp_enabled)
    }

    /// The guest's Remote Desktop port.
    pub fn rdp_port(&self) -> u16 {
        self.read(|vm| vm.rdp_port)
    }

    /// How many passwords VMAccess has set on this VM.
    pub fn password_resets(&self) -> u32 {
        self.read(|vm| vm.password_resets)
    }

    /// The guest's local administrators.
    pub fn local_admins(&self) -> Vec<String> {
        self.read(|vm| vm.local_admins.clone())
    }

    /// The VM's extensions.
    pub fn extensions(&self) -> Vec<Extension> {
        self.read(|vm| vm.extensions.clone())
    }

    /// The names of the VM's extensions.
    pub fn extension_names(&self) -> Vec<String> {
        self.read(|vm| vm.extensions.iter().map(|e| e.name.clone()).collect())
    }

    /// Sets the power state.
    pub fn set_power_state(&self, state: PowerState) {
        self.update(|vm| vm.power_state = state);
    }

    /// Changes the VM.
    pub fn update(&self, change: impl FnOnce(&mut Vm)) {
        let mut world = self.world.lock();
        let vm = world
            .vms
            .iter_mut()
            .find(|v| v.is_named(&self.name))
            .unwrap_or_else(|| panic!("no VM named '{}' in the simulated world", self.name));
        change(vm);
    }

    fn read<R>(&self, f: impl FnOnce(&Vm) -> R) -> R {
        let world = self.world.lock();
        let vm = world
            .vms
            .iter()
            .find(|v| v.is_named(&self.name))
            .unwrap_or_else(|| panic!("no VM named '{}' in the simulated world", self.name));
        f(vm)
    }
}

#[cfg(test)]
mod tests;
