"""Bridge configuration: a TOML file, overridable from the environment.

Environment overrides use ``EPICS_BRIDGE__<SECTION>__<KEY>=<value>`` (the value is read as a TOML value when it
parses, else as text), e.g. ``EPICS_BRIDGE__BRIDGE__PV_PREFIX=2idd:``. PV names may contain ``$(P)``, replaced
by ``bridge.pv_prefix``. Relative file paths are relative to the config file. See ``docs/epics_bridge.md``.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ptychopy.pva_buffer import LOOPBACK_CLIENTS, buffer_pv_name, is_loopback_host, parse_clients, parse_host_port
from ptychopy.pva_source import parse_address
from reconstruction import ParameterError, Parameters
from reconstruction.live import LiveSourceError

log = logging.getLogger(__name__)

ENV_PREFIX = "EPICS_BRIDGE__"
TRIGGER_KINDS = ("sscan", "areadetector", "eiger", "filename", "bluesky", "pva_frames")
PVA_SCHEME = "pva://"  # a PV name starting with this is monitored over pvAccess (p4p), any other over CA
# with the pva_frames trigger: the values it derives from the detector's frames go by "frames://IMAGE#FIELD" (not
# monitored: epics_bridge.frames posts them)
FRAMES_SCHEME = "frames://"
FRAMES_FIELDS = ("scan", "planned", "frames", "how", "busy")  # the busy one last: its edges start and end a scan
DEFAULT_IDLE_S = 5.0  # [trigger] idle_s of pva_frames: no frame for this long ends a scan (without its status PV)
DOCUMENT_KEY = "start:"  # with the bluesky trigger: a key of the run's start document, not a PV
STOP_KEY = "stop:"  # ... and of its stop document
SERIALIZERS = ("pickle", "msgpack", "json")
SUBMIT_KINDS = ("django", "http", "callable")
# Sane ranges of the parameters that metadata PVs fill (SI units); a value outside holds the scan (see
# MetadataConfig.hold). Override or add any "group.name" in [metadata.ranges].
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "experiment.wavelength_m": (5e-12, 1.3e-8),  # about 0.1 to 250 keV
    "experiment.detector_distance_m": (0.01, 200.0),
    "experiment.step_m": (1e-11, 1e-2),
    "experiment.scan_dims": (1, 100_000),
}


class ConfigError(ValueError):
    """The configuration is wrong; the message names the file, section and key."""


@dataclass(frozen=True)
class PvSource:
    """A PV whose numeric value times ``scale`` gives a value in the target unit."""

    pv: str
    scale: float = 1.0


@dataclass(frozen=True)
class TriggerConfig:
    """Which PVs say a scan is over, and how to tell a finished scan from an aborted one."""

    kind: str
    busy_pv: str = ""  # sscan: outermost record's BUSY
    message_pv: str = ""  # sscan: SMSG
    current_point_pv: str = ""  # sscan: CPT (optional)
    points_pv: str = ""  # sscan: NPTS (optional)
    abort_patterns: tuple[str, ...] = ("abort", "abandon", "error", "fail")
    capture_pv: str = ""  # areaDetector: Capture_RBV
    num_captured_pv: str = ""
    num_capture_pv: str = ""
    write_status_pv: str = ""
    write_message_pv: str = ""
    full_file_name_pv: str = ""  # areaDetector: FullFileName_RBV, the capture's file (set when it is opened)
    file_name_pv: str = ""  # filename kind: a PV updated with each completed file
    # eiger: ADEiger's detector driver with its FileWriter (the DCU writes the files)
    acquire_pv: str = ""  # cam1:Acquire_RBV (1 while acquiring)
    images_counter_pv: str = ""  # cam1:NumImagesCounter_RBV
    num_images_pv: str = ""  # cam1:NumImages_RBV (per trigger)
    num_triggers_pv: str = ""  # cam1:NumTriggers_RBV
    fw_enable_pv: str = ""  # cam1:FWEnable_RBV
    fw_name_pattern_pv: str = ""  # cam1:FWNamePattern_RBV ("$id" = the sequence id)
    sequence_id_pv: str = ""  # cam1:SequenceId (set when the detector is armed)
    file_path_pv: str = ""  # cam1:FilePath_RBV
    # bluesky: run documents from a 0MQ proxy (bluesky.callbacks.zmq.Proxy)
    zmq_address: str = ""  # the proxy's out (subscriber) address, "127.0.0.1:5578"
    zmq_prefix: str = ""  # the Publisher's prefix (b"" by default)
    serializer: str = "pickle"  # the Publisher's serializer: pickle (bluesky's default), msgpack, json
    stream: str = "primary"  # the stream whose num_events counts the scan points
    expected_events_key: str = "num_points"  # start-document key with the number of points the plan takes
    # pva_frames: a scan is the detector's frames over pvAccess (epics_bridge.frames): its first frame starts it
    frames_source: str = ""  # the pva:// address of the image PV (and its status=, planned=), as -liveSource reads
    idle_s: float = DEFAULT_IDLE_S  # no frame for this long ends the scan (and the next frame starts the next)

    def frames_pv(self, name: str) -> str:
        """The name of the value ``name`` (one of :data:`FRAMES_FIELDS`) the pva_frames trigger derives."""
        image = self.frames_source[len(PVA_SCHEME):].partition("?")[0]
        return f"{FRAMES_SCHEME}{image}#{name}"

    @property
    def document_source(self) -> str:
        """The name the bluesky trigger's document stream goes by (state, connection events)."""
        return f"zmq://{self.zmq_address}" if self.kind == "bluesky" else ""

    @property
    def pvs(self) -> tuple[str, ...]:
        names = (self.busy_pv, self.message_pv, self.current_point_pv, self.points_pv, self.capture_pv,
                 self.num_captured_pv, self.num_capture_pv, self.write_status_pv, self.write_message_pv,
                 self.full_file_name_pv, self.file_name_pv, self.acquire_pv, self.images_counter_pv,
                 self.num_images_pv, self.num_triggers_pv, self.fw_enable_pv, self.fw_name_pattern_pv,
                 self.sequence_id_pv, self.file_path_pv, self.document_source)
        frames = tuple(self.frames_pv(f) for f in FRAMES_FIELDS) if self.kind == "pva_frames" else ()
        return tuple(n for n in names if n) + frames


