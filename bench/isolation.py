"""Cells measured in isolation: a fresh worker process per cell, one at a time per host, claimed.

- ``run_in_worker``: runs an isolated task (``Task.isolated``, e.g. ``efficiency``) in a new
  Python process (``python -m bench.isolation REQUEST RESULT``) that builds the model from its
  spec string and runs the task. Nothing of earlier models (allocator pages, thread pools,
  compiled kernels) is in that process. A worker that crashes, is killed (out of memory) or
  runs past its timeout fails only its cell, with a message saying which.
- ``host_lock``: a host-wide ``flock`` on a file in the system temporary directory, held
  exclusively while a worker runs and shared by a sweep's other cells, so two sweeps (or
  shards) on one machine never time each other, nor time beside each other's accuracy work.
- ``claim`` / ``release``: a claim file next to a cell's result (``.<result>.claim``: host,
  pid, process start, time) so a cell being computed by one run is not started by another
  run into the same directory; a claim whose process is gone (same host) is taken over.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quant.errors import TernbenchError
from quant.fileio import atomic_write_text

LOCK_NAME = "ternbench-isolated.lock"


class WorkerError(TernbenchError):
    """An isolated cell whose worker failed, crashed or timed out."""


# ---------------------------------------------------------------------------------------------
# Host-wide lock
# ---------------------------------------------------------------------------------------------


def lock_path() -> Path:
    return Path(tempfile.gettempdir()) / LOCK_NAME


def _flock(fd: int, mode: int, waiting: Callable[[], None]) -> None:
    """``flock(fd, mode)``, calling ``waiting`` first when it has to wait."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        waiting()
        fcntl.flock(fd, mode)


