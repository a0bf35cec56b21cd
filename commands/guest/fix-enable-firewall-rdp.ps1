# rdp-doctor:guest-fix:enable-firewall-rdp:v1
# Enables the inbound rules of the Windows Firewall's "Remote Desktop" group (TCP 3389 among
# them), named by the group's resource string so that it works in every display language.
# Windows PowerShell 5.1, run as SYSTEM by Run Command. Idempotent; prints one RDP-DOCTOR-FIX
# line; exits 1 with the reason on stderr when the change did not take.
$ErrorActionPreference = 'Stop'
$changed = @()
$group = '@FirewallAPI.dll,-28752'
try {
    $rules = @(Get-NetFirewallRule -Group $group -Direction Inbound -ErrorAction SilentlyContinue)
    if ($rules.Count -eq 0) { throw 'the firewall has no "Remote Desktop" rule group' }
    $off = @($rules | Where-Object { [string]$_.Enabled -ne 'True' })
    foreach ($rule in $off) { Enable-NetFirewallRule -Name $rule.Name }
    if ($off.Count -gt 0) {
        $changed += "firewall rule group ""Remote Desktop"" enabled ($(($off | ForEach-Object { $_.Name }) -join ', '))"
    }
    $tcp = @(Get-NetFirewallRule -Group $group -Direction Inbound | Where-Object {
        [string]$_.Enabled -eq 'True' -and ($_ | Get-NetFirewallPortFilter).Protocol -eq 'TCP'
    })
    if ($tcp.Count -eq 0) { throw 'no enabled TCP rule in the "Remote Desktop" group' }
} catch {
    [Console]::Error.WriteLine("enable-firewall-rdp did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'enable-firewall-rdp'; changed = @($changed) }))
