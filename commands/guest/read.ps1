# rdp-doctor:guest-read:v1
# rdp-doctor's read-only guest check, run through Azure Run Command (RunPowerShellScript) as
# SYSTEM. Windows Server 2016 or later, Windows PowerShell 5.1. It changes nothing: it reads
# what Remote Desktop depends on inside Windows and prints one line, RDP-DOCTOR-GUEST followed
# by compact JSON ("v": 1). Each part is read on its own: a part that fails is null, never the
# whole script.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$TerminalServer = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server'
$RdpTcp = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp'
$Policy = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services'

function Read-Part([scriptblock] $Read) {
    try { & $Read } catch { $null }
}

function Get-RegistryValue([string] $Path, [string] $Name) {
    $item = Get-ItemProperty -Path $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

function ConvertTo-IntOrNull($Value) {
    if ($null -eq $Value) { return $null }
    return [int] $Value
}

function Format-Utc([datetime] $At) {
    # The invariant culture: a VM's own culture may change the separators or the calendar.
    return $At.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [Globalization.CultureInfo]::InvariantCulture)
}

# Does a firewall rule's LocalPort list (e.g. 3389, 3389-3390, Any, RPC) cover $Port?
function Test-PortCovered($LocalPorts, [int] $Port) {
    foreach ($entry in @($LocalPorts)) {
        $text = [string] $entry
        if ($text -eq 'Any') { return $true }
        if ($text -match '^(\d+)-(\d+)$') {
            if ($Port -ge [int] $Matches[1] -and $Port -le [int] $Matches[2]) { return $true }
        } elseif ($text -match '^\d+$' -and [int] $text -eq $Port) {
            return $true
        }
    }
    return $false
}

$facts = [ordered] @{ v = 1 }

$facts.rdp = Read-Part {
    [ordered] @{
        fDenyTSConnections = ConvertTo-IntOrNull (Get-RegistryValue $TerminalServer 'fDenyTSConnections')
        policyDeny         = ConvertTo-IntOrNull (Get-RegistryValue $Policy 'fDenyTSConnections')
    }
}

$facts.termService = Read-Part {
    $service = Get-Service -Name TermService
    [ordered] @{
        status    = [string] $service.Status
        startType = [string] $service.StartType
    }
}

$port = Read-Part { ConvertTo-IntOrNull (Get-RegistryValue $RdpTcp 'PortNumber') }
$facts.listener = Read-Part {
    $listening = $null
    $process = $null
    if ($null -ne $port) {
        $connection = @(Get-NetTCPConnection -State Listen -LocalPort $port -ErrorAction SilentlyContinue) | Select-Object -First 1
        $listening = $null -ne $connection
        if ($listening) {
            $process = Read-Part { (Get-Process -Id $connection.OwningProcess).ProcessName }
        }
    }
    [ordered] @{ port = $port; listening = $listening; process = $process }
}

$facts.firewall = Read-Part {
    $profiles = @(Get-NetFirewallProfile | ForEach-Object {
        [ordered] @{ name = [string] $_.Name; enabled = ([string] $_.Enabled -eq 'True') }
    })
    $checkedPort = if ($null -ne $port) { $port } else { 3389 }
    $filters = @{}
    foreach ($filter in @(Get-NetFirewallPortFilter -All)) { $filters[$filter.InstanceID] = $filter }
    $rules = @(Get-NetFirewallRule -Direction Inbound | ForEach-Object {
        $filter = $filters[$_.InstanceID]
        $remoteDesktop = $_.Group -eq '@FirewallAPI.dll,-28752'
        # Besides the Remote Desktop group: enabled TCP (or any-protocol) rules naming the port or
        # a range holding it. Not the rules open on every port: a stock server has hundreds, and
        # Run Command keeps only the last 4,096 bytes of the output (hence at most 12, about
        # 1.5 KB; the group has three).
        $covers = ($null -ne $filter) -and ([string] $_.Enabled -eq 'True') -and
            (@('TCP', 'Any') -contains [string] $filter.Protocol) -and
            -not (@($filter.LocalPort) -contains 'Any') -and
            (Test-PortCovered $filter.LocalPort $checkedPort)
        if ($remoteDesktop -or $covers) {
            [ordered] @{
                name      = [string] $_.Name
                enabled   = ([string] $_.Enabled -eq 'True')
                action    = [string] $_.Action
                protocol  = if ($null -ne $filter) { [string] $filter.Protocol } else { $null }
                localPort = if ($null -ne $filter) { (@($filter.LocalPort) -join ',') } else { $null }
                profiles  = ([string] $_.Profile) -replace ', ', ','
            }
        }
    })
    [ordered] @{ profiles = $profiles; rules = @($rules | Select-Object -First 12) }
}

