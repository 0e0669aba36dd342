"""Window / Level dock widget: a thin magicgui shell over ``core``.

Every number the widget shows or sets comes from :mod:`napari_dicom.core.render`
(``window_to_limits`` / ``limits_to_window``, ``Window``), :mod:`~napari_dicom.core.presets`,
:mod:`~napari_dicom.core.stats` and :mod:`~napari_dicom.core.meta`; this module only wires
controls to a layer.

State model: the widget keeps the exact current :class:`Window` of the chosen layer. The
spin boxes and sliders show it rounded; a user edit of one field combines the edited
value with the exact other value, so reading limits back and forth never drifts. When the
layer's contrast limits change from outside (napari's own controls, auto-contrast), the
window is recomputed from the limits with ``limits_to_window`` under a guard flag, and
nothing is written back to the layer.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Image,
    Label,
    PushButton,
    Slider,
)
from napari.layers import Image as ImageLayer
from napari.utils.action_manager import action_manager
from napari.utils.interactions import Shortcut
from napari.utils.notifications import show_info
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QComboBox, QSizePolicy

from ._colormaps import layer_display_kwargs
from .core.adjust import (
    SLIDER_STEPS,
    center_to_slider,
    drag_per_pixel,
    drag_window,
    min_width,
    nice_step,
    slider_to_center,
    slider_to_width,
    wheel_pages,
    wheel_zoom,
    width_to_slider,
)
from .core.counting import warm_up
from .core.meta import (
    CURVE_SUFFIX_R,
    GREY_R,
    META_KEY,
    dicom_meta,
    file_voi_luts,
    limits_match,
    step_from_dict,
    step_limits,
)
from .core.presets import CT_PRESETS, KEYED_PRESETS, file_presets, is_ct_like, numbered
from .core.render import (
    VOI_FUNCTIONS,
    Display,
    Window,
    WindowError,
    normalize_function,
)
from .core.stats import LayerStats, histogram_image, histogram_pending
from .core.volume import histogram_behind

if TYPE_CHECKING:
    import napari

#: label of the "no preset" entry of the preset chooser
CUSTOM = "(custom)"
MINMAX = "min-max"
RESET = "reset to file default"
#: percentile pairs offered as quick choices
QUICK_PERCENTILES = {
    "1 / 99": (1.0, 99.0),
    "0.1 / 99.9": (0.1, 99.9),
    "0.01 / 99.99": (0.01, 99.99),
}
SCOPES = {"current slice": "slice", "whole series": "series"}
FUNCTION_LABELS = {"LINEAR": "linear", "LINEAR_EXACT": "linear exact", "SIGMOID": "sigmoid"}
DRAG_HINT = "drag on the canvas: left/right = width, up/down = level"
#: the compiled counting loop (core.counting) starts loading this long after the widget
#: is created: 0.3-0.4 s of work that must not slow the dock's first drawing
WARM_UP_AFTER_MS = 500
#: histogram picture size in screen pixels (width, height)
HIST_SIZE = (256, 80)


def _eligible(layer: Any) -> bool:
    return isinstance(layer, ImageLayer) and not layer.rgb


# keys ------------------------------------------------------------------------------------
# napari 0.9 gives Image layers the keys 1 (pan/zoom mode) and 2 (transform mode), Labels,
# Points and Shapes 1..7, and the viewer no Ctrl+digit: the presets take Ctrl+1..9 and the
# file default Ctrl+0 (Cmd on macOS), so no napari key changes meaning. They are actions of
# napari's action manager on the Image layer keymap, so napari lists them (Preferences >
# Shortcuts, "Image layer" group) and a user can move them (e.g. to bare 3..9); they are
# bound only while a Window / Level widget is open, and act only on a layer it can window.

#: action name -> (number key, default shortcut); 0 is "reset to file default"
KEY_ACTIONS: dict[str, tuple[int, str]] = {
    **{f"napari-dicom:window_preset_{i}": (i, f"Ctrl-{i}") for i in range(1, KEYED_PRESETS + 1)},
    "napari-dicom:window_file_default": (0, "Ctrl-0"),
}
_ACTION_OF_KEY = {n: name for name, (n, _) in KEY_ACTIONS.items()}
#: the Window / Level widgets alive now (the keys go to the one whose viewer holds the layer)
_LIVE: weakref.WeakSet[WindowLevelWidget] = weakref.WeakSet()
#: shortcuts bound to our actions now, as napari shows them (kept from napari's events)
_BOUND: dict[str, list[str]] = {}


def _key_command(number: int) -> Any:
    def command(layer: ImageLayer) -> None:
        for widget in list(_LIVE):
            if any(lyr is layer for lyr in widget.viewer.layers):
                widget.press_key(number, layer)
                return

    what = "reset to file default" if number == 0 else f"preset {number}"
    command.__name__ = f"window_{what.replace(' ', '_')}"
    command.__doc__ = f"Window / Level: {what} (napari-dicom)"
    return command


def _on_shortcut_changed(event: Any) -> None:
    name = getattr(event, "name", "")
    if name not in KEY_ACTIONS:
        return
    if event.shortcut:
        _BOUND.setdefault(name, []).append(str(Shortcut(event.shortcut)))
    else:
        _BOUND[name] = []
    for widget in list(_LIVE):
        widget._refresh_key_hints()


def _bind_keys() -> None:
    """Register the actions (once) and bind their shortcuts: the user's from napari's
    settings when there are any, else the defaults."""
    from napari.settings import get_settings

    if not getattr(_bind_keys, "registered", False):
        action_manager.events.shortcut_changed.connect(_on_shortcut_changed)
        for name, (number, _) in KEY_ACTIONS.items():
            what = "reset to file default" if number == 0 else f"preset {number}"
            action_manager.register_action(
                name, _key_command(number),
                f"Window / Level: {what} (napari-dicom)", ImageLayer,
            )
        _bind_keys.registered = True  # type: ignore[attr-defined]
    saved = get_settings().shortcuts.shortcuts
    for name, (_, default) in KEY_ACTIONS.items():
        for shortcut in saved.get(name, [default]):
            action_manager.bind_shortcut(name, shortcut)


def _unbind_keys() -> None:
    if getattr(_bind_keys, "registered", False):
        for name in KEY_ACTIONS:
            action_manager.unbind_shortcut(name)


def key_text(number: int) -> str:
    """How napari shows the shortcut of number key ``number`` now ("Ctrl+1"; "" unbound)."""
    return " / ".join(_BOUND.get(_ACTION_OF_KEY[number], []))


class WindowLevelWidget(Container):  # type: ignore[type-arg]
    """Window / Level for the grayscale image layers of ``viewer``.

    Controls: layer, window centre and width (spin box + slider), VOI LUT function,
    invert, presets (stored windows, CT presets, min-max, file default), percentile
    stretch, histogram with the window drawn on it, window/level by mouse drag, and
    export of the layer as an 8-bit PNG stack exactly as shown. While it is open: Ctrl+1..9
    apply the first presets of the list, Ctrl+0 the file default (:data:`KEY_ACTIONS`), and
    an option makes the mouse wheel page through slices (Ctrl+wheel zooms).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        # napari hands a plugin widget a PublicOnlyProxy of the viewer, whose layers come
        # out as new proxy objects on every access, while napari calls mouse callbacks
        # and sends events with the real layers: identity checks (``is``), the id()-keyed
        # caches and callback registration need the real objects. Only public API is used.
        self.viewer = getattr(viewer, "__wrapped__", viewer)
        viewer = self.viewer
        # the compiled counting loop loads behind once the dock is drawn: a large
        # layer's whole-series histogram then takes 0.1 s, not 0.3-0.4 s
        QTimer.singleShot(WARM_UP_AFTER_MS, warm_up)
        self._layer: ImageLayer | None = None
        self._window: Window | None = None
        self._updating = False
        self._stats: dict[int, LayerStats] = {}
        self._scope_for_lazy = False
        self._alive = True  # False once Qt deleted the widget (a late callback does nothing)
        me = weakref.ref(self)
        self.native.destroyed.connect(lambda *_: setattr(me(), "_alive", False) if me() else None)
        self._functions: dict[int, str] = {}
        self._drag_layer: ImageLayer | None = None
        self._drag_saved_pan: bool | None = None

        self._layer_combo = ComboBox(label="layer", choices=self._layer_choices, nullable=True)
        self._reason = Label(label="", value="")
        self._center = FloatSpinBox(label="level (centre)", min=-1e6, max=1e6, step=1.0)
        # linear over the data's values (core.adjust): an integer slider, since magicgui's
        # FloatSlider loses its range when its step changes precision (0..1 became 0..0.1)
        self._center_slider = Slider(label="", min=0, max=SLIDER_STEPS, readout=False)
        self._center_range = (-1e6, 1e6)
        self._width = FloatSpinBox(label="width", min=0.0, max=2e6, step=1.0)
        # logarithmic: fine steps for narrow windows, coarse ones for wide (core.adjust)
        self._width_slider = Slider(label="", min=0, max=SLIDER_STEPS, readout=False)
        self._width_range = (1.0, 2e6)
        for box in (self._center, self._width):
            # a typed number is applied on Enter or when the field loses focus, not at
            # each keystroke ("1", "15", "150" on the way to "1500")
            box.native.setKeyboardTracking(False)
        self._readout = Label(label="window", value="")
        self._function = ComboBox(
            label="VOI function",
            choices=[(FUNCTION_LABELS[f], f) for f in VOI_FUNCTIONS],
            value="LINEAR",
        )
        self._invert = CheckBox(text="invert (MONOCHROME1 look)")
        self._preset = ComboBox(label="preset", choices=self._preset_choices, value=CUSTOM)
        self._keys_hint = Label(label="", value="")
        self._keys_hint.native.setWordWrap(True)
        # the keys shown in the list must not widen the dock (the canvas keeps its room)
        self._preset.native.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self._preset.native.setMinimumContentsLength(24)
        self._quick = ComboBox(label="percentiles", choices=list(QUICK_PERCENTILES), value="1 / 99")
        self._lo_q = FloatSpinBox(label="low %", min=0.0, max=100.0, step=0.01, value=1.0)
        self._hi_q = FloatSpinBox(label="high %", min=0.0, max=100.0, step=0.01, value=99.0)
        self._ignore = CheckBox(text="ignore min/max values")
        self._scope = ComboBox(label="scope", choices=list(SCOPES), value="whole series")
        self._live = CheckBox(text="live (follow the slice)")
        self._apply = PushButton(text="Apply percentile stretch")
        self._hist = Image(label="histogram")
        self._hist.min_width, self._hist.min_height = HIST_SIZE
        self._hist_note = Label(label="", value="")
        self._drag = CheckBox(text="drag on canvas: ↔ width, ↕ level", value=False)
        self._wheel = CheckBox(text="wheel pages slices (Ctrl+wheel zooms)", value=False)
        self._wheel.tooltip = (
            "As in PACS viewers: the mouse wheel on the canvas moves through the slices, one "
            "per notch; Ctrl+wheel zooms about the cursor. Unticked: napari's own wheel "
            "(zoom; Ctrl+wheel pages)."
        )
        self._wheel_progress = 0.0
        self._wheel_saved: list[Any] = []
        self._export_path = FileEdit(
            label="PNG file", mode=FileDialogMode.OPTIONAL_FILE, filter="*.png"
        )
        self._export = PushButton(text="Export PNG stack...")
        self._status = Label(label="status", value="")
        # long messages (file paths) wrap inside the dock instead of widening it
        self._status.native.setWordWrap(True)
        self._status.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                          QSizePolicy.Policy.Preferred)
        self._status.native.setMinimumHeight(2 * self._status.native.fontMetrics().lineSpacing())

        layout = [
            self._layer_combo,
            self._reason,
            self._center,
            self._center_slider,
            self._width,
            self._width_slider,
            self._readout,
            self._function,
            self._invert,
            self._preset,
            self._keys_hint,
            self._quick,
            self._lo_q,
            self._hi_q,
            self._ignore,
            self._scope,
            self._live,
            self._apply,
            self._hist,
            self._hist_note,
            self._drag,
            self._wheel,
            self._export_path,
            self._export,
            self._status,
        ]
        self.extend(layout)
        # what is disabled while no image layer is chosen: everything but the chooser and
        # the read-only labels
        read_only = (self._layer_combo, self._reason, self._readout, self._hist,
                     self._hist_note, self._status, self._keys_hint, self._wheel)
        self._controls = [w for w in layout if all(w is not r for r in read_only)]

        self._layer_combo.changed.connect(self._on_layer_chosen)
        self._center.changed.connect(self._on_center)
        self._center_slider.changed.connect(self._on_center_slider)
        self._width.changed.connect(self._on_width)
        self._width_slider.changed.connect(self._on_width_slider)
        self._function.changed.connect(self._on_function)
        self._invert.changed.connect(self._on_invert)
        self._preset.changed.connect(self._on_preset)
        self._quick.changed.connect(self._on_quick)
        self._apply.changed.connect(self._on_apply_percentile)
        self._scope.changed.connect(self._on_scope)
        self._drag.changed.connect(self._on_drag_toggle)
        self._wheel.changed.connect(self._on_wheel_toggle)
        self._export.changed.connect(self._on_export)

        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.events.moved.connect(self._on_layers_changed)
        viewer.layers.selection.events.active.connect(self._on_active)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.order.connect(self._on_step)  # a roll shows another plane
        for layer in viewer.layers:
            layer.events.name.connect(self._on_layers_changed)

        # the preset keys are bound, and the wheel option acts, while a widget is open (in
        # a dock: napari's close button takes the widget out of its dock, unparented)
        self._lifecycle = _ParentWatch(weakref.ref(self))
        self.native.installEventFilter(self._lifecycle)
        self.native.destroyed.connect(_teardown_callback(weakref.ref(self)))
        self._activate()

        active = viewer.layers.selection.active
        self._refresh_layers(prefer=active if _eligible(active) else None)
        self._refresh_key_hints()

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        old = self._updating
        self._updating = True
        try:
            yield
        finally:
            self._updating = old

    def _say(self, text: str) -> None:
        """Show ``text`` in the status line, two lines at most inside the dock (Qt wraps
        long paths after "/"); a longer one loses its middle to "…", the tooltip holds
        it whole."""
        label = self._status.native
        if label.isVisible():  # its width is known
            room = int(1.8 * label.width())  # two lines, less what wrapping loses
            text_shown = label.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, room)
        else:
            text_shown = text
        self._status.value = text_shown
        label.setToolTip(text)

    @property
    def layer(self) -> ImageLayer | None:
        """The layer the widget acts on (``None`` when there is none)."""
        return self._layer

    @property
    def reason(self) -> str:
        """Why the controls are disabled (empty while a layer is chosen)."""
        return str(self._reason.value)

    @property
    def window(self) -> Window | None:
        """The exact current window of the chosen layer."""
        return self._window

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if _eligible(layer)]

    def _meta(self) -> dict[str, Any]:
        return dicom_meta(self._layer.metadata) if self._layer is not None else {}

    def _stats_for(self, layer: ImageLayer) -> LayerStats:
        key = id(layer)
        st = self._stats.get(key)
        if st is None or st.data is not _layer_array(layer):
            padding = dicom_meta(layer.metadata).get("padding") or []
            st = LayerStats(_layer_array(layer), padding)
            self._stats[key] = st
        return st

    def _plane_index(self) -> list[int | None]:
        """Index of the shown plane in the layer's data: ``None`` on the two data axes
        napari shows, the data index of the slider position on the others.

        The shown axes are the last two of ``viewer.dims.order`` (napari's roll and
        transpose change it), mapped to the layer's axes (a layer's axes are the last
        world axes); the slider position goes through the layer's own world-to-data
        transform (patient-space scale, translate, transposition or affine).
        """
        layer = self._layer
        if layer is None or layer.ndim <= 2:
            return []
        dims = self.viewer.dims
        point = np.asarray(dims.point)[-layer.ndim :]
        data_pt = np.asarray(layer.world_to_data(point))
        offset = dims.ndim - layer.ndim
        shown = [int(a) - offset for a in dims.order[-2:]]
        if any(a < 0 for a in shown):  # a world axis this layer lacks: its own plane
            shown = [layer.ndim - 2, layer.ndim - 1]
        return [None if j in shown else math.floor(v + 0.5) for j, v in enumerate(data_pt)]

    # ------------------------------------------------------------------ layer list

    def _refresh_layers(self, prefer: Any = None) -> None:
        current = self._layer
        with self._guard():
            self._layer_combo.reset_choices()
            layers = [lyr for _, lyr in self._layer_choices()]
            if prefer is not None and prefer in layers:
                target = prefer
            elif current is not None and current in layers:
                target = current
            else:
                active = self.viewer.layers.selection.active
                target = active if active in layers else (layers[-1] if layers else None)
            self._layer_combo.value = target
        if target is not current:
            self._set_layer(target)
        elif target is None:
            self._set_layer(None)

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._on_layers_changed)
        if event is not None and getattr(event, "type", "") == "removed":
            gone = event.value
            with contextlib.suppress(TypeError, ValueError):
                gone.events.name.disconnect(self._on_layers_changed)
            self._stats.pop(id(gone), None)
            self._functions.pop(id(gone), None)
        self._refresh_layers()

    def _on_active(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if _eligible(active) and active is not self._layer:
            self._refresh_layers(prefer=active)

    def _on_layer_chosen(self, value: Any = None) -> None:
        if self._updating:
            return
        self._set_layer(self._layer_combo.value)

    def _set_layer(self, layer: ImageLayer | None) -> None:
        old = self._layer
        if old is not None:
            with contextlib.suppress(TypeError, ValueError):
                old.events.contrast_limits.disconnect(self._on_limits)
                old.events.colormap.disconnect(self._on_colormap)
                old.events.data.disconnect(self._on_data)
            self._stop_drag()
        self._layer = layer
        self._window = None
        enabled = layer is not None
        for w in self._controls:
            w.enabled = enabled
        if layer is None:
            n = len(self.viewer.layers)
            self._reason.value = (
                "No image layer: open a DICOM file or series (File > Open)."
                if n == 0
                else "No grayscale image layer (RGB layers and other layer types have no window)."
            )
            self._reason.visible = True
            self._readout.value = ""
            self._hist_note.value = ""
            self._say("")
            with self._guard():
                self._drag.value = False
                self._invert.value = False
                self._preset.reset_choices()
            # nothing of the previous layer stays on show: blank fields and histogram
            for box in (self._center, self._width):
                box.native.lineEdit().clear()
            self._hist.set_data(np.zeros((HIST_SIZE[1], HIST_SIZE[0], 3), np.uint8))
            return
        self._reason.value = ""
        self._reason.visible = False
        layer.events.contrast_limits.connect(self._on_limits)
        layer.events.colormap.connect(self._on_colormap)
        layer.events.data.connect(self._on_data)
        # a large in-memory volume's histogram is summed behind (the widget shows the
        # current slice until then) rather than blocking the GUI for it
        histogram_behind(_layer_array(layer))
        # asked once: the sum may end at any moment (the scope and the flag must agree)
        lazy = _is_lazy(layer)
        with self._guard():
            self._preset.reset_choices()
            self._preset.value = CUSTOM
            self._invert.value = _is_inverted(layer.colormap.name)
            self._scope.value = "current slice" if lazy else "whole series"
        # a layer still loading starts on its current slice; once its volume is swapped
        # in (_on_data) and its histogram summed (_follow_histogram) it goes to the whole
        # series unless the user chose a scope
        self._scope_for_lazy = lazy
        self._load_from_layer()
        self._follow_histogram(layer)
        if self._drag.value:
            self._start_drag()
        self._say("")

    def _on_data(self, event: Any = None) -> None:
        if self._layer is not None:
            self._stats.pop(id(self._layer), None)
            if (histogram_behind(_layer_array(self._layer)) is not None
                    and self._scope.value == "whole series"):
                # new data whose histogram is being summed: its current slice until then
                self._scope_for_lazy = True
                with self._guard():
                    self._scope.value = "current slice"
            if self._scope_for_lazy and not _is_lazy(self._layer):
                self._scope_for_lazy = False
                with self._guard():
                    self._scope.value = "whole series"
                self._update_ranges()
            self._update_histogram()
            self._follow_histogram(self._layer)

    def _follow_histogram(self, layer: ImageLayer) -> None:
        """A volume just swapped in whose exact histogram the loader is still summing (on
        its thread, ~0.3 s per 1000 planes): the widget does not wait for it (the GUI
        stays responsive) and goes on as for a new volume once it is summed."""
        arr = _layer_array(layer)
        pending = histogram_pending(arr)
        if pending is None:
            if self._scope_for_lazy and not _is_lazy(layer):
                self._on_data()  # summed since _on_data looked: go on now
            return
        from superqt.utils import ensure_main_thread

        me, data = weakref.ref(self), weakref.ref(arr)  # the future outlives neither

        @ensure_main_thread
        def summed(_: Any) -> None:
            widget, done = me(), data()
            if widget is None or done is None or not widget._alive:
                return
            if widget._layer is not None and _layer_array(widget._layer) is done:
                widget._on_data()

        pending.add_done_callback(summed)

    # ------------------------------------------------------------------ state from layer

    def _default_function(self, layer: ImageLayer) -> str:
        if id(layer) in self._functions:
            return self._functions[id(layer)]
        meta = dicom_meta(layer.metadata)
        disp = meta.get("display") or {}
        if disp.get("window"):
            return normalize_function(disp["window"].get("function"))
        if META_KEY in (layer.metadata or {}):
            return normalize_function(meta.get("voi_function"))
        # non-DICOM float data: width = hi - lo in data units reads best
        return "LINEAR_EXACT" if _layer_dtype(layer).kind == "f" else "LINEAR"

    def _load_from_layer(self) -> None:
        layer = self._layer
        if layer is None:
            return
        lo, hi = (float(v) for v in layer.contrast_limits)
        meta = dicom_meta(layer.metadata)
        step = step_from_dict(meta, meta.get("display"))
        window: Window | None = None
        if step is not None and limits_match(step_limits(step), (lo, hi)):
            if step.voi_lut is None:
                window = step.window
            else:
                self._say(
                    f"shown through the file's VOI LUT {step.voi_lut.explanation!r}; "
                    "editing level or width replaces it with a window"
                )
        fn = window.function if window is not None else self._default_function(layer)
        if window is None:
            window = _window_from_limits(lo, hi, fn)
        self._window = window
        self._functions[id(layer)] = window.function
        with self._guard():
            self._function.value = window.function
        self._update_ranges()
        self._show_window()
        self._update_histogram()

    def _update_ranges(self) -> None:
        """Field ranges reach every preset; the centre slider spans the data's own values
        and the width slider is logarithmic, so a slider pixel is a useful step; the
        fields' arrows and mouse wheel step by :func:`core.adjust.nice_step`."""
        layer, w = self._layer, self._window
        if layer is None or w is None:
            return
        r0, r1 = self._value_range(layer)
        span = max(r1 - r0, 1.0)
        lo_c = min(r0 - span / 2, w.center)
        hi_c = max(r1 + span / 2, w.center)
        hi_w = max(2 * span, w.width)
        d0, d1 = self._data_range(layer)
        d_span = max(d1 - d0, 1e-6)
        step = nice_step(d_span, _layer_dtype(layer).kind in "iub")
        w_lo = max(min_width(w.function), d_span / 10_000)
        with self._guard():
            self._center.min, self._center.max = lo_c, hi_c
            c0 = min(d0, w.center)
            self._center_range = (c0, max(d1, w.center, c0 + 1e-6))
            self._width.min, self._width.max = 0.0, hi_w
            self._width_range = (min(w_lo, w.width), hi_w)
            self._center.step = step
            self._width.step = step

    def _data_range(self, layer: ImageLayer) -> tuple[float, float]:
        """The values in the data (Pixel Padding left out; in-memory layers), else napari's
        contrast-limit range (for a lazy DICOM layer the reader sets it to the values the
        pixels can take)."""
        if not _is_lazy(layer):
            with contextlib.suppress(WindowError):
                return self._stats_for(layer).minmax("series")
        r0, r1 = (float(v) for v in layer.contrast_limits_range)
        return r0, r1

    def _value_range(self, layer: ImageLayer) -> tuple[float, float]:
        """Values the fields should reach: napari's contrast-limit range, the data's
        min/max (in-memory layers; lazy ones are not read for this) and, for HU data,
        air to dense bone so every CT preset fits."""
        r0, r1 = (float(v) for v in layer.contrast_limits_range)
        if not _is_lazy(layer):
            with contextlib.suppress(WindowError):
                d0, d1 = self._stats_for(layer).minmax("series")
                r0, r1 = min(r0, d0), max(r1, d1)
        if is_ct_like(dicom_meta(layer.metadata)):
            r0, r1 = min(r0, -1024.0), max(r1, 3071.0)
        return r0, r1

    def _show_window(self) -> None:
        """Put the exact window into the fields (rounded by the widgets), readout, preset."""
        w = self._window
        if w is None:
            return
        with self._guard():
            if not (self._center.min <= w.center <= self._center.max) or w.width > self._width.max:
                self._update_ranges()
            self._center.value = w.center
            self._center_slider.value = center_to_slider(w.center, *self._center_range)
            self._width.value = w.width
            self._width_slider.value = width_to_slider(w.width, *self._width_range)
            self._readout.value = w.label() + ("" if w.function == "LINEAR" else f" ({w.function})")
            # name the window when it is a preset (stored windows come first), e.g. the
            # file's "SOFT TISSUE (file)" right after opening; otherwise "(custom)"
            windows = self._preset_windows()

            def same(p: Window) -> bool:
                return (p.center, p.width, p.function) == (w.center, w.width, w.function)

            chosen = windows.get(self._preset.value)
            if chosen is None or not same(chosen):
                self._preset.value = next(
                    (label for label, p in windows.items() if same(p)), CUSTOM
                )

    # ------------------------------------------------------------------ applying a window

    def _apply_window(
        self, window: Window | None, voi_lut: int | None = None, invert: bool | None = None
    ) -> None:
        """Show ``window`` (or the file's VOI LUT item ``voi_lut``) on the layer."""
        layer = self._layer
        if layer is None:
            return
        inv = self._invert.value if invert is None else invert
        meta = dicom_meta(layer.metadata)
        if voi_lut is not None:
            lut = file_voi_luts(meta)[voi_lut]
            lo, hi = lut.input_range()
            display = Display(Window.from_limits(lo, max(hi, lo), "LINEAR"), voi_lut=lut)
            entry: dict[str, Any] = {"window": None, "voi_lut": voi_lut}
        elif window is not None:
            display = Display(window)
            entry = {"window": window.to_dict(), "voi_lut": None}
        else:
            return
        kwargs = layer_display_kwargs(display, inv)
        with self._guard():
            layer.colormap = kwargs["colormap"]
            layer.contrast_limits = kwargs["contrast_limits"]
            self._invert.value = inv
        self._store_display(entry, display)
        if window is not None and voi_lut is None:
            self._window = window
            self._functions[id(layer)] = window.function
            with self._guard():
                self._function.value = window.function
        else:
            self._window = _window_from_limits(*step_limits(display), "LINEAR")
        self._show_window()
        self._update_histogram()
        self._say("")

    def _store_display(self, entry: dict[str, Any], display: Display) -> None:
        """Record the VOI step in ``metadata["dicom"]["display"]`` so File > Save exports it.

        DICOM layers always get the entry; other layers only need it for a step that
        napari's linear limits cannot show alone (SIGMOID) or that names its function.
        """
        layer = self._layer
        if layer is None:
            return
        md = layer.metadata
        if META_KEY in md:
            md[META_KEY]["display"] = entry
        elif display.voi_lut is not None or display.window.function != "LINEAR":
            md[META_KEY] = {"display": entry}

    def _set_center_width(self, center: float, width: float) -> None:
        fn = self._functions.get(id(self._layer), "LINEAR") if self._layer else "LINEAR"
        try:
            window = Window(center, width, normalize_function(fn), "")
        except WindowError as err:
            self._say(f"refused: {err}")
            self._show_window()  # put the fields back to what the layer shows
            return
        self._apply_window(window)

    # ------------------------------------------------------------------ control handlers

    def _on_center(self, value: float) -> None:
        if self._updating or self._window is None:
            return
        self._set_center_width(float(value), self._window.width)

    def _on_center_slider(self, value: int) -> None:
        if self._updating or self._window is None:
            return
        self._set_center_width(slider_to_center(value, *self._center_range),
                               self._window.width)

    def _on_width(self, value: float) -> None:
        if self._updating or self._window is None:
            return
        self._set_center_width(self._window.center, float(value))

    def _on_width_slider(self, value: int) -> None:
        if self._updating or self._window is None:
            return
        self._set_center_width(self._window.center, slider_to_width(value, *self._width_range))

    def _on_function(self, value: str) -> None:
        if self._updating or self._layer is None or self._window is None:
            return
        fn = normalize_function(value)
        w = self._window
        try:
            window = Window(w.center, w.width, fn, w.explanation)
        except WindowError as err:
            self._say(f"refused: {err}")
            with self._guard():
                self._function.value = w.function
            return
        self._apply_window(window)

    def _on_invert(self, value: bool) -> None:
        if self._updating or self._layer is None:
            return
        meta = self._meta()
        disp = meta.get("display") or {}
        if disp.get("voi_lut") is not None and limits_match(
            tuple(self._layer.contrast_limits), _lut_limits(meta, disp["voi_lut"])
        ):
            self._apply_window(self._window, voi_lut=int(disp["voi_lut"]), invert=bool(value))
        elif self._window is not None:
            self._apply_window(self._window, invert=bool(value))

    def _on_colormap(self, event: Any = None) -> None:
        if self._updating or self._layer is None:
            return
        with self._guard():
            self._invert.value = _is_inverted(self._layer.colormap.name)
        self._update_histogram()

    def _on_limits(self, event: Any = None) -> None:
        """The layer's contrast limits changed outside the widget: follow them."""
        if self._updating or self._layer is None:
            return
        layer = self._layer
        lo, hi = (float(v) for v in layer.contrast_limits)
        fn = self._functions.get(id(layer), "LINEAR")
        window = _window_from_limits(lo, hi, fn)
        if window.function != fn:
            self._say(
                f"limits {lo:g}..{hi:g} are shown as a LINEAR window ({fn} needs a width > 0)"
            )
        self._window = window
        self._functions[id(layer)] = window.function
        with self._guard():
            self._function.value = window.function
        display = Display(window)
        if META_KEY in layer.metadata or window.function != "LINEAR":
            self._store_display({"window": window.to_dict(), "voi_lut": None}, display)
        if window.function == "SIGMOID":
            with self._guard():
                layer.colormap = layer_display_kwargs(display, self._invert.value)["colormap"]
        self._show_window()
        self._update_histogram()

    # presets ---------------------------------------------------------------------------

    def _preset_windows(self) -> dict[str, Window]:
        """Label -> window for the stored-window and CT entries of the preset chooser."""
        out: dict[str, Window] = {}
        meta = self._meta()
        for label, w in file_presets(meta):
            out[label] = w
        if is_ct_like(meta):
            for w in CT_PRESETS.values():
                out[f"CT {w.explanation}: {w.label()}"] = w
        return out

    def _preset_entries(self) -> list[str]:
        """The presets of the chosen layer in list order, without "(custom)" and reset."""
        if self._layer is None:
            return []
        meta = self._meta()
        entries = [*self._preset_windows()]
        for i, lut in enumerate(file_voi_luts(meta), start=1):
            entries.append(_lut_label(i, lut.explanation))
        entries.append(MINMAX)
        return entries

    def _preset_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        """(shown text, value) pairs: each keyed preset shows its key, e.g. "Ctrl+2"."""
        if self._layer is None:
            return [(CUSTOM, CUSTOM)]
        keys = {entry: key_text(n) for n, entry in numbered(self._preset_entries()).items()}
        choices = [(CUSTOM, CUSTOM)]
        for entry in self._preset_entries():
            key = keys.get(entry, "")
            choices.append((f"{entry}    [{key}]" if key else entry, entry))
        if self._meta().get("default"):
            key = key_text(0)
            choices.append((f"{RESET}    [{key}]" if key else RESET, RESET))
        return choices

    def _refresh_key_hints(self) -> None:
        """The key hint line and tooltip, from the shortcuts napari has bound now."""
        first, last, zero = key_text(1), key_text(KEYED_PRESETS), key_text(0)
        parts = []
        if first:
            parts.append(f"{first} … {last} presets" if last else f"{first} preset 1")
        if zero:
            parts.append(f"{zero} file default")
        self._keys_hint.value = "keys: " + " · ".join(parts) if parts else ""
        self._preset.tooltip = (
            "Number keys apply the first presets of this list in order; "
            + (", ".join(parts) if parts else "no keys bound")
            + ". They act on the selected image layer while this widget is open; "
            "napari lists them under Preferences > Shortcuts, group 'Image layer'."
        )
        if self._layer is not None:
            with self._guard():
                value = self._preset.value
                self._preset.reset_choices()
                if value in self._preset.choices:
                    self._preset.value = value

    def press_key(self, number: int, layer: Any) -> None:
        """Number key ``number`` pressed with ``layer`` selected: its preset (0: the file
        default) on that layer, when the widget can window it."""
        if not _eligible(layer):
            return
        if layer is not self._layer:
            self._refresh_layers(prefer=layer)
        if number == 0:
            if RESET not in self._preset.choices:
                self._say("no file default: the layer is not from a DICOM file")
                return
            self._on_preset(RESET)
            self._say(f"{key_text(0)}: {RESET}")
            return
        entry = numbered(self._preset_entries()).get(number)
        if entry is None:
            self._say(f"no preset {number} for this layer")
            return
        self._on_preset(entry)
        self._say(f"{key_text(number)}: {entry}")

    def _on_preset(self, value: str) -> None:
        if self._updating or self._layer is None or value in (None, CUSTOM):
            return
        meta = self._meta()
        windows = self._preset_windows()
        try:
            if value in windows:
                w = windows[value]
                self._apply_window(w)
            elif value == MINMAX:
                self._apply_minmax()
            elif value == RESET:
                self._apply_file_default()
            else:
                luts = file_voi_luts(meta)
                for i, lut in enumerate(luts, start=1):
                    if value == _lut_label(i, lut.explanation):
                        self._apply_window(self._window, voi_lut=i - 1)
                        break
        except WindowError as err:
            self._say(f"refused: {err}")
            return
        with self._guard():
            self._preset.value = value

    def _apply_minmax(self) -> None:
        layer = self._layer
        assert layer is not None
        st = self._stats_for(layer)
        scope = SCOPES[self._scope.value]
        lo, hi = st.minmax(scope, self._plane_index())
        fn = self._functions.get(id(layer), "LINEAR")
        window = _window_from_limits(lo, hi, fn)
        self._apply_window(replace_explanation(window, MINMAX))

    def _apply_file_default(self) -> None:
        layer = self._layer
        assert layer is not None
        meta = self._meta()
        default = meta.get("default") or {}
        invert = bool(meta.get("invert", False))
        if default.get("voi_lut") is not None:
            self._apply_window(self._window, voi_lut=int(default["voi_lut"]), invert=invert)
            return
        if default.get("window"):
            self._apply_window(Window.from_dict(default["window"]), invert=invert)
            return
        with self._guard():
            self._invert.value = invert
        self._apply_minmax()

    # percentiles -------------------------------------------------------------------------

    def _on_quick(self, value: str) -> None:
        lo, hi = QUICK_PERCENTILES[value]
        with self._guard():
            self._lo_q.value, self._hi_q.value = lo, hi

    def _on_apply_percentile(self, _value: Any = None) -> None:
        layer = self._layer
        if layer is None:
            return
        lo_q, hi_q = float(self._lo_q.value), float(self._hi_q.value)
        scope = SCOPES[self._scope.value]
        try:
            st = self._stats_for(layer)
            lo, hi = st.percentile_limits(
                lo_q, hi_q, bool(self._ignore.value), scope, self._plane_index()
            )
            fn = self._functions.get(id(layer), "LINEAR")
            window = _window_from_limits(lo, hi, fn)
        except WindowError as err:
            self._say(f"refused: {err}")
            return
        self._apply_window(replace_explanation(window, f"P{lo_q:g}-P{hi_q:g}"))
        method = "exact" if scope == "slice" else st.method
        self._say(f"percentiles {lo_q:g} / {hi_q:g} of the {self._scope.value} ({method})")

    def _on_scope(self, value: Any = None) -> None:
        if not self._updating:
            self._scope_for_lazy = False  # the user's choice stays
        self._update_histogram()

    def _on_step(self, event: Any = None) -> None:
        if self._layer is None or SCOPES[self._scope.value] != "slice":
            return
        if self._live.value:
            self._on_apply_percentile()
        else:
            self._update_histogram()

    # histogram ---------------------------------------------------------------------------

    def _update_histogram(self) -> None:
        layer = self._layer
        if layer is None:
            return
        scope = SCOPES[self._scope.value]
        try:
            st = self._stats_for(layer)
            edges, counts = st.histogram(256, scope, self._plane_index())
        except WindowError as err:
            self._hist_note.value = f"no histogram: {err}"
            return
        img = histogram_image(
            edges,
            counts,
            tuple(float(v) for v in layer.contrast_limits),  # type: ignore[arg-type]
            width=HIST_SIZE[0],
            height=HIST_SIZE[1],
            invert=_is_inverted(layer.colormap.name),
        )
        self._hist.set_data(img)
        self._hist_note.value = f"{scope}: {edges[0]:g} .. {edges[-1]:g} (log counts)"

    # mouse drag --------------------------------------------------------------------------

    def _on_drag_toggle(self, value: bool) -> None:
        if value:
            self._start_drag()
        else:
            self._stop_drag()

    def _start_drag(self) -> None:
        layer = self._layer
        if layer is None or self._drag_layer is layer:
            return
        self._stop_drag()
        layer.mouse_drag_callbacks.append(self.drag_window)
        self._drag_saved_pan = layer.mouse_pan
        layer.mouse_pan = False  # napari 0.9: the camera follows the active layer's flag
        self._drag_layer = layer
        self.viewer.layers.selection.active = layer
        self._say(DRAG_HINT)

    def _stop_drag(self) -> None:
        layer = self._drag_layer
        if layer is None:
            return
        if self.drag_window in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self.drag_window)
        if self._drag_saved_pan is not None:
            layer.mouse_pan = self._drag_saved_pan
        self._drag_layer = None
        self._drag_saved_pan = None
        if self._status.value == DRAG_HINT:
            self._say("")

    def drag_window(self, layer: Any, event: Any) -> Iterator[None]:
        """Mouse drag callback: right/left widens/narrows, up/down raises/lowers the level.

        Scaled to the data (:func:`core.adjust.drag_per_pixel`: a 300-pixel drag spans 30 %
        of the data's values); the window follows from where the drag started.
        """
        if self._window is None or layer is not self._layer:
            return
        start = np.asarray(event.pos, dtype=float)[:2]
        w0 = self._window
        per_px = drag_per_pixel(*self._data_range(layer))
        yield
        while event.type == "mouse_move":
            dx, dy = np.asarray(event.pos, dtype=float)[:2] - start
            window = drag_window(w0, float(dx), float(dy), per_px)
            self._set_center_width(window.center, window.width)
            yield

    # open / closed -----------------------------------------------------------------------

    def _activate(self) -> None:
        _LIVE.add(self)
        _bind_keys()  # idempotent: napari's action manager skips a shortcut already bound
        if self._wheel.value:
            self._start_wheel()

    def _deactivate(self) -> None:
        self._stop_wheel()
        _LIVE.discard(self)
        if not _LIVE:
            _unbind_keys()

    # mouse wheel -------------------------------------------------------------------------

    def _on_wheel_toggle(self, value: bool) -> None:
        if value:
            self._start_wheel()
        else:
            self._stop_wheel()

    def _start_wheel(self) -> None:
        callbacks = self.viewer.mouse_wheel_callbacks
        if self.wheel_page in callbacks:
            return
        # napari's own Ctrl+wheel slice scrolling steps aside while ours pages: Ctrl+wheel
        # zooms instead (put back by _stop_wheel)
        self._wheel_saved = [cb for cb in callbacks if getattr(cb, "__name__", "") == "dims_scroll"]
        for cb in self._wheel_saved:
            callbacks.remove(cb)
        callbacks.insert(0, self.wheel_page)
        self._wheel_progress = 0.0

    def _stop_wheel(self) -> None:
        callbacks = self.viewer.mouse_wheel_callbacks
        if self.wheel_page in callbacks:
            callbacks.remove(self.wheel_page)
        for cb in self._wheel_saved:
            if cb not in callbacks:
                callbacks.insert(0, cb)
        self._wheel_saved = []

    def wheel_page(self, viewer: Any, event: Any) -> None:
        """Viewer mouse-wheel callback while "wheel pages slices" is ticked: the wheel moves
        the slice slider one step per notch, Ctrl+wheel zooms about the cursor (2-D view;
        the 3-D view keeps napari's wheel)."""
        dims = viewer.dims
        if dims.ndisplay != 2:
            return
        delta = float(event.delta[1])
        if "Control" in event.modifiers:
            displayed = list(dims.displayed)
            center = list(viewer.scene.camera.center)[-2:]
            cursor = [float(event.position[a]) for a in displayed]
            zoom, new_center = wheel_zoom(viewer.scene.camera.zoom, center, cursor, delta)
            viewer.scene.camera.zoom = zoom
            viewer.scene.camera.center = (*list(viewer.scene.camera.center)[:-2], *new_center)
            event.handled = True
            return
        if event.modifiers or not dims.not_displayed:
            return  # Alt+wheel: napari's layer scrolling; Shift: left alone
        steps, self._wheel_progress = wheel_pages(
            self._wheel_progress, delta, bool(event.native.inverted())
        )
        event.handled = True  # no zoom
        if steps:
            axis = dims.last_used
            if axis not in dims.not_displayed:
                axis = dims.not_displayed[-1]
            step = min(max(dims.current_step[axis] + steps, 0), dims.nsteps[axis] - 1)
            dims.set_current_step(axis, step)

    # export ------------------------------------------------------------------------------

    def _on_export(self, _value: Any = None) -> None:
        layer = self._layer
        if layer is None:
            return
        path = self._export_path.value
        if path is None or str(path) in ("", "."):
            # no name yet: ask for one, as File > Save does
            from magicgui.application import use_app

            chosen = use_app().get_obj("show_file_dialog")(
                FileDialogMode.OPTIONAL_FILE, f"Export {layer.name} as PNG", None,
                "*.png", self.native,
            )
            if not chosen:
                self._say("export cancelled")
                return
            self._export_path.value = chosen
            path = chosen
        path = Path(str(path))
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        from napari.utils import progress

        from ._writer import export_layer

        try:
            with progress(total=0, desc=f"Exporting {layer.name}") as pbar:
                written = export_layer(layer, str(path), progress=_progress_callback(pbar))
        except (OSError, ValueError) as err:
            self._say(f"export failed: {err}")
            return
        pngs = [f for f in written if str(f).lower().endswith(".png")]  # not manifest.csv
        first = pngs[0] if pngs else str(path)
        msg = f"wrote {len(pngs)} PNG file(s): {first}" + (" ..." if len(pngs) > 1 else "")
        self._say(msg)
        show_info(msg)