@contextmanager
def host_lock(echo: Callable[[str], None] = lambda s: None, shared: bool = False) -> Iterator[None]:
    """Hold the host-wide lock of ternbench's work (waits, saying so, while it is taken).

    Exclusive (an isolated measurement): alone on the host, so no other ternbench run's work
    slows what it times. Shared (``shared=True``: a run's other work, accuracy cells and the
    builds they need): beside each other, never beside a measurement. A gate file taken first by
    both (and held by a measurement until it has the lock) queues work that arrives after a
    waiting measurement behind it, so a stream of shared work cannot keep a measurement waiting.
    """
    path = lock_path()
    fds = []
    try:
        for p in (path, path.with_name(path.name + ".gate")):
            fds.append(os.open(p, os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        echo(f"warning: cannot open the host lock {path} ({e.strerror}); running without it")
        yield
        return
    lock, gate = fds
    said: list[bool] = []

    def waiting() -> None:
        if not said:
            said.append(True)
            echo(f"waiting for {'a measurement of another ternbench run' if shared else 'other ternbench work'} "
                 f"on this host to finish (lock {path})")

    try:
        _flock(gate, fcntl.LOCK_EX, waiting)
        try:
            _flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, waiting)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


def claim_path(result: Path) -> Path:
    return result.with_name(f".{result.name}.claim")


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote a claim may still be running (other hosts: assumed so)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = owner.get("process_start")
    return start is None or _process_start(pid) in (None, start)


def _read_claim(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def claim(result: Path, token: str) -> dict[str, Any] | None:
    """Claim the cell whose result file is ``result`` for the run ``token``.

    Returns None when claimed (or already ours), else the claim of the run that holds it.
    """
    from bench.results import now_iso

    path = claim_path(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
          "since": now_iso(), "token": token}
    for _ in range(3):
        try:
            _create_whole(path, json.dumps(me))
        except FileExistsError:
            other = _read_claim(path)
            if other is None:
                # Claims are created whole (_create_whole): an empty file is a leftover, taken over below.
                try:
                    if path.stat().st_size:
                        continue
                except FileNotFoundError:
                    continue
                other = {}
            if other.get("token") == token:
                return None
            if other and _alive(other):
                return other
            if _read_claim(path) == (other or None):  # still the same stale claim: take it over
                path.unlink(missing_ok=True)
            continue
        return None
    return _read_claim(path) or {"host": "?", "pid": "?", "since": "?"}


def _create_whole(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, or raise FileExistsError: never seen half-written, so an
    empty claim file is always a leftover (a hard link of a finished temporary file; where the
    file system has no hard links, an exclusive create and a write)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)


def release(result: Path, token: str) -> None:
    """Remove this run's claim on a cell (a claim of another run is left alone)."""
    path = claim_path(result)
    owner = _read_claim(path)
    if owner is not None and owner.get("token") == token:
        path.unlink(missing_ok=True)


def new_token() -> str:
    return uuid.uuid4().hex


def describe_claim(owner: dict[str, Any]) -> str:
    return f"being computed by another run (host {owner.get('host')}, pid {owner.get('pid')}, since {owner.get('since')})"


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


def registering_modules(spec: Any, task: str) -> list[str]:
    """Modules the worker must import to know what the parent knows about ``spec``: the modules
    that registered its variant, its pretrained tag and the task (plugins already load anyway)."""
    from bench import models as bm
    from bench.tasks import get_task

    def module(entry: Any) -> str | None:  # an object, or a lazy "module:attr" reference
        return entry.partition(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", None)

    mods = [module(bm.VARIANTS[spec.variant].builder)]
    if spec.pretrained and (spec.arch, spec.pretrained) in bm._PRETRAINED:
        mods.append(module(bm._PRETRAINED[(spec.arch, spec.pretrained)]))
    mods.append(module(get_task(task).function))
    return [m for m in dict.fromkeys(mods) if m and m != "__main__"]


def _signal_text(rc: int) -> str:
    if rc >= 0:
        return f"exit status {rc}"
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
    return f"{name}{hint}"


def run_in_worker(request: dict[str, Any], timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``request`` (see ``_work``) in a fresh Python process, with ``env`` added to this one's
    environment; its result, or ``WorkerError``."""
    from bench.paths import REPO_ROOT

    with tempfile.TemporaryDirectory(prefix="ternbench-worker-") as tmp:
        req, res, log = Path(tmp) / "request.json", Path(tmp) / "result.json", Path(tmp) / "output.txt"
        req.write_text(json.dumps(request))
        env = dict(os.environ) | (env or {})
        # The worker imports exactly the code this process runs (a checkout, a test's plugin folder).
        paths = [str(REPO_ROOT)] + [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bench.isolation", str(req), str(res)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # Ctrl-C reaches the parent, which ends it
            try:
                rc = proc.wait(timeout=timeout_s)
            except BaseException as e:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if isinstance(e, subprocess.TimeoutExpired):
                    raise WorkerError(f"the measurement did not finish within {timeout_s:g} s and was stopped "
                                      "(raise --worker-timeout for a slow model)") from None
                raise
        if res.is_file():
            data = json.loads(res.read_text())
            if data.get("error"):
                raise WorkerError(data["error"] + (f"\n{data['traceback']}" if data.get("traceback") else ""))
            return data
        tail = log.read_text(errors="replace")[-1500:].strip()
        raise WorkerError(f"the measuring process died ({_signal_text(rc)}) before writing a result"
                          + (f"; its last output:\n{tail}" if tail else ""))


def _work(request: dict[str, Any]) -> dict[str, Any]:
    """In the worker: build the model from its spec and run the task."""
    import time

    import torch

    from bench import models as bm
    from bench.tasks import TaskContext, get_task
    from bench.tasks.efficiency import EfficiencyConfig

    for mod in request.get("imports", []):
        importlib.import_module(mod)
    device, seed = request["device"], request["seed"]
    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    cfg = EfficiencyConfig(**request["config"])
    torch.set_num_threads(cfg.resolved().threads)
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # random-weight models are the same in every run
    built = bm.build_model(request["spec"], device=device)
    build_s = time.perf_counter() - t0
    ctx = TaskContext(model=built.model, tokenizer=built.tokenizer, dtype=built.precision, device=device,
                      model_info=built.info, efficiency=cfg, progress=False, seed=seed,
                      speed_baseline=tuple(request["speed_baseline"]) if request.get("speed_baseline") else None)
    t = time.perf_counter()
    res = get_task(request["task"]).run(ctx)
    return {"metrics": res.metrics, "main_metric": res.main_metric, "baselines": res.baselines,
            "details": res.details, "info": built.info,
            "timings": {"build_model_s": build_s, "task_s": time.perf_counter() - t}}


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    request = json.loads(Path(request_path).read_text())
    try:
        result, rc = _work(request), 0
    except Exception as e:  # the parent records it as the cell's error
        tb = None if isinstance(e, TernbenchError) else traceback.format_exc(limit=8)
        result, rc = {"error": str(e) if isinstance(e, TernbenchError) else f"{type(e).__name__}: {e}",
                      "traceback": tb}, 1
    atomic_write_text(Path(result_path), json.dumps(result, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
