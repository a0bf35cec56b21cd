# rdp-doctor:guest-fix:remove-rdsh-role:v1
# Uninstalls the Remote Desktop Session Host role (Uninstall-WindowsFeature RDS-RD-Server), so
# its licensing grace period no longer applies and the VM allows two administrative sessions
# without licenses. The restart that finishes it is left to the operator. Windows PowerShell 5.1
# on Windows Server, run as SYSTEM by Run Command. Idempotent; prints one RDP-DOCTOR-FIX line;
# exits 1 with the reason on stderr when the change did not take.
$ErrorActionPreference = 'Stop'
$changed = @()
try {
    $feature = Get-WindowsFeature -Name RDS-RD-Server
    if ($null -eq $feature) { throw 'this Windows has no RDS-RD-Server feature' }
    if ($feature.Installed) {
        $result = Uninstall-WindowsFeature -Name RDS-RD-Server
        if (-not $result.Success) { throw "Uninstall-WindowsFeature RDS-RD-Server failed (exit code $($result.ExitCode))" }
        $pending = if ([string]$result.RestartNeeded -ne 'No') { '; a restart is pending' } else { '' }
        $changed += "the RDS-RD-Server feature uninstalled$pending"
    }
    $state = [string](Get-WindowsFeature -Name RDS-RD-Server).InstallState
    if ($state -notin @('Available', 'Removed', 'UninstallPending')) { throw "RDS-RD-Server is still $state" }
} catch {
    [Console]::Error.WriteLine("remove-rdsh-role did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'remove-rdsh-role'; changed = @($changed) }))
