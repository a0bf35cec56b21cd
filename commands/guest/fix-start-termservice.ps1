# rdp-doctor:guest-fix:start-termservice:v1
# Sets Remote Desktop Services (TermService) to start automatically and starts it, so the RDP
# listener listens again. Windows PowerShell 5.1, run as SYSTEM by Run Command. Idempotent;
# prints one RDP-DOCTOR-FIX line; exits 1 with the reason on stderr when the change did not take.
$ErrorActionPreference = 'Stop'
$changed = @()
try {
    $service = Get-Service -Name TermService
    $oldType = [string]$service.StartType
    if ($oldType -ne 'Automatic') {
        Set-Service -Name TermService -StartupType Automatic
        $changed += "TermService start type set to Automatic (was $oldType)"
    }
    $oldStatus = [string]$service.Status
    if ($oldStatus -ne 'Running') {
        # Start-Service starts the services TermService depends on first.
        Start-Service -Name TermService
        $changed += "TermService started (was $oldStatus)"
    }
    $service = Get-Service -Name TermService
    $service.WaitForStatus('Running', [TimeSpan]::FromSeconds(60))
    $service.Refresh()
    if ([string]$service.Status -ne 'Running') { throw "TermService is $($service.Status)" }
    if ([string]$service.StartType -ne 'Automatic') { throw "TermService's start type is $($service.StartType)" }
} catch {
    [Console]::Error.WriteLine("start-termservice did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'start-termservice'; changed = @($changed) }))
