//! Boot-diagnostics blobs: SAS-signed URLs, the console screenshot (a real BMP) and the serial log.
//!
//! The blobs are generated from the VM's live state when downloaded, so a restart shows up in the
//! next screenshot.

use super::world::{AgentState, Os, PowerState, Screen, Vm};
use image::{ImageFormat, Rgb, RgbImage};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Cursor;

/// Signs blob URLs with keys that exist only in this simulator process.
pub(crate) struct Signer {
    keys: [RandomState; 2],
}

impl Signer {
    pub(crate) fn new() -> Signer {
        Signer {
            keys: [RandomState::new(), RandomState::new()],
        }
    }

    /// The `sig` for a blob path and expiry (`se`).
    pub(crate) fn sign(&self, path: &str, expiry: &str) -> String {
        self.keys
            .iter()
            .map(|key| {
                let mut h = key.build_hasher();
                path.hash(&mut h);
                expiry.hash(&mut h);
                format!("{:016x}", h.finish())
            })
            .collect()
    }

    /// Compares in constant time, so the simulator does not teach timing attacks.
    pub(crate) fn verify(&self, path: &str, expiry: &str, sig: &str) -> bool {
        let want = self.sign(path, expiry);
        want.len() == sig.len()
            && want
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The part of a blob a `Get Blob` request asks for.
///
/// Azure Storage's "Get Blob" (learn.microsoft.com/rest/api/storageservices/get-blob) takes the
/// standard `Range` header and its own `x-ms-range`, which wins when both are sent. "Specifying
/// the range header for Blob service operations"
/// (learn.microsoft.com/rest/api/storageservices/specifying-the-range-header-for-blob-service-operations)
/// documents exactly two forms, `bytes=startByte-` (version 2011-08-18 and newer) and
/// `bytes=startByte-endByte`: a valid offset within the blob answers 206 Partial Content with
/// the bytes from the offset to the end byte or the blob's end (`Content-Length` says how
/// many); an offset beyond the blob's length answers 416 Requested Range Not Satisfiable. No
/// other form is documented (no suffix `bytes=-N`, no lists of ranges): the simulator ignores
/// them and sends the whole blob, as HTTP lets a server do, so a client that relies on them
/// gets no saving here either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// No range asked (or one in a form Azure does not document): the whole blob, 200.
    Whole,
    /// Bytes `start..=end` of a blob of `total` bytes: 206.
    Part { start: u64, end: u64, total: u64 },
    /// The offset is not within the blob (an empty blob has none): 416.
    Unsatisfiable { total: u64 },
}

/// The range `x-ms-range` (else `Range`) asks for, in a blob of `total` bytes.
pub(crate) fn byte_range(x_ms_range: Option<&str>, range: Option<&str>, total: u64) -> ByteRange {
    let Some(spec) = x_ms_range.or(range) else {
        return ByteRange::Whole;
    };
    let Some((start, end)) = spec
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
    else {
        return ByteRange::Whole;
    };
    let Ok(start) = start.trim().parse::<u64>() else {
        return ByteRange::Whole;
    };
    let end = match end.trim() {
        "" => None,
        end => match end.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            _ => return ByteRange::Whole,
        },
    };
    if start >= total {
        return ByteRange::Unsatisfiable { total };
    }
    let last = total - 1;
    ByteRange::Part {
        start,
        end: end.map_or(last, |e| e.min(last)),
        total,
    }
}

/// Which blob of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobKind {
    Screenshot,
    SerialLog,
}

impl BlobKind {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            BlobKind::Screenshot => ".screenshot.bmp",
            BlobKind::SerialLog => ".serialconsole.log",
        }
    }

    /// Splits "web-01.screenshot.bmp" into ("web-01", Screenshot).
    pub(crate) fn parse(file: &str) -> Option<(&str, BlobKind)> {
        [BlobKind::Screenshot, BlobKind::SerialLog]
            .into_iter()
            .find_map(|kind| file.strip_suffix(kind.suffix()).map(|vm| (vm, kind)))
    }
}

/// Where a VM's boot diagnostics live. The compute spec's `BootDiagnostics.storageUri`
/// (specification/compute/.../virtualMachine.json): "If storageUri is not specified while
/// enabling boot diagnostics, managed storage will be used", and the instance view's blob URIs
/// are "not set if boot diagnostics is currently enabled with managed storage";
/// `retrieveBootDiagnosticsData` hands out SAS URLs in both cases.
pub(crate) enum Storage<'v> {
    /// A Microsoft-managed account, named here after the VM (the customer never sees it).
    Managed(String),
    /// The customer's account, with or without a firewall.
    Custom(&'v super::world::BootStorage),
}

