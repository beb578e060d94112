"""XLA compilation: the persistent cache vbayes turns on, and a counter of compilations.

On JAX a first fit pays for compiling its programs; :func:`enable_cache` keeps the compiled programs on disk
(JAX's own persistent compilation cache), so that the same fit in a new process loads them instead.
``import vbayes`` calls it once:

* the folder is ``$VBAYES_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/vbayes/jax`` (``~/.cache/vbayes/jax``);
  ``VBAYES_CACHE_DIR=off`` (or ``0``, ``false``, ``none``, empty) turns the cache off;
* a cache the user configured for JAX (``JAX_COMPILATION_CACHE_DIR``, ``jax_compilation_cache_dir``, or
  ``jax_enable_compilation_cache=False``) is left exactly as configured, and so are JAX's own environment
  variables for the size bound and the smallest compile time worth caching;
* safe under concurrent processes and interruptions: each program is written to a temporary file and renamed into
  place (:class:`FileStore`), and the least recently used entries are evicted above :data:`MAX_BYTES`;
* the folder is created readable by its owner only: JAX runs what it loads from there, so it must not be shared
  with people you do not trust (JAX's own advice).

:func:`count_compilations` counts the XLA compilations (and cache loads) in a block of code, through
``jax.monitoring``: the benchmarks and the tests that keep the count of a fit from growing use it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

ENV_VAR = "VBAYES_CACHE_DIR"
OFF = ("", "0", "off", "false", "no", "none")
MAX_BYTES = 2 * 1024**3
"""Size bound of the cache folder (2 GiB); least recently used programs are evicted beyond it."""
EVICT_EVERY = 200
"""A process checks the folder's size on its first cache write and every this many writes after it."""
MIN_COMPILE_SECONDS = 0.0
"""Programs that compile faster than this are not written. Every program is: a flow's eager construction alone
compiles ~80 small ones (~20 ms each), which a warm process reads back faster than it compiles them."""

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def cache_dir() -> Path | None:
    """The folder vbayes would use for the cache (None: turned off by :data:`ENV_VAR`)."""
    chosen = os.environ.get(ENV_VAR)
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vbayes" / "jax"


def _user_configured() -> bool:
    """Whether the user set up (or switched off) JAX's cache themselves."""
    return bool(
        os.environ.get("JAX_COMPILATION_CACHE_DIR")
        or jax.config.jax_compilation_cache_dir
        or not jax.config.jax_enable_compilation_cache
    )


def enable_cache() -> Path | None:
    """Turn on the persistent compilation cache in :func:`cache_dir` unless the user configured JAX's cache or
    turned vbayes's off; returns the folder in use (None: vbayes left the cache alone). Never raises: a folder
    that cannot be created leaves the cache off."""
    if _user_configured():
        return None
    folder = cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    _install(FileStore(folder))
    global _FOLDER
    _FOLDER = folder
    return folder


_FOLDER: Path | None = None


def active_folder() -> Path | None:
    """The folder :func:`enable_cache` turned the cache on in (None: vbayes's cache is off, or the user's own JAX
    cache is in use); :mod:`vbayes.stored` keeps its programs there."""
    return _FOLDER if _FOLDER is not None and jax.config.jax_compilation_cache_dir == str(_FOLDER) else None


