"""Channel tracing: which positions of which arrays of a JAX program must be pruned together.

`trace_channels(apply, params, state, x)` traces `apply(params, state, x)` (eval mode) to a jaxpr
and walks its equations, nested `jit` / `custom_jvp_call` / `custom_vjp_call` / `remat` bodies
included. Every position of every axis of every leaf (params, state, jaxpr constants) and of the
input is an *atom*; a union-find joins the atoms that must be removed together:

* every value gets per-axis *labels*: for each position along the axis, the atom it carries, or
  `None` for an axis whose positions are no channels (the spatial axes after a convolution or a
  pooling window). A leaf's axes are labelled with its own atoms, the input's with atoms that are
  *pinned* (never pruned, like every axis of the model's outputs);
* elementwise ops (`add` of a residual, `mul`, `max`, `select_n`, ...) join the labels of their
  operands position by position (a size-1 axis broadcasts and joins nothing); joining a labelled
  axis with a `None` axis pins the labelled atoms;
* a contraction (`dot_general`, `conv_general_dilated`, `conv_ops`' `prospr_conv`) joins the
  contracted axes position by position and gives its output the labels of the free axes: the
  output features of a dense or conv layer carry the atoms of its kernel's output axis. A
  depthwise conv (`feature_group_count` = input channels) joins each output channel with its
  input channel; other grouped convs pin their channels;
* `reshape` merging axes of which one is labelled (a flatten: one channel owns several rows),
  `transpose`, `concatenate` (offsets), `slice`, `pad` (padded positions are new atoms),
  `broadcast_in_dim` (new positions are new atoms), `split`, `rev` move labels; reductions,
  pooling windows and cumulative ops over a labelled axis pin it (they mix its positions).

Alongside, every input-independent value (one computed from leaves only, e.g. a BatchNorm's
`scale * rsqrt(var + eps)`) remembers which leaf axes it came from, so that when it meets the
input-dependent activations each leaf axis gets a *role*: `member` (combined elementwise with
the channels, or a contraction's free axis: the kernel's output axis) or `consumer` (a
contracted axis: the next layer's input axis). A contraction is only followed where a removed
position contributes exactly 0 in the masked model (one side is masked params, or the
activation is zero there); otherwise its positions are pinned. Primitives outside
`SUPPORTED_PRIMITIVES` raise `UnsupportedPrimitiveError` with the user's source line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from prospr_jax.ops import conv_ops
from prospr_jax.tree_types import PyTree

Labels = tuple[np.ndarray | None, ...]
"""Per axis: the atom of each position, or `None` (the axis carries no channels)."""
LeafAxis = tuple[int, int]
"""`(leaf index, axis)`."""
Site = tuple[int, ...]
"""Equation indices from the top-level jaxpr down to a nested jaxpr."""

MEMBER, CONSUMER = "member", "consumer"
LeafKind = Literal["param", "state", "const"]


class UnsupportedPrimitiveError(NotImplementedError):
  """The channel tracer met a primitive it cannot follow."""


# --- Atoms: a union-find with a pinned flag per component. ------------------------------------


class _Atoms:
  """Integer atoms; `join` merges components, `pin` marks a component as never pruned."""

  def __init__(self) -> None:
    self._parent: list[int] = []
    self._pinned: list[bool] = []

  def new(self, n: int, pinned: bool = False) -> np.ndarray:
    start = len(self._parent)
    self._parent.extend(range(start, start + n))
    self._pinned.extend([pinned] * n)
    return np.arange(start, start + n, dtype=np.int64)

  def find(self, a: int) -> int:
    parent = self._parent
    while parent[a] != a:
      parent[a] = parent[parent[a]]
      a = parent[a]
    return a

  def join(self, a: np.ndarray, b: np.ndarray) -> None:
    """Joins `a[i]` with `b[i]` for every i."""
    for x, y in zip(a.tolist(), b.tolist()):
      rx, ry = self.find(x), self.find(y)
      if rx != ry:
        self._parent[ry] = rx
        self._pinned[rx] = self._pinned[rx] or self._pinned[ry]

  def pin(self, labels: np.ndarray | None) -> None:
    if labels is not None:
      for x in labels.tolist():
        self._pinned[self.find(x)] = True

  def all_pinned(self, labels: np.ndarray | None) -> bool:
    return labels is None or all(self._pinned[self.find(x)] for x in labels.tolist())

  def roots(self) -> np.ndarray:
    """The component (root atom) of every atom."""
    return np.array([self.find(a) for a in range(len(self._parent))], np.int64)

  def pinned_roots(self) -> np.ndarray:
    """Bool per atom: whether it is a root of a pinned component (meaningful for roots only)."""
    return np.array(self._pinned, bool)


# --- Values and leaves. -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Value:
  """What the tracer knows about one jaxpr value.

  Attributes:
    shape: the value's shape.
    labels: per-axis atom labels (`Labels`).
    sources: for an input-independent value, per axis the leaf axes whose positions it carries;
      `None` for a value that depends on the model's input.
    zero: at the positions of a removed channel the value is exactly 0 in the masked model
      (params at removed positions are masked; state, constants and the input are not).
    const_zero: the value is identically 0 (a literal 0 and values broadcast from it).
    depth: the number of layers (contractions with a weight) between the input and this value.
  """

  shape: tuple[int, ...]
  labels: Labels
  sources: tuple[frozenset[LeafAxis], ...] | None
  zero: bool
  const_zero: bool = False
  depth: int = 0

  @property
  def dependent(self) -> bool:
    return self.sources is None


@dataclasses.dataclass(frozen=True)
class Leaf:
  """An array the traced program reads: a params or state leaf, or a jaxpr constant.

  Attributes:
    path: '/'-joined path in its tree (params or state), or `const@<site>#<i>` for constants.
    kind: 'param', 'state' or 'const'.
    shape: its shape.
    atoms: per axis, the atoms of its positions.
  """

  path: str
  kind: LeafKind
  shape: tuple[int, ...]
  atoms: tuple[np.ndarray, ...]


@dataclasses.dataclass
class Role:
  """How a leaf axis meets the activations (see the module docstring).

  Attributes:
    kind: `MEMBER` or `CONSUMER` (`MEMBER` wins if an axis is both).
    first_use: index (in trace order) of the first equation that gave it this role.
    producer: `(depth, equation index)` of the first contraction whose output features are this
      axis (a conv or dense kernel's output axis), or `None`.
  """

  kind: str
  first_use: int
  producer: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class ChannelTrace:
  """The result of `trace_channels`.

  Attributes:
    jaxpr: the traced program `apply(params, state, x)`.
    leaves: params leaves, then state leaves (flattening order), then jaxpr constants.
    num_params: how many of `leaves` are params.
    labels: `{(site, var): labels}` for every value of the program (nested jaxprs included).
    consts: `{(site, constvar): leaf index}` for the constants of every (nested) jaxpr.
    roles: `{(leaf index, axis): Role}`.
    roots: the component of every atom.
    pinned: bool per atom, true for the roots of pinned components.
    treedefs: the tree structures of params, state, the input and the output.
  """

  jaxpr: jex.core.ClosedJaxpr
  leaves: tuple[Leaf, ...]
  num_params: int
  labels: dict[tuple[Site, Any], Labels]
  consts: dict[tuple[Site, Any], int]
  roles: dict[LeafAxis, Role]
  roots: np.ndarray
  pinned: np.ndarray
  treedefs: tuple[Any, Any, Any, Any]


# --- Error messages. --------------------------------------------------------------------------

_LIBRARY_DIRS = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (jax, np) if m.__file__
) + (os.path.dirname(__file__) + os.sep, conv_ops.__file__)
_LIBRARY_PACKAGES = (f"{os.sep}flax{os.sep}", f"{os.sep}jaxlib{os.sep}", f"{os.sep}optax{os.sep}")


def user_source_line(eqns: Sequence[jex.core.JaxprEqn]) -> str:
  """`file:line (function)` of the user's code that made `eqns[0]`.

  The innermost frame outside jax, flax, optax and numpy, looked for in `eqns[0]`'s traceback,
  then in those of the call equations enclosing it (`eqns[1:]`, innermost first: the traceback
  of an equation inside a `jit` ends at the `jit`).
  """
  for eqn in eqns:
    for frame in getattr(eqn.source_info.traceback, "frames", None) or []:
      name = frame.file_name
      if not name.startswith(_LIBRARY_DIRS) and not any(p in name for p in _LIBRARY_PACKAGES):
        return f"{name}:{frame.line_num} ({frame.function_name})"
  return jex.source_info_util.summarize(eqns[0].source_info)


def _unsupported(eqns: Sequence[jex.core.JaxprEqn], why: str) -> UnsupportedPrimitiveError:
  eqn = eqns[0]
  where = user_source_line(eqns)
  scope = str(eqn.source_info.name_stack)
  return UnsupportedPrimitiveError(
      f"Cannot trace channels through primitive '{eqn.primitive.name}' at {where}"
      + (f" (in {scope})" if scope else "") + f": {why}. Channel tracing follows "
      f"{', '.join(sorted(SUPPORTED_PRIMITIVES))}; nested jit, custom_jvp/custom_vjp and remat "
      "bodies are followed inside. Rewrite that step with supported operations, or prune a "
      "model that does not use it."
  )


# --- The walker. ------------------------------------------------------------------------------


class _Tracer:
  """Walks a jaxpr, computing a `Value` per variable and recording joins, pins and roles."""

  def __init__(self) -> None:
    self.atoms = _Atoms()
    self.leaves: list[Leaf] = []
    self.labels: dict[tuple[Site, Any], Labels] = {}
    self.consts: dict[tuple[Site, Any], int] = {}
    self.roles: dict[LeafAxis, Role] = {}
    self.step = 0  # index of the current equation in trace order
    self.eqns: list[jex.core.JaxprEqn] = []  # the current equation, then its enclosing calls

  # Leaves and fresh values.
  def leaf_value(self, path: str, kind: LeafKind, shape: tuple[int, ...]) -> Value:
    atoms = tuple(self.atoms.new(n) for n in shape)
    index = len(self.leaves)
    self.leaves.append(Leaf(path, kind, tuple(shape), atoms))
    return Value(tuple(shape), atoms, tuple(frozenset({(index, a)}) for a in range(len(shape))),
                 zero=kind == "param")

  def input_value(self, shape: tuple[int, ...]) -> Value:
    return Value(tuple(shape), tuple(self.atoms.new(n, pinned=True) for n in shape), None,
                 zero=True)

  def fresh(self, n: int) -> np.ndarray:
    return self.atoms.new(n)

  # Joins, pins, roles.
  def join_axis(self, parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Joins position by position; a labelled axis meeting a `None` axis is pinned instead."""
    if not parts:
      return None
    if any(p is None for p in parts):
      for p in parts:
        self.atoms.pin(p)
      return None
    for p in parts[1:]:
      self.atoms.join(parts[0], p)
    return parts[0]

  def pin(self, labels: np.ndarray | None) -> None:
    self.atoms.pin(labels)

  def mark(self, sources: frozenset[LeafAxis], kind: str, producer_depth: int | None = None):
    """Gives each leaf axis in `sources` the role `kind` (first use wins; member beats consumer)."""
    for leaf_axis in sources:
      role = self.roles.get(leaf_axis)
      if role is None:
        role = self.roles[leaf_axis] = Role(kind, self.step)
      elif kind == MEMBER and role.kind == CONSUMER:
        role.kind = MEMBER
      if producer_depth is not None and role.producer is None:
        role.producer = (producer_depth, self.step)

  def unsupported(self, why: str) -> UnsupportedPrimitiveError:
    return _unsupported(self.eqns[::-1], why)

  # Walking.
  def run(self, jaxpr: jex.core.Jaxpr, consts: Sequence[Any], args: Sequence[Value],
          site: Site) -> list[Value]:
    env: dict[Any, Value] = {}
    for i, (var, const) in enumerate(zip(jaxpr.constvars, consts)):
      value = self.leaf_value(f"const@{'.'.join(map(str, site))}#{i}", "const", np.shape(const))
      self.consts[(site, var)] = len(self.leaves) - 1
      numeric = jnp.issubdtype(jnp.result_type(const), jnp.number)
      env[var] = dataclasses.replace(value, const_zero=bool(numeric and not np.any(const)))
    env.update(zip(jaxpr.invars, args))
    for i, eqn in enumerate(jaxpr.eqns):
      ins = [self.read(env, v) for v in eqn.invars]
      self.step += 1
      self.eqns.append(eqn)
      outs = self.equation(eqn, ins, site + (i,))
      self.eqns.pop()
      for var, value in zip(eqn.outvars, outs, strict=True):
        if not isinstance(var, jex.core.DropVar):
          env[var] = value
    for var, value in env.items():
      self.labels[(site, var)] = value.labels
    return [self.read(env, v) for v in jaxpr.outvars]

  @staticmethod
  def read(env: dict[Any, Value], var: Any) -> Value:
    if isinstance(var, jex.core.Literal):
      zero = not np.any(var.val)
      return Value(np.shape(var.val), tuple(None for _ in np.shape(var.val)), (),
                   zero=zero, const_zero=zero)
    return env[var]

  def equation(self, eqn: jex.core.JaxprEqn, ins: list[Value], site: Site) -> list[Value]:
    name = eqn.primitive.name
    if name in NESTED:
      inner = eqn.params[NESTED[name]]
      jaxpr, consts = (inner.jaxpr, inner.consts) if hasattr(inner, "consts") else (inner, ())
      return self.run(jaxpr, consts, ins, site)
    rule = RULES.get(name)
    if rule is None:
      raise self.unsupported("no channel rule for it")
    return rule(self, eqn, ins)


def trace_channels(
    apply: Callable[[PyTree, PyTree, Any], Any], params: PyTree, state: PyTree, x: Any
) -> ChannelTrace:
  """Traces `apply(params, state, x)` and propagates channel atoms through it.

  Args:
    apply: the model in eval mode, a pure function of params, state and input.
    params: the trainable leaves (their axes may become group members and consumers).
    state: other leaves (e.g. BatchNorm statistics), sliced with the groups but never gated.
    x: an example input (array, pytree of arrays or `jax.ShapeDtypeStruct`s); its batch size is
      irrelevant.

  Returns:
    The trace; `groups.channel_groups` turns it into channel groups.

  Raises:
    UnsupportedPrimitiveError: at a primitive the tracer cannot follow.
  """
  closed, out_shape = jax.make_jaxpr(apply, return_shape=True)(params, state, x)
  tracer = _Tracer()
  args = []
  treedefs = []
  for kind, tree in (("param", params), ("state", state)):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    treedefs.append(treedef)
    args += [tracer.leaf_value(jax.tree_util.keystr(p, simple=True, separator="/"), kind,
                               np.shape(leaf)) for p, leaf in leaves]
  x_leaves, x_treedef = jax.tree.flatten(x)
  args += [tracer.input_value(np.shape(leaf)) for leaf in x_leaves]
  num_params = len(jax.tree.leaves(params))
  outs = tracer.run(closed.jaxpr, closed.consts, args, ())
  for out in outs:
    for labels in out.labels:
      tracer.pin(labels)
  return ChannelTrace(
      jaxpr=closed, leaves=tuple(tracer.leaves), num_params=num_params, labels=tracer.labels,
      consts=tracer.consts, roles=tracer.roles, roots=tracer.atoms.roots(),
      pinned=tracer.atoms.pinned_roots(),
      treedefs=(*treedefs, x_treedef, jax.tree.structure(out_shape)),
  )


# --- Rules: one per primitive family. ---------------------------------------------------------

Rule = Callable[[_Tracer, jex.core.JaxprEqn, list[Value]], list[Value]]

NESTED: dict[str, str] = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr",
}
"""Call-like primitives: their outputs are those of the nested jaxpr in this parameter."""


