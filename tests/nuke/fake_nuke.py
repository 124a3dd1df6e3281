"""A small fake of Nuke's ``nuke`` Python module, for testing the FaceFix adapter without Nuke.

Honest by construction: every public name here exists in Foundry's documented Python API (the Nuke Python
Developer's Guide / the ``nuke`` module reference, and the published ``types-nuke`` stubs) with the same
signature, and behaves as documented as far as the adapter can tell. What it does NOT do is stated where it
matters; anything else raises ``NotImplementedError`` rather than pretending. Private names (a leading
underscore) are the fake's own machinery and test hooks: the adapter never touches them.

What it covers:

* nodes with knobs, in groups: ``nuke.createNode`` (built-in classes and ``.gizmo`` files found on the plugin
  path), ``nuke.nodes.Class(**knobs)``, ``nuke.toNode``, ``nuke.allNodes``, ``nuke.delete``, ``Node.input`` /
  ``setInput`` / ``knob`` / ``knobs`` / ``addKnob`` / ``removeKnob`` / ``firstFrame`` / ``lastFrame`` /
  ``width`` / ``height``, ``Group.begin`` / ``end`` / ``node`` / ``nodes`` / ``with group:``,
  ``nuke.thisNode`` / ``thisGroup`` / ``thisKnob`` (set while a PyScript_Knob's command runs), ``nuke.root``;
* knobs: ``value`` / ``getValue`` / ``setValue`` / ``valueAt`` / ``getValueAt`` / ``setValueAt`` /
  ``setAnimated`` / ``isAnimated`` / ``clearAnimated`` / ``animation`` / ``animations`` (``AnimationCurve``
  with ``keys()`` of ``AnimationKey`` x/y) / ``isKeyAt`` / ``removeKeyAt`` / ``getKeyList`` /
  ``setExpression``, flags, and the constructors of the knob classes the adapter adds at run time. As in
  Nuke, ``setAnimated`` keys the current value at the current frame, and ``setValue`` on an animated knob keys
  the current frame. Deliberate difference: ``setValueAt`` on a channel that is not animated only sets its
  value (code that wants keys must call ``setAnimated`` first, as Foundry's examples do); and keys are
  interpolated linearly (Nuke's default is "smooth"): the adapter reads values back through
  ``getValueAt``, whatever the curve;
* images: ``nuke.execute(write, first, last)`` really writes frames (OpenImageIO), computed from the node
  graph: Read (files, with ``#``/``%0Nd`` patterns, first/last held), Input (the group's input), Switch,
  Dot/NoOp/Output/Write (pass-through), Constant, Group/Gizmo (their Output). No colour management (``raw``
  is what every Read and Write here does), no formats, no proxy, no views;
* expressions (``{{parent.knob}}``, ``&&``, comparisons, ``frame``) and ``[value knob]`` in file knobs: the
  subset the gizmo uses;
* scripts: ``nuke.scriptOpen`` / ``scriptSave`` / ``scriptSaveAs`` / ``scriptClear`` / ``scriptName`` read and
  write ``.nk`` text (the stack syntax, ``addUserKnob``, ``{curve x1001 ...}``), gizmo definitions likewise;
* ``nuke.pluginAddPath`` / ``pluginAppendPath`` / ``pluginPath``, ``nuke.menu(...).addMenu`` / ``addCommand``
  / ``findItem``, ``MenuItem.invoke``, ``nuke.ProgressTask`` (``setMessage``, ``setProgress``,
  ``isCancelled``), ``nuke.message`` / ``alert`` / ``warning`` / ``tprint``, ``nuke.frame``, ``nuke.GUI``.

Test hooks: ``_messages`` (what message/alert/warning said), ``_progress`` (every ProgressTask call),
``ProgressTask._cancel`` (a callable deciding when "the user" presses Cancel), ``_executed`` (every
``nuke.execute``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------- constants

GUI = True
INTERACTIVE = True
NUKE_VERSION_MAJOR = 15
NUKE_VERSION_MINOR = 1
NUKE_VERSION_STRING = "15.1v1"
env: dict[str, Any] = {"gui": True, "NukeVersionMajor": 15, "NukeVersionMinor": 1}

# Knob flags (Knob.h's FlagMask; the values are the fake's own, the names Nuke's).
DISABLED = 0x80
NO_ANIMATION = 0x100
DO_NOT_WRITE = 0x200
INVISIBLE = 0x400
STARTLINE = 0x1000
ENDLINE = 0x2000
_HIDDEN = 0x40000
READ_ONLY = 0x10000000
_FLAG_NAMES = {"DISABLED": DISABLED, "NO_ANIMATION": NO_ANIMATION, "DO_NOT_WRITE": DO_NOT_WRITE,
               "INVISIBLE": INVISIBLE, "STARTLINE": STARTLINE, "ENDLINE": ENDLINE, "HIDDEN": _HIDDEN,
               "READ_ONLY": READ_ONLY}


class CancelledError(Exception):
    """Raised by ``nuke.execute`` when the user cancels (documented in the nuke module)."""


# ------------------------------------------------------------------------------------------- test hooks

_messages: list[tuple[str, str]] = []
_progress: list[tuple[str, Any]] = []
_executed: list[tuple[str, int, int]] = []

# --------------------------------------------------------------------------------------------- TCL words


class _Word:
    """One TCL word: ``text`` (escapes processed for quoted words, raw inside braces) and how it was written."""

    __slots__ = ("text", "kind")

    def __init__(self, text: str, kind: str) -> None:
        self.text, self.kind = text, kind  # kind: bare, quoted, braced, bracket

    def __repr__(self) -> str:
        return f"_Word({self.text!r}, {self.kind})"


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _commands(text: str) -> list[list[_Word]]:
    """Split TCL text into commands (lists of words). Newlines and ';' end a command outside braces/quotes."""
    out: list[list[_Word]] = []
    cmd: list[_Word] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
            continue
        if c in "\n;":
            if cmd:
                out.append(cmd)
                cmd = []
            i += 1
            continue
        if c == "#" and not cmd:
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            i += 2
            continue
        if c == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                if text[j] == "\\":
                    j += 2
                    continue
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise SyntaxError("unbalanced braces in a Nuke script")
            cmd.append(_Word(text[i + 1 : j - 1], "braced"))
            i = j
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    buf.append(_ESCAPES.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    buf.append(text[j])
                    j += 1
            if j >= n:
                raise SyntaxError("unterminated quoted word in a Nuke script")
            cmd.append(_Word("".join(buf), "quoted"))
            i = j + 1
        elif c == "[":
            depth, j = 1, i + 1
            while j < n and depth:
                depth += {"[": 1, "]": -1}.get(text[j], 0)
                j += 1
            cmd.append(_Word(text[i:j], "bracket"))
            i = j
        else:
            j, buf = i, []
            while j < n and text[j] not in " \t\r\n;":
                if text[j] == "\\" and j + 1 < n:
                    buf.append(_ESCAPES.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    buf.append(text[j])
                    j += 1
            cmd.append(_Word("".join(buf), "bare"))
            i = j
    if cmd:
        out.append(cmd)
    return out


def _words(text: str) -> list[_Word]:
    return [w for cmd in _commands(text) for w in cmd]


_BARE_OK = re.compile(r"^[A-Za-z0-9_.+\-/:@%]+$")


def _tcl(text: str) -> str:
    if text and _BARE_OK.match(text):
        return text
    esc = (text.replace("\\", "\\\\").replace('"', '\\"').replace("[", "\\[").replace("$", "\\$")
           .replace("\n", "\\n").replace("\t", "\\t"))
    return f'"{esc}"'


def _num(v: float) -> str:
    v = float(v)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


# ------------------------------------------------------------------------------------------- animation


class AnimationKey:
    """A key of an AnimationCurve: ``x`` (the frame) and ``y`` (the value)."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = float(x), float(y)
        self.interpolation = 0
        self.extrapolation = 0
        self.selected = False

    def __repr__(self) -> str:
        return f"<AnimationKey x={self.x:g} y={self.y:g}>"


