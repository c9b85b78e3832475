"""Memory and latency of the demo under small uploads that decode big: 16-bit PNGs of ~40 MP.

    python benchmarks/upload_memory.py [--uploads 20] [--width 7950 --height 4980] [--json out.json]

Launches the app in this process on loopback, as the tests do (``tests/demo_fixtures.py``: the small
models trained or built there on synthetic faces, ``build_demo`` + ``launch``), writes one 16-bit
grey PNG of ``--width`` x ``--height`` (39.6 MP by default: ~80 KB on disk, 79 MB of pixels) and
sends ``--uploads`` copies of it to /compare at once, one gradio_client per thread. One normal
photo (demo/examples/astronaut.jpg) is sent right after them, so it waits behind them in the queue,
and once more when they are done.

Reports the process's resident memory (VmRSS from /proc/self/status; the clients' threads share
the process but hold only the 80 KB file each) before, at its peak (VmHWM) and after, the time for
all uploads, each upload's answer (faces found, or the error), and the normal request's latency
behind the uploads and afterwards. Nothing is downloaded (``download_files=False``).

Then (``--data-url-mb``, default 200; 0 skips it) one JSON call to /gradio_api/call/compare whose
body carries a data URL that big, streamed from a generator with its Content-Length (so this
process never holds it): the answer's status and the RSS before and after.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
PHOTO = ROOT / "demo" / "examples" / "astronaut.jpg"


def sixteen_bit_png(width: int, height: int) -> bytes:
    """A 16-bit grey PNG written row by row (never whole in memory): black, its lower third white."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    dark, bright = b"\0" + bytes(2 * width), b"\0" + b"\xff" * (2 * width)
    compressor = zlib.compressobj(9)
    rows = [compressor.compress(dark if y < height * 2 // 3 else bright) for y in range(height)]
    rows.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(rows)) + chunk(b"IEND", b"")


def memory_mb() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process, in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) / 1024
    return values


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); best effort."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def send_data_url(url: str, megabytes: int) -> dict[str, object]:
    """POST {"data": [{"url": "data:image/png;base64,AAAA..."}, null]} of ``megabytes`` MB, streamed."""
    import httpx

    head = b'{"data": [{"url": "data:image/png;base64,'
    tail = b'", "path": null, "meta": {"_type": "gradio.FileData"}}, null]}'
    size = megabytes * 2**20
    block = b"A" * 2**20

    def body():
        yield head
        for _ in range(megabytes):
            yield block
        yield tail

    gc.collect()
    before = memory_mb()["VmRSS"]
    begun = time.perf_counter()
    try:
        response = httpx.post(f"{url}gradio_api/call/compare", content=body(), timeout=120,
                              headers={"content-type": "application/json",
                                       "content-length": str(len(head) + size + len(tail))})
        status: object = response.status_code
        if response.status_code == 200:  # accepted: read the answer (the server has the whole body)
            event_id = response.json()["event_id"]
            answer = httpx.get(f"{url}gradio_api/call/compare/{event_id}", timeout=120).text
            status = f"200, then {answer.strip().splitlines()[0] if answer.strip() else 'nothing'}"
    except httpx.HTTPError as error:
        status = f"{type(error).__name__}: {str(error)[:100]}"
    seconds = time.perf_counter() - begun
    time.sleep(1)
    gc.collect()
    return {"status": status, "seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
            "rss_after_mb": round(memory_mb()["VmRSS"], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--width", type=int, default=7950)
    parser.add_argument("--height", type=int, default=4980)
    parser.add_argument("--data-url-mb", type=int, default=200, help="size of the data URL sent as JSON (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    from demo_fixtures import running_app

    started = time.perf_counter()
    url = running_app()
    print(f"app up at {url} in {time.perf_counter() - started:.1f} s (small synthetic models)", flush=True)

    def client() -> Client:
        return Client(url, verbose=False, download_files=False, ssl_verify=False)

    def normal_request() -> float:
        begun = time.perf_counter()
        client().predict(handle_file(str(PHOTO)), api_name="/compare")
        return time.perf_counter() - begun

    warm = [normal_request() for _ in range(3)]  # traces the models; the first requests run them eagerly
    folder = Path(tempfile.mkdtemp(prefix="upload_memory_"))
    png = folder / "sixteen_bit.png"
    png.write_bytes(sixteen_bit_png(args.width, args.height))
    gc.collect()
    before = memory_mb()
    reset_peak()

    answers: list[str] = [""] * args.uploads
    times: list[float] = [0.0] * args.uploads

    def upload(index: int) -> None:
        begun = time.perf_counter()
        try:
            result = client().predict(handle_file(str(png)), api_name="/compare")
            summary = result[-1]
            answers[index] = f"ok: {summary['face']['image_size_wh']} analysed"
        except Exception as error:  # noqa: BLE001 - reported
            answers[index] = f"{type(error).__name__}: {str(error)[:100]}"
        times[index] = time.perf_counter() - begun

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(args.uploads)]
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the uploads are in the queue
    behind = normal_request()
    for thread in threads:
        thread.join()
    all_done = time.perf_counter() - begun
    gc.collect()
    after = memory_mb()
    afterwards = statistics.median(normal_request() for _ in range(3))

    figures = {
        "uploads": args.uploads,
        "png": {"width": args.width, "height": args.height, "bytes": png.stat().st_size,
                "decoded_mb": round(args.width * args.height * 2 / 2**20, 1)},
        "rss_before_mb": round(before["VmRSS"], 1),
        "rss_peak_mb": round(after["VmHWM"], 1),
        "rss_after_mb": round(after["VmRSS"], 1),
        "uploads_done_s": round(all_done, 2),
        "upload_s_median": round(statistics.median(times), 2),
        "normal_request_behind_uploads_s": round(behind, 2),
        "normal_request_after_s": round(afterwards, 3),
        "normal_request_warm_s": round(statistics.median(warm[1:]), 3),
        "answers": sorted(set(answers)),
    }
    print(f"{args.uploads} x {args.width}x{args.height} 16-bit PNG ({figures['png']['bytes'] / 1024:.0f} KB, "
          f"{figures['png']['decoded_mb']} MB of pixels) sent at once")
    print(f"  answers: {'; '.join(figures['answers'])}")
    print(f"  RSS: {figures['rss_before_mb']} MB before, peak {figures['rss_peak_mb']} MB, "
          f"{figures['rss_after_mb']} MB after")
    print(f"  all uploads answered in {figures['uploads_done_s']} s (median {figures['upload_s_median']} s each)")
    after_ms, warm_ms = figures["normal_request_after_s"] * 1000, figures["normal_request_warm_s"] * 1000
    print(f"  a normal photo sent behind them: {figures['normal_request_behind_uploads_s']} s; afterwards: "
          f"{after_ms:.0f} ms (warm, before: {warm_ms:.0f} ms)")
    if args.data_url_mb:
        figures["data_url"] = send_data_url(url, args.data_url_mb)
        data_url = figures["data_url"]
        print(f"  a {args.data_url_mb} MB data URL as JSON: HTTP {data_url['status']} in {data_url['seconds']} s; "
              f"RSS {data_url['rss_before_mb']} -> {data_url['rss_after_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
