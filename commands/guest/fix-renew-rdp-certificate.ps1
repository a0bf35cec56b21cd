# rdp-doctor:guest-fix:renew-rdp-certificate:v1
# Removes the expired self-signed certificate from the "Remote Desktop" store and restarts
# TermService, which makes Windows create a new self-signed one (valid 6 months). A certificate
# that a CA issued is left alone: it must be renewed from that CA. Windows PowerShell 5.1, run
# as SYSTEM by Run Command. Idempotent; prints one RDP-DOCTOR-FIX line; exits 1 with the reason
# on stderr when the change did not take.
$ErrorActionPreference = 'Stop'
$changed = @()
$store = 'Cert:\LocalMachine\Remote Desktop'
try {
    $now = Get-Date
    $expired = @(Get-ChildItem -Path $store | Where-Object { $_.NotAfter -lt $now })
    foreach ($cert in $expired) {
        if ($cert.Subject -ne $cert.Issuer) {
            throw "the expired certificate $($cert.Thumbprint) was issued by $($cert.Issuer), not self-signed: renew it from that CA"
        }
    }
    foreach ($cert in $expired) {
        Remove-Item -Path (Join-Path $store $cert.Thumbprint)
        $changed += "the Remote Desktop certificate $($cert.Thumbprint) removed ($($cert.Subject), expired $($cert.NotAfter.ToUniversalTime().ToString('u')))"
    }
    $valid = @(Get-ChildItem -Path $store | Where-Object { $_.NotAfter -gt $now })
    if ($expired.Count -gt 0 -or $valid.Count -eq 0) {
        # Every Remote Desktop session is disconnected here; the plan said so.
        Restart-Service -Name TermService -Force
    }
    $deadline = (Get-Date).AddSeconds(60)
    do {
        $fresh = Get-ChildItem -Path $store | Where-Object { $_.NotAfter -gt $now } | Sort-Object NotAfter -Descending | Select-Object -First 1
        # The certificate RDP-Tcp presents: a fresh one in the store is not enough if Group Policy
        # or WMI pinned the listener to another.
        $inUse = [string] (Get-CimInstance -Namespace 'root\cimv2\TerminalServices' -ClassName Win32_TSGeneralSetting -Filter "TerminalName='RDP-Tcp'").SSLCertificateSHA1Hash
        if ($fresh -and (-not $inUse -or $inUse -eq $fresh.Thumbprint)) { break }
        if ((Get-Date) -gt $deadline) {
            if ($fresh) { throw "RDP-Tcp presents certificate $inUse, not the new $($fresh.Thumbprint): a certificate set by Group Policy or WMI must be renewed where it was set" }
            throw 'Windows created no new certificate a minute after TermService restarted'
        }
        Start-Sleep -Seconds 2
    } while ($true)
    if ($expired.Count -gt 0) {
        $changed += "TermService restarted; Windows made a new self-signed certificate ($($fresh.Thumbprint), valid until $($fresh.NotAfter.ToUniversalTime().ToString('u')))"
    }
} catch {
    [Console]::Error.WriteLine("renew-rdp-certificate did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'renew-rdp-certificate'; changed = @($changed) }))
