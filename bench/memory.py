"""Figure 2: the daemon's peak RSS while uploading one file, by size and by each vendor's upload style.

    python bench/memory.py                            # 1 MB, 100 MB, 256 MB
    python bench/memory.py --sizes 1MB,100MB,1GiB     # the issue's sizes
    python bench/memory.py --endpoint both            # each with the HTTP endpoint off and on, side by side

For every (style, size): a fresh site, ``python -m hotfolder once`` uploading one file, and the peak RSS
of the daemon process alone (``VmHWM`` sampled while it runs, ``ru_maxrss`` from ``wait4`` at exit;
the simulator runs in its own process and is not counted). The styles:

* PUT: Fulcrum attachment, presigned S3 PUT (``transfer.put_presigned``);
* POST form: SaferMe, presigned S3 POST, file part last (``transfer.post_form``);
* base64 JSON: EspoCRM Document.file inline, the file as a data URI inside one JSON body
  (``transfer.base64_json_body``); ``chunk_threshold`` is raised so even 1 GiB goes inline, the
  style's worst case. (Above 20 MB the default config sends 4 MB chunks instead.)

Targets: every peak ≤ 80 MB, and flat: per style the sizes within 10 MB of each other. "MB" is read
as MiB here (the daemon's own units); the difference is 5 % and changes no verdict recorded so far.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import (
    ENDPOINT_CHOICES,
    ENDPOINT_ON,
    GIB,
    MIB,
    DaemonProcess,
    Report,
    SandboxProcess,
    demo_target,
    human_size,
    parse_sizes,
    step_events,
    workdir,
    write_config,
    write_file,
)

CEILING_MIB = 80
FLAT_MIB = 10

# style → (demo target, folder under that target, file name, option overrides)
STYLES: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "PUT (Fulcrum)": ("fulcrum", "rec-1001", "scan.bin", {}),
    "POST form (SaferMe)": ("saferme", "7001", "scan.pdf", {"poll_interval": "100ms"}),
    "base64 JSON (EspoCRM inline)": ("espocrm-documents", "doc-1", "scan.pdf", {"chunk_threshold": "100GB"}),
}


def measure(root: Path, url: str, style: str, size: int, index: int, endpoint: bool) -> tuple[int, float]:
    """(peak RSS bytes, upload step seconds) of one ``hotfolder once``."""
    target, folder, name, overrides = STYLES[style]
    site = root / f"site-{index}"
    config = write_config(
        site, {target: demo_target(url, target, timeout="10m", **overrides)}, settle="200ms", workers=4,
        log_level="debug",  # per-step lines ("step done") are debug
        http=ENDPOINT_ON if endpoint else None,
    )
    write_file(site / "inbox" / target / folder / f"{index}-{name}", size)
    daemon = DaemonProcess("once", config, site / "daemon.log", sample_interval=0.02)
    daemon.start()
    if daemon.wait(timeout=1800) != 0:
        raise SystemExit(f"hotfolder once failed for {style} {human_size(size)}; see {daemon.log}")
    uploads = [e for e in step_events(daemon.events(), "upload") if e.get("outcome") == "success"]
    if len(uploads) != 1:
        raise SystemExit(f"expected one successful upload for {style}; see {daemon.log}")
    return daemon.peak_rss, float(uploads[0]["duration"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1MB,100MB,256MB"),
                        help="comma-separated sizes (default 1MB,100MB,256MB; the issue: 1MB,100MB,1GiB)")
    parser.add_argument("--endpoint", choices=sorted(ENDPOINT_CHOICES), default="off",
                        help="the HTTP endpoint (status page, /metrics) off, on, or both side by side")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    variants = [(style, on) for style in STYLES for on in ENDPOINT_CHOICES[args.endpoint]]
    peaks: dict[tuple[str, bool], list[tuple[int, int, float]]] = {variant: [] for variant in variants}
    # One simulator for all runs: EspoCRM's own upload limit raised so 1 GiB inline is accepted.
    with workdir("memory", args.keep) as root, SandboxProcess(
        root / "sim", inbox=root / "seed-inbox", espocrm_max_upload=4 * GIB
    ) as sandbox:
        index = 0
        for size in args.sizes:
            for style, on in variants:  # off and on one after the other, so they meet the same machine
                peak, upload = measure(root, sandbox.url, style, size, index, on)
                index += 1
                peaks[(style, on)].append((size, peak, upload))
                print(f"{style:30} {human_size(size):>9} endpoint {'on ' if on else 'off'}: peak RSS "
                      f"{peak / MIB:6.1f} MiB (upload step {upload:.2f} s)", flush=True)

    report = Report("daemon peak RSS by upload style and file size")
    for (style_name, on), rows in peaks.items():
        style = f"{style_name}, endpoint {'on' if on else 'off'}" if args.endpoint == "both" else style_name
        highest = max(peak for _, peak, _ in rows)
        spread = highest - min(peak for _, peak, _ in rows)
        values = ", ".join(f"{human_size(size)}: {peak / MIB:.1f}" for size, peak, _ in rows)
        report.add(f"{style} peak RSS, MiB", values, target=f"≤ {CEILING_MIB}", met=highest <= CEILING_MIB * MIB)
        report.add(f"{style} spread across sizes", f"{spread / MIB:.1f} MiB", target=f"≤ {FLAT_MIB}",
                   met=spread <= FLAT_MIB * MIB)
    report.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