class AnimationCurve:
    """The animation of one channel of a knob."""

    def __init__(self, knob: Array_Knob | None = None, index: int = 0) -> None:
        self._knob, self._index = knob, index
        self._keys: dict[float, float] = {}

    def keys(self) -> list[AnimationKey]:
        return [AnimationKey(x, self._keys[x]) for x in sorted(self._keys)]

    def size(self) -> int:
        return len(self._keys)

    def knob(self) -> Array_Knob | None:
        return self._knob

    def knobIndex(self) -> int:
        return self._index

    def setKey(self, t: float, y: float) -> AnimationKey:
        self._keys[float(t)] = float(y)
        return AnimationKey(t, y)

    def addKey(self, keys: Sequence[AnimationKey]) -> None:
        for k in keys:
            self._keys[float(k.x)] = float(k.y)

    def removeKey(self, keys: Sequence[AnimationKey]) -> None:
        for k in keys:
            self._keys.pop(float(k.x), None)

    def clear(self) -> None:
        self._keys.clear()

    def constant(self) -> bool:
        return len(set(self._keys.values())) <= 1

    def noExpression(self) -> bool:
        return True

    def expression(self) -> str:
        return "curve"

    def evaluate(self, t: float) -> float:
        if not self._keys:
            return 0.0
        xs = sorted(self._keys)
        t = float(t)
        if t <= xs[0]:
            return self._keys[xs[0]]
        if t >= xs[-1]:
            return self._keys[xs[-1]]
        i = int(np.searchsorted(xs, t))
        a, b = xs[i - 1], xs[i]
        w = (t - a) / (b - a)
        return self._keys[a] * (1 - w) + self._keys[b] * w

    def toScript(self, selected: bool = False) -> str:
        parts = ["curve"]
        for x in sorted(self._keys):
            parts += [f"x{_num(x)}", _num(self._keys[x])]
        return " ".join(parts)


# ------------------------------------------------------------------------------------------------ knobs


class Knob:
    """A control of a node. Base of every knob class."""

    _id: int | None = None

    def __init__(self, name: str, label: str | None = None, *args: Any) -> None:
        self._name = str(name)
        self._label = "" if label is None else str(label)
        self._tooltip = ""
        self._flags = 0
        self._node: Node | None = None
        self._user = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name}>"

    def Class(self) -> str:
        return type(self).__name__

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:
        self._name = str(name)

    def label(self) -> str:
        return self._label

    def setLabel(self, label: str) -> None:
        self._label = str(label)

    def tooltip(self) -> str:
        return self._tooltip

    def setTooltip(self, tooltip: str) -> None:
        self._tooltip = str(tooltip)

    def node(self) -> Node:
        if self._node is None:
            raise ValueError(f"knob {self._name} belongs to no node")
        return self._node

    def fullyQualifiedName(self, channel: int = -1) -> str:
        return f"{self.node().fullName()}.{self._name}"

    def setFlag(self, flag: int) -> None:
        self._flags |= int(flag)

    def clearFlag(self, flag: int) -> None:
        self._flags &= ~int(flag)

    def getFlag(self, flag: int) -> bool:
        return bool(self._flags & int(flag))

    def visible(self) -> bool:
        return not self._flags & (INVISIBLE | _HIDDEN)

    def setVisible(self, visible: bool) -> None:
        if visible:
            self.clearFlag(INVISIBLE)
        else:
            self.setFlag(INVISIBLE)

    def enabled(self) -> bool:
        return not self._flags & DISABLED

    def setEnabled(self, enabled: bool) -> None:
        if enabled:
            self.clearFlag(DISABLED)
        else:
            self.setFlag(DISABLED)

    def isAnimated(self, channel: int = -1) -> bool:
        return False

    def hasExpression(self, index: int = -1) -> bool:
        return False

    def value(self, index: int = 0) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.value")

    def getValue(self, channel: int = 0) -> Any:
        return self.value()

    def setValue(self, val: Any, chan: int = -1) -> bool:
        raise NotImplementedError(f"{type(self).__name__}.setValue")

    def toScript(self, quote: bool = False, context: Any = None) -> str:
        return _tcl(str(self.value()))

    def fromScript(self, script: str) -> bool:
        words = _words(script)
        if len(words) != 1:
            words = [_Word(script, "braced")]
        self._from_word(words[0])
        return True

    def _from_word(self, word: _Word) -> None:
        self.setValue(word.text)

    def _spec(self) -> list[str]:
        """The rest of this knob's ``addUserKnob {ID name ...}`` line."""
        parts = [str(self._id), self._name if self._name else '""']
        if self._label:
            parts += ["l", _tcl(self._label)]
        if self._tooltip:
            parts += ["t", _tcl(self._tooltip)]
        parts += self._spec_extra()
        for fname, bit in _FLAG_NAMES.items():
            if self._flags & bit:
                parts.append("+" + fname)
        return parts

    def _spec_extra(self) -> list[str]:
        return []


# -- array knobs -------------------------------------------------------------------------------------------