# ---------------------------------------------------------------------------------------


class _ParentWatch(QObject):
    """Tells the widget when napari docks it (a parent) or closes its dock (none)."""

    def __init__(self, ref: weakref.ref[WindowLevelWidget]) -> None:
        super().__init__()
        self._ref = ref

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            widget = self._ref()
            if widget is not None:
                if obj.parent() is None:
                    widget._deactivate()
                else:
                    widget._activate()
        return False


def _teardown_callback(ref: weakref.ref[WindowLevelWidget]) -> Any:
    """What to do when the widget's Qt side is destroyed (viewer closed): its wheel
    callback leaves the viewer, and the keys go when no widget is left."""

    def gone(*_: Any) -> None:
        widget = ref()
        if widget is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                widget._stop_wheel()
            _LIVE.discard(widget)
        if not _LIVE:
            _unbind_keys()

    return gone


def replace_explanation(window: Window, explanation: str) -> Window:
    return Window(window.center, window.width, window.function, explanation)


def _window_from_limits(lo: float, hi: float, function: str) -> Window:
    """The window shown by limits ``(lo, hi)`` with ``function``; LINEAR when the function
    cannot show them (zero width)."""
    try:
        return Window.from_limits(lo, hi, function)
    except WindowError:
        return Window.from_limits(lo, hi, "LINEAR")


