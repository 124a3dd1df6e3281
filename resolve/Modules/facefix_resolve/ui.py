"""The dialogs, with Fusion's UIManager (it works on every Resolve page): thin, the work is in ``plan``,
``edit``, ``comp`` and ``runner``.

The controls are built from the bridge's schema (``bridge.schema()``), one per control, with the schema's
label, default, range, choices and help (tooltip). Long work runs on a UIManager timer that steps a
``Runner``, so the dialog stays live: it shows the progress, and Cancel cancels the running job.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

from . import comp as comp_side
from . import config, edit
from .plan import (
    COMP_RUN_OPTIONS,
    EDIT_RUN_OPTIONS,
    AdapterError,
    ControlSpec,
    control_specs,
    settings_from_values,
)
from .runner import Runner, Task

__all__ = ["Dialog", "EditDialog", "CompDialog", "message", "control_rows", "read_values", "GROUP_TITLES"]

WIN = "FaceFixWin"
TIMER = "FFTimer"
GROUP_TITLES = {"restore": "Restore", "faces": "Faces", "mask": "Matte", "temporal": "Temporal",
                "upscale": "Upscale", "colour": "Colour", "compute": "Compute", "run": "Job"}


def control_rows(ui: Any, specs: Sequence[ControlSpec]) -> list[Any]:
    """One labelled row per control, a heading before each group."""
    rows: list[Any] = []
    group = None
    for spec in specs:
        if spec.group != group:
            group = spec.group
            rows.append(ui.Label({"Text": f"<b>{GROUP_TITLES.get(group, group.title())}</b>", "Weight": 0}))
        tip = spec.help
        if spec.kind == "choice":
            widget = ui.ComboBox({"ID": spec.id, "ToolTip": tip})
        elif spec.kind == "float":
            widget = ui.DoubleSpinBox({"ID": spec.id, "ToolTip": tip, "Value": float(spec.default or 0),
                                       "Minimum": -1e9 if spec.minimum is None else spec.minimum,
                                       "Maximum": 1e9 if spec.maximum is None else spec.maximum,
                                       "SingleStep": 0.05, "Decimals": 3})
        elif spec.kind == "int":
            widget = ui.SpinBox({"ID": spec.id, "ToolTip": tip, "Value": int(spec.default or 0),
                                 "Minimum": -2 ** 31 if spec.minimum is None else int(spec.minimum),
                                 "Maximum": 2 ** 31 - 1 if spec.maximum is None else int(spec.maximum)})
        elif spec.kind == "bool":
            widget = ui.CheckBox({"ID": spec.id, "ToolTip": tip, "Text": "", "Checked": bool(spec.default)})
        else:
            widget = ui.LineEdit({"ID": spec.id, "ToolTip": tip, "Text": str(spec.default or "")})
        rows.append(ui.HGroup({"Weight": 0}, [ui.Label({"Text": spec.label, "ToolTip": tip, "Weight": 0.35}),
                                              widget]))
    return rows


def fill_choices(items: Any, specs: Sequence[ControlSpec]) -> None:
    for spec in specs:
        if spec.kind == "choice":
            box = items[spec.id]
            texts = [str(c) for c in spec.choices]
            box.AddItems(texts)
            box.CurrentIndex = texts.index(str(spec.default)) if str(spec.default) in texts else 0


def read_values(items: Any, specs: Sequence[ControlSpec]) -> dict[str, Any]:
    """The controls' values by control name, as the widgets hold them."""
    values: dict[str, Any] = {}
    for spec in specs:
        w = items[spec.id]
        if spec.kind == "choice":
            values[spec.name] = w.CurrentText
        elif spec.kind in ("float", "int"):
            values[spec.name] = w.Value
        elif spec.kind == "bool":
            values[spec.name] = bool(w.Checked)
        else:
            values[spec.name] = w.Text
    return values


def message(fusion: Any, bmd: Any, text: str, title: str = "FaceFix") -> None:
    """A small window with one message and OK."""
    ui = fusion.UIManager
    disp = bmd.UIDispatcher(ui)
    win = disp.AddWindow({"ID": "FaceFixMessage", "WindowTitle": title, "Geometry": [300, 300, 460, 140]},
                         ui.VGroup([ui.Label({"ID": "FFMessage", "Text": text, "WordWrap": True}),
                                    ui.HGroup({"Weight": 0}, [ui.HGap(0, 1), ui.Button({"ID": "FFOk", "Text": "OK"})])]))

    def close(ev: Any) -> None:
        disp.ExitLoop()

    win.On.FaceFixMessage.Close = close
    win.On.FFOk.Clicked = close
    win.Show()
    disp.RunLoop()
    win.Hide()