class FileStore:
    """JAX's persistent cache as files that are written whole or not at all, for concurrent processes.

    ``put`` writes a temporary file and renames it into place (a rename is atomic), so a reader sees a complete
    program or none, and a process killed while writing leaves no damaged entry; each entry carries a checksum,
    so a file damaged any other way is recompiled, not loaded; ``get`` marks what it reads as recently used (its
    modification time). Above :data:`MAX_BYTES` the least recently used entries are deleted,
    checked on the first write of a process and every :data:`EVICT_EVERY` writes after it. JAX's own size-bounded
    cache would lock the folder around every read and re-read every entry's access time on every write: seconds
    per compilation once the folder holds thousands of programs."""

    SUFFIX = "-cache"
    DIGEST = 16  # bytes of BLAKE2b checksum in front of each program: a damaged file is never handed to JAX

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES):
        self._path = Path(path)
        self.max_bytes = max_bytes
        self._writes = 0

    def get(self, key: str) -> bytes | None:
        """The program stored under ``key``; None when absent or damaged (a damaged file is deleted, and JAX
        compiles the program again)."""
        path = self._path / f"{key}{self.SUFFIX}"
        try:
            data = path.read_bytes()
            os.utime(path)
        except OSError:  # absent, or evicted by another process just now
            return None
        digest, value = data[: self.DIGEST], data[self.DIGEST :]
        if digest != hashlib.blake2b(value, digest_size=self.DIGEST).digest():
            path.unlink(missing_ok=True)
            return None
        return value

    def delete(self, key: str) -> None:
        """Remove the entry under ``key`` (absent: nothing to do)."""
        (self._path / f"{key}{self.SUFFIX}").unlink(missing_ok=True)

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (whole, with its checksum) unless it is there already."""
        path = self._path / f"{key}{self.SUFFIX}"
        if path.exists():
            return
        tmp = self._path / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_bytes(hashlib.blake2b(value, digest_size=self.DIGEST).digest() + value)
            os.replace(tmp, path)
        except OSError:  # a full disk or a removed folder: the program is simply not cached
            tmp.unlink(missing_ok=True)
            return
        if self._writes % EVICT_EVERY == 0:
            self.evict()
        self._writes += 1

    def evict(self) -> None:
        """Delete the least recently used entries until the folder holds at most ``max_bytes``; and temporary
        files left by killed processes over an hour ago."""
        entries, total, now = [], 0, time.time()
        try:
            with os.scandir(self._path) as it:
                for e in it:
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    if e.name.endswith(".tmp") and now - st.st_mtime > 3600:
                        Path(e.path).unlink(missing_ok=True)
                    elif e.name.endswith(self.SUFFIX):
                        entries.append((st.st_mtime, st.st_size, e.path))
                        total += st.st_size
        except OSError:
            return
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total -= size


def _install(store: FileStore) -> None:
    """Make ``store`` JAX's persistent cache (JAX offers no public hook for its storage; with a JAX whose internals
    differ, JAX's own unbounded file cache in the same folder is used instead)."""
    try:
        from jax._src import compilation_cache as cc

        with cc._cache_initialized_mutex:
            if cc._cache is None and not cc._cache_initialized:
                cc._cache = store
                cc._cache_initialized = True
    except (ImportError, AttributeError):  # pragma: no cover - another JAX
        pass


# ----------------------------------------------------------------------------------------------------
# how hard XLA optimises

LIGHT = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 2}
"""Compiler options for the programs of a small model (:func:`is_light`): XLA's CPU compiler with its older fusion
emitters, and LLVM at level 2 rather than XLA's default 3, compiles a fit's programs in about a third of the time,
and for a model this small the compiled steps run as fast (on larger data the older emitters' steps run ~10%
slower, hence the bound). Other backends ignore the emitters' option."""

LIGHT_MAX_NUMBERS = 100_000
"""A target whose data hold at most this many numbers is compiled with :data:`LIGHT`."""

QUICK = {**LIGHT, "xla_backend_optimization_level": 0}
"""Compiler options for programs that run once and evaluate the model at most a few hundred times (a fit's start,
its keys, its optimiser state; and a light model's checks' draws): LLVM's optimisations would cost more time than
they save. Programs that evaluate it thousands of times (the steps; a larger model's checks) keep LLVM's."""


def is_light(target: Any) -> bool:
    """Whether ``target``'s data (its pytree leaves) hold at most :data:`LIGHT_MAX_NUMBERS` numbers: a model whose
    first fit is spent compiling rather than running. A density that keeps its data in a closure counts as light
    (only the speed of its steps depends on the choice, never their results' meaning)."""
    return sum(int(getattr(x, "size", 1)) for x in jax.tree_util.tree_leaves(target)) <= LIGHT_MAX_NUMBERS


class SizedJit:
    """``jax.jit(fun, **kwargs)`` compiled with ``light`` (:data:`LIGHT`, or :data:`QUICK` for a program that runs
    once) for a light target (:func:`is_light` of the argument at ``target_arg``) and with XLA's defaults otherwise:
    the same model always gets the same options, so its results do not depend on what was compiled before. Called
    like the jitted function; ``lower`` as well (for :func:`compile_ahead`)."""

    def __init__(self, fun: Callable, target_arg: int = 0, light: dict = LIGHT, **kwargs: Any):
        self._light = jax.jit(fun, compiler_options=light, **kwargs)
        self._options = light
        self._full = jax.jit(fun, **kwargs)
        self._arg = target_arg
        functools.update_wrapper(self, fun)

    def pick(self, *args: Any) -> Any:
        """The jitted function for these arguments."""
        return self._light if is_light(args[self._arg]) else self._full

    def options(self, *args: Any) -> dict | None:
        """The compiler options for these arguments (None: XLA's defaults)."""
        return self._options if is_light(args[self._arg]) else None

    def __call__(self, *args: Any) -> Any:
        return self.pick(*args)(*args)

    def lower(self, *args: Any) -> Any:
        return self.pick(*args).lower(*args)


