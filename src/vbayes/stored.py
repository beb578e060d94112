"""Stored programs: a fit's compiled programs run in a new process without being traced and lowered again.

JAX's persistent cache (:mod:`vbayes.compilation`) spares a new process XLA's compilation, but to look a program up
JAX first traces its Python function and lowers it to StableHLO, in every process. For a small model that costs
more than the compilation it saves: the default fit of the eight schools spends most of a warm run tracing.
:func:`stored` wraps a jitted function so that its program, exported with :mod:`jax.export` (its StableHLO and
signature) together with the structure of its outputs, is kept in the cache folder's ``programs/`` under a key of
everything the program computes from:

* vbayes's own source (a hash of its modules) and the versions of the libraries traced into it;
* JAX's settings that change a trace (64-bit mode, matmul precision, ...), the backend and its device kind;
* the function's name, what it closes over (``parts``: plain values the caller names), its static arguments and
  compiler options;
* the structure (every node type from vbayes or a library above, its static data by value), shapes and dtypes of
  its arguments, and each :class:`~vbayes.targets.Target`'s model: the jaxpr of its log density with its Hessian
  and of its map to the named parameters, constants included (a change to the model is a new key).

A process that finds the key loads the program and calls it through :meth:`jax.export.Exported.call`; JAX's
compilation cache then supplies the executable. The first process runs the exported program too, so a cold and a
warm run compute the same thing. Any failure (a damaged entry, a program JAX cannot export) falls back to the
jitted function. Where vbayes's cache is off, the process has more than one device, or a part cannot be named by
value (a user's optax transformation, a device mesh: the caller passes ``parts=None``), the wrapper is the jitted
function. Entries are read with :mod:`pickle` from the cache folder, which is its owner's only (as for the
compiled programs JAX loads from it). :func:`kept` does the same for a computation's results.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.metadata
import pickle
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vbayes import compilation
from vbayes.targets import Target

LIBRARIES = ("jax", "jaxlib", "numpyro", "optax", "equinox", "flowjax", "paramax", "blackjax", "numpy", "flatbuffers")
"""Packages whose code a stored program may contain: their versions are part of every key."""
SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
)
"""JAX settings that change what a trace computes: read at each call."""
NODE_MODULES = ("vbayes", "jax", "jaxlib", "optax", "equinox", "flowjax", "paramax", "numpyro", "builtins")
"""Pytree node types of stored programs' arguments must come from these packages (their code is in the key)."""
FOLDER = "programs"
"""Sub-folder of the compilation cache holding the exported programs."""

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stored(
    jitted: Any,
    name: str,
    parts: Sequence[Any] | None = (),
    static_argnums: Sequence[int] = (),
    options: dict | None = None,
) -> Callable:
    """``jitted`` (a ``jax.jit`` or :class:`~vbayes.compilation.SizedJit` function), called the same way, with its
    program kept across processes (module docstring). ``name``: unique per function; ``parts``: values that
    identify what it closes over (None: nothing can; the result is ``jitted`` itself); ``options``: the compiler
    options of a plain ``jax.jit`` (a ``SizedJit`` picks its own)."""
    if parts is None:
        return jitted
    return StoredProgram(jitted, name, tuple(parts), tuple(static_argnums), options)