class Array_Knob(Knob):
    """A knob holding an array of values, each of which may be constant, animated or an expression."""

    _size = 1
    _cast: Callable[[float], Any] = float

    def __init__(self, name: str, label: str | None = None, *args: Any) -> None:
        super().__init__(name, label)
        self._values: list[float] = [0.0] * self._size
        self._curves: list[AnimationCurve | None] = [None] * self._size
        self._exprs: list[str | None] = [None] * self._size
        self._range: tuple[float, float] = (0.0, 1.0)

    # -- reading
    def _channels(self, index: int | None) -> list[int]:
        if index is None or index < 0:
            return list(range(self._size))
        if index >= self._size:
            raise IndexError(f"{self._name}: index {index} out of range (size {self._size})")
        return [index]

    def _at(self, i: int, t: float) -> float:
        expr = self._exprs[i]
        if expr is not None:
            return float(_evaluate(expr, self.node(), t))
        curve = self._curves[i]
        if curve is not None and curve.size():
            return curve.evaluate(t)
        return self._values[i]

    def _result(self, values: list[float], index: int | None) -> Any:
        if index is not None and index >= 0:
            return type(self)._cast(values[0])
        if self._size == 1:
            return type(self)._cast(values[0])
        return [type(self)._cast(v) for v in values]

    def _value(self, index: int | None = None, time: float | None = None) -> Any:
        t = frame() if time is None else time
        return self._result([self._at(i, t) for i in self._channels(index)], index)

    def value(self, index: int | None = None, view: str | None = None, time: float | None = None) -> Any:
        return self._value(index, time)

    def getValue(self, index: int | None = None, view: str | None = None) -> Any:
        return self._value(index)

    def valueAt(self, time: float, index: int | None = None, view: str | None = None) -> Any:
        return self._value(index, time)

    def getValueAt(self, time: float, index: int | None = None, view: str | None = None) -> Any:
        return self._value(index, time)

    def array(self) -> list[Any]:
        return [type(self)._cast(self._at(i, frame())) for i in range(self._size)]

    def arraySize(self) -> int:
        return self._size

    def setRange(self, fmin: float, fmax: float) -> None:
        self._range = (float(fmin), float(fmax))

    def min(self) -> float:
        return self._range[0]

    def max(self) -> float:
        return self._range[1]

    # -- writing
    def setValue(self, value: Any, index: int = -1, time: float | None = None, view: str | None = None) -> bool:
        return self._set_value(value, index, time)

    def _set_value(self, value: Any, index: int = -1, time: float | None = None) -> bool:
        if isinstance(value, (list, tuple)):
            if index >= 0 or len(value) != self._size:
                raise ValueError(f"{self._name}: {len(value)} values for a knob of {self._size}")
            return all([self._set_value(v, i, time) for i, v in enumerate(value)])
        v = float(value)
        t = frame() if time is None else time
        for i in self._channels(index):
            self._exprs[i] = None
            if self._curves[i] is not None:
                self._curves[i].setKey(t, v)  # type: ignore[union-attr]
            else:
                self._values[i] = v
        return True

    def setValueAt(self, value: Any, time: float, index: int = -1, view: str | None = None) -> bool:
        v = float(value)
        for i in self._channels(index):
            curve = self._curves[i]
            if curve is not None:
                curve.setKey(time, v)
            else:
                self._values[i] = v  # not animated: only the value (call setAnimated first for keys)
        return True

    def setAnimated(self, index: int = -1, view: str | None = None) -> bool:
        t = frame()
        for i in self._channels(index):
            if self._curves[i] is None:
                value = self._at(i, t)
                self._exprs[i] = None
                self._curves[i] = AnimationCurve(self, i)
                self._curves[i].setKey(t, value)  # type: ignore[union-attr]
        return True

    def isAnimated(self, index: int = -1, view: str | None = None) -> bool:
        return any(self._curves[i] is not None or self._exprs[i] is not None for i in self._channels(index))

    def clearAnimated(self, index: int = -1, view: str | None = None) -> bool:
        t = frame()
        for i in self._channels(index):
            if self._curves[i] is not None or self._exprs[i] is not None:
                self._values[i] = self._at(i, t)
            self._curves[i] = None
            self._exprs[i] = None
        return True

    def animation(self, chan: int, view: str | None = None) -> AnimationCurve | None:
        return self._curves[chan]

    def animations(self) -> list[AnimationCurve]:
        return [c for c in self._curves if c is not None]

    def isKeyAt(self, time: float, index: int = -1, view: str | None = None) -> bool:
        return any(c is not None and float(time) in c._keys for c in (self._curves[i] for i in self._channels(index)))

    def isKey(self, index: int = -1, view: str | None = None) -> bool:
        return self.isKeyAt(frame(), index)

    def getKeyList(self) -> list[float]:
        return sorted({x for c in self._curves if c is not None for x in c._keys})

    def getNumKeys(self, index: int = -1, view: str | None = None) -> int:
        return len({x for i in self._channels(index) if self._curves[i] is not None for x in self._curves[i]._keys})  # type: ignore[union-attr]

    def removeKeyAt(self, time: float, index: int = -1, view: str | None = None) -> bool:
        removed = False
        for i in self._channels(index):
            c = self._curves[i]
            if c is not None and float(time) in c._keys:
                del c._keys[float(time)]
                removed = True
        return removed

    def removeKey(self, index: int = -1, view: str | None = None) -> bool:
        return self.removeKeyAt(frame(), index)

    def setExpression(self, expression: str, channel: int = -1, view: str | None = None) -> bool:
        for i in self._channels(channel):
            self._exprs[i] = str(expression)
            self._curves[i] = None
        return True

    def hasExpression(self, index: int = -1) -> bool:
        return any(self._exprs[i] is not None for i in self._channels(index))

    # -- scripts
    def _channel_script(self, i: int) -> str:
        if self._exprs[i] is not None:
            return "{" + _tcl(self._exprs[i]) + "}"  # type: ignore[arg-type]
        if self._curves[i] is not None:
            return "{" + self._curves[i].toScript() + "}"  # type: ignore[union-attr]
        return self._constant_script(self._values[i])

    def _constant_script(self, v: float) -> str:
        return _num(v)

    def toScript(self, quote: bool = False, context: Any = None) -> str:
        chans = [self._channel_script(i) for i in range(self._size)]
        if not self.isAnimated() and len(set(chans)) == 1:
            return chans[0]
        return "{" + " ".join(chans) + "}"

    def _from_word(self, word: _Word) -> None:
        if word.kind != "braced":
            self._set_constant(word.text, -1)
            return
        chans = _words(word.text)
        if len(chans) == 1 and chans[0].kind != "braced":
            self._set_constant(chans[0].text, -1)
            return
        for i, w in enumerate(chans):
            if i >= self._size:
                raise ValueError(f"{self._name}: {len(chans)} values for a knob of {self._size}")
            if w.kind == "braced":
                inner = w.text.strip()
                if inner.split(None, 1)[:1] == ["curve"]:
                    self._curves[i] = _parse_curve(inner, self, i)
                    self._exprs[i] = None
                else:
                    ws = _words(inner)
                    self._exprs[i] = ws[0].text if len(ws) == 1 else inner
                    self._curves[i] = None
            else:
                self._set_constant(w.text, i)

    def _set_constant(self, text: str, index: int) -> None:
        low = text.strip().lower()
        v = {"true": 1.0, "false": 0.0}.get(low)
        if v is None:
            try:
                v = float(text)
            except ValueError:
                v = float(int(text, 0))  # 0x7f5fa3ff
        self._set_value(v, index)

    def _spec_extra(self) -> list[str]:
        if self._id in (3, 7) and self._range != (0.0, 1.0):
            return ["R", _num(self._range[0]), _num(self._range[1])]
        return []


def _parse_curve(text: str, knob: Array_Knob, index: int) -> AnimationCurve:
    curve = AnimationCurve(knob, index)
    t = 1.0
    for tok in text.split()[1:]:
        if tok.startswith("x"):
            t = float(tok[1:])
        else:
            try:
                curve.setKey(t, float(tok))
            except ValueError:
                raise NotImplementedError(f"the fake reads plain curves only, not {tok!r}") from None
            t += 1
    return curve


class Double_Knob(Array_Knob):
    _id = 7


class Int_Knob(Array_Knob):
    _id = 3

    @staticmethod
    def _cast(v: float) -> int:  # type: ignore[override]
        return int(round(v))

    def setValue(self, val: Any) -> bool:  # type: ignore[override]
        return self._set_value(val)

    def value(self) -> int:  # type: ignore[override]
        return int(self._value(0))


class Boolean_Knob(Array_Knob):
    _id = 6

    def __init__(self, name: str, label: str | None = None, value: Any = False) -> None:
        super().__init__(name, label)
        self._values[0] = 1.0 if value else 0.0

    @staticmethod
    def _cast(v: float) -> bool:  # type: ignore[override]
        return bool(round(v))

    def setValue(self, b: Any) -> bool:  # type: ignore[override]
        return self._set_value(b)

    def value(self) -> bool:  # type: ignore[override]
        return bool(self._value(0))

    def _constant_script(self, v: float) -> str:
        return "true" if v else "false"


class Disable_Knob(Boolean_Knob):
    pass


class XY_Knob(Array_Knob):
    _id = 12
    _size = 2

    def value(self, n: int, oc: Any = None) -> float:  # type: ignore[override]
        return float(self._value(n))

    def x(self, oc: Any = None) -> float:
        return float(self._value(0))

    def y(self, oc: Any = None) -> float:
        return float(self._value(1))

    def names(self, n: int) -> str:
        return ("x", "y")[n]


class WH_Knob(Array_Knob):
    _id = 14
    _size = 2


class BBox_Knob(Array_Knob):
    """x, y, r, t."""

    _id = 15
    _size = 4

    def x(self) -> float:
        return float(self._value(0))

    def y(self) -> float:
        return float(self._value(1))

    def r(self) -> float:
        return float(self._value(2))

    def t(self) -> float:
        return float(self._value(3))

    def names(self, n: int) -> str:
        return ("x", "y", "r", "t")[n]


class AColor_Knob(Array_Knob):
    _id = 19
    _size = 4