class Dialog:
    """The shared frame: the schema's controls, a Render-to folder, buttons, a status line, a timer."""

    title = "FaceFix"
    run_options: Sequence[str] = EDIT_RUN_OPTIONS

    def __init__(self, fusion: Any, bmd: Any, bridge: Any, client: Any) -> None:
        self.fusion, self.bmd, self.bridge, self.client = fusion, bmd, bridge, client
        self.ui = fusion.UIManager
        self.disp = bmd.UIDispatcher(self.ui)
        self.specs = control_specs(bridge.schema(), self.run_options)
        self.runner: Runner | None = None
        self.notes: list[str] = []
        ui = self.ui
        rows = self.top_rows() + control_rows(ui, self.specs) + [
            ui.HGroup({"Weight": 0}, [ui.Label({"Text": "Render to", "Weight": 0.35}),
                                      ui.LineEdit({"ID": "FFOut", "Text": str(config.renders_root())})]),
            ui.HGroup({"Weight": 0}, self.buttons() + [ui.Button({"ID": "FFCancel", "Text": "Close"})]),
            ui.Label({"ID": "FFStatus", "Text": self.hint(), "WordWrap": True, "Weight": 0}),
        ]
        self.win = self.disp.AddWindow({"ID": WIN, "WindowTitle": self.title, "Geometry": [120, 80, 560, 900]},
                                       ui.VGroup({"Spacing": 3}, rows))
        self.items = self.win.GetItems()
        fill_choices(self.items, self.specs)
        self.fill()
        self.timer = ui.Timer({"ID": TIMER, "Interval": 200})
        self.win.On[WIN].Close = self.on_close
        self.win.On.FFCancel.Clicked = self.on_cancel
        self.disp.On[TIMER].Timeout = self.on_tick
        for button, handler in self.handlers().items():
            self.win.On[button].Clicked = functools.partial(self.guarded, handler)

    # -- what each dialog adds
    def top_rows(self) -> list[Any]:
        return []

    def buttons(self) -> list[Any]:
        return []

    def handlers(self) -> dict[str, Callable[[], list[Task]]]:
        return {}

    def fill(self) -> None:
        pass

    def hint(self) -> str:
        return ""

    # -- the loop
    def show(self) -> None:
        self.win.Show()
        self.disp.RunLoop()
        self.win.Hide()

    def status(self, text: str) -> None:
        self.items["FFStatus"].Text = text

    def settings(self) -> Any:
        return settings_from_values(self.specs, read_values(self.items, self.specs))

    def out_root(self) -> str:
        text = str(self.items["FFOut"].Text or "").strip()
        if not text:
            raise AdapterError("name a folder to render to")
        return os.path.abspath(os.path.expanduser(text))

    def guarded(self, make: Callable[[], list[Task]], ev: Any = None) -> None:
        """A button: build the tasks (an AdapterError is shown and nothing starts), then run them."""
        if self.runner is not None and self.runner.running:
            return
        self.notes = []
        try:
            tasks = make()
        except AdapterError as err:
            self.status(str(err))
            return
        except self.client.BridgeError as err:
            self.status(str(err))
            return
        if not tasks:
            self.status("\n".join(self.notes) or "Nothing to do.")
            return
        self.runner = Runner(self.bridge, tasks, self.client.BridgeError)
        self.enable(False)
        self.status(self.runner.line)
        self.timer.Start()

    def enable(self, idle: bool) -> None:
        for button in self.handlers():
            self.items[button].Enabled = idle
        self.items["FFCancel"].Text = "Close" if idle else "Cancel"

    def on_tick(self, ev: Any = None) -> None:
        runner = self.runner
        if runner is None:
            self.timer.Stop()
            return
        try:
            more = runner.step()
        except Exception as err:  # a host call that broke: show it, stop
            runner.cancel()
            runner.errors.append(f"{type(err).__name__}: {err}")
            more = False
        if more:
            self.status(runner.line)
            return
        self.timer.Stop()
        self.enable(True)
        self.status("\n".join([runner.line] + runner.results + runner.errors + self.notes))

    def on_cancel(self, ev: Any = None) -> None:
        if self.runner is not None and self.runner.running:
            self.runner.cancel()
            self.on_tick()
        else:
            self.disp.ExitLoop()

    def on_close(self, ev: Any = None) -> None:
        if self.runner is not None and self.runner.running:
            self.runner.cancel()
        self.timer.Stop()
        self.disp.ExitLoop()