class StoredProgram:
    """See :func:`stored`. ``program.lower(*args)`` lowers the program for ``args`` (for
    :func:`~vbayes.compilation.compile_ahead`)."""

    def __init__(self, jitted: Any, name: str, parts: tuple, static_argnums: tuple, options: dict | None):
        self._jitted = jitted
        self._fun = jitted.__wrapped__
        self._name = name
        self._parts = parts
        self._static = static_argnums
        self._options = options
        self._programs: dict[str, tuple[Any, Any] | None] = {}
        self._keys: dict[tuple, str | None] = {}
        functools.update_wrapper(self, self._fun)

    def __call__(self, *args: Any) -> Any:
        found = self._program(args)
        if found is None:
            return self._jitted(*args)
        call, out_tree, leaves = found
        return jax.tree_util.tree_unflatten(out_tree, call(*leaves))

    def lower(self, *args: Any) -> Any:
        found = self._program(args)
        if found is None:
            return self._jitted.lower(*args)
        call, _, leaves = found
        return call.lower(*leaves)

    def _split(self, args: tuple) -> tuple[list, tuple]:
        dynamic = [a for i, a in enumerate(args) if i not in self._static]
        static = tuple((i, args[i]) for i in self._static if i < len(args))
        return dynamic, static

    def _program(self, args: tuple) -> tuple[Any, Any, list] | None:
        """The loaded or exported program for ``args``, its output structure and the arguments' leaves; None where
        the program is not stored (the cache is off, or the key cannot be formed, exported or loaded)."""
        store = _store()
        if store is None:
            return None
        dynamic, static = self._split(args)
        leaves, in_tree = jax.tree_util.tree_flatten(dynamic)
        options = self._options if not hasattr(self._jitted, "options") else self._jitted.options(*args)
        settings = tuple(repr(getattr(jax.config, s, None)) for s in SETTINGS)
        # equal structures (as JAX's own jit cache compares them), shapes and settings: the same key, not made again
        seen = (in_tree, tuple(map(_aval, leaves)), static, settings)
        try:
            if seen not in self._keys:
                self._keys[seen] = self._key(dynamic, leaves, in_tree, static, options, settings)
            key = self._keys[seen]
        except TypeError:  # an unhashable static argument
            key = self._key(dynamic, leaves, in_tree, static, options, settings)
        if key is None:
            return None
        if key not in self._programs:
            name = self._fun.__name__
            found, how = _load(store, key, options, name), "loaded"
            if found is None:
                found, how = self._export(store, key, leaves, in_tree, static, options), "exported"
            if found is not None:
                compilation.record_stored(name, how)
            self._programs[key] = found
        found = self._programs[key]
        return None if found is None else (*found, leaves)

    def _key(
        self, dynamic: list, leaves: list, in_tree: Any, static: tuple, options: dict | None, settings: tuple
    ) -> str | None:
        try:
            described = [_describe_value(static), _describe_value(self._parts), _describe_value(options or {})]
            described.append(_describe_tree(in_tree))
            found = jax.tree_util.tree_leaves(dynamic, is_leaf=lambda x: isinstance(x, Target))
            prints = [_target_print(t) for t in found if isinstance(t, Target)]
        except Exception:  # noqa: BLE001 - a node type from elsewhere, a model JAX cannot differentiate twice, ...
            return None
        avals = [_aval(x) for x in leaves]
        text = "\n".join([_environment(), self._name, *described, repr(avals), *settings, *prints])
        return hashlib.sha256(text.encode()).hexdigest()

    def _export(
        self, store: compilation.FileStore, key: str, leaves: list, in_tree: Any, static: tuple, options: dict | None
    ) -> tuple[Any, Any] | None:
        out_trees = []

        def flat(*flat_args: Any) -> list:
            args = list(jax.tree_util.tree_unflatten(in_tree, flat_args))
            for i, value in static:
                args.insert(i, value)
            out_leaves, out_tree = jax.tree_util.tree_flatten(self._fun(*args))
            out_trees.append(out_tree)
            return out_leaves

        specs = [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak) for shape, dtype, weak in map(_aval, leaves)]
        try:
            exported = jax.export.export(jax.jit(flat))(*specs)
            out_tree = out_trees[-1]
            store.put(key, pickle.dumps((bytes(exported.serialize()), pickle.dumps(out_tree))))
        except Exception:  # noqa: BLE001 - any program JAX cannot export or pickle runs as the plain jitted function
            return None
        return _jit_call(exported, options, self._fun.__name__), out_tree


class _Unstorable(Exception):
    """A program argument whose meaning its key cannot capture."""


def _store() -> compilation.FileStore | None:
    """The store of exported programs, in the active cache folder (None: vbayes's cache is off, or the process has
    more than one device: an exported program's results are placed on the default device, where a plain jitted
    function's follow its arguments, which matters only when there is another device to be on)."""
    folder = compilation.active_folder()
    return None if folder is None or jax.device_count() > 1 else _store_in(folder)


@functools.cache
def _store_in(folder: Path) -> compilation.FileStore | None:
    """The store in ``folder``'s :data:`FOLDER` (None where it cannot be created: programs are then not stored)."""
    path = folder / FOLDER
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    return compilation.FileStore(path)