class Enumeration_Knob(Array_Knob):
    """A pulldown: ``value()`` is the item's name; ``setValue`` takes a name or an index."""

    _id = 4

    def __init__(self, name: str, label: str | None = None, values: Sequence[str] = ()) -> None:
        super().__init__(name, label)
        self._items = [str(v) for v in values]

    def values(self) -> list[str]:
        return list(self._items)

    def setValues(self, items: Sequence[str]) -> None:
        self._items = [str(v) for v in items]

    def numValues(self) -> int:
        return len(self._items)

    def enumName(self, n: int) -> str:
        return self._items[n]

    def value(self) -> str:  # type: ignore[override]
        i = int(round(self._at(0, frame())))
        return self._items[i] if 0 <= i < len(self._items) else ""

    def getValue(self, *args: Any) -> float:  # type: ignore[override]
        return float(self._at(0, frame()))

    def setValue(self, value: Any, *args: Any) -> bool:  # type: ignore[override]
        if isinstance(value, str):
            if value not in self._items:
                raise ValueError(f"{self._name}: {value!r} is not one of {self._items}")
            value = self._items.index(value)
        return self._set_value(int(value))

    def toScript(self, quote: bool = False, context: Any = None) -> str:
        if self.isAnimated():
            return super().toScript()
        return _tcl(self.value())

    def _from_word(self, word: _Word) -> None:
        if word.kind == "braced":
            super()._from_word(word)
        else:
            self.setValue(word.text if word.text in self._items else int(word.text))

    def _spec_extra(self) -> list[str]:
        return ["M", "{" + " ".join(_tcl(v) for v in self._items) + "}"]


class Pulldown_Knob(Enumeration_Knob):
    pass


# -- text knobs ---------------------------------------------------------------------------------------------


class String_Knob(Knob):
    _id = 1

    def __init__(self, name: str, label: str | None = None, text: str = "") -> None:
        super().__init__(name, label)
        self._text = str(text)

    def value(self, oc: Any = None) -> str:  # type: ignore[override]
        return self._text

    def getText(self, oc: Any = None) -> str:
        return self._text

    def setValue(self, val: Any, view: str | None = None) -> bool:  # type: ignore[override]
        self._text = "" if val is None else str(val)
        return True

    def setText(self, text: str) -> None:
        self._text = str(text)


class EvalString_Knob(String_Knob):
    def evaluate(self, oc: Any = None) -> str:
        return self._evaluate_at(frame())

    def _evaluate_at(self, t: float) -> str:
        return _tcl_substitute(self._text, self.node(), t)


class File_Knob(EvalString_Knob):
    _id = 2

    def getEvaluatedValue(self, oc: Any = None) -> str:
        return self.evaluate()


class Multiline_Eval_String_Knob(EvalString_Knob):
    _id = 43


class Script_Knob(String_Knob):
    def setValue(self, cmd: Any) -> bool:  # type: ignore[override]
        self._text = "" if cmd is None else str(cmd)
        return True

    def command(self) -> str:
        return self._text

    def setCommand(self, cmd: str) -> None:
        self._text = str(cmd)

    def execute(self) -> None:
        _run_callback(self._text, self.node(), self)

    def _spec_extra(self) -> list[str]:
        return ["T", _tcl(self._text)]


class PyScript_Knob(Script_Knob):
    """A button that executes a Python script (``nuke.thisNode()`` is the knob's node while it runs)."""

    _id = 22

    def __init__(self, name: str, label: str | None = None, command: str = "") -> None:
        super().__init__(name, label, command)


class Text_Knob(String_Knob):
    _id = 26

    def _spec_extra(self) -> list[str]:
        return ["T", _tcl(self._text)]


class Tab_Knob(Knob):
    _id = 20

    def value(self) -> str:
        return self._label or self._name

    def setValue(self, val: Any, *args: Any) -> bool:
        return True


class Format_Knob(Knob):
    """The format: ``value()`` is its script text (``W H x y r t aspect name``)."""

    def __init__(self, name: str, label: str | None = None) -> None:
        super().__init__(name, label)
        self._text = ""

    def value(self) -> str:
        return self._text

    def setValue(self, val: Any, *args: Any) -> bool:
        self._text = str(val)
        return True


_USER_KNOBS: dict[int, type[Knob]] = {
    1: String_Knob, 2: File_Knob, 3: Int_Knob, 4: Enumeration_Knob, 6: Boolean_Knob, 7: Double_Knob,
    12: XY_Knob, 14: WH_Knob, 15: BBox_Knob, 19: AColor_Knob, 20: Tab_Knob, 22: PyScript_Knob, 26: Text_Knob,
    43: Multiline_Eval_String_Knob,
}


def _user_knob(spec: str) -> Knob:
    """The knob an ``addUserKnob {ID name ...}`` line makes."""
    words = _words(spec)
    kid, name = int(words[0].text), words[1].text
    cls = _USER_KNOBS.get(kid)
    if cls is None:
        raise NotImplementedError(f"addUserKnob type {kid} is not in the fake")
    k = cls(name)
    k._user = True
    i = 2
    while i < len(words):
        w = words[i].text
        if w == "l":
            k._label = words[i + 1].text
            i += 2
        elif w == "t":
            k._tooltip = words[i + 1].text
            i += 2
        elif w == "R":
            if not isinstance(k, Array_Knob):
                raise ValueError(f"{name}: R on a {cls.__name__}")
            k.setRange(float(words[i + 1].text), float(words[i + 2].text))
            i += 3
        elif w == "M":
            if not isinstance(k, Enumeration_Knob):
                raise ValueError(f"{name}: M on a {cls.__name__}")
            k._items = [x.text for x in _words(words[i + 1].text)]
            i += 2
        elif w == "T":
            if not isinstance(k, String_Knob):
                raise ValueError(f"{name}: T on a {cls.__name__}")
            k._text = words[i + 1].text
            i += 2
        elif w[:1] in "+-" and w[1:] in _FLAG_NAMES:
            if w[0] == "+":
                k.setFlag(_FLAG_NAMES[w[1:]])
            else:
                k.clearFlag(_FLAG_NAMES[w[1:]])
            i += 1
        else:
            raise NotImplementedError(f"addUserKnob {{{spec}}}: {w!r} is not understood by the fake")
    return k


# ------------------------------------------------------------------------------------------------ nodes


class Format:
    def __init__(self, width: int, height: int, name: str = "") -> None:
        self._w, self._h, self._name = int(width), int(height), name

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h

    def name(self) -> str:
        return self._name

    def pixelAspect(self) -> float:
        return 1.0


class FrameRange:
    def __init__(self, first: int, last: int, increment: int = 1) -> None:
        self._first, self._last, self._incr = int(first), int(last), int(increment)

    def first(self) -> int:
        return self._first

    def last(self) -> int:
        return self._last

    def increment(self) -> int:
        return self._incr

    def frames(self) -> int:
        return (self._last - self._first) // self._incr + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._first, self._last + 1, self._incr))


_COMMON_KNOBS: list[tuple[type[Knob], str, Any]] = [
    (String_Knob, "name", ""), (Multiline_Eval_String_Knob, "label", ""), (Int_Knob, "xpos", 0),
    (Int_Knob, "ypos", 0), (Boolean_Knob, "selected", False), (Int_Knob, "tile_color", 0),
    (Boolean_Knob, "hide_input", False), (Disable_Knob, "disable", False),
]

_WRITE_TYPES = ["exr", "tiff", "png", "dpx", "jpeg"]
_EXR_DATATYPES = ["16 bit half", "32 bit float"]
_EXR_COMPRESSION = ["none", "Zip (1 scanline)", "Zip (16 scanlines)", "RLE", "PIZ Wavelet (32 scanlines)"]
_EXR_METADATA = ["no metadata", "default metadata", "default metadata and exr/*", "all metadata except input/*",
                 "all metadata"]