def sized_jit(target_arg: int = 0, light: dict = LIGHT, **kwargs: Any) -> Callable[[Callable], SizedJit]:
    """Decorator form of :class:`SizedJit`: ``@sized_jit(1, static_argnums=3)``."""
    return lambda fun: SizedJit(fun, target_arg, light, **kwargs)


_AHEAD = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vbayes-compile")


def compile_ahead(jitted: Any, *args: Any) -> concurrent.futures.Future:
    """Compile ``jitted`` for ``args`` (arrays or ``jax.ShapeDtypeStruct``; static arguments as values) in a
    background thread, so that XLA compiles it while the caller computes something else: the later call with
    arguments of the same shapes finds it compiled. The function is traced here, in the calling thread (model code,
    NumPyro's handlers among it, is not thread-safe); only XLA's compilation runs in the background. Wait on the
    returned future before that call (a call made while the compilation is still running would compile a second
    time). A failure is left for that call to report."""
    try:
        lowered = jitted.lower(*args)
    except Exception:  # noqa: BLE001 - the real call raises it, with its context
        return _AHEAD.submit(lambda: None)

    def work() -> None:
        try:
            lowered.compile()
        except Exception:  # noqa: BLE001 - as above
            pass

    return _AHEAD.submit(work)


def import_ahead(*modules: str | Callable[[], object]) -> None:
    """Start importing ``modules`` (names, or functions that import: matplotlib, pandas, ArviZ cost 0.5–2.5 s each)
    on a daemon thread, so that the import overlaps compilation and compiled code, which run without the GIL.
    Python's per-module import locks make a later ``import`` of the same module wait for it rather than load it
    twice; a failure is left for that import to report."""

    def load() -> None:
        for module in modules:
            with contextlib.suppress(Exception):
                module() if callable(module) else importlib.import_module(module)

    threading.Thread(target=load, name="vbayes-import", daemon=True).start()


# ----------------------------------------------------------------------------------------------------
# counting


@dataclass
class Compilations:
    """XLA programs built in a ``with count_compilations()`` block: ``events`` holds (function name, seconds,
    loaded from the persistent cache?) for each program compiled or loaded."""

    events: list[tuple[str, float, bool]] = field(default_factory=list)
    stored: list[tuple[str, str]] = field(default_factory=list)
    """(function name, ``"exported"`` or ``"loaded"``) for each program :mod:`vbayes.stored` traced and stored, or
    loaded without tracing it."""

    @property
    def programs(self) -> int:
        """Programs compiled or loaded from the persistent cache."""
        return len(self.events)

    @property
    def cache_hits(self) -> int:
        """Programs loaded from the persistent cache."""
        return sum(hit for _, _, hit in self.events)

    @property
    def compiled(self) -> int:
        """Programs XLA compiled (not found in the persistent cache)."""
        return self.programs - self.cache_hits

    @property
    def seconds(self) -> float:
        """Seconds spent compiling and loading (JAX's backend-compile time)."""
        return float(sum(t for _, t, _ in self.events))

    def names(self, k: int = 6) -> str:
        """The ``k`` most frequent function names, with their counts: ``"run, _start×2"``."""
        counts: dict[str, int] = {}
        for name, _, _ in self.events:
            counts[name] = counts.get(name, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:k]
        return ", ".join(f"{n}×{c}" if c > 1 else n for n, c in top)


_ACTIVE: list[Compilations] = []
_LOCK = threading.Lock()
_LISTENING = False
_HIT = threading.local()  # a cache hit is reported inside the compile event it belongs to


def _on_duration(event: str, duration: float, **kwargs: object) -> None:
    if event == _COMPILE_EVENT:
        hit, _HIT.pending = getattr(_HIT, "pending", False), False
        for c in _ACTIVE:
            c.events.append((str(kwargs.get("fun_name", "?")), duration, hit))


def record_stored(name: str, how: str) -> None:
    """Count a program :mod:`vbayes.stored` exported or loaded in every active :func:`count_compilations`."""
    for c in _ACTIVE:
        c.stored.append((name, how))


def _on_event(event: str, **_: object) -> None:
    if event == _CACHE_HIT_EVENT:
        _HIT.pending = True


@contextlib.contextmanager
def count_compilations() -> Iterator[Compilations]:
    """``with count_compilations() as c: ...``; then ``c.compiled`` programs were compiled and ``c.cache_hits``
    loaded from the persistent cache, in ``c.seconds`` (every thread of the process is counted)."""
    global _LISTENING
    with _LOCK:
        if not _LISTENING:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            jax.monitoring.register_event_listener(_on_event)
            _LISTENING = True
    c = Compilations()
    _ACTIVE.append(c)
    try:
        yield c
    finally:
        _ACTIVE.remove(c)