def kept(name: str, inputs: Sequence[Any], compute: Callable[[], Any]) -> Any:
    """``compute()`` (a pytree of arrays of built-in containers), kept in the store under ``name``, the values of
    ``inputs`` (arrays and plain values), JAX's settings and :func:`_environment`: a new process reads it instead of
    computing it. For a deterministic computation that cannot be stored as a program (one with a host callback);
    without a store, or for inputs that cannot be named by value, ``compute()``."""
    store = _store()
    if store is None:
        return compute()
    digest = hashlib.sha256(
        "\n".join([_environment(), name, *(repr(getattr(jax.config, s, None)) for s in SETTINGS)]).encode()
    )
    try:
        for value in inputs:
            if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
                raise _Unstorable("a typed key")
            digest.update(_describe_value(value).encode())
    except _Unstorable:
        return compute()
    key = digest.hexdigest()
    data = store.get(key)
    if data is not None:
        try:
            return jax.tree_util.tree_map(jnp.asarray, pickle.loads(data))
        except Exception:  # noqa: BLE001 - a damaged entry: computed and stored again
            store.delete(key)
    result = compute()
    store.put(key, pickle.dumps(jax.tree_util.tree_map(np.asarray, result)))
    return result


def _load(store: compilation.FileStore, key: str, options: dict | None, name: str) -> tuple[Any, Any] | None:
    data = store.get(key)
    if data is None:
        return None
    try:
        blob, tree = pickle.loads(data)
        exported = jax.export.deserialize(bytearray(blob))
        out_tree = pickle.loads(tree)
    except Exception:  # noqa: BLE001 - a damaged entry: removed, so that it is stored again
        store.delete(key)
        return None
    return _jit_call(exported, options, name), out_tree


def _jit_call(exported: Any, options: dict | None, name: str) -> Any:
    """The exported program, jitted under its function's ``name`` (as JAX's compile events and
    :func:`~vbayes.compilation.count_compilations` report it), its arguments on the default device: an exported
    program's results are placed there (committed), and a program lowered for placed arguments differs from one for
    new arrays, so without this a loop feeding results back in would compile it twice."""

    def call(*args: Any) -> Any:
        return exported.call(*args)

    call.__name__ = call.__qualname__ = name
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.jit(call, in_shardings=device, compiler_options=options or None)


def _aval(x: Any) -> tuple:
    """``(shape, dtype, weak_type)`` of an array, a shape or a Python number (weakly typed, as JAX treats it)."""
    weak = getattr(x, "weak_type", type(x) in (int, float, complex))  # a NumPy scalar is strongly typed
    return np.shape(x), jnp.result_type(x), bool(weak)


def _describe_tree(tree: Any) -> str:
    """The structure as text: each node's type (from :data:`NODE_MODULES`, whose code is in the key; else
    :class:`_Unstorable`) and its static data by value (:func:`_describe_value`); a target's model is in the key by
    its jaxprs (:func:`_target_print`), not here."""
    if tree.num_nodes == 1 and tree.num_leaves == 1:
        return "*"
    kind, aux = tree.node_data()
    if kind.__module__.split(".")[0] not in NODE_MODULES:
        raise _Unstorable(kind.__qualname__)
    static = "target" if issubclass(kind, Target) else _describe_value(aux)
    children = ", ".join(_describe_tree(child) for child in tree.children())
    return f"{kind.__module__}.{kind.__qualname__}[{static}]({children})"


def _code(code: types.CodeType) -> str:
    """A hash of a function's bytecode, names and constants (nested functions' code included)."""
    digest = hashlib.sha256(code.co_code + repr(code.co_names).encode())
    for const in code.co_consts:
        digest.update((_code(const) if isinstance(const, types.CodeType) else repr(const)).encode())
    return digest.hexdigest()[:32]