_CLASS_KNOBS: dict[str, list[tuple[Any, ...]]] = {
    "Read": [(File_Knob, "file", ""), (Int_Knob, "first", 1), (Int_Knob, "last", 1), (Int_Knob, "origfirst", 1),
             (Int_Knob, "origlast", 1), (Enumeration_Knob, "before", "hold", ["hold", "loop", "bounce", "black"]),
             (Enumeration_Knob, "after", "hold", ["hold", "loop", "bounce", "black"]),
             (Enumeration_Knob, "on_error", "error", ["error", "black", "checkerboard", "nearest frame"]),
             (Boolean_Knob, "raw", False), (Boolean_Knob, "auto_alpha", False), (String_Knob, "colorspace", "default")],
    "Write": [(File_Knob, "file", ""), (Enumeration_Knob, "file_type", "exr", _WRITE_TYPES),
              (String_Knob, "channels", "rgb"), (Enumeration_Knob, "datatype", "16 bit half", _EXR_DATATYPES),
              (Enumeration_Knob, "compression", "Zip (1 scanline)", _EXR_COMPRESSION),
              (Enumeration_Knob, "metadata", "default metadata", _EXR_METADATA), (Boolean_Knob, "raw", False),
              (String_Knob, "colorspace", "default"), (Boolean_Knob, "create_directories", False),
              (Boolean_Knob, "use_limit", False), (Int_Knob, "first", 1), (Int_Knob, "last", 1)],
    "Input": [(Int_Knob, "number", 0)],
    "Output": [],
    "Dot": [],
    "NoOp": [],
    "Switch": [(Double_Knob, "which", 0)],
    "Constant": [(AColor_Knob, "color", 0)],
    "Group": [(String_Knob, "help", ""), (String_Knob, "onCreate", "")],
    "Root": [(File_Knob, "name", ""), (Int_Knob, "first_frame", 1), (Int_Knob, "last_frame", 100),
             (Double_Knob, "fps", 24), (Format_Knob, "format", "1920 1080 0 0 1920 1080 1 HD_1080")],
}
_NO_INPUTS = ("Read", "Input", "Constant", "Root")


class Node:
    """A node of the graph."""

    def __init__(self, cls: str) -> None:
        self._class = cls
        self._knobs: list[Knob] = []
        self._inputs: list[Node | None] = []
        self._parent: Group | None = None
        self._defaults: dict[str, str] = {}
        self._builtin: set[str] = set()
        for spec in _COMMON_KNOBS if cls != "Root" else []:
            self._add_builtin(*spec)
        for spec in _CLASS_KNOBS.get(cls if cls in _CLASS_KNOBS else "Group" if isinstance(self, Group) else "", []):
            self._add_builtin(*spec)

    def _add_builtin(self, kcls: type[Knob], name: str, default: Any, items: Sequence[str] = ()) -> None:
        k = kcls(name, name, items) if issubclass(kcls, Enumeration_Knob) else kcls(name)
        k._node = self
        if default not in (None, ""):
            k.setValue(default)
        self._knobs.append(k)
        self._builtin.add(name)

    def __repr__(self) -> str:
        return f"<{self._class} {self.fullName()}>"

    # -- identity
    def Class(self) -> str:
        return self._class

    def name(self) -> str:
        return self["name"].value()

    def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:
        self["name"].setValue(name)

    def fullName(self) -> str:
        parent = self._parent
        if parent is None or isinstance(parent, Root):
            return self.name()
        return f"{parent.fullName()}.{self.name()}"

    def parent(self) -> Group | None:
        return self._parent

    def help(self) -> str:
        k = self.knob("help")
        return k.value() if k is not None else ""

    # -- knobs
    def knob(self, p: str | int, follow_link: bool = True) -> Knob | None:
        if isinstance(p, int):
            return self._knobs[p] if 0 <= p < len(self._knobs) else None
        for k in self._knobs:
            if k.name() == p:
                return k
        return None

    def __getitem__(self, name: str) -> Any:
        k = self.knob(name)
        if k is None:
            raise NameError(f"knob {name} does not exist")
        return k

    def knobs(self) -> dict[str, Knob]:
        return {k.name(): k for k in self._knobs}

    def allKnobs(self) -> list[Knob]:
        return list(self._knobs)

    def numKnobs(self) -> int:
        return len(self._knobs)

    def addKnob(self, knob: Knob) -> None:
        if knob.name() and self.knob(knob.name()) is not None:
            raise ValueError(f"{self.name()}: knob {knob.name()} exists already")
        knob._node = self
        knob._user = True
        self._knobs.append(knob)

    def removeKnob(self, knob: Knob) -> None:
        if knob not in self._knobs:
            raise ValueError(f"{self.name()}: knob {knob.name()} is not on this node")
        if not knob._user:
            raise ValueError(f"{self.name()}: only user knobs can be removed")
        self._knobs.remove(knob)
        knob._node = None

    # -- connections
    def input(self, index: int) -> Node | None:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def inputs(self) -> int:
        n = len(self._inputs)
        while n and self._inputs[n - 1] is None:
            n -= 1
        return n

    def maxInputs(self) -> int:
        return 0 if self._class in _NO_INPUTS else 2 if self._class == "Switch" else 1

    def setInput(self, i: int, node: Node | None) -> bool:
        while len(self._inputs) <= i:
            self._inputs.append(None)
        self._inputs[i] = node
        return True

    def connectInput(self, i: int, node: Node | None) -> bool:
        return self.setInput(i, node)

    def dependencies(self, mask: int = -1) -> list[Node]:
        return [n for n in self._inputs if n is not None]

    # -- selection, position
    def isSelected(self) -> bool:
        return bool(self["selected"].value())

    def setSelected(self, selected: bool) -> None:
        self["selected"].setValue(bool(selected))

    def xpos(self) -> int:
        return int(self["xpos"].value())

    def ypos(self) -> int:
        return int(self["ypos"].value())

    def setXYpos(self, x: int, y: int) -> None:
        self["xpos"].setValue(x)
        self["ypos"].setValue(y)

    def showControlPanel(self, forceFloat: bool = False) -> None:
        pass

    # -- what it computes
    def firstFrame(self) -> int:
        src = self._upstream()
        return src.firstFrame() if src is not None else root().firstFrame()

    def lastFrame(self) -> int:
        src = self._upstream()
        return src.lastFrame() if src is not None else root().lastFrame()

    def frameRange(self) -> FrameRange:
        return FrameRange(self.firstFrame(), self.lastFrame())

    def width(self) -> int:
        return int(self._pixels(self.firstFrame()).shape[1])

    def height(self) -> int:
        return int(self._pixels(self.firstFrame()).shape[0])

    def format(self) -> Format:
        return Format(self.width(), self.height())

    def _upstream(self) -> Node | None:
        return self.input(0)

    def _pixels(self, t: int) -> np.ndarray:
        src = self._upstream()
        return src._pixels(t) if src is not None else _black()


def _black() -> np.ndarray:
    fmt = root()["format"].value().split()
    return np.zeros((int(fmt[1]), int(fmt[0]), 4), np.float32)


class Group(Node):
    """A node that holds nodes."""

    def __init__(self, cls: str = "Group") -> None:
        super().__init__(cls)
        self._children: list[Node] = []

    def begin(self) -> Group:
        _context.append(self)
        return self

    def end(self) -> None:
        if not _context or _context[-1] is not self:
            raise RuntimeError(f"{self.name()}.end() without its begin()")
        _context.pop()

    def __enter__(self) -> Group:
        return self.begin()

    def __exit__(self, *exc: Any) -> None:
        self.end()

    def node(self, s: str) -> Node | None:
        head, _, rest = s.partition(".")
        for n in self._children:
            if n.name() == head:
                if not rest:
                    return n
                return n.node(rest) if isinstance(n, Group) else None
        return None

    def nodes(self) -> list[Node]:
        return list(self._children)

    def numNodes(self) -> int:
        return len(self._children)

    def output(self) -> Node | None:
        for n in self._children:
            if n.Class() == "Output":
                return n
        return None

    def maxInputs(self) -> int:
        return sum(1 for n in self._children if n.Class() == "Input")

    def _upstream(self) -> Node | None:
        return self.output()

    def _input_node(self, number: int) -> Node | None:
        return self.input(number)