def _out_shapes(eqn: jex.core.JaxprEqn) -> list[tuple[int, ...]]:
  return [tuple(v.aval.shape) for v in eqn.outvars]


def _depth(ins: Sequence[Value]) -> int:
  return max((v.depth for v in ins), default=0)


def _any_dependent(ins: Sequence[Value]) -> bool:
  return any(v.dependent for v in ins)


def _effective_zero(t: _Tracer, v: Value, out_shape: tuple[int, ...],
                    out_labels: Labels) -> bool:
  """Whether operand `v` is 0 at the removed positions of an elementwise op's output.

  A broadcast operand holds one value along a broadcast axis, so it is 0 there only if it is
  identically 0 — unless that axis of the output can never lose positions (no labels, or only
  pinned atoms: the batch axis).
  """
  if v.const_zero:
    return True
  if len(v.shape) != len(out_shape):  # a scalar
    return False
  for a, (n, m) in enumerate(zip(v.shape, out_shape)):
    if n != m and not t.atoms.all_pinned(out_labels[a]):
      return False
  return v.zero


# Unary ops that map 0 to 0 keep `zero`; the others (exp, cos, logistic, ...) lose it.
_ZERO_PRESERVING_UNARY = {
    "neg", "abs", "sign", "floor", "ceil", "round", "sqrt", "cbrt", "tanh", "sin", "tan",
    "asin", "atan", "sinh", "asinh", "atanh", "erf", "erf_inv", "expm1", "log1p", "square",
    "real", "imag", "conj", "convert_element_type", "copy", "copy_p", "reduce_precision",
    "stop_gradient", "sharding_constraint",
}
_OTHER_UNARY = {
    "exp", "exp2", "log", "logistic", "cos", "cosh", "acos", "acosh", "rsqrt", "erfc",
    "is_finite", "not", "lgamma", "digamma", "population_count", "clz",
}