def _describe_value(value: Any, depth: int = 0) -> str:
    """A pytree node's static data as text that names what it computes with: numbers and strings by ``repr``, arrays
    by a hash of their bytes, functions by module, name, code and the values they close over or default to, objects
    by their fields (or ``_stored_description()``); :class:`_Unstorable` for what can be named only by its address."""
    if depth > 12:
        raise _Unstorable("static data nested too deep")
    deeper = functools.partial(_describe_value, depth=depth + 1)
    if value is None or isinstance(value, bool | int | float | complex | str | bytes | enum.Enum):
        return repr(value)
    if isinstance(value, np.ndarray | np.generic | jax.Array):
        array = np.asarray(value)
        return f"array{array.shape}{array.dtype}:{hashlib.sha256(array.tobytes()).hexdigest()}"
    if isinstance(value, tuple | list):
        return f"{type(value).__name__}({', '.join(map(deeper, value))})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{deeper(k)}: {deeper(v)}" for k, v in sorted(value.items(), key=repr)) + "}"
    if isinstance(value, type):
        return f"<class {value.__module__}.{value.__qualname__}>"
    if isinstance(value, functools.partial):
        return f"partial({deeper(value.func)}, {deeper(value.args)}, {deeper(value.keywords)})"
    if isinstance(value, types.FunctionType):
        cells = []
        for cell in value.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell
                cells.append("<empty>")
        defaults = (value.__defaults__, value.__kwdefaults__)
        return f"<function {value.__module__}.{value.__qualname__} {_code(value.__code__)} {deeper((cells, defaults))}>"
    if isinstance(value, types.BuiltinFunctionType | np.ufunc):
        return f"<builtin {getattr(value, '__module__', None)}.{getattr(value, '__qualname__', value.__name__)}>"
    if hasattr(value, "_stored_description"):
        return value._stored_description()
    if hasattr(value, "__dict__"):
        return f"{type(value).__module__}.{type(value).__qualname__}({deeper(vars(value))})"
    text = repr(value)
    if _ADDRESS.search(text):
        raise _Unstorable(type(value).__qualname__)
    return text


@functools.cache
def _environment() -> str:
    """vbayes's source, the libraries' versions, Python's version, the backend and its devices."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    for lib in LIBRARIES:
        try:
            digest.update(f"{lib}={importlib.metadata.version(lib)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{lib}=-".encode())
    devices = jax.devices()
    digest.update(f"{sys.version_info[:2]} {jax.default_backend()} {devices[0].device_kind} {len(devices)}".encode())
    return digest.hexdigest()


_TARGET_PRINTS: dict[tuple, str] = {}


def _target_print(target: Any) -> str:
    """A hash of the jaxpr of ``target``'s log density with its Hessian and of its map to the constrained
    parameters (sub-jaxprs' constants included): every model computation a stored program makes (values, first and
    second derivatives, custom derivative rules among them, and draws of the named parameters); memoised per density
    and data shapes."""
    leaves = jax.tree_util.tree_leaves(target)
    memo = (target.density, tuple(_aval(x) for x in leaves))
    if memo not in _TARGET_PRINTS:

        def computations(t: Any, z: Any) -> tuple:
            return t.log_density(z), jax.hessian(lambda u: t.log_density(u))(z), t.constrain(z)

        closed = jax.make_jaxpr(computations)(target, jax.ShapeDtypeStruct((target.dim,), jnp.result_type(float)))
        digest = hashlib.sha256(_ADDRESS.sub("", str(closed.jaxpr)).encode())
        for const in _constants(closed):
            value = np.asarray(const)
            digest.update(f"{value.shape}{value.dtype}".encode() + value.tobytes())
        _TARGET_PRINTS[memo] = digest.hexdigest()
    return _TARGET_PRINTS[memo]


def _constants(closed: Any) -> list:
    """The constants of a closed jaxpr and of every closed jaxpr inside its equations' parameters."""
    found, stack = [], [closed]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif hasattr(item, "consts") and hasattr(item, "jaxpr"):
            found.extend(item.consts)
            stack.append(item.jaxpr)
        elif hasattr(item, "eqns"):
            stack.extend(v for eqn in item.eqns for v in eqn.params.values())
    return found


def function_name(fun: Callable) -> str | None:
    """A vbayes function named by value for :func:`stored`'s ``parts``: its module and qualified name, with the
    values it closes over (numbers, strings); None for anything else (a user's function, an object's address)."""
    module = getattr(fun, "__module__", "") or ""
    if module.split(".")[0] != "vbayes" or not hasattr(fun, "__qualname__"):
        return None
    cells = [cell.cell_contents for cell in getattr(fun, "__closure__", None) or ()]
    if not all(isinstance(v, int | float | str | bool | type(None)) for v in cells):
        return None
    return f"{module}.{fun.__qualname__}{tuple(cells)!r}"
