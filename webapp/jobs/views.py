"""Pages: history, submit, live view, cancel/delete/clone, downloads, dashboard, health. Thin: see services."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from reconstruction import ParameterError, Parameters
from reconstruction.engines import error_measure
from reconstruction.safe_paths import UnsafePathError
from webapp.accounts.auth import login_or_token_required
from webapp.scans import listing as scans
from webapp.text_numbers import quoted, whole_number
from webapp.workers import bridge_status
from webapp.workers import dashboard as dashboard_data

from . import services
from .comparison import NotComparable, compared_jobs, threshold_of
from .comparison import compare_iterations as compare_iterations_of
from .diffraction import NoPattern, finished_diffraction
from .downloads import FORMATS, NoResult, result_download
from .forms import JobForm
from .half_set import HalfSetRefused, submit_half_sets
from .history import filter_jobs
from .models import BridgeStatus, Job
from .provenance import provenance_rows
from .queue_eta import queue_estimate
from .snapshots import list_snapshots, snapshot_path

PAGE_SIZE = 25


@require_GET
@login_required
def history(request: HttpRequest) -> HttpResponse:
    jobs = filter_jobs(request.GET)
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    owners = Job.objects.exclude(owner=None).values_list("owner__username", flat=True).distinct()
    return render(request, "jobs/history.html", {
        "page": page, "filters": request.GET, "query": query.urlencode(),
        "statuses": Job.Status.values, "algorithms": sorted(set(Job.objects.values_list("algorithm", flat=True))),
        "owners": sorted(set(owners)),
    })


@require_http_methods(["GET", "POST"])
@login_required
def new_job(request: HttpRequest, base: Parameters | None = None, source_job: Job | None = None) -> HttpResponse:
    scan_error = ""
    scan_notes: list[str] = []
    if request.method == "POST":
        form = JobForm(request.POST, request.FILES, username=request.user.get_username())
        if form.is_valid() and form.parameters is not None:
            job = services.submit_job(form.parameters, owner=request.user, source="web",
                                      label=form.cleaned_data["label"],
                                      notify_email=form.cleaned_data["notify_email"])
            return redirect("jobs:detail", job.pk)
    else:
        scan = request.GET.get("scan", "").strip()
        if scan:
            try:
                found = scans.defaults_from_scan(scan, base)
            except (ValueError, OSError) as exc:  # PathNotAllowed and unreadable files
                scan_error = str(exc)
            else:
                base = found.parameters
                scan_notes = found.notes
        initial = {"label": f"{source_job.label} (copy)".strip() if source_job and source_job.label else ""}
        form = JobForm(base=base, initial=initial)
    return render(request, "jobs/new.html", {
        "form": form, "source_job": source_job, "scan_choices": scans.list_scans(),
        "scan": request.GET.get("scan", ""), "scan_error": scan_error, "scan_notes": scan_notes,
    }, status=507 if getattr(form, "storage_full", False) else 200)  # 507: the uploads disk is full


@require_GET
@login_required
def clone(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        base = services.clone_parameters(job)
    except ParameterError as exc:
        messages.error(request, f"Job {job.pk}'s parameters no longer validate ({exc}); starting from defaults.")
        base = None
    return new_job(request, base=base, source_job=job)


@require_GET
@login_required
def detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("owner").defer("last_preview"), pk=job_id)
    try:
        params = Parameters.from_dict(job.parameters)
    except ParameterError as exc:  # stored by an older version whose parameters no longer validate
        cmdstr, changed, scan_file = f"(these parameters no longer validate: {exc})", [], ""
    else:
        cmdstr, changed = params.to_cmdstr(), sorted(params.changed().items())
        pattern = params.data.file_pattern  # one HDF5 scan file (not a '#' series) opens in the file viewer
        scan_file = pattern if pattern.endswith((".h5", ".hdf5", ".nxs", ".cxi")) and "#" not in pattern else ""
    origins = provenance_rows(job.provenance, dict(changed)) if job.provenance else []
    try:
        measure = error_measure(job.algorithm)
    except KeyError:  # an algorithm this version does not have
        measure = ""
    return render(request, "jobs/detail.html", {
        "job": job, "cmdstr": cmdstr, "changed": changed, "origins": origins, "error_measure": measure,
        "can_manage": job.can_manage(request.user), "formats": FORMATS,
        "ws_path": f"/ws/jobs/{job.pk}/", "queue": queue_estimate(job), "scan_file": scan_file,
    })


@require_POST
@login_required
def cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        job = services.cancel_job(job, request.user)
    except PermissionDenied:
        return HttpResponse("Only the job's owner or staff can cancel it.", status=403)
    if job.status == Job.Status.CANCELLED:
        note = "cancelled."
    elif job.is_finished:
        note = f"already {job.status}; nothing to cancel."
    else:
        note = "cancel requested; it stops after the current iteration."
    messages.info(request, f"Job {job.pk}: {note}")
    return redirect("jobs:detail", job.pk)


@require_POST
@login_required
def delete(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        services.delete_job(job, request.user)
    except PermissionDenied:
        return HttpResponse("Only the job's owner or staff can delete it.", status=403)
    messages.info(request, f"Job {job_id} deleted.")
    return redirect("jobs:history")


@require_GET
@login_or_token_required  # a script downloads with its API token
def download(request: HttpRequest, job_id: int, fmt: str) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        item = result_download(job, fmt)
    except UnsafePathError as exc:  # a file name from the job that is not a plain name: nothing was written
        return HttpResponse(f"Cannot export job {job.pk}: {exc}", status=400, content_type="text/plain")
    except ValueError as exc:
        raise Http404(str(exc)) from None
    except NoResult as exc:
        raise Http404(str(exc)) from None
    return FileResponse(open(item.path, "rb"), as_attachment=True, filename=item.filename,
                        content_type=item.content_type)


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    data = dashboard_data.snapshot()
    if request.GET.get("format") == "json":
        return JsonResponse(dashboard_data.as_json(data))
    return render(request, "jobs/dashboard.html", {"data": data, "refresh_url": reverse("jobs:dashboard")})


@require_POST
@login_required
def retire_bridge(request: HttpRequest, bridge_id: int) -> HttpResponse:
    """Staff: take a stopped or crashed bridge off the dashboard."""
    row = get_object_or_404(BridgeStatus, pk=bridge_id)
    try:
        bridge_status.retire_bridge(row, request.user)
    except PermissionDenied:
        return HttpResponse("Only staff can retire a bridge.", status=403)
    except bridge_status.BridgeStillRunning as exc:
        messages.error(request, f"Not retired: {exc}.")
        return redirect("jobs:dashboard")
    messages.info(request, f"Bridge {row.beamline} retired; it comes back if it starts again.")
    return redirect("jobs:dashboard")


@require_GET
@login_required
def snapshots(request: HttpRequest, job_id: int) -> HttpResponse:
    """The iterations of the run's stored frames (the scrubber's stops): ``{"iterations": [...]}``."""
    job = get_object_or_404(Job.objects.only("pk"), pk=job_id)
    return JsonResponse({"iterations": list_snapshots(job.pk)})


@require_GET
@login_or_token_required  # like the result file it is made from
def diffraction(request: HttpRequest, job_id: int) -> JsonResponse:
    """A finished job's measured and model pattern of scan position ``?position=k`` (JSON, webapp/jobs/diffraction.py);
    ``{"error"}`` with 400 for a position that is not a whole number in the scan, 404 without a result file, 409
    when the raw data cannot be read, 503 with ``Retry-After`` while an earlier click still simulates the scan."""
    job = get_object_or_404(Job.objects.defer("last_preview"), pk=job_id)
    text = (request.GET.get("position") or "").strip()
    position = whole_number(text)
    if position is None:
        return JsonResponse({"error": f"position must be a whole number >= 0, got {quoted(text)}"}, status=400)
    try:
        return JsonResponse(finished_diffraction(job, position))
    except NoPattern as exc:
        refused = JsonResponse({"error": str(exc)}, status=exc.status)
        if exc.retry_after_s is not None:
            refused["Retry-After"] = str(exc.retry_after_s)
        return refused


@require_GET
@login_required
def snapshot(request: HttpRequest, job_id: int, iteration: int) -> HttpResponse:
    """One stored frame, the bytes a viewer got over the websocket."""
    job = get_object_or_404(Job.objects.only("pk"), pk=job_id)
    path = snapshot_path(job.pk, iteration)
    if not path.is_file():
        raise Http404(f"job {job.pk} has no stored frame of iteration {iteration}")
    return HttpResponse(path.read_bytes(), content_type="application/octet-stream")


@require_GET
@login_required
def compare(request: HttpRequest) -> HttpResponse:
    """Two jobs' final objects side by side (``?a=<id>&b=<id>``): B aligned onto A, their phase difference and the
    FRC with the resolution."""
    numbers = __whole_numbers(request, "job")
    if isinstance(numbers, str):
        return render(request, "jobs/compare.html", {"error": numbers}, status=400)
    a, b = (get_object_or_404(Job.objects.defer("last_preview"), pk=pk) for pk in numbers)
    half_bit = request.GET.get("threshold") == "half-bit"
    context: dict[str, Any] = {"a": a, "b": b, "half_bit": half_bit}
    pending = [job for job in (a, b) if not job.is_finished]
    if pending:  # e.g. a half-set FRC just asked for: the page reloads until both have finished
        return render(request, "jobs/compare.html", {**context, "pending": pending})
    try:
        found = compared_jobs(a, b, threshold_of(request.GET.get("threshold", "")))  # cached: webapp/jobs/comparison.py
    except NotComparable as exc:
        return render(request, "jobs/compare.html", {**context, "error": str(exc)}, status=400)
    return render(request, "jobs/compare.html", {**context, **found})


@require_POST
@login_required
def half_set(request: HttpRequest, job_id: int) -> HttpResponse:
    """Queue the two half-data reconstructions of a job's scan (its interleaved halves) and open their comparison
    with the 1/2-bit threshold, which waits for both."""
    job = get_object_or_404(Job.objects.defer("last_preview"), pk=job_id)
    try:
        first, second = submit_half_sets(job, request.user)
    except HalfSetRefused as exc:
        messages.error(request, str(exc))
        return redirect("jobs:detail", job_id=job.pk)
    return redirect(f"{reverse('jobs:compare')}?a={first.pk}&b={second.pk}&threshold=half-bit")


@require_GET
@login_required
def compare_iterations(request: HttpRequest, job_id: int) -> HttpResponse:
    """Two stored iterations of one job side by side (``?a=<iteration>&b=<iteration>``, from the scrubber's
    snapshots): B aligned onto A, their phase difference and the FRC with the resolution."""
    job = get_object_or_404(Job.objects.defer("last_preview"), pk=job_id)
    numbers = __whole_numbers(request, "stored iteration")
    if isinstance(numbers, str):
        return render(request, "jobs/compare.html", {"job": job, "error": numbers}, status=400)
    context: dict[str, Any] = {"job": job, "iterations": numbers}
    try:
        view = compare_iterations_of(job, *numbers)
    except NotComparable as exc:
        return render(request, "jobs/compare.html", {**context, "error": str(exc)}, status=400)
    return render(request, "jobs/compare.html", {**context, "summary": view.summary(),
                                                 "page_data": view.page_data()})


def __whole_numbers(request: HttpRequest, what: str) -> tuple[int, int] | str:
    """``?a=`` and ``?b=`` as whole numbers, or the message naming the one that is not."""
    out = []
    for key in ("a", "b"):
        text = (request.GET.get(key) or "").strip().lstrip("#")
        number = whole_number(text)
        if number is None:
            return f"'{key}' must be a {what} number, got {quoted(text)}"
        out.append(number)
    return out[0], out[1]
