#!/usr/bin/env python3
"""Read a tunekit run's TensorBoard event files with TensorBoard's own reader and print the
scalar tags with their step counts and last values: the independent check of the format
(`pip install tensorboard`).

Usage: python3 tools/check_tfevents.py RUN_DIR
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
tags = acc.Tags()["scalars"]
if not tags:
    sys.exit("no scalars found")
for tag in sorted(tags):
    events = acc.Scalars(tag)
    print(f"{tag}: {len(events)} points, last step {events[-1].step} value {events[-1].value:.6g}")