def _unary(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """Elementwise, one operand: labels and sources pass through."""
  (v,) = ins
  name = eqn.primitive.name
  keeps = name in _ZERO_PRESERVING_UNARY or (name == "integer_pow" and eqn.params["y"] > 0)
  return [dataclasses.replace(v, shape=_out_shapes(eqn)[0], zero=keeps and v.zero,
                              const_zero=keeps and v.const_zero)]


_SUMS = ("add", "add_any", "sub", "max", "min")


def _elementwise_zero(name: str, zeros: list[bool]) -> bool:
  """Whether the op's output is 0 where its operands' `zeros` say they are."""
  if name == "mul":
    return any(zeros)
  if name in ("div", "rem"):
    return zeros[0]
  if name in _SUMS:
    return all(zeros)
  if name == "select_n":  # whichever case is selected
    return all(zeros[1:])
  return False


def _elementwise(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """Elementwise, several operands (size-1 axes and scalars broadcast)."""
  (shape,) = _out_shapes(eqn)
  dependent = _any_dependent(ins)
  labels, sources = [], []
  for a, n in enumerate(shape):
    parts = [v for v in ins if len(v.shape) == len(shape) and v.shape[a] == n]
    labels.append(t.join_axis([v.labels[a] for v in parts]))
    if dependent:
      for v in parts:
        if not v.dependent:
          t.mark(v.sources[a], MEMBER)
    sources.append(frozenset().union(*(v.sources[a] for v in parts)) if not dependent else None)
  labels = tuple(labels)
  name = eqn.primitive.name
  zero = _elementwise_zero(name, [_effective_zero(t, v, shape, labels) for v in ins])
  const_zero = _elementwise_zero(name, [v.const_zero for v in ins])
  return [Value(shape, labels, None if dependent else tuple(sources), zero, const_zero,
                _depth(ins))]


def _contract(t: _Tracer, lhs: Value, la: int, rhs: Value, ra: int) -> None:
  """Contracts `lhs` axis `la` with `rhs` axis `ra` position by position."""
  left, right = lhs.labels[la], rhs.labels[ra]
  if lhs.dependent != rhs.dependent:
    weight, axis = (rhs, ra) if lhs.dependent else (lhs, la)
    t.mark(weight.sources[axis], CONSUMER)
  followed = (lhs.dependent or rhs.dependent) and (lhs.zero or rhs.zero)
  if left is None or right is None or not followed:
    t.pin(left)
    t.pin(right)
  else:
    t.atoms.join(left, right)


def _layer(lhs: Value, rhs: Value) -> tuple[Value | None, int]:
  """The weight of a layer (an input-independent operand against a dependent one), its depth."""
  if lhs.dependent == rhs.dependent:
    return None, max(lhs.depth, rhs.depth)
  return (rhs if lhs.dependent else lhs), max(lhs.depth, rhs.depth) + 1


def _dot_general(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  lhs, rhs = ins
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  for a, b in zip(lc, rc):
    _contract(t, lhs, a, rhs, b)
  weight, depth = _layer(lhs, rhs)
  labels, sources = [], []
  for a, b in zip(lb, rb):
    labels.append(t.join_axis([lhs.labels[a], rhs.labels[b]]))
    if weight is not None:
      t.mark(weight.sources[b if weight is rhs else a], MEMBER)
    elif not lhs.dependent:
      sources.append(lhs.sources[a] | rhs.sources[b])
  for operand, skip in ((lhs, set(lc) | set(lb)), (rhs, set(rc) | set(rb))):
    for a in range(len(operand.shape)):
      if a in skip:
        continue
      labels.append(operand.labels[a])
      if weight is operand:
        t.mark(operand.sources[a], MEMBER, producer_depth=depth)
      elif not operand.dependent and weight is None:
        sources.append(operand.sources[a])
  dependent = lhs.dependent or rhs.dependent
  return [Value(_out_shapes(eqn)[0], tuple(labels), None if dependent else tuple(sources),
                lhs.zero and rhs.zero, depth=depth)]


def conv_layout(eqn: jex.core.JaxprEqn) -> tuple[lax.ConvDimensionNumbers, int, int]:
  """`(dimension_numbers, feature_group_count, batch_group_count)` of a convolution equation:
  a `conv_general_dilated`, or `conv_ops`' `prospr_conv` (channels-last, ungrouped)."""
  if eqn.primitive is conv_ops.conv_p:
    return conv_ops.channels_last(eqn.invars[0].aval.ndim - 2), 1, 1
  params = eqn.params
  return params["dimension_numbers"], params["feature_group_count"], params["batch_group_count"]


def _conv(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  lhs, rhs = ins
  dn, groups, batch_groups = conv_layout(eqn)
  (lb, lf, *lsp), (ro, ri, *rsp), (ob, of, *_) = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  if not lhs.dependent or rhs.dependent:
    raise t.unsupported("only a convolution of an activation (lhs) with a kernel computed from "
                        "params, state or constants (rhs) is followed")
  for labels in [lhs.labels[a] for a in lsp] + [rhs.labels[a] for a in rsp]:
    t.pin(labels)  # windows mix the spatial positions
  channels = lhs.shape[lf]
  depth = max(lhs.depth, rhs.depth) + 1
  out = rhs.labels[ro]
  if batch_groups == 1 and groups == 1:
    _contract(t, lhs, lf, rhs, ri)
  elif batch_groups == 1 and groups == channels and lhs.labels[lf] is not None and out is not None:
    multiplier = rhs.shape[ro] // channels  # output channel o reads input channel o // multiplier
    t.atoms.join(out, np.repeat(lhs.labels[lf], multiplier))
    t.pin(rhs.labels[ri])
  else:  # grouped (or batch-grouped) convolutions: keep all their channels
    for labels in (lhs.labels[lf], out, rhs.labels[ri]):
      t.pin(labels)
  t.mark(rhs.sources[ro], MEMBER, producer_depth=depth)
  t.mark(rhs.sources[ri], CONSUMER)
  labels: list[np.ndarray | None] = [None] * len(lhs.shape)
  labels[ob], labels[of] = lhs.labels[lb], out
  return [Value(_out_shapes(eqn)[0], tuple(labels), None, lhs.zero and rhs.zero, depth=depth)]


def _transpose(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (v,) = ins
  perm = eqn.params["permutation"]
  return [dataclasses.replace(
      v, shape=_out_shapes(eqn)[0], labels=tuple(v.labels[p] for p in perm),
      sources=None if v.dependent else tuple(v.sources[p] for p in perm))]


def _axis_value(v: Value, shape: tuple[int, ...], labels: list, sources: list) -> Value:
  return dataclasses.replace(v, shape=shape, labels=tuple(labels),
                             sources=None if v.dependent else tuple(sources))


def _reduce(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """Reductions (`reduce_sum`, `argmax`, ...): reduced axes are pinned, the others kept."""
  (v,) = ins
  axes = set(eqn.params["axes"])
  for a in axes:
    t.pin(v.labels[a])
  kept = [a for a in range(len(v.shape)) if a not in axes]
  out = _axis_value(v, _out_shapes(eqn)[0], [v.labels[a] for a in kept],
                    [v.sources[a] for a in kept] if not v.dependent else [])
  return [dataclasses.replace(out, zero=v.zero and eqn.primitive.name.startswith("reduce_"))]


def _window(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """Pooling (`reduce_window_*`): axes with a window or stride lose their labels (pinned)."""
  p = eqn.params
  operands = ins[: len(ins) // 2] if eqn.primitive.name == "reduce_window" else ins
  outs = []
  for v, shape in zip(operands, _out_shapes(eqn)):
    labels = []
    for a in range(len(v.shape)):
      identity = (p["window_dimensions"][a] == 1 and p["window_strides"][a] == 1
                  and tuple(p["padding"][a]) == (0, 0) and p["base_dilation"][a] == 1
                  and p["window_dilation"][a] == 1)
      if not identity:
        t.pin(v.labels[a])
      labels.append(v.labels[a] if identity else None)
    outs.append(_axis_value(v, shape, labels, list(v.sources or ())))
  return outs


def _cumulative(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (v,) = ins
  axis = eqn.params["axis"]
  t.pin(v.labels[axis])
  labels = list(v.labels)
  labels[axis] = None
  return [_axis_value(v, v.shape, labels, list(v.sources or ()))]


def _broadcast_in_dim(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """New and size-1-expanded axes get new atoms (the value is constant along them)."""
  v = ins[0]
  if len(ins) > 1:
    raise t.unsupported("dynamic shapes are not supported")
  shape = _out_shapes(eqn)[0]
  labels: list[np.ndarray | None] = [None] * len(shape)
  sources = [frozenset()] * len(shape)
  expanded = False
  mapped = dict(zip(eqn.params["broadcast_dimensions"], range(len(v.shape))))
  for a, n in enumerate(shape):
    if a in mapped and v.shape[mapped[a]] == n:
      labels[a] = v.labels[mapped[a]]
      sources[a] = v.sources[mapped[a]] if not v.dependent else frozenset()
      continue
    if a in mapped:  # a size-1 axis repeated n times
      t.pin(v.labels[mapped[a]])
    labels[a] = t.fresh(n)
    expanded = expanded or n > 1
  out = _axis_value(v, shape, labels, sources)
  return [dataclasses.replace(out, zero=v.const_zero if expanded else v.zero)]


def _reshape_blocks(
    old: tuple[int, ...], new: tuple[int, ...]
) -> list[tuple[list[int], list[int]]]:
  """Matches the axes of a reshape: blocks `(old axes, new axes)` with equal sizes.

  A size-1 axis without a size-1 partner is its own block (`([i], [])` or `([], [j])`).
  """
  blocks, i, j = [], 0, 0
  while i < len(old) or j < len(new):
    if i < len(old) and old[i] == 1 and (j == len(new) or new[j] != 1):
      blocks.append(([i], []))
      i += 1
    elif j < len(new) and new[j] == 1 and (i == len(old) or old[i] != 1):
      blocks.append(([], [j]))
      j += 1
    else:
      olds, news, po, pn = [i], [j], old[i], new[j]
      i, j = i + 1, j + 1
      while po != pn:
        if po < pn:
          olds.append(i)
          po *= old[i]
          i += 1
        else:
          news.append(j)
          pn *= new[j]
          j += 1
      blocks.append((olds, news))
  return blocks


def _reshape(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """One-to-one axes keep their labels; a merge of axes of which at most one is labelled
  (a flatten) repeats that axis's labels over the others; other merges and splits pin."""
  v = ins[0]
  if len(ins) > 1 or eqn.params.get("dimensions") is not None:
    raise t.unsupported("reshape with dynamic shapes or a dimensions permutation")
  shape = _out_shapes(eqn)[0]
  labels: list[np.ndarray | None] = [None] * len(shape)
  sources = [frozenset()] * len(shape)
  if 0 in v.shape:  # an empty array: no positions to follow
    return [_axis_value(v, shape, labels, sources)]
  for olds, news in _reshape_blocks(v.shape, shape):
    if len(news) == 1 and len(olds) == 1:
      labels[news[0]] = v.labels[olds[0]]
      sources[news[0]] = v.sources[olds[0]] if not v.dependent else frozenset()
      continue
    labelled = [a for a in olds if v.labels[a] is not None]
    if len(news) == 1 and len(labelled) == 1 and olds:
      (a,) = labelled
      grid = np.meshgrid(*(np.arange(v.shape[b]) for b in olds), indexing="ij")
      labels[news[0]] = v.labels[a][grid[olds.index(a)].ravel()]
      sources[news[0]] = v.sources[a] if not v.dependent else frozenset()
      continue
    for a in olds:
      t.pin(v.labels[a])
    for b in news:
      labels[b] = t.fresh(1) if shape[b] == 1 else None
  return [_axis_value(v, shape, labels, sources)]


def _squeeze(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (v,) = ins
  dims = {d % len(v.shape) for d in eqn.params["dimensions"]}
  for a in dims:
    t.pin(v.labels[a])
  kept = [a for a in range(len(v.shape)) if a not in dims]
  return [_axis_value(v, _out_shapes(eqn)[0], [v.labels[a] for a in kept],
                      [v.sources[a] for a in kept] if not v.dependent else [])]


def _rev(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (v,) = ins
  labels = [None if lab is None else (lab[::-1] if a in eqn.params["dimensions"] else lab)
            for a, lab in enumerate(v.labels)]
  return [_axis_value(v, v.shape, labels, list(v.sources or ()))]


def _slice(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (v,) = ins
  p = eqn.params
  strides = p["strides"] or (1,) * len(v.shape)
  labels = [None if lab is None else lab[s:e:k]
            for lab, s, e, k in zip(v.labels, p["start_indices"], p["limit_indices"], strides)]
  return [_axis_value(v, _out_shapes(eqn)[0], labels, list(v.sources or ()))]


def _split(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (v,) = ins
  axis = eqn.params["axis"]
  outs, start = [], 0
  for shape in _out_shapes(eqn):
    labels = list(v.labels)
    if labels[axis] is not None:
      labels[axis] = labels[axis][start:start + shape[axis]]
    start += shape[axis]
    outs.append(_axis_value(v, shape, labels, list(v.sources or ())))
  return outs


def _concatenate(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """Along `dimension` the operands' labels follow each other (offsets); other axes join."""
  dim = eqn.params["dimension"]
  (shape,) = _out_shapes(eqn)
  dependent = _any_dependent(ins)
  labels, sources = [], []
  for a in range(len(shape)):
    if a == dim:
      parts = [v.labels[a] for v in ins]
      if any(p is None for p in parts):
        for p in parts:
          t.pin(p)
        labels.append(None)
      else:
        labels.append(np.concatenate(parts))
    else:
      labels.append(t.join_axis([v.labels[a] for v in ins]))
    if dependent:
      for v in ins:
        if not v.dependent:
          t.mark(v.sources[a], MEMBER)
      sources.append(frozenset())
    else:
      sources.append(frozenset().union(*(v.sources[a] for v in ins)))
  labels = tuple(labels)
  zero = all(_effective_zero(t, v, shape, labels) for v in ins)
  return [Value(shape, labels, None if dependent else tuple(sources), zero,
                all(v.const_zero for v in ins), _depth(ins))]


def _pad(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  """Padded positions are new atoms; interior padding of a labelled axis pins it."""
  v, pad_value = ins
  (shape,) = _out_shapes(eqn)
  labels = []
  for lab, (lo, hi, interior) in zip(v.labels, eqn.params["padding_config"]):
    lo, hi, interior = int(lo), int(hi), int(interior)
    if lab is None or (lo, hi, interior) == (0, 0, 0):
      labels.append(lab)
    elif interior:
      t.pin(lab)
      labels.append(None)
    else:
      kept = lab[max(-lo, 0): len(lab) - max(-hi, 0)]
      labels.append(np.concatenate([t.fresh(max(lo, 0)), kept, t.fresh(max(hi, 0))]))
  out = _axis_value(v, shape, labels, list(v.sources or ()))
  return [dataclasses.replace(out, zero=v.zero and pad_value.const_zero,
                              const_zero=v.const_zero and pad_value.const_zero)]


def _iota(t: _Tracer, eqn: jex.core.JaxprEqn, ins: list[Value]) -> list[Value]:
  (shape,) = _out_shapes(eqn)
  labels = [None if a == eqn.params["dimension"] else t.fresh(n) for a, n in enumerate(shape)]
  return [Value(shape, tuple(labels), tuple(frozenset() for _ in shape), zero=False)]


_UNARY = _ZERO_PRESERVING_UNARY | _OTHER_UNARY | {"integer_pow"}
_ELEMENTWISE = {
    "add", "add_any", "sub", "mul", "div", "rem", "max", "min", "pow", "atan2", "nextafter",
    "select_n", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor",
    "shift_left", "shift_right_logical", "shift_right_arithmetic",
}
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
               "reduce_or", "reduce_xor", "argmax", "argmin"}
_WINDOWS = {"reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"}
_CUMULATIVE = {"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"}

RULES: dict[str, Rule] = {
    **{n: _unary for n in _UNARY},
    **{n: _elementwise for n in _ELEMENTWISE},
    **{n: _reduce for n in _REDUCTIONS},
    **{n: _window for n in _WINDOWS},
    **{n: _cumulative for n in _CUMULATIVE},
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    conv_ops.conv_p.name: _conv,
    "transpose": _transpose,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "rev": _rev,
    "slice": _slice,
    "split": _split,
    "concatenate": _concatenate,
    "pad": _pad,
    "iota": _iota,
}

SUPPORTED_PRIMITIVES = frozenset(RULES) | frozenset(NESTED)
"""Primitives `trace_channels` follows (nested call primitives are entered)."""
