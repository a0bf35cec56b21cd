# rdp-doctor:guest-fix:free-disk-space:v1
# Frees space on the system drive: deletes what is in C:\Windows\Temp and in the Windows Update
# download cache (C:\Windows\SoftwareDistribution\Download, with Windows Update stopped
# meanwhile), then runs Dism /Online /Cleanup-Image /StartComponentCleanup. Deleted files cannot
# be restored. Windows PowerShell 5.1, run as SYSTEM by Run Command. Idempotent; prints one
# RDP-DOCTOR-FIX line; exits 1 with the reason on stderr when the cleanup failed.
$ErrorActionPreference = 'Stop'
$changed = @()
function Get-Free { [int64](Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$env:SystemDrive'").FreeSpace }
function Clear-Folder($path) {
    # Files in use stay; everything else goes.
    $left = 0
    Get-ChildItem -LiteralPath $path -Force -ErrorAction SilentlyContinue | ForEach-Object {
        Remove-Item -LiteralPath $_.FullName -Recurse -Force -ErrorAction SilentlyContinue
        if (Test-Path -LiteralPath $_.FullName) { $left++ }
    }
    $left
}
try {
    $before = Get-Free
    $inUse = Clear-Folder (Join-Path $env:SystemRoot 'Temp')
    $update = Get-Service -Name wuauserv
    $wasRunning = [string]$update.Status -eq 'Running'
    if ($wasRunning) { Stop-Service -Name wuauserv -Force }
    try {
        $inUse += Clear-Folder (Join-Path $env:SystemRoot 'SoftwareDistribution\Download')
    } finally {
        if ($wasRunning) { Start-Service -Name wuauserv }
    }
    # Dism's own messages go to stdout; Windows PowerShell 5.1 would turn stderr lines into
    # terminating errors under 'Stop', so its exit code decides instead.
    $ErrorActionPreference = 'Continue'
    $dism = & "$env:SystemRoot\System32\Dism.exe" /Online /Cleanup-Image /StartComponentCleanup /English 2>&1
    $ErrorActionPreference = 'Stop'
    if ($LASTEXITCODE -ne 0) { throw "Dism /StartComponentCleanup failed with exit code ${LASTEXITCODE}: $($dism | Select-Object -Last 3)" }
    $freed = [math]::Max(0, (Get-Free) - $before)
    $gib = ($freed / 1GB).ToString('0.0', [Globalization.CultureInfo]::InvariantCulture)
    $changed += "$gib GiB freed on $env:SystemDrive (Windows\Temp, SoftwareDistribution\Download, component store cleanup)"
    if ($inUse -gt 0) { $changed += "$inUse files in use were left in place" }
} catch {
    [Console]::Error.WriteLine("free-disk-space did not take: $($_.Exception.Message)")
    exit 1
}
Write-Output ('RDP-DOCTOR-FIX ' + (ConvertTo-Json -Compress -InputObject @{ fix = 'free-disk-space'; changed = @($changed) }))
