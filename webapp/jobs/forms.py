"""The job form, generated from the parameter tree's field metadata (``leaf_specs``).

Each leaf becomes one field named ``group__name``, laid out by group (``GROUP_TITLES``) with its unit and hint;
advanced leaves are folded. Validation is the parameter object's own: its ``ParameterError.problems`` become
inline errors on the fields they name. A pasted original command string replaces the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms

from reconstruction import ParameterError, Parameters
from reconstruction.parameters import GROUP_TITLES, FieldSpec, input_specs
from reconstruction.parameters.cmdstr import MAX_CMDSTR_CHARS
from reconstruction.parameters.model import ENERGY_PATH, MAX_REPORTED_PROBLEMS, WAVELENGTH_PATH
from webapp.scans.paths import check_submission

from .memory import check_at_submit
from .uploads import UPLOADABLE, UploadRejected, UploadStorageFull, discard_upload, save_upload


def field_name(path: str) -> str:
    return path.replace(".", "__")


def display_value(value: Any) -> str:
    """A leaf value as the text a user types (pairs as "a, b"; floats without losing digits)."""
    if isinstance(value, tuple | list):
        return ", ".join(display_value(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _form_field(spec: FieldSpec) -> forms.Field:
    attrs = {"title": spec.hint, "aria-describedby": f"hint-{field_name(spec.path)}"}
    if spec.kind == "bool":
        return forms.BooleanField(required=False, label=spec.label, widget=forms.CheckboxInput(attrs=attrs))
    if spec.kind == "choice" and spec.open_prefix:  # a choice or any text with the prefix (e.g. pva://<PV>)
        attrs["placeholder"] = " | ".join(spec.choices) + f" | {spec.open_prefix}..."
        attrs["spellcheck"] = "false"
        return forms.CharField(required=False, label=spec.label, strip=True, widget=forms.TextInput(attrs=attrs))
    if spec.kind == "choice":
        return forms.ChoiceField(choices=[(c, c) for c in spec.choices], label=spec.label, required=False,
                                 widget=forms.Select(attrs=attrs))
    if spec.kind in ("int", "float", "pair_int", "pair_float"):
        attrs["inputmode"] = "decimal"
        attrs["spellcheck"] = "false"
    return forms.CharField(required=False, label=spec.label, strip=True,
                           widget=forms.TextInput(attrs=attrs))


class RawCheckboxInput(forms.CheckboxInput):
    """A checkbox that hands the field the raw submitted text (Django's turns any text into True)."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        return data.get(name) if name in data else False


class StrictBooleanField(forms.BooleanField):
    """A checkbox that accepts only what a checkbox or a script sends for yes/no ("on", "1", "true" / absent,
    "", "0", "false", "off"); anything else is an error naming the value instead of counting as ticked."""

    TRUE = {"on", "1", "true", "yes"}
    FALSE = {"", "0", "false", "off", "no"}

    widget = RawCheckboxInput

    def to_python(self, value: Any) -> bool:
        if isinstance(value, bool) or value is None:
            return bool(value)
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError(f"{str(value)[:40]!r} is not a yes/no value: send on, 1 or true (or nothing)")


def upload_name(path: str) -> str:
    return field_name(path) + "__upload"


@dataclass
class FieldRow:
    field: Any  # BoundField
    spec: FieldSpec
    upload: Any = None  # BoundField of the file input, for parameters that name one file


@dataclass
class FieldGroup:
    name: str
    title: str
    basic: list[FieldRow]
    advanced: list[FieldRow]

    @property
    def has_advanced_errors(self) -> bool:
        return any(row.field.errors for row in self.advanced)


class JobForm(forms.Form):
    """Submit a reconstruction: parameter fields, or an original command string pasted in."""

    label = forms.CharField(required=False, max_length=200, label="Label",
                            help_text="A name for the history, e.g. the sample or scan number.")
    cmdstr = forms.CharField(
        required=False, label="Original command string", max_length=MAX_CMDSTR_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false",
                                     "placeholder": "./ptycho -jobID=scan152 -algorithm=ePIE -fp=... -i=100"}),
        help_text="Paste a command string of the original ptychopy; when given it replaces the fields below.",
    )
    notify_email = StrictBooleanField(required=False, label="E-mail me when it finishes")

    def __init__(self, *args: Any, base: Parameters | None = None, username: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.specs = input_specs()  # the leaves and -energy, which the tree turns into the wavelength
        self.username = username
        self.storage_full = False  # an upload met a full uploads disk (the view answers 507)
        base = base or Parameters()
        for spec in self.specs:
            name = field_name(spec.path)
            self.fields[name] = _form_field(spec)
            if spec.path in UPLOADABLE:
                self.fields[upload_name(spec.path)] = forms.FileField(
                    required=False, label=f"or upload {spec.label.lower()}",
                    widget=forms.ClearableFileInput(attrs={"aria-label": f"Upload {spec.label.lower()}"}))
            if spec.path == ENERGY_PATH:  # an input only: the wavelength field shows the stored value
                continue
            value = base.get(spec.path)
            self.initial.setdefault(name, value if spec.kind in ("bool", "choice") else display_value(value))
        self.parameters: Parameters | None = None

    def groups(self) -> list[FieldGroup]:
        out: dict[str, FieldGroup] = {}
        for spec in self.specs:
            group = out.setdefault(spec.group, FieldGroup(spec.group, GROUP_TITLES.get(spec.group, spec.group),
                                                          [], []))
            upload = self[upload_name(spec.path)] if spec.path in UPLOADABLE else None
            row = FieldRow(self[field_name(spec.path)], spec, upload)
            (group.advanced if spec.advanced else group.basic).append(row)
        return list(out.values())

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        cmdstr = (cleaned.get("cmdstr") or "").strip()
        uploaded = self._save_uploads(cleaned)
        if uploaded is None:
            return cleaned
        try:
            # a field left blank takes the parameter's default
            params = Parameters.from_cmdstr(cmdstr) if cmdstr else Parameters.from_dict(self._field_values(cleaned))
            self.parameters = check_submission(params.replace(uploaded) if uploaded else params)
            check_at_submit(self.parameters)  # an oversized run is refused here, not OOM-killed on a worker
        except ParameterError as exc:
            for problem in exc.problems[:MAX_REPORTED_PROBLEMS]:
                target = "cmdstr" if cmdstr else (field_name(problem.path) if problem.path else None)
                self.add_error(target, problem.message)
            if len(exc.problems) > MAX_REPORTED_PROBLEMS:
                self.add_error("cmdstr" if cmdstr else None,
                               f"... and {len(exc.problems) - MAX_REPORTED_PROBLEMS} more problems")
            for stored in uploaded.values():  # a rejected form keeps none of its uploads
                discard_upload(stored)
        return cleaned

    def _field_values(self, cleaned: dict[str, Any]) -> dict[str, Any]:
        """``{path: typed text}`` of the filled fields (a blank one takes the default). An energy typed over an
        untouched wavelength field replaces it; a wavelength the user changed too must agree with it."""
        values = {spec.path: value for spec in self.specs
                  if (value := cleaned.get(field_name(spec.path))) not in ("", None)}
        if ENERGY_PATH in values and field_name(WAVELENGTH_PATH) not in self.changed_data:
            values.pop(WAVELENGTH_PATH, None)
        return values

    def _save_uploads(self, cleaned: dict[str, Any]) -> dict[str, str] | None:
        """``{parameter path: stored file}`` for each uploaded file; None when one was refused."""
        saved: dict[str, str] = {}
        for path in UPLOADABLE:
            upload = cleaned.get(upload_name(path))
            if not upload:
                continue
            try:
                saved[path] = str(save_upload(upload, self.username))
            except UploadRejected as exc:
                self.add_error(upload_name(path), str(exc))
                self.storage_full = isinstance(exc, UploadStorageFull)
                for stored in saved.values():
                    discard_upload(stored)
                return None
        return saved