$facts.nla = Read-Part {
    [ordered] @{
        userAuthentication = ConvertTo-IntOrNull (Get-RegistryValue $RdpTcp 'UserAuthentication')
        securityLayer      = ConvertTo-IntOrNull (Get-RegistryValue $RdpTcp 'SecurityLayer')
    }
}

$facts.certificate = Read-Part {
    $setting = Get-CimInstance -Namespace 'root\cimv2\TerminalServices' -ClassName Win32_TSGeneralSetting -Filter "TerminalName='RDP-Tcp'"
    $thumbprint = [string] $setting.SSLCertificateSHA1Hash
    if (-not $thumbprint) { $thumbprint = $null }
    $certificate = $null
    if ($thumbprint) {
        # Windows' self-signed one is in "Remote Desktop"; one set by Group Policy or WMI in "My".
        $certificate = Read-Part { Get-Item -Path ("Cert:\LocalMachine\Remote Desktop\" + $thumbprint) }
        if ($null -eq $certificate) {
            $certificate = Read-Part { Get-Item -Path ("Cert:\LocalMachine\My\" + $thumbprint) }
        }
    }
    [ordered] @{
        thumbprint = $thumbprint
        subject    = if ($null -ne $certificate) { $certificate.Subject } else { $null }
        notAfter   = if ($null -ne $certificate) { Format-Utc $certificate.NotAfter } else { $null }
    }
}

$facts.licensing = Read-Part {
    $installed = [bool] (Read-Part { (Get-WindowsFeature -Name RDS-RD-Server).Installed })
    $setting = Read-Part { Get-CimInstance -Namespace 'root\cimv2\TerminalServices' -ClassName Win32_TerminalServiceSetting }
    $mode = $null
    $servers = @()
    $grace = $null
    if ($null -ne $setting) {
        if (@(2, 4) -contains [int] $setting.LicensingType) { $mode = [int] $setting.LicensingType }
        $servers = @(Read-Part { (Invoke-CimMethod -InputObject $setting -MethodName GetSpecifiedLicenseServerList).SpecifiedLSList } | Where-Object { $_ })
        if ($installed) {
            $grace = Read-Part { [long] (Invoke-CimMethod -InputObject $setting -MethodName GetGracePeriodDays).DaysLeft }
        }
    }
    [ordered] @{ rdshInstalled = $installed; mode = $mode; licenseServers = $servers; graceDaysLeft = $grace }
}

$facts.systemDrive = Read-Part {
    $drive = $env:SystemDrive
    $disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter ("DeviceID='" + $drive + "'")
    [ordered] @{ drive = $drive; freeBytes = [uint64] $disk.FreeSpace; sizeBytes = [uint64] $disk.Size }
}

$facts.pendingReboot = Read-Part {
    $reasons = @()
    if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
        $reasons += 'ComponentBasedServicing'
    }
    if (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
        $reasons += 'WindowsUpdate'
    }
    if ($null -ne (Get-RegistryValue 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' 'PendingFileRenameOperations')) {
        $reasons += 'PendingFileRenameOperations'
    }
    [ordered] @{ pending = $reasons.Count -gt 0; reasons = $reasons }
}

$facts.checkedAt = Format-Utc (Get-Date)

Write-Output ('RDP-DOCTOR-GUEST ' + ($facts | ConvertTo-Json -Compress -Depth 5))