class Gizmo(Group):
    """An instance of a ``.gizmo`` file: a Group whose content is the file's."""

    def __init__(self, cls: str, path: str) -> None:
        super().__init__(cls)
        self._file = path

    def filename(self) -> str:
        return self._file

    def command(self) -> str:
        return self._class


class Root(Group):
    def __init__(self) -> None:
        super().__init__("Root")

    def name(self) -> str:
        return "Root"

    def fullName(self) -> str:
        return "root"

    def firstFrame(self) -> int:
        return int(self["first_frame"].value())

    def lastFrame(self) -> int:
        return int(self["last_frame"].value())

    def fps(self) -> float:
        return float(self["fps"].value())

    def modified(self) -> bool:
        return False

    def setModified(self, modified: bool) -> None:
        pass


class _Read(Node):
    def firstFrame(self) -> int:
        return int(self["first"].value())

    def lastFrame(self) -> int:
        return int(self["last"].value())

    def _pixels(self, t: int) -> np.ndarray:
        first, last = self.firstFrame(), self.lastFrame()
        if t < first or t > last:
            mode = self["before" if t < first else "after"].value()
            if mode == "black":
                return _black()
            if mode != "hold":
                raise NotImplementedError(f"Read {mode}")
            t = min(max(t, first), last)
        path = _frame_path(self["file"]._evaluate_at(t), t)
        try:
            return _read_rgba(path, bool(self["auto_alpha"].value()))
        except FileNotFoundError:
            if self["on_error"].value() == "black":
                return _black()
            raise RuntimeError(f"{self.name()}: Read error: {path}: No such file or directory") from None


class _Write(Node):
    def _execute(self, t: int) -> None:
        if self["disable"].value():
            raise RuntimeError(f"{self.fullName()} is disabled")
        path = _frame_path(self["file"]._evaluate_at(t), t)
        if not path:
            raise RuntimeError(f"{self.fullName()}: no file name")
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            if not self["create_directories"].value():
                raise RuntimeError(f"{self.fullName()}: cannot open {path}: the folder does not exist")
            os.makedirs(folder)
        pixels = self._pixels(t)
        chans = self["channels"].value()
        if chans in ("rgba", "all"):
            data, names = pixels, ("R", "G", "B", "A")
        elif chans == "rgb":
            data, names = pixels[..., :3], ("R", "G", "B")
        elif chans == "alpha":
            data, names = pixels[..., 3:], ("A",)
        else:
            raise NotImplementedError(f"Write channels {chans}")
        ftype = self["file_type"].value()
        if ftype != "exr":
            raise NotImplementedError(f"the fake writes exr only, not {ftype}")
        half = self["datatype"].value() == "16 bit half"
        _write_exr(path, np.ascontiguousarray(data), names, half, self["compression"].value())


class _Input(Node):
    def _upstream(self) -> Node | None:
        group = self._parent
        if group is None or isinstance(group, Root):
            return None
        return group._input_node(int(self["number"].value()))


class _Switch(Node):
    def _which(self, t: int) -> int:
        n = max(len(self._inputs), 1)
        return min(max(int(round(self["which"].valueAt(t))), 0), n - 1)

    def _pixels(self, t: int) -> np.ndarray:
        src = self.input(self._which(t))
        return src._pixels(t) if src is not None else _black()


class _Constant(Node):
    def _pixels(self, t: int) -> np.ndarray:
        img = _black()
        img[...] = np.asarray(self["color"].valueAt(t), np.float32)
        return img


_NODE_CLASSES: dict[str, type[Node]] = {"Read": _Read, "Write": _Write, "Input": _Input, "Switch": _Switch,
                                        "Constant": _Constant, "Output": Node, "Dot": Node, "NoOp": Node}


def _frame_path(pattern: str, t: int) -> str:
    def hashes(m: re.Match[str]) -> str:
        return f"{t:0{len(m.group(0))}d}"

    path = re.sub(r"#+", hashes, pattern)
    return re.sub(r"%(0?\d*)d", lambda m: ("%" + m.group(1) + "d") % t, path)


def _read_rgba(path: str, auto_alpha: bool) -> np.ndarray:
    import OpenImageIO as oiio

    if not os.path.exists(path):
        raise FileNotFoundError(path)
    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise RuntimeError(f"cannot read {path}: {oiio.geterror()}")
    try:
        spec = inp.spec()
        pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
    finally:
        inp.close()
    img = np.asarray(pixels, np.float32).reshape(spec.height, spec.width, spec.nchannels)
    names = list(spec.channelnames)
    out = np.zeros((spec.height, spec.width, 4), np.float32)
    for i, c in enumerate("RGBA"):
        if c in names:
            out[..., i] = img[..., names.index(c)]
        elif c == "A" and auto_alpha:
            out[..., 3] = 1.0
    return out


def _write_exr(path: str, data: np.ndarray, names: Sequence[str], half: bool, compression: str) -> None:
    import OpenImageIO as oiio

    h, w, c = data.shape
    spec = oiio.ImageSpec(w, h, c, "half" if half else "float")
    spec.channelnames = tuple(names)
    spec.attribute("compression", "none" if compression == "none" else "zip")
    out = oiio.ImageOutput.create(path)
    if out is None or not out.open(path, spec):
        raise RuntimeError(f"cannot write {path}: {oiio.geterror()}")
    try:
        out.write_image(data)
    finally:
        out.close()


# ---------------------------------------------------------------------------------- expressions and TCL

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _lookup(path: str, node: Node, t: float) -> Any:
    """The value of ``knob``, ``parent.knob`` or ``Node.knob`` seen from ``node`` at frame ``t``."""
    parts = path.split(".")
    here: Node = node
    while len(parts) > 1:
        head = parts.pop(0)
        if head == "parent":
            parent = here._parent
            if parent is None:
                raise NameError(f"{path}: {here.name()} has no parent")
            here = parent
        elif head == "root":
            here = root()
        else:
            group = here._parent if here._parent is not None else root()
            found = group.node(head)
            if found is None:
                raise NameError(f"{path}: no node {head}")
            here = found
    knob = here.knob(parts[0])
    if knob is None:
        raise NameError(f"{path}: no knob {parts[0]} on {here.name()}")
    if isinstance(knob, Enumeration_Knob):
        return knob.value()
    if isinstance(knob, Array_Knob):
        return knob.valueAt(t, 0)
    return knob.value()


def _evaluate(expr: str, node: Node, t: float) -> float:
    """A Nuke expression of the subset the gizmo uses: numbers, knobs, ``frame``, arithmetic, comparisons,
    ``&&`` and ``||``."""
    if re.search(r"[?\[\]$]|(?<![!<>=])!(?!=)", expr):
        raise NotImplementedError(f"the fake does not evaluate {expr!r}")
    py = expr.replace("&&", " and ").replace("||", " or ")

    def sub(m: re.Match[str]) -> str:
        name = m.group(0)
        if name in ("and", "or"):
            return name
        if name == "frame":
            return repr(float(t))
        return repr(float(_lookup(name, node, t)))

    return float(eval(_NAME.sub(sub, py), {"__builtins__": {}}, {}))  # noqa: S307 - expressions the tests wrote


def _tcl_substitute(text: str, node: Node, t: float) -> str:
    """``[value knob]`` substitution in a string knob (the only TCL the fake runs)."""
    def sub(m: re.Match[str]) -> str:
        value = _lookup(m.group(1), node, t)
        return _num(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)

    out = re.sub(r"\[value ([A-Za-z0-9_.]+)\]", sub, text)
    if "[" in out:
        raise NotImplementedError(f"the fake evaluates only [value ...] in {text!r}")
    return out