@dataclass(frozen=True)
class DataField:
    """A file-pattern field taken from a PV at the end of the scan; ``offset`` is added to a numeric value
    (``-1`` for areaDetector's FileNumber, which auto-increments when a file is opened)."""

    pv: str
    offset: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the scan's data files are: PVs for directory, name and scan number, and a file-name template.

    ``file_pattern`` is formatted with ``{path}``, ``{name}``, ``{scan_number}`` (format specs allowed) and,
    for the file-name trigger, ``{file}``, ``{file_dir}``, ``{file_name}``, ``{file_stem}``; ``#`` then stands
    for printf's ``%`` as in the original (``#06d``).
    """

    path_pv: str = ""
    name_pv: str = ""
    scan_number_pv: str = ""
    file_pattern: str = "{path}/{name}_data_#06d.h5"
    path_map: Mapping[str, str] = field(default_factory=dict)  # IOC path prefix -> path as the bridge/workers see it
    # added to the scan number PV's value: -1 for synApps saveData, whose saveData_scanNumber already holds the
    # next scan's number once a scan has started
    scan_number_offset: int = 0
    fields: Mapping[str, DataField] = field(default_factory=dict)  # more file-pattern fields, each from a PV

    @property
    def pvs(self) -> tuple[str, ...]:
        names = (self.path_pv, self.name_pv, self.scan_number_pv, *(f.pv for f in self.fields.values()))
        return tuple(n for n in names if n)


@dataclass(frozen=True)
class MetadataConfig:
    """Optional PVs that fill parameters: energy (keV), scan dimensions (rows, cols), step, detector distance."""

    energy_kev: PvSource | None = None
    scan_dims: tuple[PvSource, PvSource] | None = None
    step_m: tuple[PvSource, PvSource] | None = None
    detector_distance_m: PvSource | None = None
    parameters: Mapping[str, PvSource] = field(default_factory=dict)  # any "group.name" from a PV
    # parameters whose PV is disconnected, has no usable value or is out of range hold the scan (not queued,
    # with the reason shown); "*" = all. Others fall back to the template's value, noted in the provenance.
    hold: tuple[str, ...] = ("*",)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RANGES))

    def holds(self, path: str) -> bool:
        return "*" in self.hold or path in self.hold

    @property
    def paths(self) -> frozenset[str]:
        """The parameters these PVs fill (``group.name``)."""
        out = set(self.parameters)
        for path, configured in (("experiment.wavelength_m", self.energy_kev),
                                 ("experiment.scan_dims", self.scan_dims), ("experiment.step_m", self.step_m),
                                 ("experiment.detector_distance_m", self.detector_distance_m)):
            if configured:
                out.add(path)
        return frozenset(out)

    @property
    def pvs(self) -> tuple[str, ...]:
        out: list[str] = []
        for src in (self.energy_kev, self.detector_distance_m):
            if src:
                out.append(src.pv)
        for pair in (self.scan_dims, self.step_m):
            if pair:
                out.extend(s.pv for s in pair)
        out.extend(s.pv for s in self.parameters.values())
        return tuple(out)


@dataclass(frozen=True)
class FileCheckConfig:
    """Waiting for the data files to be complete before submitting."""

    enabled: bool = True
    timeout_s: float = 600.0
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    stable_checks: int = 2  # consecutive complete checks with unchanged size/mtime
    temp_suffix: str = ".tmp"  # areaDetector TempSuffix: the final name appears on close


DEFAULT_BUFFER_MIB = 1024.0  # [stream] buffer_mib: the first frames of a scan the bridge holds (pva:// sources)
DEFAULT_BUFFER_ADDRESS = "127.0.0.1:5079"  # [stream] buffer_address: where the bridge serves them
# [stream] buffer_clients: the client addresses or networks the buffer answers. Default: loopback only, which is
# every client that can reach the default buffer_address; a buffer_address other hosts reach needs it set
DEFAULT_BUFFER_CLIENTS = LOOPBACK_CLIENTS
FILE_SOURCES = ("swmr", "replay")  # live sources that keep every frame (read again by a replacement job)
MAX_RESTREAMS = 10  # [stream] restream_attempts at most (each is a whole reconstruction of the scan)


def _buffer_clients(st: _Reader) -> tuple[str, ...]:
    """``[stream] buffer_clients``: a list of IP addresses or networks (``"10.2.0.0/16"``), each checked; the
    default :data:`DEFAULT_BUFFER_CLIENTS` (loopback)."""
    clients = st.get("buffer_clients", list, list(DEFAULT_BUFFER_CLIENTS))
    try:
        return tuple(str(net) for net in parse_clients(clients, f"{st.source}: [{st.where}] buffer_clients"))
    except LiveSourceError as exc:
        raise ConfigError(str(exc)) from None


def source_series(source: str) -> int | None:
    """The bridge buffer's series a ``pva://`` job source names (``&series=K``), None when it names none."""
    values = parse_qs(source.partition("?")[2]).get("series")
    return int(values[-1]) if values and values[-1].isascii() and values[-1].isdigit() else None


