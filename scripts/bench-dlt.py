#!/usr/bin/env python3
"""The peer of benchmark 11 in scripts/bench: a dlt pipeline moving the records of the
simulator's SS to an RS, one record per POST, as a user of dlt would write it.

    bench-dlt.py --ss http://HOST:PORT --rs http://HOST:PORT/rs/ingest \
        --frames EPOCH_SECONDS,EPOCH_SECONDS,... --pipelines-dir DIR

The source is dlt's `rest_api`: a `frames` resource yields each frame's bounds (RFC 3339, as
framesync formats `{from}` and `{to}`), and the `events` endpoint, `/ss/events?from=&to=`,
takes its two parameters from it (`{resources.frames.from}`), follows the SS's `next` link
(`json_link`) until it is absent, and takes the records from `items`. The destination is `@dlt.destination` with
batch_size=1: one POST per record, with the record's UID (`id`) as `Idempotency-Key` and the
record as the JSON body, with dlt's requests helper (it retries 429, 5xx and connection errors).

Everything else is dlt's default, so the destination is called from one load job (one file) at a
time. dlt's documented way to call it in parallel is to split the load into files, which then load
in up to `load.workers` (default 20) threads: `--file-max-items N` sets
`normalize.data_writer.file_max_items`.

dlt's state goes to --pipelines-dir (also its data dir, so nothing is written to ~/.dlt), and its
telemetry is off: the benchmark reaches nothing beyond loopback. It prints the records it posted;
any failed load job fails the run: its reason is the last line printed, the exit code 1.
"""

import argparse
import json
import os
import sys
import threading
import traceback
from datetime import datetime, timezone


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ss", required=True, help="the SS's base URL, http://HOST:PORT")
    parser.add_argument("--rs", required=True, help="the RS's ingest URL")
    parser.add_argument("--frames", required=True, help="the frames' starts, epoch seconds, comma-separated")
    parser.add_argument("--frame-seconds", type=int, default=60)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--file-max-items", type=int, help="records per load file (default: dlt's, no limit)")
    args = parser.parse_args()

    # Before dlt is imported: it reads its configuration from the environment.
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = args.pipelines_dir
    if args.file_max_items:
        os.environ["NORMALIZE__DATA_WRITER__FILE_MAX_ITEMS"] = str(args.file_max_items)

    import dlt
    from dlt.sources.helpers import requests
    from dlt.sources.rest_api import rest_api_source

    # One page of frames: rest_api's dependent endpoints take their parent's items a page at a time.
    @dlt.resource(name="frames")
    def frames():
        starts = [int(start) for start in args.frames.split(",")]
        yield [{"from": rfc3339(s), "to": rfc3339(s + args.frame_seconds)} for s in starts]

    source = rest_api_source(
        {
            "client": {
                "base_url": args.ss.rstrip("/") + "/",
                "paginator": {"type": "json_link", "next_url_path": "next"},
            },
            "resources": [
                frames,
                {
                    "name": "events",
                    # As it came: dlt would otherwise parse the RFC 3339 text into a datetime.
                    "columns": {"created_at": {"data_type": "text"}},
                    "endpoint": {
                        "path": "ss/events",
                        "data_selector": "items",
                        "params": {
                            "from": "{resources.frames.from}",
                            "to": "{resources.frames.to}",
                        },
                    },
                },
            ],
        }
    ).with_resources("events")

    posted = 0
    lock = threading.Lock()

    @dlt.destination(batch_size=1, name="rs")
    def rs(items, table) -> None:
        nonlocal posted
        for record in items:
            body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "Idempotency-Key": str(record["id"])}
            requests.post(args.rs, data=body, headers=headers).raise_for_status()
            with lock:
                posted += 1

    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt", pipelines_dir=args.pipelines_dir, destination=rs, dataset_name="bench"
    )
    try:
        info = pipeline.run(source)
        info.raise_on_failed_jobs()
    except Exception as error:
        # dlt's message ends in the last failure's traceback: its last line says what failed.
        traceback.print_exc()
        lines = str(error.__cause__ or error).strip().splitlines()
        print(f"bench-dlt: the pipeline failed: {lines[-1] if lines else type(error).__name__}", file=sys.stderr)
        return 1
    jobs = sum(len(p.jobs["completed_jobs"]) for p in info.load_packages)
    print(json.dumps({"posted": posted, "load_jobs": jobs, "dlt": dlt.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