# -------------------------------------------------------------------------------------------- the script

_context: list[Group] = []
_callbacks: list[tuple[Node, Knob | None]] = []
_plugin_path: list[str] = []
_frame = [1]


def root() -> Root:
    return _root


def thisGroup() -> Group:
    return _context[-1] if _context else _root


def thisParent() -> Group | None:
    return thisGroup()


def thisRoot() -> Root:
    return _root


def thisNode() -> Node:
    return _callbacks[-1][0] if _callbacks else thisGroup()


def thisKnob() -> Knob | None:
    return _callbacks[-1][1] if _callbacks else None


def frame(f: float | None = None) -> int:
    if f is not None:
        _frame[0] = int(f)
    return _frame[0]


def _run_callback(command: str, node: Node, knob: Knob | None) -> None:
    _callbacks.append((node, knob))
    try:
        exec(compile(command, f"<{node.name()}.{knob.name() if knob else ''}>", "exec"),  # noqa: S102
             {"nuke": sys.modules[__name__], "__name__": "__main__"})
    finally:
        _callbacks.pop()


def _unique_name(group: Group, base: str) -> str:
    stem = re.sub(r"\d+$", "", base) or base
    i = 1
    while group.node(f"{stem}{i}") is not None:
        i += 1
    return f"{stem}{i}"


def _new_node(cls: str, group: Group) -> Node:
    if cls in _NODE_CLASSES:
        node: Node = _NODE_CLASSES[cls](cls)
    elif cls == "Group":
        node = Group()
    else:
        gizmo = _find_gizmo(cls)
        if gizmo is None:
            raise RuntimeError(f"{cls}: unknown command")
        node = Gizmo(cls, gizmo)
    node._parent = group
    group._children.append(node)
    node.setName(_unique_name(group, cls))
    if isinstance(node, Gizmo):
        with open(node.filename(), encoding="utf-8") as f:
            _read_script(f.read(), node, gizmo_node=node)
    node._defaults = {k.name(): k.toScript() for k in node._knobs if not isinstance(k, (Tab_Knob,))}
    node._builtin |= {k.name() for k in node._knobs}
    return node


def _find_gizmo(cls: str) -> str | None:
    for folder in _plugin_path:
        path = os.path.join(folder, cls + ".gizmo")
        if os.path.isfile(path):
            return path
    return None


def _apply_knobs(node: Node, text: str) -> None:
    for cmd in _commands(text):
        name = cmd[0].text
        if name == "addUserKnob":
            node.addKnob(_user_knob(cmd[1].text))
            continue
        if name == "inputs":
            continue
        if len(cmd) != 2:
            raise SyntaxError(f"{node.name()}: knob line {' '.join(w.text for w in cmd)!r}")
        knob = node.knob(name)
        if knob is None:
            raise RuntimeError(f"{node.Class()}: no knob named {name}")
        knob._from_word(cmd[1])


def createNode(typ: str, knobs: str = "", inpanel: bool = True) -> Node:
    """Create a node of class (or gizmo) ``typ`` in the current group, connected to the selected node."""
    group = thisGroup()
    selected = [n for n in group._children if n.isSelected()]
    new = _new_node(typ, group)
    if knobs:
        _apply_knobs(new, knobs)
    if len(selected) == 1 and new.maxInputs() > 0:
        new.setInput(0, selected[0])
    for n in group._children:
        n.setSelected(n is new)
    return new


class _Nodes:
    """``nuke.nodes.Class(knob=value, ..., inputs=[...])``: create a node without connecting it."""

    def __getattr__(self, cls: str) -> Callable[..., Node]:
        def make(*args: Any, **knobs: Any) -> Node:
            new = _new_node(cls, thisGroup())
            for i, n in enumerate(knobs.pop("inputs", []) or []):
                new.setInput(i, n)
            for name, value in knobs.items():
                new[name].setValue(value)
            return new

        return make


nodes = _Nodes()


def toNode(s: str) -> Node | None:
    if s == "root":
        return _root
    return thisGroup().node(s)


def allNodes(filter: str | None = None, group: Group | None = None, recurseGroups: bool = False) -> list[Node]:
    out: list[Node] = []

    def walk(g: Group) -> None:
        for n in g._children:
            if filter is None or n.Class() == filter:
                out.append(n)
            if recurseGroups and isinstance(n, Group):
                walk(n)

    walk(group if group is not None else thisGroup())
    return out


def selectedNodes(filter: str | None = None) -> list[Node]:
    return [n for n in allNodes(filter) if n.isSelected()]


def delete(n: Node | None) -> None:
    if n is None:
        return
    parent = n._parent
    if parent is not None:
        parent._children.remove(n)
        for other in parent._children:
            other._inputs = [None if x is n else x for x in other._inputs]
    n._parent = None


def execute(nameOrNode: Node | str, start: int | None = None, end: int | None = None, incr: int = 1,
            views: list[str] | None = None, continueOnError: bool = False) -> None:
    """Execute (render) a Write node over ``start``..``end``: the frames are really written."""
    node = toNode(nameOrNode) if isinstance(nameOrNode, str) else nameOrNode
    if node is None:
        raise ValueError(f"{nameOrNode}: no such node")
    if not isinstance(node, _Write):
        raise NotImplementedError(f"the fake executes Write nodes, not {node.Class()}")
    if start is None or end is None:
        raise NotImplementedError("the fake executes frame ranges given as start, end")
    _executed.append((node.fullName(), int(start), int(end)))
    before = _frame[0]
    try:
        for t in range(int(start), int(end) + 1, int(incr)):
            _frame[0] = t
            node._execute(t)
    finally:
        _frame[0] = before


# -------------------------------------------------------------------------------------- reading scripts


def _read_script(text: str, into: Group, gizmo_node: Gizmo | None = None) -> None:
    """Read .nk / .gizmo text into the group ``into`` (the stack syntax)."""
    stack: list[Node | None] = []
    names: dict[str, Node | None] = {}
    groups: list[Group] = [into]
    for cmd in _commands(text):
        head = cmd[0].text
        if head in ("version", "define_window_layout_xml", "cut_paste_input"):
            continue
        if head == "set":
            names[cmd[1].text] = stack[-1] if stack else None
            continue
        if head == "push":
            ref = cmd[1].text
            stack.append(None if ref == "0" else names[ref.lstrip("$")])
            continue
        if head == "end_group":
            groups.pop()
            if not groups:
                raise SyntaxError("end_group without a group")
            continue
        if len(cmd) != 2 or cmd[1].kind != "braced":
            raise SyntaxError(f"not a node: {' '.join(w.text for w in cmd)!r}")
        body = cmd[1].text
        if head == "Root":
            _apply_knobs(_root, body)
            continue
        if head == "Gizmo":
            if gizmo_node is None:
                raise SyntaxError("a Gizmo block outside a .gizmo file")
            _apply_knobs(gizmo_node, body)
            groups.append(gizmo_node)
            continue
        n_inputs = None
        for c in _commands(body):
            if c[0].text == "inputs":
                n_inputs = int(c[1].text)
        group = groups[-1]
        node = _new_node(head, group)
        _apply_knobs(node, body)
        if n_inputs is None:
            n_inputs = 0 if head in _NO_INPUTS else 1
        for i in range(n_inputs):
            node.setInput(i, stack.pop() if stack else None)
        stack.append(node)
        if head == "Group":
            groups.append(node)  # type: ignore[arg-type]