@dataclass(frozen=True)
class StreamConfig:
    """Opening a streaming job when a scan starts (docs/streaming.md): ``source`` is the ``-liveSource`` value
    (``swmr``: read ``file_pattern``, filled from the same ``{fields}`` as ``[data] file_pattern``, as the detector
    writes it); ``values`` are ``{"group.name": value}`` set on the streaming job's parameters (e.g.
    ``data.live_finish_iterations``); ``restream_attempts`` is how many replacement streaming jobs
    (``<key>#restream``) the bridge opens for a streaming job that failed while its scan still acquired (a file
    source: the file holds every frame, default 1; a ``pva://`` source only with the buffer on, which then holds
    each scan's first ``buffer_mib`` until its end for the replacement, default 0). With a ``pva://`` source
    the bridge holds the first ``buffer_mib`` MiB of each scan's frames (:mod:`ptychopy.pva_buffer`; 0: off) and
    serves them as ``buffer_pv`` on ``buffer_address`` ("HOST:PORT" as the workers reach it) to the job that
    subscribes after them: :attr:`job_source` names both in the jobs it opens. ``buffer_clients``: the client
    addresses or networks it answers (the workers'; default loopback, required with a ``buffer_address`` that is
    not loopback)."""

    enabled: bool = False
    source: str = "swmr"
    file_pattern: str = "{path}/{name}_live.h5"
    values: Mapping[str, Any] = field(default_factory=dict)
    restream_attempts: int = 1
    buffer_mib: float = DEFAULT_BUFFER_MIB
    buffer_address: str = DEFAULT_BUFFER_ADDRESS
    buffer_pv: str = ""
    buffer_clients: tuple[str, ...] = DEFAULT_BUFFER_CLIENTS

    @property
    def buffered(self) -> bool:
        """Whether the bridge holds the first frames of each scan for the streaming job (a pva:// source)."""
        return self.source.startswith(PVA_SCHEME) and self.buffer_mib > 0

    @property
    def keeps_for_replacement(self) -> bool:
        """Whether the bridge's buffer keeps a scan's frames after its job took them (for a replacement job)."""
        return self.buffered and self.restream_attempts > 0

    @property
    def job_source(self) -> str:
        """The ``-liveSource`` of the streaming jobs: ``source``, plus ``buffer=``/``buffer_at=`` when buffered."""
        if not self.buffered:
            return self.source
        join = "&" if "?" in self.source else "?"
        return f"{self.source}{join}buffer={self.buffer_pv}&buffer_at={self.buffer_address}"

    def series_source(self, series: int | None) -> str:
        """:attr:`job_source` bound to the bridge buffer's series ``series`` (``&series=K``: the job takes frames of
        that scan only); just :attr:`job_source` when None (no buffer running) or not buffered."""
        return self.job_source if series is None or not self.buffered else f"{self.job_source}&series={series}"

    @property
    def guards_by_time(self) -> bool:
        """Whether the streaming jobs are bound to their scan by its start time (``&started=T``): a ``pva://``
        source with a status PV and the bridge's buffer off (with it, the buffer's series binds them)."""
        if not self.source.startswith(PVA_SCHEME) or self.buffered:
            return False
        try:
            return parse_address(self.source).status is not None
        except LiveSourceError:
            return False

    def scan_source(self, series: int | None, started_s: float) -> str:
        """The ``-liveSource`` of the streaming job of a scan that started at ``started_s`` (POSIX s): bound to
        the buffer's series (:meth:`series_source`), or without the buffer to the scan's start
        (``&started=T``, :attr:`guards_by_time`): the job refuses the frames of a scan that began after it."""
        if not self.guards_by_time:
            return self.series_source(series)
        join = "&" if "?" in self.source else "?"
        return f"{self.source}{join}started={started_s:.3f}"


