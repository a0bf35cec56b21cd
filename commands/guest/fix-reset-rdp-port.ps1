# rdp-doctor:guest-fix:reset-rdp-port:v1
# Moves the RDP-Tcp listener back to port 3389 (PortNumber under WinStations\RDP-Tcp) and
# restarts TermService so it listens there. Windows PowerShell 5.1, run as SYSTEM by Run
# Command. Idempotent (run again, it only restarts TermService); prints one RDP-DOCTOR-FIX line;
# exits 1 with the reason on stderr when the change did not take.
$ErrorActionPreference = 'Stop'
$changed = @()
function Test-Listening { [bool](Get-NetTCPConnection -LocalPort 3389 -State Listen -ErrorAction SilentlyContinue) }
try {
    $key = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp'
    $old = (Get-ItemProperty -Path $key -Name PortNumber).PortNumber
    if ($old -ne 3389) {
        Set-ItemProperty -Path $key -Name PortNumber -Value 3389 -Type DWord
        $changed += "RDP-Tcp PortNumber set to 3389 (was $old)"
    }
    # TermService reads the port when it starts. Every Remote Desktop session is disconnected
    # here; the plan said so.
    Restart-Service -Name TermService -Force
    $changed += 'TermService restarted'
    $now = (Get-ItemProperty -Path $key -Name PortNumber).PortNumber
    if ($now -ne 3389) { throw "PortNumber is still $now" }
    $deadline = (Get-Date).AddSeconds(60)
    while (-not (Test-Listening)) {
        if ((Get-Date) -gt $deadline) { throw 'nothing listens on TCP 3389 a minute after the restart' }
        Start-Sleep -Seconds 2
    }
} catch {
    [Console]::Error.WriteLine("reset-rdp-port did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'reset-rdp-port'; changed = @($changed) }))