def _node_script(node: Node, ids: dict[int, str]) -> list[str]:
    lines = []
    n = node.inputs()
    for i in reversed(range(n)):
        src = node.input(i)
        lines.append("push " + (f"${ids[id(src)]}" if src is not None else "0"))
    if isinstance(node, Group) and not isinstance(node, Gizmo) and node._children:
        raise NotImplementedError("the fake saves gizmos, not Groups with nodes in them")
    lines.append(node.Class() + " {")
    default_inputs = 0 if node.Class() in _NO_INPUTS else 1
    if n != default_inputs:
        lines.append(f" inputs {n}")
    for k in node._knobs:
        if isinstance(k, Tab_Knob) and k.name() in node._builtin:
            continue
        if k.name() not in node._builtin:
            lines.append(" addUserKnob {" + " ".join(k._spec()) + "}")
            if isinstance(k, (Tab_Knob, Script_Knob, Text_Knob)):
                continue
        script = k.toScript()
        if k.name() == "name" or script != node._defaults.get(k.name(), _fresh_default(k)):
            lines.append(f" {k.name()} {script}")
    lines.append("}")
    lines.append(f"set {ids[id(node)]} [stack 0]")
    return lines


def _fresh_default(k: Knob) -> str:
    fresh = type(k)(k.name())
    if isinstance(k, Enumeration_Knob) and isinstance(fresh, Enumeration_Knob):
        fresh._items = list(k._items)
    fresh._node = k._node
    return fresh.toScript()


def _script_text() -> str:
    lines = ["version 15.1 v1", "Root {"]
    for name in ("name", "first_frame", "last_frame", "fps", "format"):
        lines.append(f" {name} {_root[name].toScript()}")
    lines.append("}")
    ids = {id(n): f"N{i}" for i, n in enumerate(_root._children)}
    for n in _root._children:
        lines += _node_script(n, ids)
    return "\n".join(lines) + "\n"


def scriptName() -> str:
    name = _root["name"].value()
    if not name:
        raise RuntimeError("no script name")
    return name


def scriptSaveAs(filename: str | None = None, overwrite: int | bool = -1) -> None:
    if filename is None:
        raise NotImplementedError("the fake has no file dialog")
    if os.path.exists(filename) and overwrite in (0, False):
        raise RuntimeError(f"{filename} exists")
    _root["name"].setValue(os.path.abspath(filename))
    with open(filename, "w", encoding="utf-8") as f:
        f.write(_script_text())


def scriptSave(filename: str | None = None) -> bool:
    scriptSaveAs(filename or scriptName(), overwrite=True)
    return True


def scriptClear(*args: Any, **kwargs: Any) -> None:
    global _root
    _root = Root()
    _context.clear()
    _frame[0] = 1


def scriptOpen(filename: str | None = None) -> None:
    if filename is None:
        raise NotImplementedError("the fake has no file dialog")
    scriptClear()
    with open(filename, encoding="utf-8") as f:
        _read_script(f.read(), _root)
    _root["name"].setValue(os.path.abspath(filename))


def scriptReadFile(s: str) -> None:
    with open(s, encoding="utf-8") as f:
        _read_script(f.read(), thisGroup())


# --------------------------------------------------------------------------------------------- plugins


def pluginAddPath(args: str | Sequence[str], addToSysPath: bool = True) -> None:
    for path in [args] if isinstance(args, str) else list(args):
        path = os.path.abspath(os.path.expanduser(path))
        if path in _plugin_path:
            _plugin_path.remove(path)
        _plugin_path.insert(0, path)
        if addToSysPath and path not in sys.path:
            sys.path.insert(0, path)


def pluginAppendPath(args: str | Sequence[str], addToSysPath: bool = True) -> None:
    for path in [args] if isinstance(args, str) else list(args):
        path = os.path.abspath(os.path.expanduser(path))
        if path not in _plugin_path:
            _plugin_path.append(path)
        if addToSysPath and path not in sys.path:
            sys.path.append(path)


def pluginPath() -> list[str]:
    return list(_plugin_path)


# ---------------------------------------------------------------------------------------------- menus


class MenuItem:
    def __init__(self, name: str, script: str | Callable[[], Any] | None = None, icon: str = "",
                 shortcut: str = "") -> None:
        self._name, self._script, self._icon, self._shortcut = name, script, icon or "", shortcut or ""

    def name(self) -> str:
        return self._name

    def script(self) -> str:
        return self._script if isinstance(self._script, str) else ""

    def icon(self) -> str:
        return self._icon

    def shortcut(self) -> str:
        return self._shortcut

    def invoke(self) -> None:
        if callable(self._script):
            self._script()
        elif self._script:
            exec(self._script, {"nuke": sys.modules[__name__], "__name__": "__main__"})  # noqa: S102


class Menu(MenuItem):
    def __init__(self, name: str, icon: str = "") -> None:
        super().__init__(name, None, icon)
        self._items: list[MenuItem] = []

    def items(self) -> list[MenuItem]:
        return list(self._items)

    def findItem(self, name: str) -> Any:
        head, _, rest = name.partition("/")
        for item in self._items:
            if item.name() == head:
                if not rest:
                    return item
                return item.findItem(rest) if isinstance(item, Menu) else None
        return None

    def menu(self, name: str) -> Any:
        item = self.findItem(name)
        return item if isinstance(item, Menu) else None

    def addMenu(self, name: str, icon: str | None = None, tooltip: str | None = None, index: int | None = None) -> Menu:
        head, _, rest = name.partition("/")
        found = self.findItem(head)
        if not isinstance(found, Menu):
            found = Menu(head, icon or "")
            self._items.insert(len(self._items) if index is None or index < 0 else index, found)
        return found.addMenu(rest, icon) if rest else found

    def addCommand(self, name: str, command: str | Callable[[], Any] | None = None, shortcut: str | None = None,
                   icon: str | None = None, tooltip: str | None = None, index: int | None = None,
                   readonly: bool | None = None, shortcutContext: int | None = None, tag: int | None = None,
                   tagTarget: int | None = None) -> MenuItem:
        path, _, leaf = name.rpartition("/")
        menu = self.addMenu(path) if path else self
        item = MenuItem(leaf, command, icon or "", shortcut or "")
        menu._items = [i for i in menu._items if i.name() != leaf]
        menu._items.insert(len(menu._items) if index is None or index < 0 else index, item)
        return item

    def addSeparator(self, *args: Any, **kwargs: Any) -> None:
        pass

    def removeItem(self, name: str) -> None:
        self._items = [i for i in self._items if i.name() != name]


_menus: dict[str, Menu] = {}


def menu(name: str) -> Menu:
    if name not in ("Nuke", "Pane", "Nodes", "Properties", "Node Graph", "Viewer", "Animation", "Axis"):
        raise NotImplementedError(f"menu {name!r}")
    return _menus.setdefault(name, Menu(name))


def toolbar(name: str, create: bool = True) -> Menu | None:
    return _menus.setdefault(name, Menu(name)) if create or name in _menus else None


# ---------------------------------------------------------------------------------- messages, progress


def message(prompt: str) -> None:
    _messages.append(("message", str(prompt)))


def alert(prompt: str) -> None:
    _messages.append(("alert", str(prompt)))


def warning(message: str) -> None:
    _messages.append(("warning", str(message)))


def error(message: str) -> None:
    _messages.append(("error", str(message)))


def tprint(*args: Any, sep: str = " ", end: str = "\n", file: Any = None) -> None:
    _messages.append(("tprint", sep.join(str(a) for a in args)))


def ask(prompt: str) -> bool:
    _messages.append(("ask", str(prompt)))
    return True


class ProgressTask:
    """A progress bar with a Cancel button; it goes away when the object is deleted."""

    _cancel: Callable[[ProgressTask], bool] = staticmethod(lambda task: False)  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        self._name = str(name)
        self._percent = 0
        _progress.append(("task", self._name))

    def setMessage(self, message: str) -> None:
        _progress.append(("message", str(message)))

    def setProgress(self, progress: int) -> None:
        if not isinstance(progress, int):
            raise TypeError("ProgressTask.setProgress takes an int (0-100)")
        self._percent = progress
        _progress.append(("progress", progress))

    def isCancelled(self) -> bool:
        return bool(type(self)._cancel(self))


_root: Root = Root()