class EditDialog(Dialog):
    """Workspace > Scripts > Utility > FaceFix: fix timeline clips, results placed on the track above."""

    title = "FaceFix: fix timeline clips"
    run_options = EDIT_RUN_OPTIONS

    def __init__(self, resolve: Any, fusion: Any, bmd: Any, bridge: Any, client: Any) -> None:
        self.resolve = resolve
        super().__init__(fusion, bmd, bridge, client)

    def top_rows(self) -> list[Any]:
        ui = self.ui
        return [
            ui.HGroup({"Weight": 0}, [ui.Label({"Text": "Clips", "Weight": 0.35}), ui.ComboBox({"ID": "FFScope"})]),
            ui.HGroup({"Weight": 0}, [ui.Label({"Text": "Video track", "Weight": 0.35}),
                                      ui.SpinBox({"ID": "FFTrack", "Minimum": 1, "Maximum": 99, "Value": 1})]),
            ui.HGroup({"Weight": 0}, [ui.Label({"Text": "Only clips coloured", "Weight": 0.35}),
                                      ui.ComboBox({"ID": "FFColor"})]),
        ]

    def fill(self) -> None:
        self.items["FFScope"].AddItems(["Clip under the playhead", "Every clip on the chosen video track"])
        self.items["FFColor"].AddItems(["Any"] + list(edit.CLIP_COLORS))

    def buttons(self) -> list[Any]:
        return [self.ui.Button({"ID": "FFStart", "Text": "Fix"})]

    def handlers(self) -> dict[str, Callable[[], list[Task]]]:
        return {"FFStart": self.start}

    def hint(self) -> str:
        return ("Renders each clip's used frames through FaceFix and places the result on the video track above, "
                "at the same record frame (the original stays as it is).")

    def start(self) -> list[Task]:
        settings, run = self.settings()
        scope = "current" if int(self.items["FFScope"].CurrentIndex or 0) == 0 else "track"
        color = str(self.items["FFColor"].CurrentText or "Any")
        _, timeline = edit.current_timeline(self.resolve)
        clips = edit.clips_in_scope(timeline, scope, int(self.items["FFTrack"].Value or 1),
                                    "" if color == "Any" else color)
        plans, refusals = edit.plan_timeline(timeline, clips, settings, run, self.out_root())
        self.notes = [f"Skipped {r.line()}" for r in refusals]
        tasks = []
        for p in plans:
            os.makedirs(p.folder, exist_ok=True)
            tasks.append(Task(p.clip, [p.job], functools.partial(edit.finish_plan, self.resolve, p),
                              cached=functools.partial(edit.is_rendered, p),
                              done=functools.partial(edit.mark_rendered, p)))
        return tasks


class CompDialog(Dialog):
    """Workspace > Scripts > Comp > FaceFix (Fusion page): fix the selected Loader/MediaIn with face masks."""

    title = "FaceFix: Fusion"
    run_options = COMP_RUN_OPTIONS

    def __init__(self, comp: Any, resolve: Any, fusion: Any, bmd: Any, bridge: Any, client: Any) -> None:
        self.comp, self.resolve = comp, resolve
        super().__init__(fusion, bmd, bridge, client)

    def buttons(self) -> list[Any]:
        return [self.ui.Button({"ID": "FFStart", "Text": "Track + Render"}),
                self.ui.Button({"ID": "FFMask", "Text": "Re-render with this mask"})]

    def handlers(self) -> dict[str, Callable[[], list[Task]]]:
        return {"FFStart": self.start, "FFMask": self.rerender}

    def hint(self) -> str:
        return ("Track + Render: select the Loader or MediaIn of the shot. Re-render: edit the face masks, select "
                "the FaceFix Merge, press Re-render.")

    def start(self) -> list[Task]:
        settings, run = self.settings()
        tool = comp_side.source_tool(self.comp)
        src = comp_side.describe_source(self.comp, tool, self.resolve)
        tasks = comp_side.render_tasks(self.comp, self.bmd, src, settings, run, self.out_root())
        os.makedirs(os.path.dirname(tasks[0].jobs[0]["output"]), exist_ok=True)
        return tasks

    def rerender(self) -> list[Task]:
        settings, run = self.settings()
        merge = comp_side.facefix_merge(self.comp)
        self.status("Rendering the mask...")
        return comp_side.rerender_tasks(self.comp, merge, settings, run)