impl Storage<'_> {
    pub(crate) fn of(vm: &Vm) -> Storage<'_> {
        match &vm.boot_diagnostics_storage {
            Some(custom) => Storage::Custom(custom),
            None => {
                let id = super::stable_uuid(&vm.id()).replace('-', "");
                Storage::Managed(format!("md-{}", id.get(..12).unwrap_or(&id)))
            }
        }
    }

    /// The account name, as the blob URLs' first path segment carries it.
    pub(crate) fn account(&self) -> &str {
        match self {
            Storage::Managed(name) => name,
            Storage::Custom(custom) => &custom.account,
        }
    }

    /// `storageUri` of the VM model (custom storage only).
    pub(crate) fn storage_uri(&self) -> Option<String> {
        match self {
            Storage::Managed(_) => None,
            Storage::Custom(custom) => {
                Some(format!("https://{}.blob.core.windows.net/", custom.account))
            }
        }
    }

    /// Whether the account's firewall refuses the simulator's clients.
    pub(crate) fn firewalled(&self) -> bool {
        matches!(self, Storage::Custom(custom) if custom.firewall)
    }
}

/// What the screen of `vm` shows now.
pub(crate) fn screen_of(vm: &Vm) -> Screen {
    if let Some(screen) = vm.screen {
        return screen;
    }
    let failed = vm
        .provisioning_state
        .to_ascii_lowercase()
        .starts_with("failed")
        || vm.health.state.eq_ignore_ascii_case("Unavailable");
    match vm.power_state {
        PowerState::Running if failed => Screen::Crash,
        PowerState::Running if vm.os == Os::Linux => Screen::Console,
        PowerState::Running => Screen::Login,
        PowerState::Starting | PowerState::Stopping | PowerState::Deallocating => {
            if vm.os == Os::Linux {
                Screen::Console
            } else {
                Screen::Updates
            }
        }
        PowerState::Stopped
        | PowerState::Deallocated
        | PowerState::Unknown
        | PowerState::Absent => Screen::Black,
    }
}

const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    for py in y..(y + h).min(HEIGHT) {
        for px in x..(x + w).min(WIDTH) {
            img.put_pixel(px, py, Rgb(colour));
        }
    }
}

/// Renders the console screenshot as a 320x240 BMP.
pub(crate) fn screenshot_bmp(vm: &Vm) -> anyhow::Result<Vec<u8>> {
    let screen = screen_of(vm);
    let background = match screen {
        Screen::Login => [12, 34, 82],
        Screen::Black | Screen::Console => [0, 0, 0],
        Screen::Crash => [16, 113, 170],
        Screen::Updates => [0, 90, 158],
    };
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb(background));
    match screen {
        Screen::Login => {
            // Clock, then the light login box with a user name and a password field.
            fill(&mut img, 24, 24, 90, 18, [220, 228, 240]);
            fill(&mut img, 90, 80, 140, 90, [232, 238, 245]);
            fill(&mut img, 140, 92, 40, 40, [120, 140, 170]);
            fill(&mut img, 110, 142, 100, 8, [60, 70, 90]);
            fill(&mut img, 110, 156, 100, 8, [255, 255, 255]);
        }
        Screen::Black => {
            // A dim "no signal" marker so the image is not entirely empty.
            fill(&mut img, 8, HEIGHT - 14, 30, 6, [40, 40, 40]);
        }
        Screen::Crash => {
            // ":(" then lines of text and a QR-code-like square.
            fill(&mut img, 30, 30, 8, 8, [255, 255, 255]);
            fill(&mut img, 30, 46, 8, 8, [255, 255, 255]);
            fill(&mut img, 46, 30, 6, 30, [255, 255, 255]);
            for (i, width) in [220u32, 180, 200, 90].into_iter().enumerate() {
                fill(&mut img, 30, 80 + 14 * i as u32, width, 6, [235, 240, 250]);
            }
            fill(&mut img, 30, 150, 40, 40, [255, 255, 255]);
        }
        Screen::Updates => {
            // A ring of dots and "Working on updates".
            for (dx, dy) in [
                (0i32, -16i32),
                (11, -11),
                (16, 0),
                (11, 11),
                (0, 16),
                (-11, 11),
            ] {
                let x = (160 + dx - 2).max(0) as u32;
                let y = (100 + dy - 2).max(0) as u32;
                fill(&mut img, x, y, 4, 4, [255, 255, 255]);
            }
            fill(&mut img, 100, 140, 120, 8, [230, 236, 245]);
        }
        Screen::Console => {
            for (i, width) in [260u32, 200, 240, 120, 280, 90].into_iter().enumerate() {
                fill(&mut img, 6, 8 + 12 * i as u32, width, 6, [170, 170, 170]);
            }
            // "linux-01 login: _"
            fill(&mut img, 6, 96, 110, 6, [210, 210, 210]);
            fill(&mut img, 120, 94, 6, 9, [210, 210, 210]);
        }
    }
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Bmp)?;
    Ok(bytes.into_inner())
}