@dataclass(frozen=True)
class SubmitConfig:
    """How jobs reach the web app: ``http`` POSTs them to the server's JSON API at ``url`` with an API ``token``
    (a separate bridge process: no database credentials; :mod:`epics_bridge.http_submit`); ``django`` calls
    ``webapp.jobs.services.submit_job`` in this process (the embedded ``serve --bridge``); ``callable`` loads
    ``target`` ("module:factory") and calls it with ``options`` to make a submitter."""

    kind: str = "django"
    settings_module: str = "webapp.settings"
    url: str = ""  # http: the web app's base URL, e.g. http://127.0.0.1:8000/
    token: str = field(default="", repr=False)  # http: API token (token_file or EPICS_BRIDGE__SUBMIT__TOKEN)
    timeout_s: float = 10.0  # http: per request
    target: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class BridgeConfig:
    """The whole bridge configuration."""

    beamline: str
    trigger: TriggerConfig
    data: DataConfig
    metadata: MetadataConfig
    template: Parameters
    journal_path: Path
    state_path: Path | None = None
    debounce_s: float = 0.25
    max_debounce_s: float = 10.0
    heartbeat_s: float = 5.0
    label_format: str = "{beamline} scan {scan_number}"
    job_id_format: str = "{beamline}_scan{scan_number}"
    file_check: FileCheckConfig = field(default_factory=FileCheckConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    source: str = ""  # the file it came from
    template_given: frozenset[str] = frozenset()  # the leaves [parameters] sets itself (flags and values)

    @property
    def user_given(self) -> frozenset[str]:
        """The parameters this configuration gives (the template's own flags and values, the metadata PVs'):
        what a data file records is used for every other one (:mod:`epics_bridge.file_metadata`)."""
        return self.template_given | self.metadata.paths

    @property
    def pvs(self) -> tuple[str, ...]:
        """Every PV (and document stream) the bridge monitors, without repeats; start-document keys are not
        monitored: they come with the bluesky trigger's documents."""
        names = self.trigger.pvs + self.data.pvs + self.metadata.pvs
        return tuple(n for n in dict.fromkeys(names) if not n.startswith((DOCUMENT_KEY, STOP_KEY)))

    @property
    def pv_roles(self) -> dict[str, str]:
        """Each PV's role: ``trigger`` (ends scans), ``data`` (names the files) or ``metadata``."""
        roles = {pv: "metadata" for pv in self.metadata.pvs}
        roles.update({pv: "data" for pv in self.data.pvs})
        roles.update({pv: "trigger" for pv in self.trigger.pvs})
        return roles


def config_from_arg(path: str) -> BridgeConfig:
    """The configuration a command line's ``--config`` (or ``$EPICS_BRIDGE_CONFIG``) names; ConfigError if none."""
    if not path:
        raise ConfigError("give --config FILE (or set EPICS_BRIDGE_CONFIG)")
    return load_config(path)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Read a TOML file, apply environment overrides and validate everything."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    apply_env_overrides(raw, os.environ if environ is None else environ)
    return config_from_dict(raw, base_dir=p.resolve().parent, source=str(p))


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Set ``raw[section][key]`` from each ``EPICS_BRIDGE__SECTION__KEY`` variable (names lower-cased)."""
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {name}: {k} is not a table")
        node[keys[-1]] = _parse_env_value(text)


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class _Reader:
    """Typed access to one TOML table that reports unknown keys and wrong types with their location."""

    def __init__(self, table: Any, where: str, source: str):
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{where}] must be a table")
        self.table, self.where, self.source = table, where, source
        self.used: set[str] = set()

    def _err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.where}] {key}: {msg}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self._err(key, f"expected {names}, got {value!r}")
        return value

    def positive(self, key: str, default: float) -> float:
        v = self.get(key, float, default)
        if v <= 0:
            raise self._err(key, f"must be > 0, got {v}")
        return float(v)

    def sub(self, key: str) -> _Reader:
        self.used.add(key)
        return _Reader(self.table.get(key, {}), f"{self.where}.{key}" if self.where else key, self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(f"{self.source}: [{self.where}] unknown key(s): {', '.join(unknown)}")


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None, source: str = "<config>") -> BridgeConfig:
    """Validate a parsed configuration (see ``epics_bridge/examples/beamline.toml``)."""
    base = base_dir or Path.cwd()
    top = _Reader(raw, "", source)
    b = top.sub("bridge")
    beamline = b.get("beamline", str, "")
    if not beamline:
        raise ConfigError(f"{source}: [bridge] beamline: required (e.g. \"2-ID-D\")")
    prefix = b.get("pv_prefix", str, "")

    def pv(r: _Reader, key: str, required: bool = False) -> str:
        name = r.get(key, str, "").replace("$(P)", prefix).strip()
        if required and not name:
            raise r._err(key, "required for this trigger kind")
        return name

    journal = _path(base, b.get("journal", str, "epics_bridge_journal.sqlite3"))
    state_text = b.get("state_file", str, "")
    state_path = _path(base, state_text) if state_text else None
    debounce_s = b.get("debounce_s", float, 0.25)
    if debounce_s < 0:
        raise b._err("debounce_s", "must be >= 0")
    max_debounce_s = max(b.positive("max_debounce_s", 10.0), debounce_s)
    heartbeat_s = b.positive("heartbeat_s", 5.0)
    label_format = b.get("label_format", str, "{beamline} scan {scan_number}")
    job_id_format = b.get("job_id_format", str, "{beamline}_scan{scan_number}")
    b.finish()

    t = top.sub("trigger")
    kind = t.get("kind", str, "")
    if kind not in TRIGGER_KINDS:
        raise t._err("kind", f"expected one of {', '.join(TRIGGER_KINDS)}, got {kind!r}")
    patterns = t.get("abort_patterns", list, ["abort", "abandon", "error", "fail"])
    trigger = TriggerConfig(
        kind=kind,
        busy_pv=pv(t, "busy_pv", kind == "sscan"),
        message_pv=pv(t, "message_pv"),
        current_point_pv=pv(t, "current_point_pv"),
        points_pv=pv(t, "points_pv"),
        abort_patterns=tuple(str(x).lower() for x in patterns),
        capture_pv=pv(t, "capture_pv", kind == "areadetector"),
        num_captured_pv=pv(t, "num_captured_pv", kind == "areadetector"),
        num_capture_pv=pv(t, "num_capture_pv", kind == "areadetector"),
        write_status_pv=pv(t, "write_status_pv"),
        write_message_pv=pv(t, "write_message_pv"),
        full_file_name_pv=pv(t, "full_file_name_pv"),
        file_name_pv=pv(t, "file_name_pv", kind == "filename"),
        acquire_pv=pv(t, "acquire_pv", kind == "eiger"),
        images_counter_pv=pv(t, "images_counter_pv", kind == "eiger"),
        num_images_pv=pv(t, "num_images_pv", kind == "eiger"),
        num_triggers_pv=pv(t, "num_triggers_pv"),
        fw_enable_pv=pv(t, "fw_enable_pv"),
        fw_name_pattern_pv=pv(t, "fw_name_pattern_pv", kind == "eiger"),
        sequence_id_pv=pv(t, "sequence_id_pv", kind == "eiger"),
        file_path_pv=pv(t, "file_path_pv", kind == "eiger"),
        zmq_address=t.get("zmq_address", str, "").strip(),
        zmq_prefix=t.get("zmq_prefix", str, ""),
        serializer=t.get("serializer", str, "pickle"),
        stream=t.get("stream", str, "primary"),
        expected_events_key=t.get("expected_events_key", str, "num_points"),
        frames_source=t.get("source", str, "").strip() or _stream_pva_source(raw) if kind == "pva_frames" else "",
        idle_s=t.positive("idle_s", DEFAULT_IDLE_S) if kind == "pva_frames" else DEFAULT_IDLE_S,
    )
    if kind == "pva_frames":
        if not trigger.frames_source.startswith(PVA_SCHEME):
            raise t._err("source", "the pva_frames trigger needs the detector's image PV as a pva:// address "
                                   "(e.g. \"pva://13SIM1:Pva1:Image?scan=13SIM1:Scan:\"; default: [stream] source "
                                   f"when it is one), got {trigger.frames_source!r}")
        try:
            parse_address(trigger.frames_source)
        except LiveSourceError as exc:
            raise t._err("source", str(exc)) from None
    if kind == "bluesky" and not trigger.zmq_address:
        raise t._err("zmq_address", "required for this trigger kind (the 0MQ proxy's out address, host:port)")
    if trigger.serializer not in SERIALIZERS:
        raise t._err("serializer", f"expected one of {', '.join(SERIALIZERS)}, got {trigger.serializer!r}")
    if " " in trigger.zmq_prefix:
        raise t._err("zmq_prefix", "may not contain a space (the 0MQ message separator)")
    t.finish()

    d = top.sub("data")
    path_map = d.get("path_map", dict, {})
    if not all(isinstance(v, str) for v in path_map.values()):
        raise d._err("path_map", "expected {\"/ioc/prefix\" = \"/local/prefix\"}")
    pattern = d.get("file_pattern", str, "{file}_data_#06d.h5" if kind == "eiger" else "{path}/{name}_data_#06d.h5")
    if kind == "filename" and "{file" not in pattern:
        pattern = "{file}"
    fields: dict[str, DataField] = {}
    for fname, value in d.get("fields", dict, {}).items():
        fields[fname] = _data_field(value, f"[{d.where}] fields.{fname}", prefix, source)
    # pva_frames without a scan number PV: the scan's first frame's time stamp names it
    scan_number_pv = pv(d, "scan_number_pv") or (trigger.frames_pv("scan") if kind == "pva_frames" else "")
    data = DataConfig(path_pv=pv(d, "path_pv"), name_pv=pv(d, "name_pv"), scan_number_pv=scan_number_pv,
                      file_pattern=pattern, path_map=dict(path_map),
                      scan_number_offset=d.get("scan_number_offset", int, 0), fields=fields)
    d.finish()

    m = top.sub("metadata")

    def src(r: _Reader, key: str) -> PvSource | None:
        value = r.get(key, (str, dict), None)
        return None if value is None else _pv_source(value, f"[{r.where}] {key}", prefix, source)

    def pair(r: _Reader, key: str) -> tuple[PvSource, PvSource] | None:
        value = r.get(key, (list, dict), None)
        if value is None:
            return None
        if isinstance(value, dict):  # {pvs = ["a", "b"], scale = 1e-6}
            names, scale = value.get("pvs"), value.get("scale", 1.0)
            if not isinstance(names, list) or set(value) - {"pvs", "scale"}:
                raise r._err(key, "expected a list of two PVs or {pvs = [a, b], scale = x}")
            value = [{"pv": n, "scale": scale} for n in names]
        if len(value) != 2:
            raise r._err(key, f"expected two PVs (rows, cols), got {len(value)}")
        a, b2 = (_pv_source(v, f"[{r.where}] {key}", prefix, source) for v in value)
        return a, b2

    extra_reader = m.sub("parameters")
    extra: dict[str, PvSource] = {}
    for path in list(extra_reader.table):
        s = src(extra_reader, path)
        assert s is not None
        try:
            Parameters().get(path)
        except (ValueError, AttributeError):
            raise extra_reader._err(path, "not a parameter path like 'preprocessing.threshold'") from None
        extra[path] = s
    extra_reader.finish()
    hold = m.get("hold", list, ["*"])
    if not all(isinstance(h, str) for h in hold):
        raise m._err("hold", "expected a list of parameter paths (\"*\" = all)")
    ranges_reader = m.sub("ranges")
    ranges = dict(DEFAULT_RANGES)
    for path in list(ranges_reader.table):
        bounds = ranges_reader.get(path, list, None)
        if (len(bounds) != 2 or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
                or bounds[0] > bounds[1]):
            raise ranges_reader._err(path, f"expected [min, max] (numbers, min <= max), got {bounds!r}")
        ranges[path] = (float(bounds[0]), float(bounds[1]))
    ranges_reader.finish()
    metadata = MetadataConfig(energy_kev=src(m, "energy_kev"), scan_dims=pair(m, "scan_dims"),
                              step_m=pair(m, "step_m"), detector_distance_m=src(m, "detector_distance_m"),
                              parameters=extra, hold=tuple(hold), ranges=ranges)
    m.finish()

    pr = top.sub("parameters")
    template, template_given = _template(pr, source)
    pr.finish()

    fc = top.sub("file_check")
    file_check = FileCheckConfig(
        enabled=fc.get("enabled", bool, True), timeout_s=fc.positive("timeout_s", 600.0),
        initial_backoff_s=fc.positive("initial_backoff_s", 0.2), max_backoff_s=fc.positive("max_backoff_s", 10.0),
        stable_checks=max(1, fc.get("stable_checks", int, 2)), temp_suffix=fc.get("temp_suffix", str, ".tmp"))
    fc.finish()

    st = top.sub("stream")
    st_source = st.get("source", str, "swmr").strip()
    restreams = st.get("restream_attempts", int, 1 if st_source in FILE_SOURCES else 0)
    if restreams < 0 or restreams > MAX_RESTREAMS:
        raise st._err("restream_attempts", f"expected 0 (none) to {MAX_RESTREAMS}, got {restreams}")
    buffer_mib = st.get("buffer_mib", (int, float), DEFAULT_BUFFER_MIB)
    if buffer_mib < 0:
        raise st._err("buffer_mib", f"expected 0 (off) or more MiB, got {buffer_mib}")
    if restreams and st_source not in FILE_SOURCES and not (st_source.startswith(PVA_SCHEME) and buffer_mib > 0):
        held = " and buffer_mib = 0: the bridge holds none of them" if st_source.startswith(PVA_SCHEME) else ""
        raise st._err("restream_attempts", f"a {st_source!r} source cannot be read again (its frames went past"
                                           f"{held}): expected 0; a failed streaming job is replaced by the batch "
                                           "job at the scan's end")
    buffer_address = st.get("buffer_address", str, DEFAULT_BUFFER_ADDRESS).strip()
    try:
        parse_host_port(buffer_address, "buffer_address")
    except LiveSourceError as exc:
        raise st._err("buffer_address", str(exc)) from None
    buffer_clients = _buffer_clients(st)
    stream = StreamConfig(enabled=st.get("enabled", bool, False), source=st_source,
                          file_pattern=st.get("file_pattern", str, "{path}/{name}_live.h5"),
                          values=dict(st.get("values", dict, {})), restream_attempts=restreams,
                          buffer_mib=float(buffer_mib), buffer_address=buffer_address,
                          buffer_pv=buffer_pv_name(beamline), buffer_clients=buffer_clients)
    if stream.enabled and stream.buffered and "buffer_clients" not in st.table \
            and not is_loopback_host(parse_host_port(buffer_address, "buffer_address")[0]):
        raise st._err("buffer_clients", f"the buffer is served on {buffer_address}, which other hosts reach, and "
                                        f"answers only loopback clients ({', '.join(DEFAULT_BUFFER_CLIENTS)}) unless "
                                        "told others: list the workers' addresses or networks, e.g. "
                                        "buffer_clients = [\"10.2.0.0/16\"] (docs/streaming.md)")
    if stream.enabled:
        if kind == "filename":
            raise st._err("enabled", "the filename trigger sees a scan only once its file is complete: no start "
                                     "to open a streaming job at")
        if "#" in stream.file_pattern or "%" in stream.file_pattern:
            raise st._err("file_pattern", f"a live source reads one file, not a numbered pattern: "
                                          f"{stream.file_pattern!r}")
        try:
            template.replace({"data.live_source": stream.job_source, **stream.values})
        except ParameterError as exc:
            raise st._err("values", f"not valid for the streaming job's parameters: {exc}") from None
    st.finish()

    sb = top.sub("submit")
    skind = sb.get("kind", str, "django")
    if skind not in SUBMIT_KINDS:
        raise sb._err("kind", f"expected one of {', '.join(SUBMIT_KINDS)}, got {skind!r}")
    token = sb.get("token", str, "")
    token_file = sb.get("token_file", str, "")
    if token_file and not token:
        token_path = _path(base, token_file)
        try:
            token = token_path.read_text().strip()
            if token_path.stat().st_mode & 0o077:
                log.warning("%s: the API token file %s can be read by other users (chmod 600 it)", source,
                            token_path)
        except OSError as exc:
            raise sb._err("token_file", f"cannot read {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise sb._err("token_file", f"{token_file} is empty (expected the API token)")
    submit = SubmitConfig(kind=skind, settings_module=sb.get("settings_module", str, "webapp.settings"),
                          url=sb.get("url", str, ""), token=token, timeout_s=sb.positive("timeout_s", 10.0),
                          target=sb.get("target", str, ""), options=dict(sb.get("options", dict, {})),
                          initial_backoff_s=sb.positive("initial_backoff_s", 1.0),
                          max_backoff_s=sb.positive("max_backoff_s", 60.0))
    if skind == "callable" and ":" not in submit.target:
        raise sb._err("target", "expected 'module:factory' for kind = \"callable\"")
    if skind == "http" and not submit.url.startswith(("http://", "https://")):
        raise sb._err("url", f"expected the web app's URL (http://host:port/) for kind = \"http\", got {submit.url!r}")
    if skind == "http" and not submit.token:
        raise sb._err("token", "an API token is required for kind = \"http\" (token, token_file or "
                               "EPICS_BRIDGE__SUBMIT__TOKEN)")
    sb.finish()
    top.finish()
    return BridgeConfig(
        beamline=beamline, trigger=trigger, data=data, metadata=metadata, template=template, journal_path=journal,
        state_path=state_path, debounce_s=debounce_s, max_debounce_s=max_debounce_s, heartbeat_s=heartbeat_s,
        label_format=label_format, job_id_format=job_id_format,
        file_check=file_check, submit=submit, stream=stream, source=source, template_given=template_given)


def _stream_pva_source(raw: Mapping[str, Any]) -> str:
    """``[stream] source`` when it is a ``pva://`` address (the pva_frames trigger's default source), else ""."""
    stream = raw.get("stream")
    source = str(stream.get("source", "")).strip() if isinstance(stream, Mapping) else ""
    return source if source.startswith(PVA_SCHEME) else ""


def _path(base: Path, text: str) -> Path:
    p = Path(os.path.expanduser(text))
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _pv_source(value: Any, where: str, prefix: str, source: str) -> PvSource:
    if isinstance(value, str):
        return PvSource(value.replace("$(P)", prefix))
    if isinstance(value, dict) and isinstance(value.get("pv"), str) and not set(value) - {"pv", "scale"}:
        scale = value.get("scale", 1.0)
        if not isinstance(scale, int | float) or isinstance(scale, bool):
            raise ConfigError(f"{source}: {where}: scale must be a number")
        return PvSource(value["pv"].replace("$(P)", prefix), float(scale))
    raise ConfigError(f"{source}: {where}: expected a PV name or {{pv = \"NAME\", scale = x}}, got {value!r}")


def _data_field(value: Any, where: str, prefix: str, source: str) -> DataField:
    if isinstance(value, str):
        return DataField(value.replace("$(P)", prefix))
    if isinstance(value, dict) and isinstance(value.get("pv"), str) and not set(value) - {"pv", "offset"}:
        offset = value.get("offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise ConfigError(f"{source}: {where}: offset must be an integer")
        return DataField(value["pv"].replace("$(P)", prefix), offset)
    raise ConfigError(f"{source}: {where}: expected a PV name or {{pv = \"NAME\", offset = n}}, got {value!r}")


def _template(r: _Reader, source: str) -> tuple[Parameters, frozenset[str]]:
    """The per-beamline parameter template (a command string and/or ``values = {"group.name" = v}``) and the
    leaves it sets itself (``-energy`` counts as the wavelength)."""
    from reconstruction.io.scan_metadata import given_in_cmdstr

    cmd = r.get("template", str, "")
    values = r.get("values", dict, {})
    try:
        params = Parameters.from_cmdstr(cmd) if cmd else Parameters()
        params = params.replace(dict(values)) if values else params
        return params, frozenset(given_in_cmdstr(cmd) if cmd else ()) | frozenset(values)
    except ParameterError as exc:
        raise ConfigError(f"{source}: [parameters]: {exc}") from None
