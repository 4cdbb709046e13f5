"""The summary of a py-spy profile of a worker: where its main thread spends its time."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Final

_IDLE: Final = ("EpollSelector.select", "select (selectors.py", "Condition.wait", "Event.wait")


def _frames(line: str) -> tuple[list[str], int]:
    stack, count = line.rstrip("\n").rsplit(" ", 1)
    return [f for f in stack.split(";") if f], int(count)


def _function(frame: str) -> tuple[str, str]:
    """``("Consumer.getmany", "faust/transport/consumer.py:739")`` of a py-spy frame."""
    if " (" in frame and frame.endswith(")"):
        name, where = frame[:-1].split(" (", 1)
        return name, where
    return frame, ""


def _task(frames: list[str]) -> str:
    """What a main-thread sample was running: the task or callback the event loop was in."""
    joined = ";".join(frames)
    for marker, label in (
        ("FailoverApp._stage1", "stage-1 agent (links)"),
        ("FailoverApp._stage2", "stage-2 agent (services)"),
        ("Consumer._drain_messages", "faust Consumer._drain_messages (fetch, deliver)"),
        ("Sender._sender_routine", "aiokafka producer Sender"),
        ("Sender._send_produce_req", "aiokafka producer Sender"),
        ("commit_transactions", "commit (faust commit timer)"),
        ("force_commit", "commit (faust commit timer)"),
    ):
        if marker in joined:
            return label
    runs = [i for i, frame in enumerate(frames) if frame.startswith("Handle._run")]
    if runs and runs[-1] + 1 < len(frames):
        return "other callback: " + _function(frames[runs[-1] + 1])[0]
    if frames[0].startswith("<module>"):
        return "event loop itself (_run_once, Handle._run)"
    return "unattributed (stack not unwound to its root)"


def summarize_profile(path: Path) -> list[str]:
    """Where the worker's time went, from py-spy's raw (collapsed) stacks, with --idle."""
    main: Counter[str] = Counter()  # busy main-thread samples by task
    stage1: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    leaf_line: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: Counter[str] = Counter()
    idle = {"main": 0, "thread": 0}
    busy = {"main": 0, "thread": 0}
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        frames, count = _frames(raw)
        if not frames:
            continue
        thread = "thread" if frames[0].startswith("Thread._bootstrap") else "main"
        if any(marker in frames[-1] for marker in _IDLE):
            idle[thread] += count
            continue
        busy[thread] += count
        name, where = _function(frames[-1])
        function = f"{name} ({where.rsplit(':', 1)[0]})"
        leaf[function] += count
        leaf_line[function][where] += count
        for frame in {f"{n} ({w.rsplit(':', 1)[0]})" for n, w in map(_function, frames)}:
            inclusive[frame] += count
        if thread == "thread":
            continue
        task = _task(frames)
        main[task] += count
        if task.startswith("stage-1"):
            joined = ";".join(frames)
            inner = joined.split("FailoverApp._stage1", 1)[1]
            if "LinkPartition.handle" in inner:
                stage1["engine: LinkPartition.handle (decode, link stage, state JSON)"] += count
            elif "Outbox.send" in inner:
                stage1["Outbox.send (faust Producer.send, aiokafka send)"] += count
            elif "Outbox.acquire" in inner or "FailoverApp._begin" in inner:
                stage1["Outbox lock, generation check"] += count
            elif "faust/" in inner:
                stage1["faust stream iteration (Stream.__anext__: events, ack)"] += count
            else:
                stage1["the agent's own loop body"] += count
    total = busy["main"] + busy["thread"]
    if total == 0:
        return ["  (no busy samples)"]

    def share(part: str) -> str:
        return f"{busy[part] / max(1, busy[part] + idle[part]):.0%}"

    out = [
        f"  {sum(busy.values()) + sum(idle.values()):,} samples at 100/s; busy: main thread "
        f"{share('main')} of the time, aiokafka consumer thread {share('thread')}",
        "  main thread, busy samples by task or callback:",
    ]
    out += [f"    {n / busy['main']:6.1%}  {task}" for task, n in main.most_common(10)]
    s1 = sum(stage1.values())
    if s1:
        out.append(f"  inside the stage-1 agent ({s1 / busy['main']:.0%} of the main thread):")
        out += [f"    {n / s1:6.1%}  {what}" for what, n in stage1.most_common()]
    out.append("  top functions by self time (% of busy samples, both threads), hottest line:")
    for function, n in leaf.most_common(15):
        line = leaf_line[function].most_common(1)[0][0]
        out.append(f"    {n / total:6.1%}  {function.split(' (')[0]}  {line}")
    out.append("  faust, aiokafka and mode functions by inclusive time (% of busy samples):")
    libraries = [
        (function, n)
        for function, n in inclusive.most_common()
        if any(lib in function for lib in ("faust/", "aiokafka/", "mode/"))
        and "execute_from_commandline" not in function  # the root of every main-thread stack
    ]
    out += [f"    {n / total:6.1%}  {function}" for function, n in libraries[:16]]
    return out