/// The serial console log of `vm`.
pub(crate) fn serial_log(vm: &Vm) -> String {
    if let Some(log) = &vm.serial_log {
        return log.clone();
    }
    let mut log = match vm.os {
        Os::Windows => windows_boot_log(vm),
        Os::Linux => linux_boot_log(vm),
    };
    match vm.power_state {
        PowerState::Stopped
        | PowerState::Deallocated
        | PowerState::Stopping
        | PowerState::Deallocating => {
            log.push_str(match vm.os {
                Os::Windows => "\r\nEVENT: The system is shutting down.\r\nSAC>\r\n",
                Os::Linux => "\n[  OK  ] Reached target System Power Off.\n[ 9321.402113] reboot: Power down\n",
            });
        }
        _ => {}
    }
    log
}

fn windows_boot_log(vm: &Vm) -> String {
    let name = vm.name.to_ascii_uppercase();
    let agent = match vm.agent {
        AgentState::Ready => "RdAgent service started; WindowsAzureGuestAgent is running.",
        AgentState::NotReady => "WindowsAzureGuestAgent failed to start: the service did not respond in a timely fashion.",
        AgentState::Missing => "No Azure guest agent is installed on this image.",
    };
    let lines = [
        "Windows Boot Manager".to_owned(),
        "Booting 'Windows Server'".to_owned(),
        "Loading \\Windows\\system32\\winload.efi".to_owned(),
        "Hypervisor launch type: off; virtualization-based security: disabled".to_owned(),
        "Loading boot drivers: disk.sys, storvsc.sys, vmbus.sys, netvsc.sys".to_owned(),
        "Boot status: Normal".to_owned(),
        String::new(),
        "Computer is booting, SAC started and initialized.".to_owned(),
        String::new(),
        "Use the \"ch -?\" command for information about using channels.".to_owned(),
        "Use the \"?\" command for general help.".to_owned(),
        String::new(),
        "SAC>".to_owned(),
        "EVENT: The CMD command is now available.".to_owned(),
        "SAC>".to_owned(),
        "id".to_owned(),
        String::new(),
        format!("Computer Name: {name}"),
        "Computer GUID: 3f4a8c21-5b7e-4d2a-9c61-0e8b7d5a4f10".to_owned(),
        "Processor Architecture: x64".to_owned(),
        "Build Number: 20348".to_owned(),
        "Product: Windows Server 2022 Datacenter".to_owned(),
        "Applied Service Pack: None".to_owned(),
        "Version Number: 10.0".to_owned(),
        "Build Type: Multiprocessor Free".to_owned(),
        "Product Type: Server".to_owned(),
        "Suite Type: TerminalServer DataCenter SingleUserTS".to_owned(),
        String::new(),
        "SAC>".to_owned(),
        "i".to_owned(),
        String::new(),
        "Net: 10, Ip=%PRIVATE_IP%  Subnet=255.255.255.0  Gateway=%GATEWAY%".to_owned(),
        "Net: 10, Ip=fe80::20d:3aff:fe1b:c721  Prefix=64".to_owned(),
        String::new(),
        "SAC>".to_owned(),
        "t".to_owned(),
        String::new(),
        "   0   0 System".to_owned(),
        " 312  12 smss.exe".to_owned(),
        " 420  13 csrss.exe".to_owned(),
        " 508  13 wininit.exe".to_owned(),
        " 644   9 services.exe".to_owned(),
        " 652   9 lsass.exe".to_owned(),
        " 788   8 svchost.exe (DcomLaunch)".to_owned(),
        " 1104  8 svchost.exe (TermService)".to_owned(),
        " 1380  8 svchost.exe (Netman)".to_owned(),
        " 2044  8 WaAppAgent.exe".to_owned(),
        " 2140  8 WindowsAzureGuestAgent.exe".to_owned(),
        String::new(),
        "SAC>".to_owned(),
        format!("EVENT: {agent}"),
        "EVENT: Remote Desktop Services is listening on RDP-Tcp (port 3389).".to_owned(),
        "SAC>".to_owned(),
        "EVENT: A new channel has been created.  Use \"ch -?\" for channel help.".to_owned(),
        "Channel: Cmd0001".to_owned(),
        "SAC>".to_owned(),
        "ch".to_owned(),
        "Channel List".to_owned(),
        "(Use \"ch -?\" for information on using channels)".to_owned(),
        "# Status  Channel Name".to_owned(),
        "0 (AV)    SAC".to_owned(),
        "1 (AV)    Cmd0001".to_owned(),
        "SAC>".to_owned(),
    ];
    let gateway = gateway_of(&vm.private_ip);
    lines
        .iter()
        .map(|l| {
            l.replace("%PRIVATE_IP%", &vm.private_ip)
                .replace("%GATEWAY%", &gateway)
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

fn linux_boot_log(vm: &Vm) -> String {
    let name = &vm.name;
    let ip = &vm.private_ip;
    let agent = match vm.agent {
        AgentState::Ready => "[  OK  ] Started walinuxagent.service - Azure Linux Agent.",
        AgentState::NotReady => {
            "[FAILED] Failed to start walinuxagent.service - Azure Linux Agent."
        }
        AgentState::Missing => "[  OK  ] Reached target cloud-init.target - Cloud-init target.",
    };
    let lines = [
        "[    0.000000] Linux version 6.5.0-1025-azure (buildd@lcy02-amd64-018) (gcc 11.4.0) #26~22.04.1-Ubuntu SMP".to_owned(),
        "[    0.000000] Command line: BOOT_IMAGE=/vmlinuz-6.5.0-1025-azure root=PARTUUID=4b2f1e2a-01 ro console=tty1 console=ttyS0 earlyprintk=ttyS0".to_owned(),
        "[    0.000000] Hypervisor detected: Microsoft Hyper-V".to_owned(),
        "[    0.000000] Hyper-V: privilege flags low 0x2e7f, high 0x3b8030, hints 0x64e24".to_owned(),
        "[    0.004112] DMI: Microsoft Corporation Virtual Machine/Virtual Machine, BIOS Hyper-V UEFI Release v4.1".to_owned(),
        "[    0.012250] tsc: Detected 2593.906 MHz processor".to_owned(),
        "[    0.101834] Memory: 8084376K/8388024K available".to_owned(),
        "[    0.220551] smpboot: Allowing 2 CPUs, 0 hotplug CPUs".to_owned(),
        "[    0.641201] hv_vmbus: Vmbus version:5.3".to_owned(),
        "[    0.702410] hv_vmbus: registering driver hv_netvsc".to_owned(),
        "[    0.889120] scsi host0: storvsc_host_t".to_owned(),
        "[    1.023374] sd 0:0:0:0: [sda] 62914560 512-byte logical blocks: (32.2 GB/30.0 GiB)".to_owned(),
        "[    1.140292] sd 1:0:1:0: [sdb] 33554432 512-byte logical blocks: (17.2 GB/16.0 GiB)".to_owned(),
        "[    1.602231] EXT4-fs (sda1): mounted filesystem with ordered data mode.".to_owned(),
        "[    2.113870] systemd[1]: systemd 249.11-0ubuntu3.12 running in system mode".to_owned(),
        "[    2.118424] systemd[1]: Detected virtualization microsoft.".to_owned(),
        format!("[    2.130019] systemd[1]: Hostname set to <{name}>."),
        "[  OK  ] Created slice system-serial\\x2dgetty.slice.".to_owned(),
        "[  OK  ] Started Journal Service.".to_owned(),
        "[  OK  ] Finished Load Kernel Modules.".to_owned(),
        "[  OK  ] Finished Remount Root and Kernel File Systems.".to_owned(),
        "[  OK  ] Reached target Local File Systems.".to_owned(),
        "[  OK  ] Started Network Name Resolution.".to_owned(),
        "[  OK  ] Reached target Network.".to_owned(),
        "         Starting Initial cloud-init job (metadata service crawler)...".to_owned(),
        format!("[    6.402118] cloud-init[612]: Cloud-init v. 24.1.3 running 'init' at {name}."),
        "[    6.404551] cloud-init[612]: ci-info: ++++++++++++++++Net device info++++++++++++++++".to_owned(),
        format!("[    6.405002] cloud-init[612]: ci-info: | eth0 | True | {ip} | 255.255.255.0 | global |"),
        "[    6.405419] cloud-init[612]: ci-info: +++++++++++++++++++++++++++++++++++++++++++++++".to_owned(),
        "[  OK  ] Finished Initial cloud-init job (metadata service crawler).".to_owned(),
        "[  OK  ] Reached target Cloud-config availability.".to_owned(),
        "[  OK  ] Reached target Network is Online.".to_owned(),
        "[  OK  ] Started OpenBSD Secure Shell server.".to_owned(),
        "[  OK  ] Started Regular background program processing daemon.".to_owned(),
        "[  OK  ] Started System Logging Service.".to_owned(),
        "[  OK  ] Started Serial Getty on ttyS0.".to_owned(),
        "[  OK  ] Reached target Login Prompts.".to_owned(),
        agent.to_owned(),
        "[  OK  ] Reached target Multi-User System.".to_owned(),
        "[  OK  ] Finished Execute cloud user/final scripts.".to_owned(),
        "[  OK  ] Reached target Cloud-init target.".to_owned(),
        String::new(),
        "Ubuntu 22.04.4 LTS ".to_owned() + name + " ttyS0",
        String::new(),
        format!("{name} login: "),
    ];
    lines.join("\n") + "\n"
}

/// The Azure gateway of a subnet is its first host: x.y.z.1.
fn gateway_of(ip: &str) -> String {
    match ip.rsplit_once('.') {
        Some((net, _)) => format!("{net}.1"),
        None => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::World;

    #[test]
    fn signatures_bind_path_and_expiry() {
        let signer = Signer::new();
        let sig = signer.sign("/_blob/a", "2030-01-01T00:00:00Z");
        assert!(signer.verify("/_blob/a", "2030-01-01T00:00:00Z", &sig));
        assert!(!signer.verify("/_blob/b", "2030-01-01T00:00:00Z", &sig));
        assert!(!signer.verify("/_blob/a", "2031-01-01T00:00:00Z", &sig));
        assert!(!Signer::new().verify("/_blob/a", "2030-01-01T00:00:00Z", &sig));
    }

    #[test]
    fn screenshot_is_a_bmp_that_differs_when_the_vm_is_off() {
        let world = World::new().vm("on").vm("off").stopped();
        let on = screenshot_bmp(&world.vms[0]).expect("encodes");
        let off = screenshot_bmp(&world.vms[1]).expect("encodes");
        assert_eq!(&on[..2], b"BM");
        let decoded = image::load_from_memory_with_format(&on, ImageFormat::Bmp).expect("decodes");
        assert_eq!((decoded.width(), decoded.height()), (320, 240));
        assert_ne!(on, off);
    }

    #[test]
    fn ranges_in_the_two_documented_forms() {
        use ByteRange::*;
        let part = |start, end| Part {
            start,
            end,
            total: 1024,
        };
        // The documentation's examples on a 1,024-byte blob: bytes=255- is offset 255 through
        // the last byte, bytes=0-511 the first 512 bytes.
        assert_eq!(byte_range(None, Some("bytes=255-"), 1024), part(255, 1023));
        assert_eq!(byte_range(None, Some("bytes=0-511"), 1024), part(0, 511));
        // x-ms-range wins over Range.
        assert_eq!(
            byte_range(Some("bytes=0-9"), Some("bytes=255-"), 1024),
            part(0, 9)
        );
        // An end beyond the blob stops at its end; an offset beyond it is unsatisfiable.
        assert_eq!(
            byte_range(None, Some("bytes=1000-5000"), 1024),
            part(1000, 1023)
        );
        assert_eq!(
            byte_range(None, Some("bytes=1024-"), 1024),
            Unsatisfiable { total: 1024 }
        );
        assert_eq!(
            byte_range(None, Some("bytes=0-65535"), 0),
            Unsatisfiable { total: 0 }
        );
        // Undocumented forms are ignored: the whole blob.
        for spec in [
            "bytes=-500",
            "bytes=0-1,5-9",
            "bytes=9-5",
            "items=0-5",
            "bytes",
        ] {
            assert_eq!(byte_range(None, Some(spec), 1024), Whole, "{spec}");
        }
        assert_eq!(byte_range(None, None, 1024), Whole);
    }

    #[test]
    fn serial_log_is_a_realistic_length() {
        let world = World::new().vm("web-01");
        let lines = serial_log(&world.vms[0]).lines().count();
        assert!((55..=80).contains(&lines), "{lines} lines");
    }
}
