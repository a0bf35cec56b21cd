# rdp-doctor:guest-fix:enable-rdp:v1
# Turns Remote Desktop on inside Windows: fDenyTSConnections = 0 under Terminal Server, and the
# policy value that overrides it removed. Windows PowerShell 5.1, run as SYSTEM by Run Command.
# Idempotent; prints one RDP-DOCTOR-FIX line; exits 1 with the reason on stderr when the change
# did not take.
$ErrorActionPreference = 'Stop'
$changed = @()
try {
    $local = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server'
    $policy = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services'
    $old = (Get-ItemProperty -Path $local -Name fDenyTSConnections -ErrorAction SilentlyContinue).fDenyTSConnections
    if ($old -ne 0) {
        if ($null -eq $old) { $old = '(not set)' }
        Set-ItemProperty -Path $local -Name fDenyTSConnections -Value 0 -Type DWord
        $changed += "fDenyTSConnections set to 0 (was $old)"
    }
    $ruled = (Get-ItemProperty -Path $policy -Name fDenyTSConnections -ErrorAction SilentlyContinue).fDenyTSConnections
    if ($null -ne $ruled) {
        Remove-ItemProperty -Path $policy -Name fDenyTSConnections
        $changed += 'the Terminal Services policy value fDenyTSConnections removed (a domain Group Policy that sets it puts it back at its next refresh: change that policy too)'
    }
    $now = (Get-ItemProperty -Path $local -Name fDenyTSConnections).fDenyTSConnections
    $left = (Get-ItemProperty -Path $policy -Name fDenyTSConnections -ErrorAction SilentlyContinue).fDenyTSConnections
    if ($now -ne 0) { throw "fDenyTSConnections is still $now" }
    if ($null -ne $left) { throw "the policy value fDenyTSConnections is still $left" }
} catch {
    [Console]::Error.WriteLine("enable-rdp did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'enable-rdp'; changed = @($changed) }))