def _is_inverted(name: str) -> bool:
    n = (name or "").lower()
    return n in GREY_R or n.endswith(CURVE_SUFFIX_R.lower())


def _lut_label(i: int, explanation: str) -> str:
    return f"VOI LUT {i}{': ' + explanation if explanation else ''} (file)"


def _lut_limits(meta: dict[str, Any], i: int) -> tuple[float, float]:
    luts = file_voi_luts(meta)
    lut = luts[int(i)]
    lo, hi = lut.input_range()
    return float(lo), float(max(hi, lo + 1))


def _layer_array(layer: Any) -> Any:
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _layer_dtype(layer: Any) -> np.dtype[Any]:
    dt: np.dtype[Any] = np.dtype(_layer_array(layer).dtype)
    return dt


def _is_lazy(layer: Any) -> bool:
    """Whether the layer's whole-series statistics are not at hand: a volume still
    loading, or one whose exact histogram the loader is still summing."""
    arr = _layer_array(layer)
    return not isinstance(arr, np.ndarray) or histogram_pending(arr) is not None


def _progress_callback(pbar: Any) -> Any:
    """Adapter from ``progress(done, total)`` calls to a napari progress bar."""

    def update(done: int, total: int | None = None, *_: Any) -> None:
        if total is not None and pbar.total != total:
            pbar.total = total
        pbar.n = int(done)
        pbar.refresh()

    return update


__all__: Sequence[str] = ["WindowLevelWidget"]
